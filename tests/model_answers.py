"""Answers as models write them (Markdown), for the rendering tests and the README's transcript."""

from __future__ import annotations

PATHLIB = '''## Reading a file in Python

Use **`pathlib`** — it handles paths on every OS:

```python
from pathlib import Path

def read_config(file_name="app_config.toml"):
    text = Path(file_name).read_text()  # *never* use __file__ here
    return text.split("\\n")
```

### Options

1. `read_text()` — the whole file
   - with `encoding="utf-8"`, always
   - or `errors="replace"` for *messy* files
2. `open()` — line by line

| method | returns | lazy |
|---|---|---|
| `read_text` | str | no |
| `open` | file | yes |

See the [pathlib docs](https://docs.python.org/3/library/pathlib.html) 📚, and mind 2*3 vs 2 * 3.'''
"""Headings, bold, inline code, a fenced block whose code has `_` and `*`, nested lists, a table, a link, an emoji."""


def long_answer(sections: int = 13) -> str:
    """About 9000 characters: sections of prose, a list and a Python block each (code with `_` and `*`)."""
    parts = []
    for n in range(1, sections + 1):
        code = "\n".join(f"    total_{n} = total_{n} * {i} + my_list[{i}]  # step {i}" for i in range(8))
        parts.append(
            f"### Step {n}: **compute** the `total_{n}`\n\n"
            f"We multiply each value by its index 🚀 and keep the *running* total; see the "
            f"[docs](https://docs.python.org/3/library/functions.html#sum) for `sum()` and friends.\n\n"
            f"- first, read `my_list`\n  - check it is **not empty**\n- then loop\n\n"
            f"```python\ndef step_{n}(my_list):\n    total_{n} = 0\n{code}\n    return total_{n}\n```\n"
        )
    return "\n".join(parts)
