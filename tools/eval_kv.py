#!/usr/bin/env python3
"""Accuracy of every KV policy at every budget, on the demo VLM and the shapes world.

The evaluation set (fixed seed, disjoint from training by seed) holds conversations about
4-8 pictures each (36 image tokens per picture, so image tokens fill most of the 180-360
prompt positions and the budget binds). Each conversation has two scored questions:

- turn 1: the first question. Its prompt is prefilled with every policy's attention
  statistics, then the cache is compressed and the answer decoded greedily. Only the
  first answer token comes from the full cache; answers are sentences whose informative
  words come later ("In picture 3, the triangle is red."), so what is scored is decoded
  from the compressed cache.
- follow-up: the true first answer and a second question are prefilled into the
  compressed cache, and the second answer is decoded from it. The compressed cache was
  chosen for the first question, so this measures what the policy threw away.

Scores: exact match for short answers; descriptions get per-attribute credit (size,
colour, shape, place per object). Accuracy is the mean score. KV bytes are the bytes of
the prompt's entries the cache keeps (all layers and KV heads, mean over conversations).

    python tools/eval_kv.py [MODEL.gguf] [--n 500] [--policies vl-cache,h2o,...]
                            [--budgets 1,0.5,0.2,0.1,0.05,0.02] [--json out.json] [--png out.png]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
import shapes_world as W  # noqa: E402

DEFAULT_MODEL = TOOLS.parent / "models" / "shapes-llava-q8_0.gguf"
POLICIES = ("vl-cache", "h2o", "snapkv", "pyramidkv", "adakv", "streamingllm", "random",
            "vl-cache-uniform", "sparsity-h2o")
BUDGETS = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02)
EVAL_SEED = 20_000_000  # training draws Random(seed * 1000003 + step) and Random(seed + 1e9)
MAX_ANSWER = 48


def eval_set(n: int, seed: int = EVAL_SEED) -> list:
    """n two-turn conversations about 4-8 pictures; both questions' kinds cycle evenly."""
    rng = random.Random(seed)
    kinds = W.MULTI_KINDS
    out = []
    for i in range(n):
        first, second = kinds[i % len(kinds)], kinds[(i // len(kinds) + i + 1) % len(kinds)]
        out.append(W.make_example(rng, n_pictures=4 + i % 5, kind=second, follow_up=True, first_kind=first))
    return out


def greedy(model, session, logits: np.ndarray, max_tokens: int = MAX_ANSWER) -> str:
    tokens = []
    while len(tokens) < max_tokens:
        t = int(np.argmax(logits))
        if model.is_eog(t):
            break
        tokens.append(t)
        logits = session.decode(t)
    return model.detokenize(tokens)


def follow_up_ids(model, ex: W.Example, chunks1: list, images=None) -> list:
    """The token ids the second turn adds to the first turn's prompt (as the whole
    conversation tokenizes). ``images``: the pictures' embeddings when already encoded."""
    full = model.prompt_chunks(ex.prompt, ex.images if images is None else images)
    head, tail = list(chunks1[-1]), list(full[-1])
    if tail[:len(head)] != head:
        raise RuntimeError(f"the conversation does not tokenize as its first turn + the rest: {ex.prompt!r}")
    return tail[len(head):]


def cells_of(policies, budgets) -> list:
    """(policy, budget) cells; budget 1.0 is one cell ("full"): every policy keeps everything."""
    cells = [("full", 1.0)] if 1.0 in budgets else []
    return cells + [(p, b) for p in policies for b in budgets if b < 1.0 and p != "full"]


def score_examples(model, examples, cells, kv_type: str = "f16", progress: bool = True) -> dict:
    """Raw scores: {cell: {"turn1", "follow_up", "kv_bytes", "kind"}: lists}, plus prompt lengths."""
    L, Hkv, hd = model.n_layer, model.n_head_kv, model.info["head_dim"]
    entry = 2 * hd * (2 if kv_type == "f16" else 4)  # one K and one V row per layer and KV head
    raw = {c: {"turn1": [], "follow_up": [], "kv_bytes": [], "kind": []} for c in cells}
    n_prompt, t0 = [], time.perf_counter()
    for i, ex in enumerate(examples):
        feats = [model.encode_image(im) for im in ex.images]
        chunks = model.prompt_chunks(ex.first_prompt, feats)
        extra = follow_up_ids(model, ex, chunks, feats)  # the pictures encoded once
        with model.session(n_ctx=1024, kv_type=kv_type) as base:
            last = base.prefill(chunks, kv_stats=True)
            m = base.n_past
            n_prompt.append(m)
            for cell in cells:
                policy, budget = cell
                with base.clone() as a:
                    if budget < 1.0:
                        rep = a.compress(budget, policy, decode_room=MAX_ANSWER)
                        kept = sum(len(k) for layer in rep.kept for k in layer)
                    else:
                        kept = m * L * Hkv
                    with a.clone() as b:
                        r1 = greedy(model, a, last)
                        r2 = greedy(model, b, b.prefill(extra))
                c = raw[cell]
                c["turn1"].append(W.score(ex.first_kind, ex.first_answer, r1))
                c["follow_up"].append(W.score(ex.kind, ex.answer, r2))
                c["kv_bytes"].append(kept * entry)
                c["kind"].append(ex.first_kind)
        if progress:
            el = time.perf_counter() - t0
            sys.stderr.write(f"\r[{i + 1}/{len(examples)}] {el:.0f} s, "
                             f"~{el / (i + 1) * (len(examples) - i - 1):.0f} s left   ")
    if progress:
        sys.stderr.write("\n")
    return {"cells": raw, "n_prompt": n_prompt}


def _worker(job) -> dict:
    import vlcache_native as vc
    path, n, part, jobs, cells, kv_type = job
    with vc.Model(path, n_ctx=1024, n_threads=1) as model:
        return score_examples(model, eval_set(n)[part::jobs], cells, kv_type, progress=part == 0)


def summarize(raw: dict, kv_type: str, seconds: float) -> dict:
    """The JSON report: per cell the mean turn-1 and follow-up scores, KV bytes, per-kind scores."""
    n_prompt = raw["n_prompt"]
    report = {"n": len(n_prompt), "kv_type": kv_type, "prompt_tokens": [int(min(n_prompt)), int(max(n_prompt))],
              "mean_prompt_tokens": float(np.mean(n_prompt)), "seconds": seconds, "cells": []}
    for (policy, budget), c in raw["cells"].items():
        kinds = {}
        for k, s in zip(c["kind"], c["turn1"]):
            kinds.setdefault(k, []).append(s)
        report["cells"].append({
            "policy": policy, "budget": budget, "turn1": float(np.mean(c["turn1"])),
            "follow_up": float(np.mean(c["follow_up"])), "kv_bytes": float(np.mean(c["kv_bytes"])),
            "by_kind": {k: float(np.mean(v)) for k, v in sorted(kinds.items())}})
    return report


def run(model, n: int, policies=POLICIES, budgets=BUDGETS, *, kv_type: str = "f16", jobs: int = 1,
        progress: bool = True) -> dict:
    """Scores every (policy, budget) cell on eval_set(n); ``model`` is a Model, or a path when
    ``jobs`` > 1 (that many processes, one thread each)."""
    cells = cells_of(policies, budgets)
    t0 = time.perf_counter()
    if jobs <= 1:
        raw = score_examples(model, eval_set(n), cells, kv_type, progress)
    else:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(jobs) as pool:
            parts = pool.map(_worker, [(str(model), n, j, jobs, cells, kv_type) for j in range(jobs)])
        raw = {"cells": {c: {k: [x for p in parts for x in p["cells"][c][k]] for k in parts[0]["cells"][c]}
                         for c in cells},
               "n_prompt": [x for p in parts for x in p["n_prompt"]]}
    return summarize(raw, kv_type, time.perf_counter() - t0)


TASK_SEED = 30_000_000


def task_set(n_per_task: int, seed: int = TASK_SEED) -> dict:
    """Held-out questions per task: each one-picture kind, each 4-8-picture kind, and
    one-picture follow-ups (the scored question is the second turn)."""
    rng = random.Random(seed)
    tasks = {f"1 picture: {k}": [W.make_example(rng, 1, kind=k) for _ in range(n_per_task)] for k in W.SINGLE_KINDS}
    tasks["1 picture: follow-up"] = [W.make_example(rng, 1, follow_up=True) for _ in range(n_per_task)]
    for k in W.MULTI_KINDS:
        tasks[f"4-8 pictures: {k}"] = [W.make_example(rng, 4 + i % 5, kind=k) for i in range(n_per_task)]
    return tasks


def task_accuracy(model, n_per_task: int = 100) -> dict:
    """Full-cache accuracy per task: {task: (mean score, exact-match share)}."""
    out = {}
    for task, exs in task_set(n_per_task).items():
        scores, exact = [], []
        for ex in exs:
            reply = model.generate(ex.prompt, images=ex.images, max_tokens=MAX_ANSWER).text.strip()
            scores.append(W.score_answer(ex, reply))
            exact.append(reply == ex.answer)
        out[task] = (float(np.mean(scores)), float(np.mean(exact)))
    return out


def task_table(acc: dict) -> str:
    rows = ["| task | accuracy | exact match |", "|---|---:|---:|"]
    rows += [f"| {t} | {a:.1%} | {e:.1%} |" for t, (a, e) in acc.items()]
    return "\n".join(rows)


def cell(report: dict, policy: str, budget: float) -> dict:
    """The report's cell for (policy, budget); budget 1.0 is the full cache for every policy."""
    for c in report["cells"]:
        if c["budget"] == budget and (c["policy"] == policy or budget == 1.0):
            return c
    raise KeyError((policy, budget))


def table(report: dict, key: str = "turn1") -> str:
    """A markdown table: policies down, budgets across, 'accuracy (KV KiB)' per cell."""
    budgets = sorted({c["budget"] for c in report["cells"]}, reverse=True)
    policies = [p for p in dict.fromkeys(c["policy"] for c in report["cells"]) if p != "full"] or ["full"]
    rows = ["| policy | " + " | ".join(f"{b:g}" for b in budgets) + " |",
            "|---|" + "---:|" * len(budgets)]
    for p in policies:
        vals = []
        for b in budgets:
            c = cell(report, p, b)
            vals.append(f"{c[key]:.1%} ({c['kv_bytes'] / 1024:.0f} KiB)")
        rows.append(f"| {p} | " + " | ".join(vals) + " |")
    return "\n".join(rows)


# ---- the plot (Pillow only)

COLOURS = [(214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189),
           (140, 86, 75), (127, 127, 127), (227, 119, 194), (23, 190, 207), (188, 189, 34)]


def plot(report: dict, path: Path) -> Path:
    """accuracy against budget (log scale), one line per policy; turn 1 and follow-up side by side."""
    from PIL import Image, ImageDraw, ImageFont

    def font(size):
        try:
            return ImageFont.truetype("DejaVuSans.ttf", size)
        except OSError:
            return ImageFont.load_default()

    f, fs = font(15), font(12)
    budgets = sorted({c["budget"] for c in report["cells"]})
    policies = [p for p in dict.fromkeys(c["policy"] for c in report["cells"]) if p != "full"]
    W_, H_, pad = 1200, 560, 60
    img = Image.new("RGB", (W_, H_), (255, 255, 255))
    d = ImageDraw.Draw(img)
    pw = (W_ - 3 * pad - 180) // 2
    lo, hi = math.log(budgets[0]), math.log(budgets[-1]) if len(budgets) > 1 else math.log(budgets[0]) + 1

    for k, (key, title) in enumerate((("turn1", "turn 1 (decoded from the compressed cache)"),
                                      ("follow_up", "follow-up (prefilled into the compressed cache)"))):
        x0, y0, y1 = pad + k * (pw + pad), pad, H_ - pad
        x1 = x0 + pw
        d.rectangle([x0, y0, x1, y1], outline=(170, 170, 170))
        d.text((x0, 20), title, fill=(30, 30, 30), font=f)
        for a in range(0, 11, 2):
            y = y1 - (y1 - y0) * a / 10
            d.line([x0, y, x1, y], fill=(232, 232, 232))
            d.text((x0 - 40, y - 7), f"{a * 10}%", fill=(90, 90, 90), font=fs)
        sx = lambda b: x0 + 10 + (pw - 20) * (math.log(b) - lo) / (hi - lo)  # noqa: E731
        for b in budgets:
            d.text((sx(b) - 12, y1 + 8), f"{b:g}", fill=(90, 90, 90), font=fs)
        d.text((x0 + pw // 2 - 60, y1 + 28), "KV budget (log scale)", fill=(60, 60, 60), font=fs)
        for j, p in enumerate(policies):
            pts = [(sx(b), y1 - (y1 - y0) * cell(report, p, b)[key]) for b in budgets]
            colour = COLOURS[j % len(COLOURS)]
            d.line(pts, fill=colour, width=4 if p == "vl-cache" else 2)
            for x, y in pts:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    for j, p in enumerate(policies):
        y = pad + 24 * j
        d.line([W_ - 170, y + 8, W_ - 145, y + 8], fill=COLOURS[j % len(COLOURS)], width=4)
        d.text((W_ - 138, y), p, fill=(30, 30, 30), font=fs)
    d.text((pad, H_ - 22), f"{report['n']} conversations, 4-8 pictures, {report['prompt_tokens'][0]}-"
           f"{report['prompt_tokens'][1]} prompt tokens, KV {report['kv_type']}", fill=(90, 90, 90), font=fs)
    img.save(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=str(DEFAULT_MODEL))
    ap.add_argument("--n", type=int, default=500, help="conversations (each has two scored questions)")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--budgets", default=",".join(f"{b:g}" for b in BUDGETS))
    ap.add_argument("--kv-type", default="f16", choices=["f16", "f32"])
    ap.add_argument("--jobs", type=int, default=2, help="processes (one thread each; the model is tiny)")
    ap.add_argument("--tasks", type=int, default=100,
                    help="also score the full cache on this many held-out questions per task (0: skip)")
    ap.add_argument("--json", default="eval_kv.json")
    ap.add_argument("--png", default="eval_kv.png")
    args = ap.parse_args(argv)

    import vlcache_native as vc

    policies = [p for p in args.policies.split(",") if p]
    budgets = sorted({float(b) for b in args.budgets.split(",") if b}, reverse=True)
    for b in budgets:
        if not 0 < b <= 1:
            ap.error(f"budget {b} is not in (0, 1]")
    for p in policies:
        vc.kvcache.policy_id(p)  # unknown names fail before any work
    tasks = None
    if args.tasks:
        with vc.Model(args.model, n_ctx=1024, n_threads=1) as model:
            tasks = task_accuracy(model, args.tasks)
        print(f"Full cache, {args.tasks} held-out questions per task (accuracy: descriptions get "
              f"per-attribute credit)\n\n{task_table(tasks)}\n", flush=True)
    if args.jobs > 1:
        report = run(args.model, args.n, policies, budgets, kv_type=args.kv_type, jobs=args.jobs)
    else:
        with vc.Model(args.model, n_ctx=1024, n_threads=1) as model:
            report = run(model, args.n, policies, budgets, kv_type=args.kv_type)
    report["model"] = Path(args.model).name
    report["tasks"] = tasks
    Path(args.json).write_text(json.dumps(report, indent=1))
    plot(report, Path(args.png))
    print(f"\n{report['n']} conversations of 4-8 pictures ({report['prompt_tokens'][0]}-"
          f"{report['prompt_tokens'][1]} prompt tokens, mean {report['mean_prompt_tokens']:.0f}), "
          f"KV {args.kv_type}, {report['seconds']:.0f} s\n")
    print("Turn 1: accuracy of the first answer, decoded from the compressed cache (its first token "
          "comes from the full cache); in brackets the prompt's KV bytes kept\n")
    print(table(report, "turn1"))
    print("\nFollow-up: a second question prefilled into the compressed cache\n")
    print(table(report, "follow_up"))
    print(f"\nwrote {args.json} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
