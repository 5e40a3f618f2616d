#!/usr/bin/env python3
"""Serving throughput: N concurrent multimodal chats through the server's scheduler, as a table.

Each request is a prompt of --pictures images (random embeddings of --image-rows rows each,
standing in for the vision tower's output, so that the bench measures the text side the
scheduler batches) between text tokens, --ctx positions in all, and asks for --gen tokens.
All N are submitted at once to a vlcache_native.server.Scheduler (the one `vlcache-native
serve` runs) with -np N and a fixed --kv-memory; each row of the table is one run: the
end-to-end rate (completion tokens / wall time from submitting the N requests to the last token),
the decode rate of the batched steps alone (tokens / time in Model.decode_batch), time to
first token p50 / p95 (from submission), the most KV the running sessions held, and how
many requests failed. With --budget B the same load runs again with kv_budget=B
(VL-Cache) beside the full cache. The model defaults to tools/bench.py's random 0.84B F16.

    python tools/bench_serve.py [--model PATH] [--threads 2] [--n 1,4,8] [--ctx 1024]
        [--pictures 2] [--image-rows 288] [--gen 32] [--budget 0.1] [--kv-memory 256]

With --llama-server PATH (llama.cpp's binary, built by hand as for llama-bench) it instead
runs the same text-only load over HTTP against both servers, each started here on the
same GGUF with -np N and the same threads: N concurrent streamed completions of --ctx
random token ids each (identical ids for both), --gen tokens each. The client times every
streamed piece: end-to-end tok/s, TTFT p50 / p95, and the decode rate while all N decode
at once (pieces received between the last first token and the first finish, per second).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from bench_batch import cpu_name  # noqa: E402


def requests(model, n: int, ctx: int, pictures: int, rows: int, gen: int, budget):
    out = []
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        text = (ctx - pictures * rows) // (pictures + 1)
        chunks = [[1] + rng.integers(259, model.n_vocab, size=text - 1).tolist()]
        for _ in range(pictures):
            chunks.append(rng.standard_normal((rows, model.n_embd), dtype=np.float32) * 0.02)
            chunks.append(rng.integers(259, model.n_vocab, size=text).tolist())
        kw = {"kv_budget": budget} if budget is not None else {}
        out.append(model.request(None, chunks=chunks, max_tokens=gen, **kw))
    return out


async def run(model, gens, n_parallel: int, kv_memory: int | None, prefill_chunk: int) -> dict:
    from vlcache_native.server import Job, Scheduler
    sched = Scheduler(model, n_parallel, kv_memory, prefill_chunk=prefill_chunk)
    loop = asyncio.get_running_loop()
    jobs = [Job(g, loop, asyncio.Queue()) for g in gens]
    t0 = time.perf_counter()
    for j in jobs:
        sched.submit(j)
    ttft, failed, tokens = [], 0, 0
    t_last = t0

    async def wait(job):
        nonlocal failed, tokens, t_last
        while True:
            kind, item = await job.events.get()
            now = time.perf_counter()
            if kind == "done":
                tokens += item.stats.completion_tokens
                ttft.append(item.stats.ttft_ms)
                t_last = max(t_last, now)
                return
            if kind == "error":
                failed += 1
                return

    await asyncio.gather(*(wait(j) for j in jobs))
    sched.stop()
    wall = t_last - t0
    return {"tok_s": tokens / wall if wall > 0 else 0.0,
            "decode_tok_s": sched.decode_tokens / sched.decode_s if sched.decode_s > 0 else 0.0, "ttft50": float(np.percentile(ttft, 50)) if ttft else 0,
            "ttft95": float(np.percentile(ttft, 95)) if ttft else 0, "kv_mib": sched.peak_kv_bytes / 2**20,
            "failed": failed, "wall": wall}


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_load(url: str, path: str, prompts: list, gen: int, body_extra: dict) -> dict:
    """N concurrent streamed completions; timestamps of every piece."""
    import json
    import threading
    import httpx
    times: list = [None] * len(prompts)
    t0 = time.perf_counter()

    def one(i):
        body = {"prompt": prompts[i], "stream": True, **body_extra}
        stamps = []
        with httpx.stream("POST", url + path, json=body, timeout=3600) as r:
            for ln in r.iter_lines():
                if not ln.startswith("data: {"):
                    continue
                d = json.loads(ln[6:])
                piece = d.get("content") if "content" in d else (d.get("choices") or [{}])[0].get("text")
                if piece:
                    stamps.append(time.perf_counter())
        times[i] = stamps

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    firsts = [st[0] for st in times if st]
    ends = [st[-1] for st in times if st]
    tokens = sum(len(st) for st in times)
    w0, w1 = max(firsts), min(ends)
    in_window = sum(sum(1 for x in st if w0 < x <= w1) for st in times)
    return {"tok_s": tokens / (max(ends) - t0), "decode_tok_s": in_window / (w1 - w0) if w1 > w0 else float("nan"),
            "ttft50": float(np.percentile([f - t0 for f in firsts], 50)) * 1e3,
            "ttft95": float(np.percentile([f - t0 for f in firsts], 95)) * 1e3, "tokens": tokens}


def start_server(cmd: list, url: str, log_path: Path):
    import subprocess
    import httpx
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited; see {log_path}")
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{cmd[0]} did not come up; see {log_path}")


def compare_http(a, path: Path) -> int:
    import vlcache_native as vc
    n_vocab = vc.Model(path, vocab_only=True).n_vocab
    print(f"model: {path.name}  CPU: {cpu_name()}, {a.threads} threads; {a.ctx} random token ids per request, "
          f"{a.gen} tokens each, streamed over HTTP; the same ids for both servers")
    print()
    print("| server | N | decode tok/s (all N decoding) | end-to-end tok/s | TTFT p50 ms | TTFT p95 ms | tokens |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n in [int(x) for x in a.n.split(",")]:
        rng = np.random.default_rng(7)
        prompts = [[1] + rng.integers(259, n_vocab, size=a.ctx - 1).tolist() for _ in range(n)]
        for name in ("vlcache-native", "llama-server"):
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            if name == "llama-server":
                cmd = [a.llama_server, "-m", str(path), "-np", str(n), "-c", str(n * (a.ctx + a.gen + 8)),
                       "-t", str(a.threads), "--port", str(port), "--host", "127.0.0.1", "-b", "512"]
                body, route = {"n_predict": a.gen, "temperature": 0, "cache_prompt": False, "ignore_eos": True}, "/completion"
            else:
                cmd = [sys.executable, "-m", "vlcache_native", "serve", "-m", str(path), "-np", str(n),
                       "-c", str(a.ctx + a.gen + 8), "-t", str(a.threads), "--port", str(port)]
                body, route = {"max_tokens": a.gen, "temperature": 0}, "/v1/completions"
            proc = start_server(cmd, url, Path(f"/tmp/bench_serve_{name}.log"))
            try:
                r = http_load(url, route, prompts, a.gen, body)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            print(f"| {name} | {n} | {r['decode_tok_s']:.2f} | {r['tok_s']:.2f} | {r['ttft50']:.0f} | "
                  f"{r['ttft95']:.0f} | {r['tokens']} |", flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "vlcache_native"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", default="1,4,8")
    ap.add_argument("--ctx", type=int, default=1024, help="prompt positions per request")
    ap.add_argument("--pictures", type=int, default=2)
    ap.add_argument("--image-rows", type=int, default=288)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--budget", type=float, default=0.1)
    ap.add_argument("--kv-memory", type=float, default=None, help="MiB of KV the running sessions may hold")
    ap.add_argument("--prefill-chunk", type=int, default=256, help="prompt positions between two decode steps")
    ap.add_argument("--llama-server", default=None, help="llama.cpp's llama-server: compare over HTTP (text only)")
    a = ap.parse_args(argv)
    import vlcache_native as vc
    path = Path(a.model) if a.model else Path(a.cache_dir) / "random-llama-0.84b-f16.gguf"
    if not a.model and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {path} ...", file=sys.stderr)
        bench.write_random_llama(path, outtype="f16", **bench.SHAPES["0.84b"])
    if a.llama_server:
        return compare_http(a, path)
    model = vc.Model(path, n_ctx=a.ctx + a.gen + 8, n_threads=a.threads)
    kv_memory = int(a.kv_memory * 2**20) if a.kv_memory else None
    print(f"model: {Path(path).name}  CPU: {cpu_name()}, {a.threads} threads; {a.ctx} prompt positions per request "
          f"({a.pictures} pictures x {a.image_rows} image rows), {a.gen} tokens each; "
          f"KV memory {'unlimited' if kv_memory is None else f'{a.kv_memory:.0f} MiB'}")
    print()
    print("| KV | N | decode tok/s (batched steps) | end-to-end tok/s | TTFT p50 ms | TTFT p95 ms "
          "| KV MiB held (peak) | failed | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in [int(x) for x in a.n.split(",")]:
        for budget in [None] + ([a.budget] if a.budget is not None else []):
            gens = requests(model, n, a.ctx, a.pictures, a.image_rows, a.gen, budget)
            r = asyncio.run(run(model, gens, n, kv_memory, a.prefill_chunk))
            label = "full" if budget is None else f"vl-cache {budget:g}"
            print(f"| {label} | {n} | {r['decode_tok_s']:.2f} | {r['tok_s']:.2f} | {r['ttft50']:.0f} | {r['ttft95']:.0f} | {r['kv_mib']:.1f} | "
                  f"{r['failed']} | {r['wall']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
