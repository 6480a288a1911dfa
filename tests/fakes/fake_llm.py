"""A fake OpenAI-compatible (and Ollama-ish) LLM server that fails on command.

Usage in an async test::

    async with FakeLLM("primary") as fake:
        client = openai.AsyncOpenAI(base_url=fake.v1_url, api_key="sk-test", max_retries=0)
        fake.mode = "http500"          # the next request gets a 500
        await fake.stop()              # "refuse": the port is closed -> ECONNREFUSED
        await fake.start(fake.port)    # recover on the same port

From sync code, a benchmark or to serve a bot in a subprocess, run it in a thread::

    handle = FakeLLM("primary").run_in_thread()
    handle.mode = "hang"; handle.count(); handle.stop()

Another process can steer it: ``POST /__control`` with JSON
``{"mode": ..., "latency": ..., "retry_after": ..., "reply": ..., "models": [...], "context_window": ...,
"overflow": ..., "reset": true}``
and ``GET /__control`` returns ``{"mode", "count", "requests", ...}``.

CLI (serves until killed, prints ``FAKE_LLM_READY <url>`` once listening)::

    python -m tests.fakes.fake_llm --port 8001 --name primary [--latency 0.2] [--mode ok]

Modes (``FakeLLM.mode``): see ``MODES``; besides the HTTP errors:

- ``hang``: accept, never answer; ``slow``: answer normally, but only after ``first_token_delay``
  seconds (non-streamed: the whole response; streamed: headers at once, the first chunk late);
- ``garbage``: a 200 whose body is not JSON; ``empty``: a well-formed 200 completion with empty
  content and no tool calls (streamed: role chunk, ``finish_reason: stop``, ``[DONE]``);
- ``cut_stream``: streamed, the role chunk and the first content chunk, then the connection is
  dropped (chunked encoding left unfinished); non-streamed, half of a ``Content-Length`` body;
- ``truncated_stream``: streamed, the content chunks, then the response ends *cleanly* (valid
  chunked terminator) with no ``finish_reason`` and no ``[DONE]``; non-streamed, the first half of
  the JSON body, ended cleanly (a body that simply stops early);
- ``stall_stream``: streamed, the role chunk and the first content chunk, then silence for
  ``first_token_delay`` seconds, then the rest (a generation that stalls half-way); non-streamed, as ``ok``;
- ``malformed_chunk``: streamed, the first content chunk, then one event whose JSON is cut in half,
  then the rest (a corrupted chunk mid-answer); non-streamed, as ``ok``.

``affects`` narrows a mode to some chat requests (``None``: all): the others are answered as in
``ok``, as llmock's ``match`` does: ``affects=streamed`` breaks only streams (a proxy that mangles
server-sent events while short calls pass), ``affects=offers_tools`` only requests that offer tools
(Ollama's 400 "model does not support tools" for a model pulled without them).

Context window (``context_window``: tokens as this fake counts them, the UTF-8 bytes of the request's
``messages`` and ``tools`` as JSON over 4, about what real tokenizers give for English): a prompt
beyond it gets what ``overflow`` says, whatever the mode:

- ``openai`` (default), ``vllm``, ``llamacpp``, ``lmstudio``: HTTP 400 with that server's own error
  body (``context_length_exceeded``; "maximum context length is N tokens"; ``exceed_context_size_error``
  with ``n_ctx``; "greater than the context length (n_keep: M >= n_ctx: N)");
- ``truncate``: Ollama's way, silent: the oldest messages (the system prompt first) are dropped, then
  the front of the first one left, until the prompt fits; the answer is as usual.
  ``truncated`` counts the requests cut, and each cut request's body gets ``_truncated_tokens``.

There is no "refuse" mode: call ``stop()``
to close the listening socket (connects then fail with ECONNREFUSED) and
``start(port)`` to come back on the same port.  ``content_filter`` only affects
chat completions; the health endpoints (``GET /v1/models``, ``GET /api/tags``)
answer normally in that mode but obey every other mode.

Structured output: when ``reply`` is a JSON object string and the request offers a
tool named ``final_result*`` (pydantic-ai's tool output mode), the answer is a
tool call to that tool with ``reply`` as arguments (streaming too). For
``response_format`` json_schema requests the reply is returned as plain content,
which is exactly what a native structured-output client expects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, TypeVar

from aiohttp import web

MODES: Final = (
    "ok",
    "hang",
    "http500",
    "http429",
    "http401",
    "http403",
    "http404",
    "http400",
    "garbage",
    "cut_stream",
    "content_filter",
    "http408",
    "http409",
    "http503",
    "empty",
    "truncated_stream",
    "slow",
    "stall_stream",
    "malformed_chunk",
)

GARBAGE_BODY: Final = "not json at all {{{"
HOST: Final = "127.0.0.1"

_ERRORS: Final[dict[str, tuple[int, str, str, str | None]]] = {
    # mode: (status, message, type, code)
    "http500": (500, "Internal server error", "server_error", None),
    "http429": (429, "Rate limit reached", "rate_limit_exceeded", "rate_limit_exceeded"),
    "http401": (
        401,
        "Incorrect API key provided: sk-te*****cret.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    "http403": (403, "You are not allowed to access this resource.", "permission_error", None),
    "http400": (400, "Invalid request: messages too long", "invalid_request_error", None),
    "http408": (408, "Request timed out.", "timeout", None),
    "http409": (409, "The engine is currently overloaded (conflict), please retry.", "conflict", None),
    "http503": (503, "The server is overloaded or not ready yet.", "server_error", None),
    "content_filter": (
        400,
        "The response was filtered due to the prompt triggering content management policy.",
        "invalid_request_error",
        "content_filter",
    ),
}

_SETTINGS: Final = ("latency", "retry_after", "reply", "models", "first_token_delay", "context_window", "overflow")

OVERFLOWS: Final = ("openai", "vllm", "llamacpp", "lmstudio", "truncate")
"""What a prompt beyond ``context_window`` gets: a server's 400, or Ollama's silent truncation."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


def streamed(body: dict[str, Any]) -> bool:
    """The request asks for a streamed answer."""
    return bool(body.get("stream"))


def offers_tools(body: dict[str, Any]) -> bool:
    """The request offers the model tools."""
    return bool(body.get("tools"))


def error_body(message: str, type_: str, code: str | None) -> dict[str, Any]:
    """An error payload in OpenAI's format."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def prompt_tokens(messages: Any, tools: Any = None) -> int:
    """This fake's token count: the UTF-8 bytes of the messages (and tools) as JSON, over 4."""
    return len(json.dumps([messages, tools], ensure_ascii=False).encode()) // 4


def context_overflow_body(style: str, window: int, tokens: int) -> dict[str, Any]:
    """The 400 body each server sends for a prompt of ``tokens`` beyond its ``window`` (their own wording)."""
    if style == "vllm":
        message = (f"This model's maximum context length is {window} tokens. However, your request has {tokens} "
                   "input tokens. Please reduce the length of the input messages. None")
        return {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}
    if style == "llamacpp":
        message = f"request ({tokens} tokens) exceeds the available context size ({window} tokens), try increasing it"
        return {"error": {"code": 400, "message": message, "type": "exceed_context_size_error",
                          "n_prompt_tokens": tokens, "n_ctx": window}}
    if style == "lmstudio":
        return {"error": f"The number of tokens to keep from the initial prompt is greater than the context length "
                         f"(n_keep: {tokens} >= n_ctx: {window}). Try to load the model with a larger context length, "
                         "or provide a shorter input."}
    message = (f"This model's maximum context length is {window} tokens. However, your messages resulted in "
               f"{tokens} tokens. Please reduce the length of the messages.")
    return {"error": {"message": message, "type": "invalid_request_error", "param": "messages",
                      "code": "context_length_exceeded"}}


def truncate_front(messages: list[Any], window: int) -> tuple[list[Any], int]:
    """Ollama's silent truncation: drop from the front until ``prompt_tokens`` fits; (kept, tokens cut)."""
    kept = [dict(m) if isinstance(m, dict) else m for m in messages]
    before = prompt_tokens(kept)
    while len(kept) > 1 and prompt_tokens(kept) > window:
        kept.pop(0)
    last = kept[0] if kept else None
    if isinstance(last, dict) and isinstance(last.get("content"), str) and prompt_tokens(kept) > window:
        excess_bytes = (prompt_tokens(kept) - window) * 4 + 4
        content = last["content"].encode()
        last["content"] = content[excess_bytes:].decode(errors="ignore")
    return kept, before - prompt_tokens(kept)


def model_not_found_body(model: str) -> dict[str, Any]:
    """OpenAI's 404 body for an unknown model."""
    message = f"The model `{model}` does not exist or you do not have access to it."
    return error_body(message, "invalid_request_error", "model_not_found")


def split_text(text: str, parts: int = 3) -> list[str]:
    """Split ``text`` into at least ``parts`` pieces (some may be empty for short texts)."""
    size = max(1, -(-len(text) // parts))
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    return pieces + [""] * (parts - len(pieces))


def _word_count(value: Any) -> int:
    """A rough token count for usage numbers."""
    text = value if isinstance(value, str) else json.dumps(value)
    return len(text.split())


def _final_result_tool(body: dict[str, Any]) -> str | None:
    """Name of a ``final_result*`` function tool offered in the request, if any."""
    for tool in body.get("tools") or []:
        name = (tool.get("function") or {}).get("name", "") if isinstance(tool, dict) else ""
        if isinstance(name, str) and name.startswith("final_result"):
            return name
    return None


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


class FakeLLM:
    """An aiohttp server speaking the OpenAI chat-completions protocol, with failure modes."""

    def __init__(
        self,
        name: str = "fake",
        *,
        latency: float = 0.0,
        reply: str | None = None,
        models: list[str] | None = None,
    ) -> None:
        self.name = name
        self.latency = latency
        self.reply = reply if reply is not None else f"answer from {name}"
        self.models = models
        self.mode = "ok"
        self.retry_after: float | None = None
        self.first_token_delay: float = 1.0
        self.context_window: int | None = None
        self.overflow = "openai"
        self.truncated = 0
        self.finish_reason = "stop"
        """How a text answer ends: "stop", or "length" (cut at max_tokens), "content_filter" (stopped by a filter)."""
        self.requests: list[dict[str, Any]] = []
        self.affects: Callable[[dict[str, Any]], bool] | None = None
        """Which chat requests ``mode`` applies to (``None``: all); the others are answered as in "ok"."""
        self.hold_request: Callable[[dict[str, Any]], Awaitable[None] | None] | None = None
        """Called with each chat request's body before it is answered; awaited if it returns an awaitable
        (a test holds back one kind of request, e.g. thread names, while the others go on)."""
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._inflight: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def v1_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self, port: int = 0) -> FakeLLM:
        """Bind to ``port`` (0 = a free one) and serve. Call again after ``stop()`` to recover."""
        if self._runner is not None:
            raise RuntimeError(f"FakeLLM {self.name!r} is already running on {self.url}")
        runner = web.AppRunner(
            self._build_app(), handle_signals=False, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, HOST, port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Close the listening socket and all connections; later connects get ECONNREFUSED."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for task in list(self._inflight):
            task.cancel()
        await runner.cleanup()

    async def __aenter__(self) -> FakeLLM:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def run_in_thread(self, port: int = 0) -> FakeLLMThread:
        """Serve this fake from a background thread with its own event loop."""
        return FakeLLMThread(self, port=port).start()

    # ------------------------------------------------------------------ control

    def count(self) -> int:
        """Number of chat-completion requests received, failed ones included."""
        return len(self.requests)

    def reset_counts(self) -> None:
        """Forget the requests received, the truncations and the in-flight high-water mark."""
        self.requests.clear()
        self.truncated = 0
        self.max_in_flight = self.in_flight

    def set_mode(self, mode: str, **kw: Any) -> None:
        """Set ``mode`` and optionally any of ``_SETTINGS`` (``latency``, ``context_window``, ``overflow``, …)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        if kw.get("overflow", self.overflow) not in OVERFLOWS:
            raise ValueError(f"unknown overflow {kw['overflow']!r}; expected one of {OVERFLOWS}")
        for key, value in kw.items():
            if key not in _SETTINGS:
                raise TypeError(f"unknown setting {key!r}")
            setattr(self, key, value)
        self.mode = mode

    def state(self) -> dict[str, Any]:
        """The fake's settings and received requests, as served by ``GET /__control``."""
        return {
            "name": self.name,
            "mode": self.mode,
            "latency": self.latency,
            "retry_after": self.retry_after,
            "first_token_delay": self.first_token_delay,
            "reply": self.reply,
            "models": self.models,
            "context_window": self.context_window,
            "overflow": self.overflow,
            "truncated": self.truncated,
            "count": self.count(),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "requests": list(self.requests),
        }

    # ------------------------------------------------------------------ app

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._track_inflight])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/models", self._models)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_get("/__control", self._control_get)
        app.router.add_post("/__control", self._control_post)
        return app

    @web.middleware
    async def _track_inflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Remember running handlers so ``stop()`` can cancel hanging ones at once."""
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            return await handler(request)
        finally:
            self._inflight.discard(task)

    async def _control_get(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _control_post(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            if data.pop("reset", False):
                self.reset_counts()
            self.set_mode(data.pop("mode", self.mode), **data)
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.state())

    # ------------------------------------------------------------------ health endpoints

    async def _models(self, request: web.Request) -> web.StreamResponse:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self._model_ids()]
        return await self._health(request, {"object": "list", "data": data})

    async def _tags(self, request: web.Request) -> web.StreamResponse:
        return await self._health(request, {"models": [{"name": m, "model": m} for m in self._model_ids()]})

    def _model_ids(self) -> list[str]:
        return list(self.models) if self.models else [self.name]

    async def _health(self, request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        mode = "ok" if self.mode in ("content_filter", "empty") else self.mode
        failure = await self._prelude(mode, model=self.name)
        if failure is not None:
            return failure
        if mode == "slow":
            await asyncio.sleep(self.first_token_delay)
        if mode == "truncated_stream":
            return await self._truncated_body(request, json.dumps(payload).encode())
        if mode == "cut_stream":
            return await self._cut_body(request, json.dumps(payload).encode())
        return web.json_response(payload)

    # ------------------------------------------------------------------ chat completions

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        """A chat completion; ``in_flight``/``max_in_flight`` count the ones being answered at once."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._chat_completion(request)
        finally:
            self.in_flight -= 1

    async def _chat_completion(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_body(request)
        self.requests.append(body)
        if self.hold_request is not None and (held := self.hold_request(body)) is not None:
            await held
        mode = self.mode if self.affects is None or self.affects(body) else "ok"
        model = str(body.get("model", self.name))
        stream = bool(body.get("stream"))
        failure = await self._prelude(mode, model=model, stream=stream)
        if failure is not None:
            return failure
        if self.models is not None and model not in self.models:
            return web.json_response(model_not_found_body(model), status=404)
        overflow = self._overflow(body)
        if overflow is not None:
            return overflow
        if stream:
            return await self._stream(request, body, model, mode)
        if mode == "slow":
            await asyncio.sleep(self.first_token_delay)
        payload = json.dumps(self._completion(body, model, empty=mode == "empty")).encode()
        if mode == "cut_stream":
            return await self._cut_body(request, payload)
        if mode == "truncated_stream":
            return await self._truncated_body(request, payload)
        return web.Response(body=payload, content_type="application/json")

    def _overflow(self, body: dict[str, Any]) -> web.Response | None:
        """A prompt beyond ``context_window``: the server's 400, or (``truncate``) cut silently; None: it fits."""
        window = self.context_window
        tokens = prompt_tokens(body.get("messages"), body.get("tools"))
        if window is None or tokens <= window:
            return None
        if self.overflow != "truncate":
            return web.json_response(context_overflow_body(self.overflow, window, tokens), status=400)
        tools = prompt_tokens(None, body.get("tools"))
        body["messages"], body["_truncated_tokens"] = truncate_front(list(body.get("messages") or []),
                                                                     max(1, window - tools))
        self.truncated += 1
        return None

    @staticmethod
    async def _read_body(request: web.Request) -> dict[str, Any]:
        raw = await request.text()
        try:
            parsed = json.loads(raw)
        except ValueError:
            return {"_raw": raw}
        return parsed if isinstance(parsed, dict) else {"_raw": parsed}

    async def _prelude(self, mode: str, *, model: str, stream: bool = False) -> web.StreamResponse | None:
        """Apply latency and the modes shared by all endpoints; ``None`` means: go on answering."""
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if mode == "hang":
            await self._hang()
        if mode == "garbage" and not stream:
            return web.Response(text=GARBAGE_BODY, content_type="application/json")
        if mode == "http404":
            return web.json_response(model_not_found_body(model), status=404)
        if mode in _ERRORS:
            return self._error_response(mode)
        return None

    def _error_response(self, mode: str) -> web.Response:
        status, message, type_, code = _ERRORS[mode]
        headers: dict[str, str] = {}
        if mode == "http429" and self.retry_after is not None:
            headers["Retry-After"] = str(math.ceil(self.retry_after))
        return web.json_response(error_body(message, type_, code), status=status, headers=headers)

    @staticmethod
    async def _hang() -> None:
        """Never answer; aiohttp cancels us when the client leaves, ``stop()`` when the server stops."""
        await asyncio.get_running_loop().create_future()

    @staticmethod
    async def _cut_body(request: web.Request, payload: bytes) -> web.StreamResponse:
        """Announce the full length, send half of the body, then close the connection."""
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        return await FakeLLM._drop_connection(request, response)

    @staticmethod
    async def _truncated_body(request: web.Request, payload: bytes) -> web.StreamResponse:
        """Send the first half of the body with chunked encoding, then end the response cleanly."""
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        await response.write_eof()
        return response

    @staticmethod
    async def _drop_connection(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """Close the connection after the bytes written so far, leaving the body incomplete."""
        if request.transport is not None:
            request.transport.close()  # flushes what was written, then FIN; no terminating chunk
        await FakeLLM._hang()  # cancelled by aiohttp once the connection is lost
        return response

    def _completion(self, body: dict[str, Any], model: str, *, empty: bool = False) -> dict[str, Any]:
        """A non-streaming ``chat.completion`` object (``empty``: no content, no tool calls)."""
        message: dict[str, Any] = {"role": "assistant", "content": "" if empty else self.reply}
        finish_reason = self.finish_reason
        tool = None if empty else self._structured_tool(body)
        if tool is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [self._tool_call(tool, self.reply)]}
            finish_reason = "tool_calls"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": self._usage(body),
        }

    def _structured_tool(self, body: dict[str, Any]) -> str | None:
        """The ``final_result*`` tool to call, when the reply is a JSON object."""
        tool = _final_result_tool(body)
        return tool if tool is not None and _is_json_object(self.reply) else None

    @staticmethod
    def _tool_call(name: str, arguments: str) -> dict[str, Any]:
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}

    def _usage(self, body: dict[str, Any]) -> dict[str, int]:
        prompt = _word_count(body.get("messages", []))
        completion = _word_count(self.reply)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    # ------------------------------------------------------------------ streaming

    async def _stream(self, request: web.Request, body: dict[str, Any], model: str, mode: str) -> web.StreamResponse:
        """Answer as server-sent events; see the module docstring for what each mode sends."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        if mode == "garbage":
            await response.write(f"data: {GARBAGE_BODY}\n\n".encode())
            await response.write_eof()
            return response
        if mode == "slow":
            await asyncio.sleep(self.first_token_delay)
        chunks = self._stream_chunks(body, model, empty=mode == "empty")
        if mode == "truncated_stream":  # no finish_reason chunk, no usage chunk, no [DONE]
            chunks = [c for c in chunks if c.get("choices") and c["choices"][0]["finish_reason"] is None]
        for index, chunk in enumerate(chunks):
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if mode == "cut_stream" and index >= 1:  # role chunk + first content chunk
                return await self._drop_connection(request, response)
            if mode == "stall_stream" and index == 1:
                await asyncio.sleep(self.first_token_delay)
            if mode == "malformed_chunk" and index == 1:
                broken = json.dumps(chunks[2] if len(chunks) > 2 else chunk)
                await response.write(f"data: {broken[: len(broken) // 2]}\n\n".encode())
        if mode == "truncated_stream":
            await response.write_eof()
            return response
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _stream_chunks(self, body: dict[str, Any], model: str, *, empty: bool = False) -> list[dict[str, Any]]:
        """All ``chat.completion.chunk`` objects for the reply (role, deltas, finish, usage)."""
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            if include_usage:
                out["usage"] = None
            return out

        tool = None if empty else self._structured_tool(body)
        if empty:
            chunks = [chunk({"role": "assistant", "content": ""}), chunk({}, "stop")]
        elif tool is None:
            chunks = [chunk({"role": "assistant", "content": ""})]
            chunks += [chunk({"content": piece}) for piece in split_text(self.reply)]
            chunks.append(chunk({}, self.finish_reason))
        else:
            call = self._tool_call(tool, "")
            chunks = [chunk({"role": "assistant", "content": None, "tool_calls": [{"index": 0, **call}]})]
            chunks += [
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                for piece in split_text(self.reply)
            ]
            chunks.append(chunk({}, "tool_calls"))
        if include_usage:
            chunks.append({**base, "choices": [], "usage": self._usage(body)})
        return chunks


class FakeLLMThread:
    """Runs a ``FakeLLM`` in a daemon thread with its own event loop; steer it from any thread."""

    def __init__(self, fake: FakeLLM | None = None, *, port: int = 0) -> None:
        self.fake = fake if fake is not None else FakeLLM()
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeLLMThread:
        """Start the thread and wait until the server is listening."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=f"FakeLLM-{self.fake.name}", daemon=True)
        self._thread.start()
        try:
            self._call(self.fake.start(self._port))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._call(self.fake.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
        self._loop = self._thread = None

    def refuse(self) -> None:
        """Close the port (connects get ECONNREFUSED) but keep the thread."""
        self._call(self.fake.stop())

    def recover(self) -> None:
        """Listen again on the same port after ``refuse()``."""
        self._call(self.fake.start(self.fake.port))

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the server's loop and wait for its result."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("FakeLLMThread is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> FakeLLMThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Plain attribute delegation: simple assignments are atomic under the GIL.
    @property
    def url(self) -> str:
        return self.fake.url

    @property
    def v1_url(self) -> str:
        return self.fake.v1_url

    @property
    def port(self) -> int:
        return self.fake.port

    @property
    def mode(self) -> str:
        return self.fake.mode

    @mode.setter
    def mode(self, value: str) -> None:
        self.fake.set_mode(value)

    @property
    def latency(self) -> float:
        return self.fake.latency

    @latency.setter
    def latency(self, value: float) -> None:
        self.fake.latency = value

    @property
    def reply(self) -> str:
        return self.fake.reply

    @reply.setter
    def reply(self, value: str) -> None:
        self.fake.reply = value

    @property
    def retry_after(self) -> float | None:
        return self.fake.retry_after

    @retry_after.setter
    def retry_after(self, value: float | None) -> None:
        self.fake.retry_after = value

    @property
    def first_token_delay(self) -> float:
        return self.fake.first_token_delay

    @first_token_delay.setter
    def first_token_delay(self, value: float) -> None:
        self.fake.first_token_delay = value

    @property
    def context_window(self) -> int | None:
        return self.fake.context_window

    @context_window.setter
    def context_window(self, value: int | None) -> None:
        self.fake.context_window = value

    @property
    def truncated(self) -> int:
        return self.fake.truncated

    @property
    def requests(self) -> list[dict[str, Any]]:
        return list(self.fake.requests)

    def count(self) -> int:
        return self.fake.count()

    def reset_counts(self) -> None:
        self.fake.reset_counts()

    def set_mode(self, mode: str, **kw: Any) -> None:
        self.fake.set_mode(mode, **kw)


# ---------------------------------------------------------------------- CLI


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible LLM server for tests.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="fake")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--mode", default="ok", choices=MODES)
    parser.add_argument("--reply", default=None)
    parser.add_argument("--models", default=None, help="comma-separated list of served model ids")
    parser.add_argument("--retry-after", type=float, default=None)
    parser.add_argument("--first-token-delay", type=float, default=1.0, help="seconds, for --mode slow")
    parser.add_argument("--context-window", type=int, default=None, help="tokens (UTF-8 bytes / 4) it takes")
    parser.add_argument("--overflow", default="openai", choices=OVERFLOWS, help="what a longer prompt gets")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    models = args.models.split(",") if args.models else None
    fake = FakeLLM(args.name, latency=args.latency, reply=args.reply, models=models)
    fake.set_mode(args.mode, retry_after=args.retry_after, first_token_delay=args.first_token_delay,
                  context_window=args.context_window, overflow=args.overflow)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    async with fake:
        print(f"FAKE_LLM_READY {fake.url}", flush=True)
        await done.wait()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
