#!/usr/bin/env python3
"""KV-cache policies on long multimodal prompts: statistics overhead, compress time, decode speed, memory.

For each prompt length, builds a multimodal prompt for a random Llama (text tokens, several
"images" fed as embedding chunks so they become image spans, then a question of 40-60
tokens), prefills it once without and once with every attention statistic (the overhead
of gathering them), then for each policy and budget clones the prefilled session,
compresses the clone, decodes --decode-tokens greedy tokens and measures decode tokens/s,
the KV bytes held and the process RSS. Beside the decode speedup over "full" it prints
its bound from the bytes one decode step reads: bytes(full) / bytes(policy), bytes =
weights read per token + KV entries held x 2 x head_dim x element size (averaged over
the decode). The weights are random: speed does not depend on them, the tokens do not
mean anything and say nothing about accuracy.

    python tools/bench_kv.py [--model PATH] [--threads 2] [--lengths 2048,8192,16384]
        [--policies full,vl-cache,h2o,snapkv,streamingllm] [--budgets 0.1,0.05]
        [--decode-tokens 32] [--reps 1] [--no-overhead] [--tiny] [--json PATH]

Prefill of 16k tokens on the 0.84B shape takes minutes on 2 threads; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (tools/bench.py: write_random_llama, SHAPES)

#: --tiny: a model small enough for smoke tests (same shape as the tests' tiny_gguf)
TINY = dict(hidden=64, layers=2, heads=4, kv_heads=2, ff=96, vocab=300)

KV_ELEM_BYTES = {"f16": 2, "f32": 4}
FIRST_TEXT_ID = 259  # after <unk>, <s>, </s> and the 256 byte tokens of bench.write_random_llama


def log(msg: str) -> None:
    print(f"[bench_kv {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- machine and process

def machine_info(n_threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": n_threads, "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}"}


def rss() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB (VmRSS / VmHWM)."""
    cur = peak = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    cur = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = peak if peak is not None else bench.rss_mib()
    return (cur if cur is not None else float("nan")), peak


# ---- model file

def model_path(args) -> Path:
    """The GGUF to run: --model, or a random one written once into --cache-dir."""
    if args.model:
        return Path(args.model)
    shape, name = (TINY, "random-llama-tiny64-f16.gguf") if args.tiny else (bench.SHAPES["0.84b"],
                                                                              "random-llama-0.84b-f16.gguf")
    path = Path(args.cache_dir) / name  # the same name as tools/bench.py: one cached file for both
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"writing {path} (random weights, once) ...")
        bench.write_random_llama(path, outtype="f16", **shape)
    return path


def file_facts(path: Path, model) -> dict:
    """Weight bytes one decode step reads, and the RMS of a token embedding row.

    Every tensor is read once per token except the embedding table (one row), unless the
    output projection reuses it. Falls back to the model's weight_bytes (the whole file's
    tensors) and RMS 0.02 (the random writer's std) when the file cannot be read here.
    """
    info = model.info
    facts = {"weight_bytes_file": int(info["weight_bytes"]), "weight_bytes_per_token": int(info["weight_bytes"]),
             "embd_rms": 0.02}
    try:
        import gguf

        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 - any failure just means the fallback
        log(f"cannot read {path.name} with gguf ({e}); weight bytes per token = all tensors")
        return facts
    total = sum(int(t.n_bytes) for t in reader.tensors)
    embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    per_token = total
    if embd is not None and not info["tied_embeddings"]:
        per_token -= int(embd.n_bytes) - int(embd.n_bytes) // max(1, model.n_vocab)
    if embd is not None and embd.tensor_type in (gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32):
        rows = np.asarray(embd.data).reshape(-1, model.n_embd)
        pick = np.random.default_rng(0).integers(0, len(rows), size=min(256, len(rows)))
        facts["embd_rms"] = float(np.sqrt(np.mean(rows[pick].astype(np.float64) ** 2)))
    facts["weight_bytes_file"], facts["weight_bytes_per_token"] = total, per_token
    return facts


# ---- prompt

def build_prompt(n_total: int, *, n_vocab: int, n_embd: int, embd_rms: float, bos: int | None,
                 image_tokens: int = 576, seed: int = 0) -> tuple[list, dict]:
    """A multimodal prompt of exactly n_total positions, as Session.prefill chunks.

    For each image a run of text tokens (BOS first) and the image (random float32 rows
    [image_tokens, n_embd] with the RMS of a token embedding row), then the question
    (40-60 text tokens; fewer for short prompts). About 3/4 of the positions before the
    question are image rows. Returns (chunks, layout).
    """
    rng = np.random.default_rng(seed)
    lo = FIRST_TEXT_ID if n_vocab > FIRST_TEXT_ID + 16 else 3

    def text(n):
        return rng.integers(lo, n_vocab, size=n).tolist()

    n_bos = 1 if bos is not None and bos >= 0 else 0
    n_q = min(int(rng.integers(40, 61)), max(1, n_total // 4))
    body = n_total - n_q - n_bos
    n_img_tok = max(1, min(image_tokens, body // 3))
    n_img = max(1, int(0.75 * body) // n_img_tok)
    n_text = body - n_img * n_img_tok
    if body < 2 or n_text < n_img:
        raise ValueError(f"prompt length {n_total} is too short for an image and a question")
    seg = [n_text // n_img] * n_img  # text before each image (the first one takes the remainder)
    seg[0] += n_text - sum(seg)
    chunks: list = []
    for i in range(n_img):
        chunks.append(([bos] if i == 0 and n_bos else []) + text(seg[i]))
        chunks.append(rng.standard_normal((n_img_tok, n_embd), dtype=np.float32) * np.float32(embd_rms))
    chunks.append(text(n_q))
    layout = {"n_images": n_img, "image_tokens": n_img_tok, "question_tokens": n_q,
              "text_tokens": n_total - n_img * n_img_tok}
    return chunks, layout


# ---- measurements

def kv_read_bytes(entries_before: int, n_heads_total: int, n_decode: int, head_dim: int, elem: int) -> float:
    """KV bytes one decode step reads, averaged over n_decode steps (each adds one entry per head)."""
    mean_entries = entries_before + n_heads_total * (n_decode + 1) / 2
    return mean_entries * 2 * head_dim * elem


def run_policy(base, policy: str, budget: float, first_token: int, n_decode: int, reps: int) -> dict:
    """Clone the prefilled session, compress, decode; the best of reps runs."""
    best = None
    for _ in range(reps):
        with base.clone() as s:
            t0 = time.perf_counter()
            report = s.compress(budget, policy, decode_room=n_decode + 1)
            wall = time.perf_counter() - t0
            entries = int(np.asarray(s.kv_lengths()).sum())
            kv_after = s.stats()["kv_bytes"]
            tokens, tok = [], first_token
            t0 = time.perf_counter()
            for _ in range(n_decode):
                tok = int(np.argmax(s.decode(tok)))
                tokens.append(tok)
            t_dec = time.perf_counter() - t0
            cur, peak = rss()
        row = {"compress_ms": report.seconds * 1e3, "compress_wall_ms": wall * 1e3,
               "decode_s": t_dec, "decode_tok_s": n_decode / t_dec if t_dec > 0 else float("inf"),
               "kv_entries": entries, "kv_bytes": int(kv_after),
               "kv_bytes_before": int(report.kv_bytes_before), "kept_fraction": report.kept_fraction,
               "rss_mib": cur, "peak_rss_mib": peak, "tokens": tokens}
        if best is None or row["decode_s"] < best["decode_s"]:
            best = row
    return best


def bench_length(model, facts: dict, n: int, args, policies: list[str], budgets: list[float], eta_hint) -> dict:
    T = args.decode_tokens
    chunks, layout = build_prompt(n, n_vocab=model.n_vocab, n_embd=model.n_embd, embd_rms=facts["embd_rms"],
                                  bos=model.bos_id, image_tokens=args.image_tokens, seed=n)
    log(f"length {n}: {layout['n_images']} images x {layout['image_tokens']} rows, "
        f"{layout['text_tokens']} text tokens ({layout['question_tokens']} in the question)"
        + (f"; prefill >= ~{eta_hint:.0f} s each (linear estimate)" if eta_hint else ""))
    out = {"n_prompt": n, **layout, "prefill_s": None, "prefill_stats_s": None, "stats_overhead_pct": None,
           "vlcache_overhead_pct": None}
    with model.session(n_ctx=n + T + 8, n_threads=args.threads) as base:
        if not args.no_overhead:
            log(f"length {n}: prefill without statistics ...")
            t0 = time.perf_counter()
            base.prefill(chunks)
            out["prefill_s"] = time.perf_counter() - t0
            log(f"length {n}: {out['prefill_s']:.2f} s ({n / out['prefill_s']:.0f} tok/s); "
                f"prefill with every statistic ...")
            base.reset()
            if args.vlcache_overhead:  # only the post-vision window VL-Cache itself needs
                log(f"length {n}: prefill with VL-Cache's statistics only ...")
                t0 = time.perf_counter()
                base.prefill(chunks, kv_stats="vl-cache")
                t = time.perf_counter() - t0
                out["vlcache_overhead_pct"] = 100 * (t - out["prefill_s"]) / out["prefill_s"]
                log(f"length {n}: {t:.2f} s ({out['vlcache_overhead_pct']:+.1f} %); prefill with every statistic ...")
                base.reset()
        else:
            log(f"length {n}: prefill with every statistic ...")
        t0 = time.perf_counter()
        logits = base.prefill(chunks, kv_stats=True)
        out["prefill_stats_s"] = time.perf_counter() - t0
        if out["prefill_s"]:
            out["stats_overhead_pct"] = 100 * (out["prefill_stats_s"] - out["prefill_s"]) / out["prefill_s"]
        log(f"length {n}: {out['prefill_stats_s']:.2f} s with statistics"
            + (f" ({out['stats_overhead_pct']:+.1f} %)" if out["stats_overhead_pct"] is not None else ""))
        out["image_spans"] = [list(sp) for sp in base.image_spans]
        first = int(np.argmax(logits))

        runs = [(p, b) for p in policies for b in ([1.0] if p == "full" else budgets)]
        L, Hkv, hd = model.n_layer, model.n_head_kv, model.head_dim
        elem = KV_ELEM_BYTES[base.kv_type]
        full_bytes = facts["weight_bytes_per_token"] + kv_read_bytes(n * L * Hkv, L * Hkv, T, hd, elem)
        with base.clone() as warm:  # warm-up: the first decode after a prefill is slower (caches, pages)
            tok = first
            for _ in range(min(4, T)):
                tok = int(np.argmax(warm.decode(tok)))
        rows, t_start = [], time.perf_counter()
        for i, (policy, budget) in enumerate(runs):
            left = ""
            if i:
                per = (time.perf_counter() - t_start) / i
                left = f", ~{per * (len(runs) - i):.0f} s left for this length"
            log(f"length {n}: [{i + 1}/{len(runs)}] {policy} budget {budget:g}: clone, compress, "
                f"decode {T} tokens{left}")
            r = run_policy(base, policy, budget, first, T, args.reps)
            r["read_bytes_per_step"] = facts["weight_bytes_per_token"] + kv_read_bytes(
                r["kv_entries"], L * Hkv, T, hd, elem)
            r["bound"] = full_bytes / r["read_bytes_per_step"]
            rows.append({"policy": policy, "budget": budget, **r})
        full = next((r for r in rows if r["policy"] == "full"), None)
        for r in rows:
            r["speedup"] = r["decode_tok_s"] / full["decode_tok_s"] if full else None
            r["same_tokens_as_full"] = (sum(a == b for a, b in zip(r["tokens"], full["tokens"])) if full else None)
    out["rows"] = rows
    return out


# ---- output

def fmt_table(headers: list[str], rows: list[list[str]]) -> str:
    """An aligned markdown table: first column left-aligned, the rest right-aligned."""
    w = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(cells)) + " |"

    sep = "|" + "|".join(("-" * (w[i] + 1) + ":") if i else (":" + "-" * (w[i] + 1)) for i in range(len(w))) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def _f(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_length(res: dict, T: int) -> None:
    print(f"\n### {res['n_prompt']} prompt tokens: {res['n_images']} images x {res['image_tokens']} rows, "
          f"{res['text_tokens']} text tokens ({res['question_tokens']} question); decode {T} tokens\n")
    headers = ["policy", "budget", "prefill s", "stats overhead %", "vl-cache stats %", "compress ms", "decode tok/s", "speedup",
               "bound", "KV MiB", "RSS MiB", "peak RSS MiB"]
    prefill = res["prefill_s"] if res["prefill_s"] is not None else res["prefill_stats_s"]
    rows = [[r["policy"], f"{r['budget']:g}", f"{prefill:.2f}", _f(res["stats_overhead_pct"], "+.1f"),
             _f(res["vlcache_overhead_pct"], "+.1f"), f"{r['compress_ms']:.1f}", f"{r['decode_tok_s']:.2f}", _f(r["speedup"], ".2f"), f"{r['bound']:.2f}",
             f"{r['kv_bytes'] / 2**20:.2f}", f"{r['rss_mib']:.0f}", f"{r['peak_rss_mib']:.0f}"] for r in res["rows"]]
    print(fmt_table(headers, rows))


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="GGUF to run; default: a random 0.84B F16 Llama written once into --cache-dir")
    ap.add_argument("--tiny", action="store_true", help="a tiny random model (hidden 64, 2 layers) for smoke tests")
    ap.add_argument("--cache-dir", default=os.environ.get("VLC_BENCH_DIR", "bench-models"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lengths", default="2048,8192,16384", help="comma-separated prompt lengths")
    ap.add_argument("--policies", default="full,vl-cache,h2o,snapkv,streamingllm")
    ap.add_argument("--budgets", default="0.1,0.05", help="comma-separated KV budgets in (0, 1] (full: 1)")
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--image-tokens", type=int, default=576, help="rows per image (fewer for short prompts)")
    ap.add_argument("--reps", type=int, default=1, help="compress + decode: best of this many clones")
    ap.add_argument("--no-overhead", action="store_true",
                    help="skip the prefill without statistics (no overhead column; saves one long prefill)")
    ap.add_argument("--vlcache-overhead", action="store_true",
                    help="also time a prefill with only VL-Cache's post-vision statistics (one more prefill)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    try:
        args.lengths_list = [int(x) for x in args.lengths.split(",") if x.strip()]
        args.budgets_list = [float(x) for x in args.budgets.split(",") if x.strip()]
    except ValueError as e:
        ap.error(str(e))
    args.policies_list = [p.strip() for p in args.policies.split(",") if p.strip()]
    if not args.lengths_list or min(args.lengths_list) < 16:
        ap.error("--lengths: expected prompt lengths >= 16")
    if not all(0 < b <= 1 for b in args.budgets_list):
        ap.error("--budgets: expected numbers in (0, 1]")
    if args.threads < 1 or args.decode_tokens < 1 or args.reps < 1 or args.image_tokens < 1:
        ap.error("--threads, --decode-tokens, --reps and --image-tokens must be >= 1")
    return args


def run(args) -> dict:
    import vlcache_native as vc
    from vlcache_native import kvcache

    unknown = [p for p in args.policies_list if p not in kvcache.POLICIES]
    if unknown:
        raise SystemExit(f"bench_kv: unknown policies {unknown}; expected some of {list(kvcache.POLICIES)}")
    path = model_path(args)
    machine = machine_info(args.threads)
    n_max = max(args.lengths_list) + args.decode_tokens + 8
    results = {"machine": machine, "build": vc.build_info(), "model": path.name, "decode_tokens": args.decode_tokens,
               "threads": args.threads, "lengths": []}
    with vc.Model(path, n_ctx=n_max, n_threads=args.threads) as model:
        facts = file_facts(path, model)
        results.update(n_params=int(model.n_params), **facts)
        print(f"machine: {machine['cpu']}, {machine['cores']} cores, {args.threads} threads; {machine['system']}")
        print(f"model: {path.name}  {model.n_params / 1e6:.1f}M params, {model.n_layer} layers, "
              f"{model.n_head_kv} KV heads x {model.head_dim}; weights read per token "
              f"{facts['weight_bytes_per_token'] / 2**20:.1f} MiB; {vc.build_info()}")
        with model.session(n_ctx=64, n_threads=args.threads) as warm:  # page the mmapped weights in before timing
            warm.prefill(list(range(3, min(35, model.n_vocab))))
        tok_s = None
        for n in sorted(args.lengths_list):
            eta = n / tok_s if tok_s else None
            res = bench_length(model, facts, n, args, args.policies_list, args.budgets_list, eta)
            tok_s = n / (res["prefill_s"] or res["prefill_stats_s"])
            results["lengths"].append(res)
            print_length(res, args.decode_tokens)
            sys.stdout.flush()
    print("\nprefill s: the prompt without statistics (with every statistic under --no-overhead); stats overhead: "
          "the prefill with every statistic (post-vision window, H2O's every row, SnapKV's last rows) over it; "
          "vl-cache stats: the prefill with only the post-vision window's (--vlcache-overhead). compress ms: the C call. speedup: decode tok/s over full's at "
          "that length; bound: bytes one decode step reads, full's over the policy's (weights + KV entries held x 2 "
          "x head_dim x element size). KV MiB: bytes the KV allocator holds after compress. RSS: this process after "
          "the decode (peak: since start); the prefilled session and one clone are alive then.")
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    results = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
