#!/usr/bin/env python3
"""Image-input timings, printed as a table.

1. A LLaVA-1.5-7B-shaped vision tower: CLIP ViT-L/14-336 (23 layers run, width 1024,
   MLP 4096, 16 heads) + the 1024 -> 4096 -> 4096 projector, random F16 weights, written
   once as a llama.cpp-style mmproj GGUF next to a one-layer text model of width 4096 (so
   the pair loads). Measures encoding one 336x336 image.
2. The tiny LLaVA of tools/demo.py: image encode, prefill of the whole prompt, and
   --gen decoded tokens.

    python tools/bench_vision.py [--threads 2] [--gen 32] [--cache-dir bench-models] [--skip-vitl]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def write_vitl_mmproj(path: Path, *, image=336, patch=14, width=1024, layers=23, heads=16, ff=4096,
                      proj=4096, seed=0) -> Path:
    """A random F16 CLIP ViT-L/14-336 + MLP projector in llama.cpp's legacy mmproj layout."""
    import gguf

    rng = np.random.default_rng(seed)

    def mat(*shape, std=0.02):
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float16)

    def vec(n, value=None):
        return np.full(n, value, np.float32) if value is not None else rng.standard_normal(n, dtype=np.float32) * 0.02

    w = gguf.GGUFWriter(str(path), "clip")
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_llava_projector", True)
    w.add_string("clip.projector_type", "mlp")
    w.add_uint32("clip.vision.image_size", image)
    w.add_uint32("clip.vision.patch_size", patch)
    w.add_uint32("clip.vision.embedding_length", width)
    w.add_uint32("clip.vision.feed_forward_length", ff)
    w.add_uint32("clip.vision.projection_dim", 768)
    w.add_uint32("clip.vision.attention.head_count", heads)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_uint32("clip.vision.block_count", layers)
    w.add_array("clip.vision.image_mean", [0.48145466, 0.4578275, 0.40821073])
    w.add_array("clip.vision.image_std", [0.26862954, 0.26130258, 0.27577711])
    w.add_bool("clip.use_gelu", False)
    n_pos = (image // patch) ** 2 + 1
    w.add_tensor("v.class_embd", vec(width))
    w.add_tensor("v.patch_embd.weight", mat(width, 3, patch, patch))
    w.add_tensor("v.position_embd.weight", mat(n_pos, width))
    w.add_tensor("v.pre_ln.weight", vec(width, 1.0))
    w.add_tensor("v.pre_ln.bias", vec(width, 0.0))
    for i in range(layers):
        p = f"v.blk.{i}."
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(p + name + ".weight", mat(width, width))
            w.add_tensor(p + name + ".bias", vec(width))
        for ln in ("ln1", "ln2"):
            w.add_tensor(p + ln + ".weight", vec(width, 1.0))
            w.add_tensor(p + ln + ".bias", vec(width, 0.0))
        # the legacy converter's swapped names: ffn_down holds fc1, ffn_up holds fc2
        w.add_tensor(p + "ffn_down.weight", mat(ff, width))
        w.add_tensor(p + "ffn_down.bias", vec(ff))
        w.add_tensor(p + "ffn_up.weight", mat(width, ff))
        w.add_tensor(p + "ffn_up.bias", vec(width))
    w.add_tensor("mm.0.weight", mat(proj, width))
    w.add_tensor("mm.0.bias", vec(proj))
    w.add_tensor("mm.2.weight", mat(proj, proj))
    w.add_tensor("mm.2.bias", vec(proj))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=True)
    w.close()
    return path


def bench_vitl(cache: Path, threads: int, reps: int) -> dict:
    import vlcache_native as vc

    mmproj = cache / "random-clip-vit-l-14-336-f16.mmproj.gguf"
    text = cache / "random-llama-4096x1-f16.gguf"
    if not mmproj.exists():
        print(f"writing {mmproj} ...", file=sys.stderr)
        write_vitl_mmproj(mmproj)
    if not text.exists():
        _tool("bench").write_random_llama(text, hidden=4096, layers=1, heads=32, kv_heads=32, ff=256, vocab=400)
    with vc.Model(text, mmproj=mmproj, n_ctx=1024, n_threads=threads) as m:
        img = np.random.default_rng(0).integers(0, 256, (336, 336, 3), dtype=np.uint8)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            feats = m.encode_image(img)
            best = min(best, time.perf_counter() - t0)
        return {"what": "ViT-L/14-336 + projector (F16), encode one 336x336 image",
                "tokens": len(feats), "encode_s": best}


def bench_tiny(cache: Path, threads: int, n_gen: int, reps: int) -> dict:
    import vlcache_native as vc

    demo = _tool("demo")
    gguf_path = cache / "tiny-llava-f16.gguf"
    if not gguf_path.exists():
        hf = demo.write_model(cache / "tiny-llava-hf", vision=dict(image=56, patch=14, hidden=64, layers=2, heads=4, ff=128))
        demo.load_converter().convert(hf, gguf_path, "f16", progress=False)
    pic = demo.draw_picture(cache / "picture.png")
    with vc.Model(gguf_path, n_ctx=512, n_threads=threads) as m:
        best = None
        for _ in range(reps):
            out = m.generate("What is in this picture?", images=[pic], max_tokens=n_gen)
            s = out.stats
            if best is None or s.total_ms < best.total_ms:
                best = s
        return {"what": "tiny LLaVA-1.5 (demo.py), 56x56 tiles", "tokens": best.image_tokens,
                "encode_s": best.image_encode_ms / 1e3, "prompt": best.prompt_tokens,
                "prefill_s": best.prefill_ms / 1e3, "decode_s": best.decode_ms / 1e3,
                "n_gen": best.completion_tokens}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--cache-dir", default=os.environ.get("VLC_BENCH_DIR", "bench-models"))
    ap.add_argument("--skip-vitl", action="store_true", help="only the tiny model")
    args = ap.parse_args(argv)
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)

    rows = [bench_tiny(cache, args.threads, args.gen, args.reps)]
    if not args.skip_vitl:
        rows.append(bench_vitl(cache, args.threads, 1))
    print(f"\n{args.threads} threads\n")
    print("| model | image tokens | image encode s | prompt tokens | prefill s | decoded tokens | decode s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['what']} | {r['tokens']} | {r['encode_s']:.3f} | {r.get('prompt', '-')} | "
              f"{r['prefill_s']:.3f} | {r['n_gen']} | {r['decode_s']:.3f} |" if "prefill_s" in r else
              f"| {r['what']} | {r['tokens']} | {r['encode_s']:.3f} | - | - | - | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
