"""The OpenAI-compatible server (vlcache_native.server), started for real on a loopback port
and talked to with the openai package and raw HTTP.

The model is the briefly trained demo-architecture VLM (demomodel.py): a real tokenizer,
chat template and vision tower. Every greedy answer is compared with Model.generate run
alone on the same request: the scheduler's batched steps must not change a token.
"""

import base64
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import oracle  # noqa: E402

oracle("starlette")  # the optional extra (".[server]"); ".[test]" installs it, and CI must not skip
import httpx  # noqa: E402
import uvicorn  # noqa: E402

import vlcache_native as vc  # noqa: E402
from vlcache_native import server as S  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A server on a free port, in a thread."""

    def __init__(self, path, **kw):
        self.server = S.Server(str(path), n_ctx=512, n_threads=2, **kw)
        self.port = _free_port()
        self.uv = uvicorn.Server(uvicorn.Config(self.server.app, host="127.0.0.1", port=self.port,
                                                log_level="warning"))
        self.thread = threading.Thread(target=self.uv.run, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not come up")

    def stop(self):
        self.uv.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def demo_model(demo_gguf):
    return vc.Model(demo_gguf, n_ctx=512, n_threads=2)


@pytest.fixture(scope="module")
def srv(demo_gguf):
    r = Running(demo_gguf, n_parallel=8, allowed_media=None)
    yield r
    r.stop()


def _png(seed: int) -> bytes:
    import PIL.Image
    rng = np.random.default_rng(seed)
    img = PIL.Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _messages(i: int):
    qs = ["What colour is the star?", "How many circles are there?", "Describe the picture.", "Where is the cross?"]
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": _data_url(_png(i))}},
                                         {"type": "text", "text": qs[i % 4]}]}]


def _alone(model, i: int, max_tokens: int = 24, **kw) -> str:
    msgs = [{"role": "user", "content": [{"type": "image", "image": _png(i)},
                                         {"type": "text", "text": _messages(i)[0]["content"][1]["text"]}]}]
    return model.chat(msgs, max_tokens=max_tokens, **kw).text


def test_health_and_models(srv):
    assert httpx.get(srv.url + "/health").json() == {"status": "ok"}
    data = httpx.get(srv.url + "/v1/models").json()["data"]
    assert [m["id"] for m in data] == [srv.server.alias]
    metrics = httpx.get(srv.url + "/metrics").text
    assert "vlcache_generated_tokens_total" in metrics


def test_chat_with_image_matches_generate(srv, demo_model):
    import openai
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none")
    r = client.chat.completions.create(model=srv.server.alias, messages=_messages(0), max_tokens=24)
    assert r.choices[0].message.content == _alone(demo_model, 0)
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 36  # 36 image rows + the text
    # streamed: the same text, in pieces, and a last chunk with the finish reason
    pieces, finish = [], None
    for chunk in client.chat.completions.create(model=srv.server.alias, messages=_messages(0), max_tokens=24,
                                                stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert "".join(pieces) == r.choices[0].message.content
    assert finish == r.choices[0].finish_reason


def test_raw_sse_ends_with_done(srv):
    body = {"messages": _messages(1), "max_tokens": 8, "stream": True}
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2][len("data: "):])
    assert last["choices"][0]["finish_reason"] in ("stop", "length")
    assert last["usage"]["completion_tokens"] >= 1 and "timings" in last


def test_multi_turn_and_completions(srv, demo_model):
    msgs = _messages(2) + [{"role": "assistant", "content": "The picture shows a small red star."},
                           {"role": "user", "content": "How many stars are there?"}]
    r = httpx.post(srv.url + "/v1/chat/completions", json={"messages": msgs, "max_tokens": 16}, timeout=60).json()
    alone_msgs = [{"role": "user", "content": [{"type": "image", "image": _png(2)},
                                               {"type": "text", "text": "Describe the picture."}]}] + msgs[1:]
    assert r["choices"][0]["message"]["content"] == demo_model.chat(alone_msgs, max_tokens=16).text
    r = httpx.post(srv.url + "/v1/completions", json={"prompt": "USER: Is there a red star? ASSISTANT:",
                                                       "max_tokens": 8}, timeout=60).json()
    assert r["object"] == "text_completion"
    assert r["choices"][0]["text"] == demo_model.generate("USER: Is there a red star? ASSISTANT:", max_tokens=8).text
    ids = demo_model.tokenize("USER: How many stars are there? ASSISTANT:")
    r = httpx.post(srv.url + "/v1/completions", json={"prompt": ids, "max_tokens": 8}, timeout=60).json()
    assert r["choices"][0]["text"] == demo_model.generate(ids, max_tokens=8).text


def test_kv_budget_per_request(srv, demo_model):
    body = {"messages": _messages(3), "max_tokens": 12, "kv_budget": 0.5}
    r = httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=60).json()
    assert r["choices"][0]["message"]["content"] == _alone(demo_model, 3, max_tokens=12, kv_budget=0.5)
    full = httpx.post(srv.url + "/v1/chat/completions", json={**body, "kv_budget": None}, timeout=60).json()
    assert r["timings"]["kv_bytes"] < full["timings"]["kv_bytes"]


@pytest.mark.parametrize("body,status,needle", [
    (b"{not json", 400, "not valid JSON"),
    ({"messages": "hi"}, 400, "'messages' must be a non-empty list"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}, 400, "'max_tokens' must be an integer"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": True}, 400, "'temperature' must be a number"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                                                   "AAAA"}}]}]}, 400, "image"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "%%%"}}]}]}, 400,
     "neither a data: URL"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                 "image_url": {"url": "http://example.com/cat.png"}}]}]}, 400,
     "cannot fetch http URLs"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                 "image_url": {"url": "file:///etc/passwd"}}]}]}, 400,
     "file:// images are off"),
    ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, 400, "unknown content part type"),
    ({"messages": [{"role": "user", "content": "star " * 2000}]}, 400, "context"),
    ({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4"}, 404, "not found"),
    ({"prompt": 5}, 400, "'prompt' must be a string or a list of token ids"),
    ({"prompt": [1, 2**40]}, 400, "int32"),
    ({"messages": [{"role": "user", "content": "hi"}], "kv_budget": 7}, 400, "budget"),
])
def test_errors_are_openai_shaped(srv, body, status, needle):
    url = srv.url + ("/v1/completions" if isinstance(body, dict) and "prompt" in body else "/v1/chat/completions")
    r = (httpx.post(url, content=body, timeout=60) if isinstance(body, bytes)
         else httpx.post(url, json=body, timeout=60))
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"], err
    assert err["type"]
    # and the server still answers
    assert httpx.post(srv.url + "/v1/completions", json={"prompt": "USER: hi ASSISTANT:", "max_tokens": 2},
                      timeout=60).status_code == 200


def test_body_over_limit(demo_gguf):
    r = Running(demo_gguf, max_body_mib=0.01)
    try:
        resp = httpx.post(r.url + "/v1/completions", json={"prompt": "x" * 20000}, timeout=60)
        assert resp.status_code == 413 and "over the limit" in resp.json()["error"]["message"]
    finally:
        r.stop()


def test_32_concurrent_requests_match_alone(srv, demo_model):
    want = [_alone(demo_model, i % 8, max_tokens=16) for i in range(8)]

    def one(i):
        body = {"messages": _messages(i % 8), "max_tokens": 16, "stream": i % 2 == 1}
        if not body["stream"]:
            return httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=300).json()[
                "choices"][0]["message"]["content"]
        text = ""
        with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body, timeout=300) as r:
            for ln in r.iter_lines():
                if ln.startswith("data: {"):
                    d = json.loads(ln[6:])["choices"][0]["delta"]
                    text += d.get("content") or ""
        return text

    with ThreadPoolExecutor(32) as ex:
        got = list(ex.map(one, range(32)))
    assert got == [want[i % 8] for i in range(32)]


def test_disconnect_frees_the_sequence(srv):
    body = {"messages": _messages(5), "max_tokens": 400, "stream": True}
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body, timeout=60) as r:
        for ln in r.iter_lines():
            if ln.startswith("data: {") and '"content": ""' not in ln:
                break  # one piece arrived: go away
    sched = srv.server.scheduler
    deadline = time.time() + 20
    while time.time() < deadline and (sched.running or sched.queue):
        time.sleep(0.05)
    assert not sched.running and not sched.queue


def test_shutdown_with_requests_in_flight(demo_gguf):
    r = Running(demo_gguf)
    results = []

    def ask():
        try:
            results.append(httpx.post(r.url + "/v1/chat/completions",
                                      json={"messages": _messages(6), "max_tokens": 400}, timeout=60).status_code)
        except httpx.TransportError as e:
            results.append(type(e).__name__)

    t = threading.Thread(target=ask)
    t.start()
    time.sleep(1.0)
    r.server.close()  # the scheduler stops: the request in flight gets an error, nothing hangs
    t.join(timeout=30)
    r.stop()
    assert not t.is_alive()
    assert results and results[0] in (503, 200)


@pytest.mark.parametrize("budget", [None, 0.5])
def test_prefill_in_pieces_matches_whole(demo_model, budget):
    """The scheduler prefills a prompt a piece at a time between decode steps: text in
    pieces of at most max_rows positions, each image whole. Tokens, compression and KV
    positions must equal one whole prefill (generate alone)."""
    kw = dict(max_tokens=12, kv_budget=budget) if budget else dict(max_tokens=12)
    prompt = "USER: <image>\nWhat colour is the star? ASSISTANT: The star is red. USER: <image>\nAnd here? ASSISTANT:"
    images = [_png(7), _png(8)]
    want = demo_model.generate(prompt, images=images, **kw)
    gen = demo_model.request(prompt, images=images, **kw)
    sess = demo_model.session()
    gen.begin(sess)
    pieces, logits = 0, None
    while logits is None:
        before = sess.n_past
        logits = gen.advance(5)
        pieces += 1
        grown = sess.n_past - before
        assert grown <= 5 or grown == demo_model.vision_info["n_tokens_per_tile"]  # text <= 5, or one image
    n_text = gen.stats.prompt_tokens - gen.stats.image_tokens
    assert pieces >= 2 + n_text // 5  # the two images, and the text in pieces of 5
    token = gen.push(logits)
    while token is not None:
        token = gen.push(sess.decode(token))
    got = gen.finish(sess)
    assert got.tokens == want.tokens and got.text == want.text
    if budget:  # the same positions kept in every layer and head, the same sparsities
        assert [[list(h) for h in layer] for layer in got.stats.kv.kept] == \
            [[list(h) for h in layer] for layer in want.stats.kv.kept]
        assert np.array_equal(got.stats.kv.sparsity, want.stats.kv.sparsity)
