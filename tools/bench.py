#!/usr/bin/env python3
"""Prefill / decode speed of the C runtime on a random Llama, printed as a table.

Writes (once, cached) a random Llama GGUF of the requested shape straight with NumPy and
the gguf package (default: the 0.84B shape of the Foundation issue: hidden 2048, 16
layers, 32 heads, 4 KV heads, head_dim 64, FFN 5632, vocab 32000, F16), then measures
prefill of --prompt tokens and decode of --gen tokens at each thread count, like
llama-bench's pp512 / tg128. Random token ids: speed does not depend on the text.

    python tools/bench.py [--model PATH] [--threads 2] [--prompt 512] [--gen 128] [--reps 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

SHAPES = {
    "0.84b": dict(hidden=2048, layers=16, heads=32, kv_heads=4, ff=5632, vocab=32000),
    "tiny": dict(hidden=256, layers=4, heads=8, kv_heads=4, ff=688, vocab=1000),
}


def write_random_llama(path: Path, *, hidden, layers, heads, kv_heads, ff, vocab, outtype="f16", seed=0) -> Path:
    """A llama-architecture GGUF with random weights and a synthetic byte-fallback vocabulary."""
    import gguf

    dtype = {"f16": np.float16, "f32": np.float32}[outtype]
    hd = hidden // heads
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"random-llama-{hidden}x{layers}")
    w.add_context_length(4096)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(hd)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_file_type(1 if outtype == "f16" else 0)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"▁t{i}" for i in range(vocab - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (vocab - 259)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(vocab - 259)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def mat(rows, cols, std=0.02):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * std).astype(dtype)

    w.add_tensor("token_embd.weight", mat(vocab, hidden))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", mat(heads * hd, hidden))
        w.add_tensor(f"blk.{i}.attn_k.weight", mat(kv_heads * hd, hidden))
        w.add_tensor(f"blk.{i}.attn_v.weight", mat(kv_heads * hd, hidden))
        w.add_tensor(f"blk.{i}.attn_output.weight", mat(hidden, heads * hd))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", mat(ff, hidden))
        w.add_tensor(f"blk.{i}.ffn_up.weight", mat(ff, hidden))
        w.add_tensor(f"blk.{i}.ffn_down.weight", mat(hidden, ff))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    w.add_tensor("output.weight", mat(vocab, hidden))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=True)
    w.close()
    return path


def rss_mib() -> float:
    """Peak resident set size of this process (the weights are mmapped, so pages touched count)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(model, n_threads: int, n_prompt: int, n_gen: int, reps: int) -> dict:
    rng = np.random.default_rng(1)
    ids = rng.integers(259, model.n_vocab, size=n_prompt).tolist()
    best_pp, best_tg, ttft = float("inf"), float("inf"), float("inf")
    with model.session(n_ctx=n_prompt + n_gen + 8, n_threads=n_threads) as s:
        for _ in range(reps):
            s.reset()
            t0 = time.perf_counter()
            logits = s.prefill(ids)
            tok = int(np.argmax(logits))
            t1 = time.perf_counter()
            for _ in range(n_gen):
                tok = int(np.argmax(s.decode(tok)))
            t2 = time.perf_counter()
            best_pp, best_tg, ttft = min(best_pp, t1 - t0), min(best_tg, t2 - t1), min(ttft, t1 - t0)
        kv = s.stats()["kv_bytes"]
    return {"threads": n_threads, "pp": n_prompt / best_pp, "tg": n_gen / best_tg, "ttft_ms": ttft * 1e3,
            "kv_mib": kv / 2**20, "rss_mib": rss_mib()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="GGUF to run; default: write a random one of --shape")
    ap.add_argument("--shape", default="0.84b", choices=sorted(SHAPES))
    ap.add_argument("--outtype", default="f16", choices=["f16", "f32"])
    ap.add_argument("--cache-dir", default=os.environ.get("VLC_BENCH_DIR", "bench-models"))
    ap.add_argument("--threads", default="2", help="comma-separated thread counts")
    ap.add_argument("--prompt", type=int, default=512, help="prefill tokens (pp)")
    ap.add_argument("--gen", type=int, default=128, help="decoded tokens (tg)")
    ap.add_argument("--reps", type=int, default=2, help="best of this many runs")
    args = ap.parse_args(argv)

    import vlcache_native as vc

    path = Path(args.model) if args.model else Path(args.cache_dir) / f"random-llama-{args.shape}-{args.outtype}.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {path} ...", file=sys.stderr)
        write_random_llama(path, outtype=args.outtype, **SHAPES[args.shape])
    with vc.Model(path, n_ctx=args.prompt + args.gen + 8) as model:
        print(f"model: {path.name}  {model.n_params / 1e9:.2f}B params  {vc.build_info()}")
        rows = [bench(model, int(t), args.prompt, args.gen, args.reps) for t in args.threads.split(",")]
    print(f"\n| threads | prefill tok/s (pp{args.prompt}) | decode tok/s (tg{args.gen}) | TTFT ms | KV MiB | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['threads']} | {r['pp']:.1f} | {r['tg']:.2f} | {r['ttft_ms']:.0f} | {r['kv_mib']:.1f} | {r['rss_mib']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
