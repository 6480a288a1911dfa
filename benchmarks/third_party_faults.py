#!/usr/bin/env python
"""Third-party fault servers: the real bot with `llmock` (PyPI) as its primary, one fault mode at a time.

Nobody here wrote llmock: it injects faults the way its author thinks providers fail (HTTP errors in
each provider's own body format, streams dropped / ended early / corrupted / stalled at a chosen
chunk, slow first tokens, quotas, scripted finish reasons and broken tool calls). It speaks the
OpenAI chat-completions protocol on `/v1`, so it stands in for Ollama (`OLLAMA_URL`).

For each mode (`MODES` below) this starts, from nothing (an empty redis-server):

- llmock (`--llmock`, a separate venv: `pip install llmock` pulls FastAPI/uvicorn) with
  `--tool-mode off --response-style hello` (every answer is "Hello! This is a mock response from m1.",
  so a part of it is recognisable) plus the mode's server flags; the mode's behaviours are queued
  through `POST /_llmock/scenario` (`match` picks the chat request — it offers tools and streams —
  or the thread-name request — no tools, not streamed);
- a healthy fallback "openai" (`tests/fakes/fake_llm.py`, its own process, answers "answer from openai");
- the fake Bot API (`tests/fakes/fake_telegram.py`, in this process) with one admin chat;
- the bot, `<bot-python> -m luka_bot` in `--bot-dir` (so the same harness runs any checkout).

Then a new user sends `--messages` messages (the first opens a thread, so its name is asked too),
`--gap` s apart (longer than the default recovery-probe interval, so a probe can run in between),
and the harness records for each: what the user saw (the final message, classified: the primary's
answer, the fallback's, a part of the primary's delivered as complete, the cut-off note, the
refusal note, the apology, nothing), seconds to it, whether the thread name came and when, and
draft frames showing the primary's text; for the mode: the primary's cooldowns (log lines
"Provider ollama failed: … (cooldown: Ns)"), recoveries, admin alerts, ERROR lines and
tracebacks in the bot's log, and the requests each provider received.

    python benchmarks/third_party_faults.py --label after --json /tmp/tpf-after.json
    python benchmarks/third_party_faults.py --label before --bot-dir /work/wt-before \
        --bot-python /work/wt-before/.venv/bin/python --json /tmp/tpf-before.json
    python benchmarks/third_party_faults.py --table /tmp/tpf-before.json /tmp/tpf-after.json

`--only NAME…` runs some modes; `--list` prints them. Needs `redis-server` on PATH; loopback only.
The expectations (`expect`, `cool`) are DESIGN.md's "Error classification" with a healthy fallback;
`--table` marks with ⚠ every AFTER result that breaks them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, FakeLLMProcess, RedisProcess, exit_on_sigterm

from tests.fakes.bot_process import BotProcess, bot_env
from tests.fakes.fake_telegram import Call, FakeTelegram
from tests.fakes.processes import terminate
from tests.fakes.redis_server import free_port

TOKEN = "123456:THIRD-party-faults-token-not-real"
OPENAI_KEY = "sk-fake-third-party-0123456789"
ADMIN = 5901
FIRST_USER = 90_000
PRIMARY_MODEL = "m1"
FULL = f"Hello! This is a mock response from {PRIMARY_MODEL}."
FALLBACK_ANSWER = "answer from openai"
APOLOGY = "😔 I can't answer right now, try again in a minute."
REFUSED = "🙅 The model declined to answer that. Try asking differently."
CUT_MARK = "✂️ The answer was cut off here"
PROVIDER_TIMEOUT = 5
CHAT = {"tools": True}  # the chat request offers tools (and streams); the thread name does neither
NAME = {"tools": False, "stream": False}


@dataclass(frozen=True)
class Mode:
    name: str
    what: str
    behaviors: tuple[dict[str, Any], ...] = ()
    server: tuple[str, ...] = ()
    """Extra `llmock serve` flags (the server is restarted when they change)."""
    fallback: str = "ok"
    """FakeLLM mode of the fallback for the first message."""
    later: tuple[tuple[dict[str, Any], ...], str] | None = None
    """From the second message on: llmock's queue replaced by these behaviours, the fallback in this mode."""
    expect: str = "fallback"
    """What the user should get under DESIGN.md's rules: primary / fallback / cut-off / refusal / apology."""
    cool: str = "yes"
    """Should the primary be cooled: yes / no / any."""
    fixtures: tuple[dict[str, Any], ...] = ()
    """aimock modes: fixtures for this mode's messages (the harness adds `match.userMessage`)."""


def fail(status: int, *, match: dict[str, Any] | None = None, times: int | None = None, **kw: Any) -> dict[str, Any]:
    return {"type": "fail", "status": status, "times": times, "match": match or {}, **kw}


def stream(kind: str, after: int, *, times: int | None = None, **kw: Any) -> dict[str, Any]:
    return {"type": "stream_fault", "kind": kind, "after_chunks": after, "times": times, "match": {"stream": True},
            **kw}


def _modes() -> list[Mode]:
    modes = [
        Mode("healthy", "no fault", expect="primary", cool="no"),
        Mode("tool-call", "the model calls calculate(6*7), then answers",
             ({"type": "reply", "tool_calls": [{"name": "calculate", "arguments": {"expression": "6*7"}}],
               "times": 1, "match": CHAT},), expect="primary", cool="no"),
    ]
    request_errors = {400, 413, 422}
    for status in (400, 401, 402, 403, 404, 408, 409, 413, 422, 429, 500, 501, 502, 503, 504, 529):
        modes.append(Mode(f"http{status}", f"every request: HTTP {status} (llmock's OpenAI error body)",
                          (fail(status),), cool="no" if status in request_errors else "any" if status == 402 else "yes"))
    modes += [
        Mode("http429-retry30", "every request: 429, Retry-After 30", (fail(429, retry_after=30),)),
        Mode("400-no-tools", "chat requests: 400 \"…llama3.2 does not support tools\" (thread names work)",
             (fail(400, match=CHAT, message="registry.ollama.ai/library/llama3.2 does not support tools"),), cool="no"),
        Mode("400-context", "chat requests: 400 context_length_exceeded",
             (fail(400, match=CHAT, code="context_length_exceeded",
                   message="This model's maximum context length is 4096 tokens. However, your messages resulted "
                           "in 5000 tokens."),), cool="no"),
        Mode("context-window-40", "server: --context-window 40 (prompts over ~40 tokens: 400)",
             server=("--context-window", "40"), cool="no"),
        Mode("400-content-filter", "chat requests: 400 code content_filter",
             (fail(400, match=CHAT, code="content_filter",
                   message="The response was filtered due to the prompt triggering content management policy."),),
             expect="refusal", cool="no"),
        Mode("400-name-only", "thread-name requests: 400", (fail(400, match=NAME),), expect="primary", cool="no"),
        # a lone failure: the fallback answers, the recovery probe (5 s, the default) has the primary back by the next
        Mode("500-once-chat", "the first chat request: 500", (fail(500, match=CHAT, times=1),), expect="fallback,primary",
             cool="any"),
        Mode("503-once-name", "the first thread-name request: 503 (a lone background failure)",
             (fail(503, match=NAME, times=1),), expect="primary", cool="any"),
        Mode("429-once-retry2", "the first chat request: 429, Retry-After 2",
             (fail(429, match=CHAT, times=1, retry_after=2),), expect="fallback,primary", cool="any"),
        Mode("500-twice", "the first two requests: 500", (fail(500, times=2),), expect="fallback,primary", cool="any"),
        Mode("delay-2s", "every request: answer after 2 s (timeout 5 s)",
             ({"type": "delay", "seconds": 2, "times": None},), expect="primary", cool="no"),
        Mode("delay-20s", "every request: answer after 20 s", ({"type": "delay", "seconds": 20, "times": None},)),
        Mode("delay-20s-name", "the first thread-name request: answer after 20 s",
             # the name times out (5 s): the answer is not held back; the next message may meet the cooldown
             ({"type": "delay", "seconds": 20, "times": 1, "match": NAME},), expect="primary,any,primary", cool="any"),
        Mode("first-token-2s", "streams: first chunk after 2 s",
             ({"type": "slow_first_token", "seconds": 2, "times": None},), expect="primary", cool="no"),
        Mode("first-token-20s", "streams: first chunk after 20 s",
             ({"type": "slow_first_token", "seconds": 20, "times": None},)),
        Mode("chunks-300ms", "server: 300 ms between stream chunks (≈3 s a reply)",
             server=("--stream-chunk-delay-ms", "300"), expect="primary", cool="no"),
        Mode("chunks-2500ms", "server: 2.5 s between stream chunks (≈25 s a reply, timeout 5 s)",
             server=("--stream-chunk-delay-ms", "2500")),
    ]
    # Stream events of an answer: 0 role, 1–8 the words, 9 finish_reason, 10 usage, then [DONE].
    where = {0: "before any chunk", 1: "after the role chunk", 3: "after 2 words", 9: "after all words, before "
             "finish_reason", 10: "after finish_reason"}
    for kind, afters in (("disconnect", (0, 1, 3, 9, 10)), ("truncate", (0, 1, 3, 9, 10)), ("malformed", (0, 1, 3, 9)),
                         ("stall", (1, 3))):
        for after in afters:
            extra = {"stall_seconds": 30} if kind == "stall" else {}
            complete = after == 10  # the answer and its finish reason were all there
            modes.append(Mode(f"{kind}@{after}", f"streams: {kind} {where[after]}" + (" (30 s)" if extra else ""),
                              (stream(kind, after, **extra),),
                              expect="any" if complete else "fallback", cool="any" if complete else "yes"))
    calculate = {"type": "reply", "tool_calls": [{"name": "calculate", "arguments": {"expression": "6*7"}}],
                 "times": None, "match": CHAT}  # a tool call and no text, for the tool faults to break
    modes += [
        Mode("disconnect@3-once", "the first stream: disconnect after 2 words", (stream("disconnect", 3, times=1),),
             expect="fallback,primary", cool="yes"),
        Mode("finish-length", "chat: \"Hello! This is a mock\", finish_reason length",
             ({"type": "reply", "text": "Hello! This is a mock", "finish_reason": "length", "times": None,
               "match": CHAT},), expect="cut-off", cool="no"),
        Mode("finish-content-filter", "chat: empty text, finish_reason content_filter",
             ({"type": "reply", "text": "", "finish_reason": "content_filter", "times": None, "match": CHAT},),
             expect="refusal", cool="no"),
        Mode("empty-reply", "chat: empty text, finish_reason stop",
             ({"type": "reply", "text": "", "times": None, "match": CHAT},), cool="any"),
        Mode("tool-unknown", "chat: only a call to a tool never offered",
             (calculate, {"type": "tool_fault", "kind": "unknown_tool", "times": None}), cool="any"),
        Mode("tool-bad-json", "chat: only a tool call whose arguments are not JSON",
             (calculate, {"type": "tool_fault", "kind": "malformed_arguments", "times": None}), cool="any"),
        Mode("tool-bad-args", "chat: calculate() called with arguments its schema refuses",
             ({"type": "reply", "tool_calls": [{"name": "calculate", "arguments": {"wrong": 1}}], "times": None,
               "match": CHAT},), cool="any"),
        Mode("rpm-2", "server: --rpm 2 (the third request a minute: 429 with the real wait)",
             server=("--rpm", "2"), expect="any", cool="any"),
        Mode("both-down", "primary 503 and fallback 500 on every request", (fail(503),), fallback="http500",
             expect="apology"),
        Mode("both-400", "primary 400 and fallback 400 on every request (the request's own fault)", (fail(400),),
             fallback="http400", expect="apology", cool="no"),
        Mode("all-cooling-then-cut", "msg 1: both fail (500); then the fallback heals and the primary cuts every "
             "stream after 2 words", (fail(500),), fallback="http500",
             later=((stream("disconnect", 3),), "ok"), expect="apology,fallback,fallback"),
    ]
    return modes


MODES = _modes()

LUKA = {"systemMessage": "You are Luka"}  # aimock: the chat request (thread names have another system prompt)


def _aimock_modes() -> list[Mode]:
    def error(status: int, message: str, type_: str, code: str | None = None) -> dict[str, Any]:
        return {"error": {"message": message, "type": type_, **({"code": code} if code else {})}, "status": status}

    text = {"content": FULL}
    slow = {"chunkSize": 5}  # 8 chunks for FULL
    return [
        Mode("aimock-healthy", "no fault", fixtures=({"response": text},), expect="primary", cool="no"),
        Mode("aimock-500", "every request: a 500 fixture",
             fixtures=({"response": error(500, "Internal server error", "server_error")},)),
        Mode("aimock-400-no-tools", "chat requests: 400 \"…does not support tools\"",
             fixtures=({"match": LUKA, "response": error(400, "registry.ollama.ai/library/llama3.2 does not support "
                                                              "tools", "invalid_request_error")},), cool="no"),
        Mode("aimock-drop", "chaos dropRate 1 (a 500)", fixtures=({"response": text, "chaos": {"dropRate": 1}},)),
        Mode("aimock-ratelimit", "chaos rateLimitRate 1 (429 + Retry-After)",
             fixtures=({"response": text, "chaos": {"rateLimitRate": 1}},)),
        Mode("aimock-malformed", "chaos malformedRate 1 (a body that is not JSON)",
             fixtures=({"response": text, "chaos": {"malformedRate": 1}},)),
        Mode("aimock-disconnect", "chaos disconnectRate 1 (the connection destroyed)",
             fixtures=({"response": text, "chaos": {"disconnectRate": 1}},)),
        Mode("aimock-latency-10s", "chaos latencyMs 10000 (timeout 5 s)",
             fixtures=({"response": text, "chaos": {"latencyMs": 10000}},)),
        Mode("aimock-truncate-2", "chat streams: truncateAfterChunks 2",
             fixtures=({"match": LUKA, "response": text, "truncateAfterChunks": 2, **slow},)),
        Mode("aimock-disconnect-300ms", "chat streams: 100 ms a chunk, disconnectAfterMs 300",
             fixtures=({"match": LUKA, "response": text, "disconnectAfterMs": 300, "latency": 100, **slow},)),
        Mode("aimock-chunks-2500ms", "chat streams: 2.5 s between chunks (≈20 s a reply, timeout 5 s)",
             fixtures=({"match": LUKA, "response": text, "latency": 2500, **slow},)),
        Mode("aimock-finish-length", "chat: \"Hello! This is a mock\", finishReason length",
             fixtures=({"match": LUKA, "response": {"content": "Hello! This is a mock", "finishReason": "length"}},),
             expect="cut-off", cool="no"),
        Mode("aimock-content-filter", "chat: empty, finishReason content_filter",
             fixtures=({"match": LUKA, "response": {"content": "", "finishReason": "content_filter"}},),
             expect="refusal", cool="no"),
    ]


AIMOCK_MODES = _aimock_modes()


def aimock_fixtures(modes: list[Mode]) -> dict[str, Any]:
    """One fixture file for every aimock mode: each mode's fixtures answer only its own messages."""
    entries = []
    for mode in modes:
        for fixture in mode.fixtures:
            match = {**fixture.get("match", {}), "userMessage": f"in mode {mode.name}."}
            entries.append({**fixture, "match": match})
    entries.append({"match": {"userMessage": "in mode "}, "response": {"content": FULL}})  # thread names etc.
    return {"fixtures": entries}


# --------------------------------------------------------------------------- llmock


class MockServer:
    """A fault server in its own process on a free port (`serve`); per mode, the base does nothing."""

    name = "server"

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def serve(self, argv: list[str]) -> None:
        log = (self.workdir / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start; see {self.workdir / self.name}.log")

    def ensure(self, flags: tuple[str, ...]) -> None:
        """Serving with these server flags, nothing queued."""

    def queue(self, behaviors: tuple[dict[str, Any], ...]) -> None:
        """Script the next requests."""

    def reset(self) -> None:
        """Forget what was scripted."""

    def requests(self) -> list[dict[str, Any]]:
        """The chat requests served since the last `ensure`, if the server tells."""
        return []

    def stop(self) -> None:
        terminate(self.process)
        self.process = None


class LLMock(MockServer):
    """`llmock serve` (PyPI); restarted when the server flags change."""

    name = "llmock"

    def __init__(self, executable: str, workdir: Path):
        super().__init__(workdir)
        self.executable = executable
        self.flags: tuple[str, ...] | None = None

    def ensure(self, flags: tuple[str, ...]) -> None:
        if self.process is not None and self.process.poll() is None and self.flags == flags:
            self.reset()
            return
        self.stop()
        self.flags = flags
        self.serve([self.executable, "serve", "--port", str(self.port), "--tool-mode", "off", "--response-style",
                    "hello", "--log-level", "warning", *flags])

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def queue(self, behaviors: tuple[dict[str, Any], ...]) -> None:
        if behaviors:
            self._post("/_llmock/scenario", {"behaviors": list(behaviors)})

    def reset(self) -> None:
        self._post("/_llmock/reset", {})

    def requests(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/_llmock/requests", timeout=10) as response:
            return json.loads(response.read())["requests"]


class AIMock(MockServer):
    """`aimock` (npm `@copilotkit/aimock`, its `llmock` bin), serving every aimock mode at once."""

    name = "aimock"

    def __init__(self, cli: str, workdir: Path, modes: list[Mode]):
        super().__init__(workdir)
        fixtures = workdir / "aimock-fixtures.json"
        fixtures.write_text(json.dumps(aimock_fixtures(modes), indent=1))
        self.serve(["node", cli, "--port", str(self.port), "--fixtures", str(fixtures), "--log-level", "warn"])


# --------------------------------------------------------------------------- one mode


@dataclass
class Message:
    outcome: str
    seconds: float | None
    text: str
    name: str | None = None
    name_before_answer: bool | None = None
    primary_drafts: int = 0
    """Draft frames that showed the primary's text (a restart the user saw)."""


@dataclass
class Result:
    mode: str
    label: str
    messages: list[Message] = field(default_factory=list)
    cooldowns: list[str] = field(default_factory=list)
    recoveries: int = 0
    alerts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    tracebacks: int = 0
    primary_requests: int = 0
    primary_faults: list[str] = field(default_factory=list)
    fallback_requests: int = 0
    log: str = ""


def classify(text: str) -> str:
    if text == FULL:
        return "primary"
    if text == FALLBACK_ANSWER:
        return "fallback"
    if text == APOLOGY:
        return "apology"
    if text == REFUSED:
        return "refusal"
    if CUT_MARK in text:
        return "cut-off"
    if text and FULL.startswith(text.strip()):
        return "partial as complete"
    return "other"


def alert_kind(text: str) -> str:
    first = text.split("\n", 1)[0]
    for pattern, label in ((r"^🔴 LLM provider (\w+) is down", "down {}"), (r"^🟢 LLM provider (\w+) is back", "back {}"),
                           (r"^⚠️ LLM provider (\w+) refuses every request", "rejects {}"),
                           (r"^⚠️ (\w+) can't answer", "standby-failed {}"), (r"^🟢 (\w+) answers again", "ready {}")):
        if m := re.match(pattern, first):
            return label.format(m.group(1))
    return "all-failed" if first.startswith("❌ All LLM providers failed") else first[:40]


async def run_mode(mode: Mode, index: int, args: argparse.Namespace, fake: FakeTelegram, llmock: MockServer,
                   fallback: FakeLLMProcess, redis_url: str, workdir: Path) -> Result:
    user = FIRST_USER + index
    result = Result(mode.name, args.label)
    llmock.ensure(mode.server)
    llmock.queue(mode.behaviors)
    fallback.control(mode=mode.fallback, reset=True)
    settings: dict[str, Any] = {"OLLAMA_TIMEOUT": PROVIDER_TIMEOUT, "OPENAI_TIMEOUT": PROVIDER_TIMEOUT,
                                "LLM_CONNECT_TIMEOUT": 1, "LOG_LEVEL": "INFO"}
    settings.update(kv.split("=", 1) for kv in args.env)
    env = bot_env(fake, _Primary(llmock.url), fallback, redis_url=redis_url, admin=ADMIN, openai_key=OPENAI_KEY,
                  **settings)
    admin_mark = fake.mark()
    log_name = f"bot-{args.label}-{index:02d}.log"
    bot = await _start_bot(env, args, workdir, log_name)
    try:
        try:
            await fake.wait_polling(timeout=60, after=admin_mark)
        except TimeoutError as error:
            raise RuntimeError(f"the bot did not start polling: {error}\n{bot.report()}") from None
        for number in range(args.messages):
            if number == 1 and mode.later is not None:
                llmock.reset()
                llmock.queue(mode.later[0])
                fallback.control(mode=mode.later[1])
            result.messages.append(await _ask(fake, user, f"question {number + 1} in mode {mode.name}.", args))
            if number + 1 < args.messages:
                await asyncio.sleep(args.gap)
        await asyncio.sleep(1.0)
        help_mark = fake.mark()  # a round trip: an alert sent in the background has arrived by its end
        fake.send_message("/help", user_id=user)
        try:
            await fake.wait_for("sendMessage", lambda c: c.params.get("chat_id") == user, timeout=30, after=help_mark)
        except TimeoutError:
            pass
        await asyncio.sleep(0.5)
    finally:
        await bot.stop(grace=5)
    result.alerts = [alert_kind(c.params.get("text", "")) for c in fake.calls[admin_mark:]
                     if c.method == "sendMessage" and c.ok and c.params.get("chat_id") == ADMIN]
    _read_log(result, bot.log())
    result.log = log_name
    journal = llmock.requests()
    chat_paths = [r for r in journal if r.get("path", "").endswith("/chat/completions")]
    result.primary_requests = len(chat_paths)
    result.primary_faults = [r["fault"] for r in chat_paths if r.get("fault")]
    result.fallback_requests = fallback.count()
    return result


@dataclass
class _Primary:
    url: str

    @property
    def v1_url(self) -> str:
        return self.url + "/v1"


async def _start_bot(env: dict[str, str], args: argparse.Namespace, workdir: Path, log_name: str) -> BotProcess:
    log_path = workdir / log_name
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            args.bot_python, "-m", "luka_bot", cwd=args.bot_dir, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
    return BotProcess(process, log_path)


async def _ask(fake: FakeTelegram, user: int, text: str, args: argparse.Namespace) -> Message:
    mark = fake.mark()
    drafts_before = len(fake.draft_frames(user))
    sent = time.time()
    fake.send_message(text, user_id=user)

    def answer(call: Call) -> bool:
        return call.ok and call.params.get("chat_id") == user and not call.params.get("text", "").startswith("🧵 ")

    try:
        reply = await fake.wait_for("sendMessage", answer, timeout=args.wait, after=mark)
    except TimeoutError:
        return Message("nothing", None, "")
    names = [c for c in fake.calls[mark:] if c.method == "sendMessage" and c.ok and c.params.get("chat_id") == user
             and c.params.get("text", "").startswith("🧵 ")]
    body = reply.params.get("text", "")
    primary_drafts = sum(1 for d in fake.draft_frames(user)[drafts_before:] if d.get("text", "").startswith("Hello"))
    return Message(classify(body), round(reply.at - sent, 2), body[:120],
                   names[0].params["text"][2:] if names else None,
                   (names[0].index < reply.index) if names else None, primary_drafts)


_COOLDOWN = re.compile(r"Provider (\w+)(/\S+)? failed: (.*) \(cooldown: (\d+)s")


def _read_log(result: Result, log: str) -> None:
    for line in log.splitlines():
        if m := _COOLDOWN.search(line):
            provider = m.group(1) + (m.group(2) or "")
            result.cooldowns.append(f"{provider} {m.group(4)}s ({m.group(3)[:60]})")
        if "recovered after" in line or "marked healthy" in line:
            result.recoveries += 1
        if re.match(r"^\S+ \S+ ERROR ", line):
            result.errors.append(line.split(" ERROR ", 1)[1][:200])
    result.tracebacks = log.count("Traceback (most recent call last)")


# --------------------------------------------------------------------------- the table


def flags(mode: Mode, r: dict[str, Any]) -> list[str]:
    """Where an AFTER result breaks DESIGN.md's rules (a healthy fallback exists unless the mode breaks it)."""
    out = []
    expected = mode.expect.split(",")
    for number, message in enumerate(r["messages"]):
        want = expected[min(number, len(expected) - 1)]
        got = message["outcome"]
        if want != "any" and got != want:
            out.append(f"msg {number + 1}: {got}, expected {want}")
        elif want == "any" and got in ("apology", "nothing", "partial as complete", "other"):
            out.append(f"msg {number + 1}: {got}")
    ollama_cooled = [c for c in r["cooldowns"] if c.startswith("ollama")]
    if mode.cool == "no" and ollama_cooled:
        out.append("primary cooled, expected not")
    if mode.cool == "yes" and not ollama_cooled:
        out.append("primary not cooled")
    if r["tracebacks"]:
        out.append(f"{r['tracebacks']} traceback(s)")
    downs = sum(a.startswith("down ollama") for a in r["alerts"])
    backs = sum(a.startswith("back ollama") for a in r["alerts"])
    if mode.later is None and (downs >= 2 or (downs and backs and downs + backs >= 3)):  # else the fault changed
        out.append(f"alerts flap ({downs} down, {backs} back)")
    first = r["messages"][0] if r["messages"] else None
    if first and first["outcome"] == mode.expect.split(",")[0] == "primary" and (first["seconds"] or 0) > 3.5:
        out.append(f"answer after {first['seconds']} s")
    return out


def _cell_outcome(r: dict[str, Any]) -> str:
    """e.g. "fallback ×3 (0.1/0.0/0.0 s)"; `*`: a draft showed the primary's text before that answer."""
    outcomes = [m["outcome"] + ("*" if m["primary_drafts"] and m["outcome"] != "primary" else "")
                for m in r["messages"]]
    times = "/".join("—" if m["seconds"] is None else f"{m['seconds']:.1f}" for m in r["messages"])
    if len(set(outcomes)) == 1:
        return f"{outcomes[0]} ×{len(outcomes)} ({times} s)"
    return f"{' · '.join(outcomes)} ({times} s)"


def _cooled(r: dict[str, Any]) -> str:
    ollama = [c.split(" ", 2)[1] for c in r["cooldowns"] if c.startswith("ollama")]
    if not ollama:
        return "no"
    distinct = sorted(set(ollama), key=ollama.index)
    return (f"{len(ollama)}× " if len(ollama) > 1 else "") + ", ".join(distinct)


def _alerts(r: dict[str, Any]) -> str:
    short = [a.replace(" ollama", "").replace(" openai", "(openai)") for a in r["alerts"]]
    return ", ".join(short) if short else "—"


def _noise(r: dict[str, Any]) -> str:
    return f"{len(r['errors'])}/{r['tracebacks']}"


def _load(path: Path) -> dict[str, dict[str, Any]]:
    return {} if str(path) == "-" else {r["mode"]: r for r in json.loads(path.read_text())["results"]}


def table(before_path: Path, after_path: Path) -> str:
    """The markdown table of two runs (`-` for a run that was not made: aimock ran against AFTER only)."""
    before, after = _load(before_path), _load(after_path)
    header = ("| mode | what the server does | user saw, 3 messages: BEFORE | AFTER | primary cooled (before → after) "
              "| admin alerts (before → after) | ERROR lines / tracebacks | AFTER vs the rules |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for mode in MODES + AIMOCK_MODES:
        b, a = before.get(mode.name), after.get(mode.name)
        if a is None and b is None:
            continue
        na = "—"
        found = flags(mode, a) if a else []
        lines.append(" | ".join([
            f"| `{mode.name}`", mode.what,
            _cell_outcome(b) if b else na, _cell_outcome(a) if a else na,
            f"{_cooled(b) if b else na} → {_cooled(a) if a else na}",
            f"{_alerts(b) if b else na} → {_alerts(a) if a else na}",
            f"{_noise(b) if b else na} → {_noise(a) if a else na}",
            ("⚠ " + "; ".join(found)) if found else "ok",
        ]) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


async def main_async(args: argparse.Namespace) -> None:
    catalogue = AIMOCK_MODES if args.aimock else MODES
    modes = [m for m in catalogue if not args.only or m.name in args.only]
    workdir = Path(tempfile.mkdtemp(prefix=f"tpf-{args.label}-"))
    redis = RedisProcess().start()
    fallback = FakeLLMProcess("openai")
    llmock = AIMock(args.aimock, workdir, modes) if args.aimock else LLMock(args.llmock, workdir)
    fake = await FakeTelegram(token=TOKEN).start()
    fake.add_chat(ADMIN, first_name="Admin")
    results: list[Result] = []
    print(f"logs in {workdir}", flush=True)
    try:
        for index, mode in enumerate(modes):
            redis_flush(redis.port)
            started = time.monotonic()
            result = await run_mode(mode, index, args, fake, llmock, fallback, redis.url, workdir)
            results.append(result)
            outcome = " · ".join(f"{m.outcome} {m.seconds}" for m in result.messages)
            print(f"{mode.name:24} {outcome:60} cooled={len(result.cooldowns)} alerts={result.alerts} "
                  f"errors={len(result.errors)} tb={result.tracebacks} ({time.monotonic() - started:.0f}s)", flush=True)
            if args.json:
                _write(args, results, workdir)
    finally:
        await fake.stop()
        llmock.stop()
        fallback.stop()
        redis.stop()


def redis_flush(port: int) -> None:
    from tests.fakes.redis_server import redis_command
    redis_command(port, "FLUSHALL")


def _write(args: argparse.Namespace, results: list[Result], workdir: Path) -> None:
    payload = {"label": args.label, "bot_dir": str(args.bot_dir), "workdir": str(workdir),
               "commit": _commit(args.bot_dir), "settings": {"timeout": PROVIDER_TIMEOUT, "gap": args.gap,
                                                            "messages": args.messages, "env": args.env},
               "results": [asdict(r) for r in results]}
    Path(args.json).write_text(json.dumps(payload, indent=1, ensure_ascii=False))


def _commit(path: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--label", default="after")
    parser.add_argument("--bot-dir", type=Path, default=ROOT)
    parser.add_argument("--bot-python", default=sys.executable)
    parser.add_argument("--llmock", default=os.environ.get("LLMOCK") or shutil.which("llmock")
                        or "/tmp/llmock-venv/bin/llmock")
    parser.add_argument("--aimock", metavar="CLI_JS", help="run the aimock modes against this aimock `dist/cli.js`")
    parser.add_argument("--messages", type=int, default=3)
    parser.add_argument("--gap", type=float, default=6.0, help="seconds between two messages of a mode")
    parser.add_argument("--wait", type=float, default=75.0, help="seconds to wait for an answer")
    parser.add_argument("--env", nargs="*", default=[], help="more bot settings, NAME=VALUE")
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--json")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--table", nargs=2, type=Path, metavar=("BEFORE_JSON", "AFTER_JSON"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.list:
        for mode in MODES + AIMOCK_MODES:
            print(f"{mode.name:24} {mode.what}")
        return
    if args.table:
        print(table(*args.table))
        return
    exit_on_sigterm()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
