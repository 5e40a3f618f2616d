#!/usr/bin/env python3
"""The main job, end to end, with nothing to download.

By default it loads the shipped demo VLM (models/shapes-llava-q8_0.gguf, a 5.7M-parameter
LLaVA-1.5 trained by tools/train_demo_vlm.py on the synthetic shapes world of
tools/shapes_world.py), draws a fresh scene, asks questions about it (one picture, then
several pictures in one prompt) and prints each answer beside the truth, with the whole KV
cache and with VL-Cache at ``--kv-budget`` (0.1), plus timings and KV bytes.

``--random`` runs the pipeline alone on a random tiny model instead (the answer is
gibberish): it writes a random LLaVA-1.5 checkpoint in Hugging Face layout with NumPy,
converts it with tools/convert_hf_to_gguf.py, loads it and answers a question about a
drawn picture; ``--text-only`` does the same with a plain Llama.

    python tools/demo.py [--seed N] [--kv-budget 0.1] [--kv-policy vl-cache] [--threads 2]
    python tools/demo.py --random [--text-only] [--prompt "..."] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import collections
import json
import struct
import sys
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent

CORPUS = """
Once upon a time there was a little cat who lived in a small house by the river. Every
morning the cat looked out of the window at the boats, the birds and the people walking
along the water. The cat liked the sun, the warm floor and the quiet sound of the rain.
One day a dog came to the house and asked the cat to play in the garden. They ran between
the trees, they counted 1, 2, 3, 10 and 100 flowers, and when the evening came they sat
together and watched the stars over the river.
"""


def train_bpe(text: str, n_merges: int) -> tuple[list[str], list[tuple[str, str]]]:
    """A minimal SentencePiece-style BPE: words carry a leading '▁', merges by pair count."""
    words = collections.Counter("▁" + w for w in text.split())
    seqs = {w: list(w) for w in words}
    chars = sorted({c for w in words for c in w})
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: collections.Counter = collections.Counter()
        for w, n in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[a, b] += n
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        for w, s in seqs.items():
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return chars, merges


def write_tokenizer(outdir: Path, extra_special: tuple[str, ...] = ()) -> int:
    chars, merges = train_bpe(CORPUS, 300)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in chars + [a + b for a, b in merges]:
        vocab.setdefault(piece, len(vocab))
    for tok in extra_special:
        vocab[tok] = len(vocab)
    special = [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True} for t in ("<unk>", "<s>", "</s>") + tuple(extra_special)]
    tokenizer = {
        "version": "1.0",
        "added_tokens": special,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {  # BOS first, as Llama's tokenizer.json does
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }
    (outdir / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False, indent=1), encoding="utf-8")
    (outdir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizerFast", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=1))
    return len(vocab)


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """safetensors: u64 header length, JSON header (dtype, shape, byte offsets), raw data."""
    header, offset = {}, 0
    for name, a in tensors.items():
        header[name] = {"dtype": {np.float32: "F32", np.float16: "F16"}[a.dtype.type],
                        "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a).tobytes())


CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def write_model(outdir: Path, *, hidden=256, layers=4, heads=8, kv_heads=4, ff=688, seed=0,
                vision: dict | None = None) -> Path:
    """A random Llama (``vision=None``) or LLaVA-1.5 checkpoint in transformers 5's layout.

    ``vision``: CLIP tower sizes, e.g. dict(image=56, patch=14, hidden=64, layers=2, heads=4, ff=128).
    """
    outdir.mkdir(parents=True, exist_ok=True)
    n_vocab = write_tokenizer(outdir, ("<image>",) if vision else ())
    hd = hidden // heads
    text_config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": ff, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": hd, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": n_vocab, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "torch_dtype": "float32",
    }
    rng = np.random.default_rng(seed)

    def w(*shape, std=0.08):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    lm = "model.language_model." if vision else "model."
    t = {lm + "embed_tokens.weight": w(n_vocab, hidden, std=1.0)}
    for i in range(layers):
        p = f"{lm}layers.{i}."
        t[p + "input_layernorm.weight"] = np.ones(hidden, np.float32)
        t[p + "self_attn.q_proj.weight"] = w(heads * hd, hidden)
        t[p + "self_attn.k_proj.weight"] = w(kv_heads * hd, hidden)
        t[p + "self_attn.v_proj.weight"] = w(kv_heads * hd, hidden)
        t[p + "self_attn.o_proj.weight"] = w(hidden, heads * hd)
        t[p + "post_attention_layernorm.weight"] = np.ones(hidden, np.float32)
        t[p + "mlp.gate_proj.weight"] = w(ff, hidden)
        t[p + "mlp.up_proj.weight"] = w(ff, hidden)
        t[p + "mlp.down_proj.weight"] = w(hidden, ff)
    t[lm + "norm.weight"] = np.ones(hidden, np.float32)
    t["lm_head.weight"] = w(n_vocab, hidden, std=0.5)
    config = text_config
    if vision:
        v = vision
        C, S, P = v["hidden"], v["image"], v["patch"]
        n_pos = (S // P) ** 2 + 1
        vt = "model.vision_tower.vision_model."
        t[vt + "embeddings.class_embedding"] = w(C, std=0.5)
        t[vt + "embeddings.patch_embedding.weight"] = w(C, 3, P, P, std=0.05)
        t[vt + "embeddings.position_embedding.weight"] = w(n_pos, C, std=0.5)
        for name in ("pre_layrnorm", "post_layernorm"):
            t[vt + name + ".weight"] = np.ones(C, np.float32)
            t[vt + name + ".bias"] = np.zeros(C, np.float32)
        for i in range(v["layers"]):
            p = f"{vt}encoder.layers.{i}."
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                t[p + f"self_attn.{proj}.weight"] = w(C, C, std=0.1)
                t[p + f"self_attn.{proj}.bias"] = w(C, std=0.02)
            for ln in ("layer_norm1", "layer_norm2"):
                t[p + ln + ".weight"] = np.ones(C, np.float32)
                t[p + ln + ".bias"] = np.zeros(C, np.float32)
            t[p + "mlp.fc1.weight"], t[p + "mlp.fc1.bias"] = w(v["ff"], C, std=0.1), w(v["ff"], std=0.02)
            t[p + "mlp.fc2.weight"], t[p + "mlp.fc2.bias"] = w(C, v["ff"], std=0.1), w(C, std=0.02)
        mp = "model.multi_modal_projector."
        t[mp + "linear_1.weight"], t[mp + "linear_1.bias"] = w(hidden, C, std=0.1), w(hidden, std=0.02)
        t[mp + "linear_2.weight"], t[mp + "linear_2.bias"] = w(hidden, hidden, std=0.1), w(hidden, std=0.02)
        config = {
            "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
            "text_config": text_config, "image_token_id": n_vocab - 1, "image_seq_length": n_pos - 1,
            "projector_hidden_act": "gelu", "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default", "tie_word_embeddings": False,
            "vision_config": {"model_type": "clip_vision_model", "hidden_size": C, "intermediate_size": v["ff"],
                              "num_hidden_layers": v["layers"], "num_attention_heads": v["heads"],
                              "image_size": S, "patch_size": P, "hidden_act": "quick_gelu",
                              "layer_norm_eps": 1e-5, "projection_dim": C, "num_channels": 3},
        }
        (outdir / "preprocessor_config.json").write_text(json.dumps({
            "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": S},
            "resample": 3, "do_center_crop": True, "crop_size": {"height": S, "width": S},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "do_convert_rgb": True}, indent=1))
    (outdir / "config.json").write_text(json.dumps(config, indent=1))
    write_safetensors(outdir / "model.safetensors", t)
    return outdir


def draw_picture(path: Path) -> Path:
    """A small picture to ask about: a sun over a river, drawn with Pillow."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (160, 120), (120, 180, 235))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 80, 160, 120], fill=(40, 90, 160))
    d.ellipse([110, 10, 145, 45], fill=(250, 210, 60))
    d.polygon([(20, 80), (50, 40), (80, 80)], fill=(60, 140, 70))
    img.save(path)
    return path


def load_converter():
    from vlcache_native import convert
    return convert


SHIPPED = TOOLS.parent / "models" / "shapes-llava-q8_0.gguf"


def _mark(ok: bool) -> str:
    return "ok " if ok else "XX "


def trained_demo(args) -> int:
    """The shipped demo VLM answers questions about a freshly drawn scene, with the whole KV
    cache and with the budget, each answer printed beside the truth."""
    import random

    import vlcache_native as vc

    sys.path.insert(0, str(TOOLS))
    import shapes_world as W

    path = Path(args.model)
    if not path.is_file():
        print(f"error: {path} not found (the demo model; --random runs a random one)", file=sys.stderr)
        return 1
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    rng = random.Random(seed)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    scene = W.make_scene(rng)
    picture = W.draw_scene(scene)
    single = []
    for k in W.SINGLE_KINDS:  # every kind of question about one picture
        q, a, o = W.single_question(rng, scene, k)
        if all(ex.question != q for ex in single):  # colour / where fall back to a count
            single.append(W.Example([scene], k, q, a, target=o, images=[picture]))
    scenes = [W.make_scene(rng) for _ in range(args.pictures)]
    pictures = [W.draw_scene(sc) for sc in scenes]
    multi = []
    for k in ("colour", "which", "describe"):  # and about several in one prompt
        q, a, o, pic = W.multi_question(rng, scenes, k)
        multi.append(W.Example(scenes, k, q, a, target=o, picture=pic, images=pictures))
    picture.save(outdir / "scene.png")
    for i, im in enumerate(pictures):
        im.save(outdir / f"picture{i + 1}.png")

    budget = args.kv_budget
    with vc.Model(path, n_ctx=1024, n_threads=args.threads) as model:
        print(f"model: {path} ({path.stat().st_size / 2**20:.1f} MiB, {model.info['n_params'] / 1e6:.1f}M "
              f"parameters, {vc.build_info()})")
        print(f"scene seed {seed} (--seed {seed} draws it again); pictures in {outdir}/\n")
        right = {"full": 0, "kv": 0}
        L, Hkv = model.n_layer, model.n_head_kv
        entry = 2 * model.info["head_dim"] * (2 if model.kv_type == "f16" else 4)  # a K and a V row
        for title, exs in ((f"One picture ({outdir / 'scene.png'}):", single),
                           (f"{args.pictures} pictures ({outdir}/picture1.png ...):", multi)):
            print(title)
            for ex in exs:
                full = model.generate(ex.prompt, images=ex.images, max_tokens=64)
                comp = model.generate(ex.prompt, images=ex.images, max_tokens=64, kv_budget=budget,
                                      kv_policy=args.kv_policy)
                ok_f, ok_c = full.text.strip() == ex.answer, comp.text.strip() == ex.answer
                right["full"] += ok_f
                right["kv"] += ok_c
                kv = comp.stats.kv
                print(f"  Q: {ex.question}")
                print(f"     truth         {ex.answer}")
                print(f"     {_mark(ok_f)}full cache  {full.text.strip()}")
                print(f"     {_mark(ok_c)}{args.kv_policy} {budget:g}  {comp.text.strip()}")
                kept = sum(len(h) for layer in kv.kept for h in layer)
                print(f"                   {full.stats.prompt_tokens} prompt tokens ({full.stats.image_tokens} image): "
                      f"prefill {full.stats.prefill_tokens_per_s:.0f} tok/s, decode "
                      f"{full.stats.decode_tokens_per_s:.0f} tok/s; the prompt's KV "
                      f"{kv.n_prompt * L * Hkv * entry / 1024:.0f} KiB -> {kept * entry / 1024:.0f} KiB kept; "
                      f"the allocator holds {kv.kv_bytes_after / 1024:.0f} KiB (with room for 64 answer tokens)")
            print()
        n = len(single) + len(multi)
        print(f"exact answers: full cache {right['full']}/{n}, {args.kv_policy} at {budget:g} {right['kv']}/{n}")
    return 0


def random_demo(args) -> int:
    """The pipeline alone on a random tiny model: write, convert, load, answer (gibberish)."""
    import vlcache_native as vc

    outdir = Path(args.outdir)
    vision = None if args.text_only else dict(image=56, patch=14, hidden=64, layers=2, heads=4, ff=128)
    hf_dir = write_model(outdir / ("hf-llama" if args.text_only else "hf-llava"), vision=vision)
    gguf_path = outdir / f"tiny-{'llama' if args.text_only else 'llava'}-{args.outtype}.gguf"
    print(f"[1/3] wrote a random {'Llama' if args.text_only else 'LLaVA-1.5'} checkpoint to {hf_dir}")
    load_converter().convert(hf_dir, gguf_path, args.outtype)
    print(f"[2/3] converted it to {gguf_path} ({gguf_path.stat().st_size / 2**20:.1f} MiB)")
    images = [] if args.text_only else [args.image or draw_picture(outdir / "picture.png")]
    prompt = args.prompt or ("Once upon a time the little cat" if args.text_only else "What is in this picture?")
    with vc.Model(gguf_path, n_ctx=512, n_threads=args.threads) as model:
        print(f"[3/3] loaded {model!r} ({vc.build_info()})")
        print(f"\nprompt: {prompt!r}" + (f"  image: {images[0]}" if images else "") + "\n")
        stream = model.generate(prompt, images=images, max_tokens=args.max_tokens, stream=True,
                                kv_budget=args.kv_budget, kv_policy=args.kv_policy)
        for piece in stream:
            print(piece, end="", flush=True)
        out = stream.completion
        s = out.stats
        print(f"\n\nfinish: {out.finish_reason}")
        rows = [("prompt tokens", f"{s.prompt_tokens}"), ("  of them image", f"{s.image_tokens}"),
                ("image encode", f"{s.image_encode_ms:.1f} ms"), ("generated tokens", f"{s.completion_tokens}"),
                ("prefill", f"{s.prefill_tokens_per_s:.1f} tok/s"), ("decode", f"{s.decode_tokens_per_s:.1f} tok/s"),
                ("time to first token", f"{s.ttft_ms:.1f} ms"), ("KV cache", f"{s.kv_bytes / 2**20:.2f} MiB")]
        kv = s.kv
        rows += [(f"{args.kv_policy} kept", f"{kv.kept_fraction:.1%} of the prompt's KV "
                  f"({kv.kv_bytes_before / 2**20:.2f} -> {kv.kv_bytes_after / 2**20:.2f} MiB with decode room)"),
                 ("layer sparsity", " ".join(f"{x:.2f}" for x in kv.sparsity) if kv.sparsity is not None else "-"),
                 ("tokens kept / layer", " ".join(str(int(k)) for k in kv.layer_budgets) + f" of {kv.n_prompt}")]
        for k, v in rows:
            print(f"{k:>20}  {v}")
        full = model.generate(prompt, images=images, max_tokens=args.max_tokens)
        same = "the same text" if full.text == out.text else f"a different text: {full.text!r}"
        print(f"\nwith the whole KV cache the model writes {same}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(SHIPPED), help="the demo VLM (default: the shipped one)")
    ap.add_argument("--seed", type=int, default=None, help="scene seed (default: a fresh scene)")
    ap.add_argument("--pictures", type=int, default=6, help="pictures in the multi-picture questions")
    ap.add_argument("--outdir", default="demo-out", help="where pictures (and --random's model) go")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--kv-budget", type=float, default=0.1,
                    help="VL-Cache: fraction of the prompt's KV cache kept after prefill (1 = all)")
    ap.add_argument("--kv-policy", default="vl-cache", help="KV policy (vl-cache, h2o, snapkv, streamingllm, ...)")
    g = ap.add_argument_group("the random model (the pipeline alone; its answers are gibberish)")
    g.add_argument("--random", action="store_true", help="write, convert and run a random tiny LLaVA")
    g.add_argument("--text-only", action="store_true", help="with --random: a plain Llama, no image")
    g.add_argument("--prompt", default=None, help="with --random: the question")
    g.add_argument("--image", default=None, help="with --random: a picture of yours instead of the drawn one")
    g.add_argument("--max-tokens", type=int, default=32)
    g.add_argument("--outtype", default="f16", choices=["f32", "f16", "bf16"])
    args = ap.parse_args(argv)
    if args.random or args.text_only:
        return random_demo(args)
    if args.model == str(SHIPPED) and not SHIPPED.is_file():
        print(f"The trained demo model ({SHIPPED.relative_to(TOOLS.parent)}) is not in this checkout yet; "
              "tools/train_demo_vlm.py trains it. Running the pipeline on a random model instead.\n")
        return random_demo(args)
    return trained_demo(args)


if __name__ == "__main__":
    sys.exit(main())
