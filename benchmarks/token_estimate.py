#!/usr/bin/env python
"""How good, and how cheap, is the context-window fit's token estimate (one token per 3 UTF-8 bytes)?

1. Accuracy: real token counts over the estimate, for English and Russian prose, code, a model's
   Markdown answers, Chinese and emoji-dense text, with every tokenizer at hand: tiktoken's
   cl100k_base and o200k_base (OpenAI's; tiktoken comes with pydantic-ai-slim[openai], but its
   encodings are downloaded on first use: this uses the copies litellm bundles, the `bench` extra)
   and the Hugging Face tokenizers litellm bundles (DeepSeek's, Claude's; `tokenizers`). A ratio
   below 1: the estimate says more than the tokenizer counts (the fit keeps less than would fit);
   above 1: less (the margin and the answer's reserve must cover it).
2. CPU: the estimate against tiktoken on the same text, and one whole fit (`HistoryFit`) of a
   20-message thread of 1,500-character turns into Ollama's default window, the work each attempt
   adds before it sends.

    python benchmarks/token_estimate.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, fmt

RUSSIAN = ("Привет! Я хотел бы узнать, как лучше всего организовать работу небольшой команды разработчиков, "
           "которая делает телеграм-бота. Нас пятеро, мы работаем удалённо из разных городов, и часто бывает так, "
           "что двое меняют один и тот же файл одновременно. Расскажите, какие практики помогают избежать "
           "конфликтов, как договариваться о стиле кода и как проверять изменения друг друга без бюрократии. ")
CHINESE = "我想了解如何组织一个小型开发团队的工作。我们有五个人，在不同的城市远程工作，经常有两个人同时修改同一个文件。"
EMOJI = "Great job 🎉🚀👍 see you soon 😀 ✅ all done 🙌 "


def samples() -> dict[str, str]:
    from tests.model_answers import PATHLIB, long_answer

    return {
        "English prose": (ROOT / "docs" / "fallback.md").read_text()[:8000],
        "Russian prose": (RUSSIAN * 20)[:6000],
        "Python code": (ROOT / "plugins" / "llm_fallback" / "plan.py").read_text()[:8000],
        "Markdown answers": PATHLIB + "\n\n" + long_answer(),
        "Chinese": (CHINESE * 60)[:3000],
        "emoji-dense chat": (EMOJI * 60)[:2500],
    }


def tokenizers() -> dict[str, Callable[[str], int]]:
    """Every tokenizer available offline: name → token count of a text."""
    found: dict[str, Callable[[str], int]] = {}
    spec = importlib.util.find_spec("litellm")
    bundled = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers" if spec and spec.origin else None
    if bundled is not None and bundled.is_dir():
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    try:
        import tiktoken

        for name in ("cl100k_base", "o200k_base"):
            encoding = tiktoken.get_encoding(name)
            found[f"tiktoken {name}"] = lambda text, e=encoding: len(e.encode(text, disallowed_special=()))
    except Exception as error:  # noqa: BLE001 - offline without litellm's copies: say so, go on
        print(f"(tiktoken encodings unavailable: {type(error).__name__})", file=sys.stderr)
    try:
        from tokenizers import Tokenizer

        for name, file in (("DeepSeek", "deepseek_tokenizer.json"), ("Claude", "anthropic_tokenizer.json")):
            if bundled is not None and (bundled / file).exists():
                tokenizer = Tokenizer.from_file(str(bundled / file))
                found[name] = lambda text, t=tokenizer: len(t.encode(text, add_special_tokens=False).ids)
    except ImportError:
        print("(Hugging Face tokenizers not installed: pip install -e '.[bench]')", file=sys.stderr)
    return found


def per_call_us(work: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def thread(turns: int = 10, chars: int = 1500) -> list[Any]:
    from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart

    messages: list[Any] = []
    for n in range(turns - 1):
        messages += [ModelRequest(parts=[UserPromptPart((f"Question {n}: " + "tell me more " * chars)[:chars])]),
                     ModelResponse(parts=[TextPart(f"Answer {n}: " + "here is what I know. " * 20)])]
    return messages + [ModelRequest(parts=[UserPromptPart("And the last question?")], instructions="You are Luka.")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args(argv)
    from pydantic_ai.models import ModelRequestParameters

    from plugins.llm_fallback.fit import HistoryFit, estimate_tokens
    from plugins.llm_fallback.providers import OLLAMA_CONTEXT_WINDOW

    texts, counters = samples(), tokenizers()
    print("\n### Real tokens ÷ the estimate (UTF-8 bytes / 3)\n")
    print("| text | characters | estimate | " + " | ".join(counters) + " |")
    print("|---|---:|---:|" + "---:|" * len(counters))
    for name, text in texts.items():
        estimate = estimate_tokens(text)
        ratios = [f"{count(text) / estimate:.2f}" for count in counters.values()]
        print(f"| {name} | {len(text)} | {estimate} | " + " | ".join(ratios) + " |")

    text = "".join(texts.values())[:20_000]
    print(f"\n### CPU (median of {args.rounds} calls)\n")
    print("| work | µs |")
    print("|---|---:|")
    print(f"| estimate of 20,000 characters | {fmt(per_call_us(lambda: estimate_tokens(text), args.rounds), 1)} |")
    for name in [n for n in counters if n.startswith("tiktoken")]:
        count = counters[name]
        print(f"| {name} of the same 20,000 characters | {fmt(per_call_us(lambda c=count: c(text), 200), 1)} |")
    messages, params = thread(), ModelRequestParameters()

    def fit() -> None:
        HistoryFit(messages, params, OLLAMA_CONTEXT_WINDOW).first()

    kept = HistoryFit(messages, params, OLLAMA_CONTEXT_WINDOW)
    kept.first()
    print(f"| one fit of a 19-message thread (1,500-character turns) into {OLLAMA_CONTEXT_WINDOW} tokens "
          f"(keeps {9 - kept.dropped} of 9 turns) | {fmt(per_call_us(fit, args.rounds), 1)} |")


if __name__ == "__main__":
    main()
