#!/usr/bin/env python3
"""Batched decoding speed: N sequences decoded together by Model.decode_batch, as a table.

One session is prefilled to --depth positions (random token ids; with --image, the first
--image rows are random embeddings recorded as an image span, so the context is
multimodal and VL-Cache has an image to compress), then cloned N times; each row of the
table decodes --gen steps of all N clones at once. Aggregate tok/s = N x gen / time; per
sequence = gen / time; KV MiB = the bytes the N caches hold. With --budget B the prompt
of every clone is compressed by --policy at budget B before decoding (the same rows
again, beside the full cache). The model defaults to tools/bench.py's random 0.84B F16.

    python tools/bench_batch.py [--model PATH] [--threads 2] [--depth 512] [--gen 16]
        [--n 1,2,4,8,16,32] [--budget 0.1 --image 576 --policy vl-cache]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def prompt_session(model, depth: int, image: int, gen: int, n_threads: int, budget: float | None, policy: str):
    """A session prefilled with depth positions (the first `image` of them image rows)."""
    rng = np.random.default_rng(0)
    s = model.session(n_ctx=depth + gen + 8, n_threads=n_threads)
    parts = []
    if image:
        parts.append(rng.standard_normal((image, model.n_embd), dtype=np.float32) * 0.02)
    parts.append(rng.integers(259, model.n_vocab, size=depth - image).tolist())
    s.prefill(parts, kv_stats=policy if budget is not None else None)
    if budget is not None:
        s.compress(budget, policy, decode_room=gen + 1)
    return s


def run(model, base, n: int, gen: int) -> dict:
    sessions = [base.clone() for _ in range(n)]
    rng = np.random.default_rng(n)
    toks = rng.integers(259, model.n_vocab, size=n).tolist()
    model.decode_batch(sessions, toks)  # warm: the first step sizes every buffer
    t0 = time.perf_counter()
    for _ in range(gen):
        toks = model.decode_batch(sessions, toks).argmax(axis=1).tolist()
    dt = time.perf_counter() - t0
    kv = sum(s.stats()["kv_bytes"] for s in sessions)
    for s in sessions:
        s.close()
    return {"n": n, "agg": n * gen / dt, "seq": gen / dt, "kv_mib": kv / 2**20}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="GGUF to run; default: tools/bench.py's random model of --shape")
    ap.add_argument("--shape", default="0.84b", choices=sorted(bench.SHAPES))
    ap.add_argument("--cache-dir", default=os.environ.get("VLC_BENCH_DIR", "bench-models"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--depth", type=int, default=512, help="context positions before decoding")
    ap.add_argument("--image", type=int, default=0, help="of which image rows (random embeddings) first")
    ap.add_argument("--gen", type=int, default=16, help="decode steps timed per row")
    ap.add_argument("--n", default="1,2,4,8,16,32", help="batch sizes")
    ap.add_argument("--budget", type=float, help="also compress every prompt to this KV budget first")
    ap.add_argument("--policy", default="vl-cache")
    args = ap.parse_args(argv)

    import vlcache_native as vc

    path = Path(args.model) if args.model else Path(args.cache_dir) / f"random-llama-{args.shape}-f16.gguf"
    if not args.model and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {path} ...", file=sys.stderr)
        bench.write_random_llama(path, outtype="f16", **bench.SHAPES[args.shape])
    sizes = [int(x) for x in args.n.split(",")]
    budgets = [None] + ([args.budget] if args.budget is not None else [])
    with vc.Model(path, n_ctx=args.depth + args.gen + 8, n_threads=args.threads) as model:
        print(f"model: {path.name}  {model.n_params / 1e9:.2f}B params  {vc.build_info()}")
        print(f"CPU: {cpu_name()}, {args.threads} threads; context {args.depth} positions "
              f"({args.image} image rows), {args.gen} timed steps per row")
        print("\n| KV | N | aggregate tok/s | per-sequence tok/s | x one sequence | KV MiB (all N) |")
        print("|---|---:|---:|---:|---:|---:|")
        for budget in budgets:
            label = "full" if budget is None else f"{args.policy} {budget:g}"
            with prompt_session(model, args.depth, args.image, args.gen, args.threads, budget, args.policy) as base:
                one = None
                for n in sizes:
                    r = run(model, base, n, args.gen)
                    one = one or r["agg"]
                    print(f"| {label} | {n} | {r['agg']:.2f} | {r['seq']:.2f} | {r['agg'] / one:.2f} | "
                          f"{r['kv_mib']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
