"""Build hook: the wheel ships compiled translations (`luka_bot/locales/<lang>/LC_MESSAGES/messages.mo`).

The top-level `locales/` (`.po` files) stays the only source; nothing is compiled into the
source tree. Everything else is configured in pyproject.toml.
"""

from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = Path(__file__).resolve().parent / "locales"


class BuildPyWithCatalogs(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the .po sources directly
            return
        for po_path in sorted(SOURCE.glob("*/LC_MESSAGES/messages.po")):
            with po_path.open("rb") as po_file:
                catalog = read_po(po_file, locale=po_path.parts[-3], domain="messages")
            mo = BytesIO()
            write_mo(mo, catalog)
            target = Path(self.build_lib) / "luka_bot" / "locales" / po_path.relative_to(SOURCE).with_suffix(".mo")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(mo.getvalue())


setup(cmdclass={"build_py": BuildPyWithCatalogs})
