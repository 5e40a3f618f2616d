#!/usr/bin/env python3
"""Prefill / decode speed of the C runtime on a random Llama, printed as a table.

Writes (once, cached) a random Llama GGUF of the requested shape straight with NumPy and
the gguf package (default: the 0.84B shape of the Foundation issue: hidden 2048, 16
layers, 32 heads, 4 KV heads, head_dim 64, FFN 5632, vocab 32000, F16), then measures
prefill of --prompt tokens and decode of --gen tokens at each thread count, like
llama-bench's pp512 / tg128. Random token ids: speed does not depend on the text.

    python tools/bench.py [--model PATH] [--threads 2] [--prompt 512] [--gen 128] [--reps 2]

Side by side with llama.cpp (--llama-bench PATH, or --compare for our side alone): for
each model (--model, repeatable, or the random 0.84B F16 plus quantized copies of it for
--types F16,Q8_0,Q4_0,Q4_K_M made with tools/quantize.py) it runs, interleaved for --reps
rounds, our prefill / decode and llama-bench's (`-p 512 -n 128 -r 1 -o json`, same
threads), and prints the best of each beside the other with their ratio. The decode
mimics llama-bench's tg: from an empty context (or --depth), random tokens, no sampling.
It also measures the machine's memory bandwidth with NumPy (a large copy, read + written
bytes / s, and a read-only sum, on 1 and on --threads threads) and prints each decode's
efficiency = (weight bytes + KV bytes read per token) x tokens/s / read-only bandwidth.

    python tools/bench.py --llama-bench PATH [--types F16,Q8_0,Q4_0,Q4_K_M] [--threads 2]
        [--reps 3] [--depth 0] [--bw-mib 1024] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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


# ---- side by side with llama.cpp: model facts

#: bytes per KV element of each cache type (llama-bench's type_k / type_v names)
KV_ELEM_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


def gguf_facts(path) -> dict:
    """What one decode step reads from a GGUF, from its tensor table (no weights loaded).

    weight_bytes_per_token: every tensor once, except token_embd of which a token reads one
    row, unless there is no output.weight (tied embeddings: the output projection reads
    all of it). Also the KV geometry (layers, KV heads, head dim) and the file type name.
    """
    import gguf

    r = gguf.GGUFReader(str(path))

    def field(key, default=None):
        f = r.fields.get(key)
        return default if f is None else f.contents()

    arch = field("general.architecture", "llama")
    n_layer = int(field(f"{arch}.block_count"))
    n_head = int(field(f"{arch}.attention.head_count"))
    n_head_kv = int(field(f"{arch}.attention.head_count_kv", n_head))
    n_embd = int(field(f"{arch}.embedding_length"))
    head_dim = int(field(f"{arch}.attention.key_length", n_embd // n_head))
    total = sum(int(t.n_bytes) for t in r.tensors)
    names = {t.name: t for t in r.tensors}
    per_token = total
    embd = names.get("token_embd.weight")
    if embd is not None and "output.weight" in names:
        rows = int(np.prod([int(d) for d in embd.shape[1:]]))  # shape is ne: [n_embd, n_vocab]
        per_token -= int(embd.n_bytes) - int(embd.n_bytes) // max(1, rows)
    ft = field("general.file_type")
    if ft is not None:
        try:
            type_name = gguf.LlamaFileType(int(ft)).name.replace("MOSTLY_", "").replace("ALL_", "")
        except ValueError:
            type_name = f"ftype{int(ft)}"
    else:  # the type holding most bytes
        by_type: dict = {}
        for t in r.tensors:
            by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + int(t.n_bytes)
        type_name = max(by_type, key=by_type.get)
    return {"type": type_name, "tensor_bytes": total, "weight_bytes_per_token": per_token,
            "n_layer": n_layer, "n_head_kv": n_head_kv, "head_dim": head_dim}


def kv_bytes_read(facts: dict, n_ctx: float, kv_type: str = "f16") -> float:
    """Bytes of K and V one decode step reads when attending to n_ctx cached positions."""
    return 2 * facts["n_layer"] * facts["n_head_kv"] * facts["head_dim"] * KV_ELEM_BYTES[kv_type] * n_ctx


def tg_mean_ctx(depth: int, n_gen: int) -> float:
    """Mean positions attended over a tg run of n_gen steps after depth cached tokens (step i sees depth + i + 1)."""
    return depth + (n_gen + 1) / 2


def decode_efficiency(bytes_per_token: float, tok_s: float | None, bandwidth: float) -> float | None:
    """The fraction of the memory bandwidth (bytes/s) a decode at tok_s uses; None when not measured."""
    if tok_s is None or not bandwidth > 0:
        return None
    return bytes_per_token * tok_s / bandwidth


# ---- memory bandwidth

def _split(a: np.ndarray, n: int) -> list:
    return np.array_split(a, n)


def measure_bandwidth(n_bytes: int = 1 << 30, n_threads: int = 1, reps: int = 5) -> dict:
    """Memory bandwidth in bytes/s with NumPy, best of reps (NumPy releases the GIL in both).

    copy: dst[:] = src over n_bytes, counted as n_bytes read + n_bytes written (the
    write-allocate reads a plain store also causes are not counted). read: a sum over
    n_bytes of int64 (n_bytes read; NumPy's int64 add-reduce runs about 3x faster from
    cache than from DRAM on an AVX-512 Xeon, so it measures memory, not the adds). With
    n_threads > 1 each thread works on its own contiguous 1/n_threads of the arrays.
    """
    n = max(1, n_bytes // 8)
    src = np.ones(n, np.int64)  # written once: every page is mapped before timing
    dst = np.zeros(n, np.int64)
    parts = list(zip(_split(src, n_threads), _split(dst, n_threads)))
    best_copy = best_read = float("inf")
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        def run(fn):
            t0 = time.perf_counter()
            if n_threads == 1:
                fn(*parts[0])
            else:
                list(pool.map(lambda p: fn(*p), parts))
            return time.perf_counter() - t0

        for _ in range(reps):
            best_copy = min(best_copy, run(lambda s, d: np.copyto(d, s)))
            best_read = min(best_read, run(lambda s, d: np.add.reduce(s)))
    return {"threads": n_threads, "bytes": 8 * n, "copy": 2 * 8 * n / best_copy, "read": 8 * n / best_read}


# ---- llama-bench

def llama_bench_cmd(exe, model_path, n_threads: int, n_prompt: int, n_gen: int, depth: int = 0) -> list:
    cmd = [str(exe), "-m", str(model_path), "-t", str(n_threads), "-p", str(n_prompt), "-n", str(n_gen),
           "-r", "1", "-o", "json"]
    return cmd + (["-d", str(depth)] if depth else [])


def parse_llama_bench_json(text: str) -> dict:
    """pp / tg tokens per second (avg_ts) and KV types from llama-bench's `-o json` output.

    The output is a JSON array of tests: a prompt test has n_prompt > 0 and n_gen == 0, a
    generation test n_gen > 0 and n_prompt == 0. Returns {"pp": tok/s or None, "tg": ...,
    "n_prompt", "n_gen", "type_k", "type_v", "n_threads", "model_type", "build"}.
    """
    tests = json.loads(text)
    if not isinstance(tests, list) or not tests:
        raise ValueError(f"llama-bench JSON: expected a non-empty array of tests, got {text[:200]!r}")
    out = {"pp": None, "tg": None, "n_prompt": None, "n_gen": None}
    for t in tests:
        n_p, n_g = int(t.get("n_prompt", 0)), int(t.get("n_gen", 0))
        if n_p > 0 and n_g == 0:
            out["pp"], out["n_prompt"] = float(t["avg_ts"]), n_p
        elif n_g > 0 and n_p == 0:
            out["tg"], out["n_gen"] = float(t["avg_ts"]), n_g
        else:
            raise ValueError(f"llama-bench JSON: a test with n_prompt={n_p} and n_gen={n_g} (pg tests are not read)")
        for k in ("type_k", "type_v", "n_threads", "model_type"):
            out[k] = t.get(k)
        out["build"] = f"{t.get('build_commit', '?')} ({t.get('build_number', '?')})"
    return out


def run_llama_bench(exe, model_path, n_threads: int, n_prompt: int, n_gen: int, depth: int = 0) -> dict:
    cmd = llama_bench_cmd(exe, model_path, n_threads, n_prompt, n_gen, depth)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {res.returncode}:\n{res.stderr[-2000:]}")
    return parse_llama_bench_json(res.stdout)


# ---- our side, one round like llama-bench's

def bench_round(model, session, n_prompt: int, n_gen: int, depth: int, rng) -> dict:
    """One pp and one tg measurement as llama-bench makes them: random tokens (BOS first),
    prefill of n_prompt after depth cached tokens, then n_gen single-token decodes after
    depth cached tokens without sampling (the next token is random)."""
    lo = 259 if model.n_vocab > 300 else 3  # past the special and byte tokens of write_random_llama
    bos = model.bos_id if model.bos_id >= 0 else lo

    def prime():
        session.reset()
        if depth:
            session.prefill([bos] + rng.integers(lo, model.n_vocab, size=depth - 1).tolist())

    out = {}
    if n_prompt:
        prime()
        ids = ([] if depth else [bos]) + rng.integers(lo, model.n_vocab, size=n_prompt - (0 if depth else 1)).tolist()
        t0 = time.perf_counter()
        session.prefill(ids)
        out["pp"] = n_prompt / (time.perf_counter() - t0)
    if n_gen:
        prime()
        toks = ([] if depth else [bos]) + rng.integers(lo, model.n_vocab, size=n_gen).tolist()
        t0 = time.perf_counter()
        for tok in toks[:n_gen]:
            session.decode(tok)
        out["tg"] = n_gen / (time.perf_counter() - t0)
    return out


# ---- table

def fmt_num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def fmt_ratio(ours: float | None, theirs: float | None) -> str:
    """ours / theirs as '1.23x'; '-' when either is missing."""
    if ours is None or theirs is None or not theirs > 0:
        return "-"
    return f"{ours / theirs:.2f}x"


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def best(values) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def compare_table(rows: list[dict], n_prompt: int, n_gen: int) -> list[str]:
    """The side-by-side table; each row: type, threads, size_mib, pp_ours, pp_lcpp, tg_ours, tg_lcpp,
    eff_ours, eff_lcpp (None where not measured)."""
    pp, tg = f"pp{n_prompt}", f"tg{n_gen}"
    lines = [f"| type | thr | MiB | {pp} ours | {pp} llama.cpp | ratio | {tg} ours | {tg} llama.cpp | ratio "
             "| eff ours | eff llama.cpp |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['type']} | {r['threads']} | {r['size_mib']:.0f} | {fmt_num(r['pp_ours'])} | "
                     f"{fmt_num(r['pp_lcpp'])} | {fmt_ratio(r['pp_ours'], r['pp_lcpp'])} | "
                     f"{fmt_num(r['tg_ours'], 2)} | {fmt_num(r['tg_lcpp'], 2)} | "
                     f"{fmt_ratio(r['tg_ours'], r['tg_lcpp'])} | {fmt_pct(r['eff_ours'])} | {fmt_pct(r['eff_lcpp'])} |")
    return lines


def bandwidth_lines(bws: dict) -> list[str]:
    """One line per thread count: copy (read + written) and read-only bandwidth in GB/s."""
    return [f"memory bandwidth, {t} thread{'s' if t > 1 else ''} (NumPy, {b['bytes'] / 2**20:.0f} MiB): "
            f"copy {b['copy'] / 1e9:.1f} GB/s (read + written), read-only sum {b['read'] / 1e9:.1f} GB/s"
            for t, b in sorted(bws.items())]


# ---- models to compare

def quantized_copy(base: Path, qtype: str, cache_dir: Path) -> Path:
    """base quantized to qtype with tools/quantize.py, written once into cache_dir."""
    out = cache_dir / f"{base.stem.removesuffix('-f16').removesuffix('-f32')}-{qtype.lower()}.gguf"
    if out.exists() and out.stat().st_mtime >= base.stat().st_mtime:
        return out
    tool = Path(__file__).resolve().parent / "quantize.py"
    if not tool.exists():
        raise FileNotFoundError(f"--types {qtype}: {tool.name} is not there to make the quantized copy")
    tmp = out.with_name(out.stem + ".part.gguf")
    print(f"quantizing {base.name} to {qtype} -> {out} ...", file=sys.stderr, flush=True)
    try:
        subprocess.run([sys.executable, str(tool), str(base), str(tmp), qtype], check=True)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def compare_models(bases: list[Path], types: list[str], cache_dir: Path) -> list[tuple[str | None, Path]]:
    """(requested type or None, file) for every base file and every --types entry."""
    if not types:
        return [(None, b) for b in bases]
    out = []
    for b in bases:
        base_type = gguf_facts(b)["type"]
        for t in types:
            out.append((t, b if t.upper() == base_type.upper() else quantized_copy(b, t, cache_dir)))
    return out


def compare(args, paths: list[Path]) -> int:
    import vlcache_native as vc

    threads = [int(t) for t in args.threads.split(",")]
    types = [t.strip().upper() for t in args.types.split(",")] if args.types else []
    exe = Path(args.llama_bench) if args.llama_bench else None
    if exe is not None and not os.access(exe, os.X_OK):
        raise FileNotFoundError(f"--llama-bench {exe}: not an executable file")
    models = compare_models(paths, types, Path(args.cache_dir))

    bws = {t: measure_bandwidth(args.bw_mib << 20, t, args.bw_reps) for t in sorted({1, *threads})}
    rng = np.random.default_rng(1)
    rows, build = [], None
    for qtype, path in models:
        facts = gguf_facts(path)
        label = qtype or facts["type"]
        n_ctx = args.depth + max(args.prompt, args.gen) + 8
        with vc.Model(path, n_ctx=n_ctx, use_mmap=not args.no_mmap) as model:
            for t in threads:
                ours, theirs = [], []
                with model.session(n_ctx=n_ctx, n_threads=t) as s:
                    bench_round(model, s, 8, 2, 0, rng)  # warm-up (llama-bench makes one too)
                    for rep in range(args.reps):
                        print(f"[{label} t={t} round {rep + 1}/{args.reps}] ours ...", file=sys.stderr, flush=True)
                        ours.append(bench_round(model, s, args.prompt, args.gen, args.depth, rng))
                        if exe is not None:
                            print(f"[{label} t={t} round {rep + 1}/{args.reps}] llama-bench ...", file=sys.stderr,
                                  flush=True)
                            theirs.append(run_llama_bench(exe, path, t, args.prompt, args.gen, args.depth))
                            build = theirs[-1]["build"]
                kv_ctx = tg_mean_ctx(args.depth, args.gen)
                lcpp_kv = (theirs[0].get("type_k") or "f16") if theirs else "f16"
                row = {"type": label, "file": path.name, "threads": t, "size_mib": facts["tensor_bytes"] / 2**20,
                       "pp_ours": best(r.get("pp") for r in ours), "tg_ours": best(r.get("tg") for r in ours),
                       "pp_lcpp": best(r["pp"] for r in theirs), "tg_lcpp": best(r["tg"] for r in theirs),
                       "bytes_per_token_ours": facts["weight_bytes_per_token"] + kv_bytes_read(facts, kv_ctx, "f16"),
                       "bytes_per_token_lcpp": facts["weight_bytes_per_token"] + kv_bytes_read(facts, kv_ctx, lcpp_kv),
                       "samples_ours": ours, "samples_lcpp": [{"pp": r["pp"], "tg": r["tg"]} for r in theirs]}
                row["eff_ours"] = decode_efficiency(row["bytes_per_token_ours"], row["tg_ours"], bws[t]["read"])
                row["eff_lcpp"] = decode_efficiency(row["bytes_per_token_lcpp"], row["tg_lcpp"], bws[t]["read"])
                rows.append(row)

    print(f"ours: {vc.build_info()}")
    if exe is not None:
        print(f"llama.cpp: llama-bench build {build}")
    for line in bandwidth_lines(bws):
        print(line)
    print(f"\nbest of {args.reps} interleaved rounds; ratio = ours / llama.cpp; decode from depth {args.depth}; "
          f"eff = (weight + KV bytes read per token) x tg tok/s / read-only bandwidth at the same threads\n")
    for line in compare_table(rows, args.prompt, args.gen):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"bandwidth": {str(k): v for k, v in bws.items()}, "rows": rows,
                                               "n_prompt": args.prompt, "n_gen": args.gen, "depth": args.depth,
                                               "reps": args.reps, "llama_bench_build": build}, indent=1))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="GGUF to run (repeatable); default: write a random one of --shape")
    ap.add_argument("--shape", default="0.84b", choices=sorted(SHAPES))
    ap.add_argument("--outtype", default="f16", choices=["f16", "f32"])
    ap.add_argument("--cache-dir", default=os.environ.get("VLC_BENCH_DIR", "bench-models"))
    ap.add_argument("--threads", default="2", help="comma-separated thread counts")
    ap.add_argument("--prompt", type=int, default=512, help="prefill tokens (pp)")
    ap.add_argument("--gen", type=int, default=128, help="decoded tokens (tg)")
    ap.add_argument("--reps", type=int, default=2, help="best of this many runs (side by side: interleaved rounds)")
    ap.add_argument("--llama-bench", metavar="PATH", help="llama.cpp's llama-bench: print ours beside it")
    ap.add_argument("--compare", action="store_true", help="the side-by-side table (implied by --llama-bench)")
    ap.add_argument("--types", help="side by side: also quantized copies of each model, e.g. F16,Q8_0,Q4_0,Q4_K_M")
    ap.add_argument("--depth", type=int, default=0, help="side by side: cached tokens before pp / tg (llama-bench -d)")
    ap.add_argument("--bw-mib", type=int, default=1024, help="array size of the bandwidth measurement")
    ap.add_argument("--bw-reps", type=int, default=5, help="bandwidth: best of this many")
    ap.add_argument("--no-mmap", action="store_true", help="load with use_mmap=False (weights read into memory)")
    ap.add_argument("--json", help="side by side: also write the results here")
    args = ap.parse_args(argv)

    paths = [Path(m) for m in args.model] if args.model else [
        Path(args.cache_dir) / f"random-llama-{args.shape}-{args.outtype}.gguf"]
    if not args.model and not paths[0].exists():
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {paths[0]} ...", file=sys.stderr)
        write_random_llama(paths[0], outtype=args.outtype, **SHAPES[args.shape])
    if args.llama_bench or args.compare or args.types:
        return compare(args, paths)

    import vlcache_native as vc

    for path in paths:
        with vc.Model(path, n_ctx=args.prompt + args.gen + 8, use_mmap=not args.no_mmap) as model:
            print(f"model: {path.name}  {model.n_params / 1e9:.2f}B params  {vc.build_info()}")
            rows = [bench(model, int(t), args.prompt, args.gen, args.reps) for t in args.threads.split(",")]
        print(f"\n| threads | prefill tok/s (pp{args.prompt}) | decode tok/s (tg{args.gen}) | TTFT ms | KV MiB | peak RSS MiB |")
        print("|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['threads']} | {r['pp']:.1f} | {r['tg']:.2f} | {r['ttft_ms']:.0f} | {r['kv_mib']:.1f} | {r['rss_mib']:.0f} |")
    return 0

if __name__ == "__main__":
    sys.exit(main())
