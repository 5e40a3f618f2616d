"""An OpenAI-compatible HTTP server with continuous batching (``vlcache-native serve``).

Needs the optional extra: ``pip install ".[server]"`` (Starlette, uvicorn, prometheus-client).

Endpoints: ``GET /health`` (503 until the model is loaded), ``GET /v1/models``,
``POST /v1/chat/completions`` (text and ``image_url`` parts: ``data:`` URLs, raw base64, or
``file://`` paths under ``allowed_media``), ``POST /v1/completions``, ``stream: true`` as
server-sent events ending with ``data: [DONE]``, ``GET /metrics`` (Prometheus). Beyond
OpenAI's fields a request may set ``kv_budget`` and ``kv_policy`` (VL-Cache), and every
response carries llama-server's ``timings``.

One scheduler thread owns every native call on sessions: between batched decode steps
(:meth:`Model.decode_batch` over all running sequences) it prefills one piece of one
admitted request's prompt into the request's own session (at most ``prefill_chunk``
positions of text, or one whole image), so that decoding goes on while long prompts come
in, and compresses the session's KV cache once the prompt is in when the request asked
for a budget. A request waits in the queue while ``n_parallel``
sequences run, or while the KV bytes the running sessions hold plus a new session's would
pass ``kv_memory`` (so compressed sequences make room for more). Each sequence's tokens are
exactly what :meth:`Model.generate` gives alone. A client that goes away mid-stream frees its
sequence at the next step.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import ContextFullError, InvalidArgumentError, VlcacheError

try:
    import prometheus_client as prom
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route
    from starlette.concurrency import run_in_threadpool
except ImportError as e:  # pragma: no cover - depends on the installed extra
    raise ImportError(f"the server needs the 'server' extra: pip install \"vlcache_native[server]\" ({e})") from None


class HTTPError(Exception):
    """An OpenAI-shaped error response."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


# ---------------------------------------------------------------------------------------
# request bodies

_NUMBER = (int, float)
_FIELDS = {  # field: (accepted types, what to say)
    "model": (str, "a string"), "max_tokens": (int, "an integer"), "max_completion_tokens": (int, "an integer"),
    "n_predict": (int, "an integer"), "temperature": (_NUMBER, "a number"), "top_p": (_NUMBER, "a number"),
    "top_k": (int, "an integer"), "min_p": (_NUMBER, "a number"), "seed": (int, "an integer"),
    "repeat_penalty": (_NUMBER, "a number"), "stream": (bool, "a boolean"), "stop": ((str, list), "a string or list"),
    "kv_budget": (_NUMBER, "a number"), "kv_policy": (str, "a string"), "stream_options": (dict, "an object"),
}


def _check_fields(body: dict) -> None:
    for name, (types, what) in _FIELDS.items():
        v = body.get(name)
        if v is None:
            continue
        allowed = types if isinstance(types, tuple) else (types,)
        if not isinstance(v, allowed) or (isinstance(v, bool) and bool not in allowed):  # bool is an int
            shown = json.dumps(v) if isinstance(v, bool) else type(v).__name__
            raise HTTPError(400, f"'{name}' must be {what}, got {shown}", param=name)
    stop = body.get("stop")
    if isinstance(stop, list) and not all(isinstance(s, str) for s in stop):
        raise HTTPError(400, "'stop' must be a string or a list of strings", param="stop")


def _gen_kwargs(body: dict, default_budget: float | None, default_policy: str) -> dict:
    def get(name, default):
        v = body.get(name)
        return default if v is None else v

    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", body.get("n_predict")))
    if max_tokens is None or max_tokens < 0:
        max_tokens = 256
    kw = dict(max_tokens=max_tokens, temperature=float(get("temperature", 0.0)), top_p=float(get("top_p", 1.0)),
              top_k=int(get("top_k", 0)), min_p=float(get("min_p", 0.0)),
              repeat_penalty=float(body.get("repeat_penalty") or 1.0),  # 0, like unset: no penalty
              seed=int(get("seed", 0)), stop=body.get("stop"))
    budget = body.get("kv_budget", default_budget)
    if budget is not None and not 0 < budget <= 1:
        raise HTTPError(400, f"kv_budget={budget} is out of range: expected 0 < kv_budget <= 1 (1 = the full cache)",
                        param="kv_budget")
    if budget is not None and budget < 1:
        kw["kv_budget"] = float(budget)
        kw["kv_policy"] = body.get("kv_policy") or default_policy
    return kw


def _image_bytes(url: Any, allowed_media: str | None) -> bytes:
    """The bytes of one image_url: a data: URL, raw base64, or file:// under allowed_media."""
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str) or not url:
        raise HTTPError(400, "an image_url part needs a 'url' string", param="messages")
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        if ";base64" not in head:
            raise HTTPError(400, "image data URLs must be base64 (data:image/...;base64,...)", param="messages")
        url = data
    elif url.startswith("file://"):
        if allowed_media is None:
            raise HTTPError(400, "file:// images are off: start the server with --allowed-media DIR", param="messages")
        path = os.path.realpath(url[len("file://"):])
        root = os.path.realpath(allowed_media)
        if os.path.commonpath([path, root]) != root:
            raise HTTPError(400, f"file:// image outside the allowed folder: {url!r}", param="messages")
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise HTTPError(400, f"cannot read image {url!r}: {e.strerror}", param="messages") from None
    elif "://" in url:
        raise HTTPError(400, f"cannot fetch {url.split('://')[0]} URLs ({url[:60]!r}): send the image as a "
                        "data: URL or base64", param="messages")
    try:
        return base64.b64decode(url, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError(400, "an image is neither a data: URL, base64 nor an allowed file:// path",
                        param="messages") from None


def _messages(body: dict, allowed_media: str | None) -> list:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise HTTPError(400, "'messages' must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise HTTPError(400, f"message {i} must be an object", param="messages")
        content = m.get("content", "")
        if content is None:
            content = ""
        if isinstance(content, list):
            parts = []
            for p in content:
                if not isinstance(p, dict) or not isinstance(p.get("type"), str):
                    raise HTTPError(400, f"message {i}: each content part must be an object with a 'type'",
                                    param="messages")
                if p["type"] == "image_url":
                    parts.append({"type": "image", "image": _image_bytes(p.get("image_url"), allowed_media)})
                elif p["type"] == "text":
                    if not isinstance(p.get("text"), str):
                        raise HTTPError(400, f"message {i}: a text part needs a 'text' string", param="messages")
                    parts.append({"type": "text", "text": p["text"]})
                else:
                    raise HTTPError(400, f"message {i}: unknown content part type {p['type']!r}", param="messages")
            content = parts
        elif not isinstance(content, str):
            raise HTTPError(400, f"message {i}: 'content' must be a string or a list of parts", param="messages")
        out.append({"role": m.get("role"), "content": content})
    return out


# ---------------------------------------------------------------------------------------
# the scheduler

@dataclass
class Job:
    gen: Any                      # vlcache_native.model.Generation
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    cancelled: bool = False
    session: Any = None
    next_token: int | None = None

    def emit(self, item) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


class Scheduler:
    """Runs every queued generation, batching their decode steps (the module docstring)."""

    def __init__(self, model, n_parallel: int = 4, kv_memory: int | None = None, metrics: dict | None = None,
                 prefill_chunk: int = 256):
        self.model, self.n_parallel, self.kv_memory = model, max(1, int(n_parallel)), kv_memory
        self.prefill_chunk = max(1, int(prefill_chunk))
        self.queue: collections.deque[Job] = collections.deque()
        self.running: list[Job] = []
        self.prefilling: Job | None = None  # the request whose prompt goes in, a piece per step
        self.cv = threading.Condition()
        self.stopping = False
        self.metrics = metrics or {}
        self.fresh_kv_bytes: int | None = None  # what a new session holds before compression
        self.peak_kv_bytes = 0                  # the most the running sessions held together
        self.decode_s, self.decode_tokens = 0.0, 0  # time in batched decode steps, tokens they ran
        self.thread = threading.Thread(target=self._run, name="vlcache-scheduler", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.cv:
            if self.stopping:
                raise HTTPError(503, "the server is shutting down", type_="server_error")
            self.queue.append(job)
            self.cv.notify()

    def stop(self) -> None:
        with self.cv:
            self.stopping = True
            self.cv.notify()
        self.thread.join(timeout=30)

    def held_kv_bytes(self) -> int:
        jobs = self.running + ([self.prefilling] if self.prefilling is not None else [])
        return sum(j.session.stats()["kv_bytes"] for j in jobs if j.session is not None)

    def _fits(self) -> bool:
        if len(self.running) >= self.n_parallel:
            return False
        if self.kv_memory is None or not self.running:
            return True  # one sequence always runs, whatever the budget
        need = self.fresh_kv_bytes or 0
        return self.held_kv_bytes() + need <= self.kv_memory

    def _finish(self, job: Job, error: Exception | None = None) -> None:
        if job in self.running:
            self.running.remove(job)
        if error is not None:
            job.emit(("error", error))
        elif not job.cancelled:
            job.emit(("done", job.gen.finish(job.session)))
        if job.session is not None:
            job.session.close()  # its KV cache goes back now, not at garbage collection
            job.session = None
        self._gauge()

    def _gauge(self) -> None:
        held = self.held_kv_bytes()
        self.peak_kv_bytes = max(self.peak_kv_bytes, held)
        if self.metrics:
            self.metrics["running"].set(len(self.running))
            self.metrics["queued"].set(len(self.queue))
            self.metrics["kv"].set(held)

    def _emit_piece(self, job: Job) -> None:
        piece = job.gen.take()
        if piece:
            job.emit(("piece", piece))

    def _admit(self) -> None:
        """Prefills the next piece (at most prefill_chunk positions, or one image) of the
        request being admitted; starts on the oldest queued one (not cancelled) when none
        is and it fits. Once its prompt is in, the request joins the batched steps."""
        job = self.prefilling
        if job is None:
            with self.cv:
                while self.queue and self.queue[0].cancelled:
                    self.queue.popleft()
                if not self.queue or not self._fits():
                    return
                job = self.queue.popleft()
            try:
                job.session = self.model.session()
                if self.fresh_kv_bytes is None:
                    self.fresh_kv_bytes = job.session.stats()["kv_bytes"]
                job.gen.begin(job.session)
            except Exception as e:  # noqa: BLE001 - whatever it is, this request gets the error
                self._finish(job, e)
                return
            self.prefilling = job
        if job.cancelled:
            self.prefilling = None
            self._finish(job)
            return
        try:
            logits = job.gen.advance(self.prefill_chunk)
            if logits is None:
                return
            self.prefilling = None
            job.next_token = job.gen.push(logits)
        except Exception as e:  # noqa: BLE001
            self.prefilling = None
            self._finish(job, e)
            return
        self._emit_piece(job)
        if self.metrics:
            self.metrics["prompt_tokens"].inc(job.gen.stats.prompt_tokens)
        if job.next_token is None:
            self._finish(job)
        else:
            self.running.append(job)
        self._gauge()

    def _step(self) -> None:
        for job in [j for j in self.running if j.cancelled]:
            self._finish(job)
        if not self.running:
            return
        jobs = list(self.running)
        t0 = time.perf_counter()
        logits = self.model.decode_batch([j.session for j in jobs], [j.next_token for j in jobs])
        self.decode_s += time.perf_counter() - t0
        self.decode_tokens += len(jobs)
        for i, job in enumerate(jobs):
            job.next_token = job.gen.push(logits[i])
            self._emit_piece(job)
            if job.next_token is None:
                self._finish(job)
        if self.metrics:
            self.metrics["tokens"].inc(len(jobs))

    def _run(self) -> None:
        while True:
            with self.cv:
                while not self.stopping and not self.queue and not self.running and self.prefilling is None:
                    self.cv.wait()
                if self.stopping:
                    pending = list(self.queue) + list(self.running) + ([self.prefilling] if self.prefilling else [])
                    self.queue.clear()
                    break
            try:
                self._admit()
                self._step()
            except Exception as e:  # a bug, not bad input: fail the running requests, keep serving
                for job in list(self.running):
                    self._finish(job, e)
        for job in pending:
            job.emit(("error", HTTPError(503, "the server shut down before the request finished",
                                         type_="server_error")))
            if job.session is not None:
                job.session.close()
                job.session = None


# ---------------------------------------------------------------------------------------
# the application

class Server:
    """The ASGI app (``.app``) around one model; :func:`serve` runs it with uvicorn."""

    def __init__(self, model_path: str, mmproj: str | None = None, *, alias: str | None = None, n_ctx: int = 4096,
                 n_threads: int | None = None, n_parallel: int = 4, kv_budget: float | None = None,
                 kv_policy: str = "vl-cache", kv_memory_mib: float | None = None, allowed_media: str | None = None,
                 max_body_mib: float = 64.0, prefill_chunk: int = 256, use_mmap: bool = True,
                 load_now: bool = False):
        self.model_path, self.mmproj, self.use_mmap = model_path, mmproj, use_mmap
        self.alias = alias or os.path.splitext(os.path.basename(model_path))[0]
        self.n_ctx, self.n_threads, self.n_parallel = n_ctx, n_threads, n_parallel
        self.kv_budget, self.kv_policy = kv_budget, kv_policy
        self.kv_memory = int(kv_memory_mib * 2**20) if kv_memory_mib else None
        self.allowed_media, self.max_body = allowed_media, int(max_body_mib * 2**20)
        self.prefill_chunk = prefill_chunk
        self.model = None
        self.scheduler: Scheduler | None = None
        self.load_error: str | None = None
        self.created = int(time.time())
        self.registry = prom.CollectorRegistry()
        self.metrics = {
            "requests": prom.Counter("vlcache_requests", "HTTP completion requests", ["endpoint", "status"],
                                     registry=self.registry),
            "tokens": prom.Counter("vlcache_generated_tokens", "tokens decoded", registry=self.registry),
            "prompt_tokens": prom.Counter("vlcache_prompt_tokens", "prompt tokens prefilled", registry=self.registry),
            "running": prom.Gauge("vlcache_running_sequences", "sequences decoding", registry=self.registry),
            "queued": prom.Gauge("vlcache_queued_requests", "requests waiting", registry=self.registry),
            "kv": prom.Gauge("vlcache_kv_bytes", "KV bytes the running sessions hold", registry=self.registry),
        }
        routes = [Route("/health", self.health), Route("/v1/models", self.models),
                  Route("/v1/chat/completions", self.chat, methods=["POST"]),
                  Route("/v1/completions", self.completions, methods=["POST"]),
                  Route("/metrics", self.prometheus)]
        self.app = Starlette(routes=routes, lifespan=self._lifespan)
        if load_now:
            self._load()

    def _load(self) -> None:
        from .model import Model
        try:
            self.model = Model(self.model_path, self.mmproj, n_ctx=self.n_ctx, n_threads=self.n_threads,
                               use_mmap=self.use_mmap)
        except VlcacheError as e:
            self.load_error = str(e)
            return
        self.scheduler = Scheduler(self.model, self.n_parallel, self.kv_memory, self.metrics, self.prefill_chunk)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        if self.model is None and self.load_error is None:  # load in the background: /health says 503 meanwhile
            threading.Thread(target=self._load, name="vlcache-load", daemon=True).start()
        yield
        self.close()

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()

    # ---- endpoints

    async def health(self, request: Request) -> Response:
        if self.load_error:
            return JSONResponse({"status": "error", "error": self.load_error}, status_code=500)
        if self.scheduler is None:
            return JSONResponse({"status": "loading model"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": self.alias, "object": "model", "created": self.created, "owned_by": "vlcache-native"}]})

    async def prometheus(self, request: Request) -> Response:
        return Response(prom.generate_latest(self.registry), media_type=prom.CONTENT_TYPE_LATEST)

    async def chat(self, request: Request) -> Response:
        return await self._complete(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._complete(request, chat=False)

    async def _body(self, request: Request) -> dict:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > self.max_body:
            raise HTTPError(413, f"request body of {int(size)} bytes is over the limit of {self.max_body}")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > self.max_body:
                raise HTTPError(413, f"request body is over the limit of {self.max_body} bytes")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HTTPError(400, f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise HTTPError(400, "the request body must be a JSON object")
        return body

    async def _complete(self, request: Request, chat: bool) -> Response:
        endpoint = "chat" if chat else "completions"
        try:
            if self.scheduler is None:
                raise HTTPError(503, self.load_error or "the model is still loading", type_="server_error")
            body = await self._body(request)
            _check_fields(body)
            name = body.get("model")
            if name is not None and name not in (self.alias, os.path.basename(self.model_path)):
                raise HTTPError(404, f"model {name!r} not found: this server runs {self.alias!r}",
                                param="model", code="model_not_found")
            kw = _gen_kwargs(body, self.kv_budget, self.kv_policy)
            if chat:
                msgs = _messages(body, self.allowed_media)
                gen = await run_in_threadpool(self._chat_request, msgs, kw)  # images encoded here
            else:
                prompt = body.get("prompt")
                if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                    prompt = prompt[0]
                is_ids = (isinstance(prompt, list) and prompt
                          and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt))
                if not isinstance(prompt, str) and not is_ids:
                    raise HTTPError(400, "'prompt' must be a string or a list of token ids", param="prompt")
                gen = await run_in_threadpool(self.model.request, prompt, **kw)
        except HTTPError as e:
            self.metrics["requests"].labels(endpoint, str(e.status)).inc()
            return e.response()
        except ContextFullError as e:
            self.metrics["requests"].labels(endpoint, "400").inc()
            return HTTPError(400, str(e), code="context_length_exceeded").response()
        except (InvalidArgumentError, VlcacheError, ValueError) as e:
            self.metrics["requests"].labels(endpoint, "400").inc()
            return HTTPError(400, str(e)).response()
        self.metrics["requests"].labels(endpoint, "200").inc()
        job = Job(gen, asyncio.get_running_loop(), asyncio.Queue())
        self.scheduler.submit(job)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage", True))
            return StreamingResponse(self._sse(job, rid, chat, include_usage), media_type="text/event-stream")
        try:
            text, completion = "", None
            while True:
                kind, item = await job.events.get()
                if kind == "piece":
                    text += item
                elif kind == "done":
                    completion = item
                    break
                else:
                    return self._job_error(item).response()
        finally:
            job.cancelled = True  # a no-op when done; frees the sequence if the client went away
        return JSONResponse(self._final(rid, chat, completion))

    def _chat_request(self, msgs, kw):
        from . import chat as _chat
        if self.model.chat_template is None:
            raise HTTPError(400, "the model has no chat template; use /v1/completions")
        prompt, images = _chat.format_chat(msgs, self.model.chat_template)
        return self.model.request(prompt, images=images, **kw)

    @staticmethod
    def _job_error(e) -> HTTPError:
        if isinstance(e, HTTPError):
            return e
        return HTTPError(500, f"generation failed: {e}", type_="server_error")

    def _timings(self, c) -> dict:
        s = c.stats
        return {"prompt_n": s.prompt_tokens, "prompt_ms": s.prefill_ms, "prompt_per_second": s.prefill_tokens_per_s,
                "predicted_n": s.completion_tokens, "predicted_ms": s.decode_ms,
                "predicted_per_second": s.decode_tokens_per_s, "ttft_ms": s.ttft_ms,
                "kv_bytes": s.kv_bytes}

    def _usage(self, c) -> dict:
        return {"prompt_tokens": c.stats.prompt_tokens, "completion_tokens": c.stats.completion_tokens,
                "total_tokens": c.stats.prompt_tokens + c.stats.completion_tokens}

    def _final(self, rid: str, chat: bool, c) -> dict:
        choice = ({"index": 0, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
                  if chat else {"index": 0, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None})
        return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": self.alias, "choices": [choice], "usage": self._usage(c), "timings": self._timings(c)}

    def _chunk(self, rid: str, chat: bool, piece: str | None, finish: str | None, first: bool = False) -> dict:
        if chat:
            delta = {"role": "assistant", "content": ""} if first else ({"content": piece} if piece else {})
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": piece or "", "finish_reason": finish, "logprobs": None}
        return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": self.alias, "choices": [choice]}

    async def _sse(self, job: Job, rid: str, chat: bool, include_usage: bool):
        def sse(obj) -> bytes:
            return b"data: " + json.dumps(obj).encode() + b"\n\n"
        try:
            if chat:
                yield sse(self._chunk(rid, chat, None, None, first=True))
            while True:
                kind, item = await job.events.get()
                if kind == "piece":
                    yield sse(self._chunk(rid, chat, item, None))
                elif kind == "done":
                    last = self._chunk(rid, chat, None, item.finish_reason)
                    if include_usage:
                        last["usage"] = self._usage(item)
                    last["timings"] = self._timings(item)
                    yield sse(last)
                    break
                else:
                    err = self._job_error(item)
                    yield sse({"error": {"message": err.message, "type": err.type, "code": err.code}})
                    break
            yield b"data: [DONE]\n\n"
        finally:
            job.cancelled = True  # the client went away (or the stream ended): free the sequence


def serve(model_path: str, mmproj: str | None = None, *, host: str = "127.0.0.1", port: int = 8080,
          log_level: str = "info", **kwargs) -> None:
    """Runs the server until interrupted (``vlcache-native serve``)."""
    server = Server(model_path, mmproj, **kwargs)
    uvicorn.run(server.app, host=host, port=port, log_level=log_level)
