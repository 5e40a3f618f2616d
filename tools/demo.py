#!/usr/bin/env python3
"""The main job, end to end, with nothing to download.

1. Writes a tiny random LLaVA-1.5 checkpoint in Hugging Face layout (config.json,
   model.safetensors, preprocessor_config.json, tokenizer.json with a small byte-fallback
   BPE vocabulary learned here from a paragraph of text), using only NumPy.
2. Converts it to one GGUF with tools/convert_hf_to_gguf.py.
3. Draws a picture, loads the GGUF with vlcache_native, and answers a question about the
   picture, printing the text and timings.

The weights are random, so the answer is gibberish; the pipeline is the real one.
``--text-only`` does the same with a plain Llama and no image.

    python tools/demo.py [--outdir demo-model] [--prompt "..."] [--max-tokens 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
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
    spec = importlib.util.spec_from_file_location("convert_hf_to_gguf", TOOLS / "convert_hf_to_gguf.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outdir", default="demo-model", help="where the checkpoint, GGUF and picture go")
    ap.add_argument("--prompt", default=None, help="the question (default depends on --text-only)")
    ap.add_argument("--image", default=None, help="a picture of yours instead of the drawn one")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--outtype", default="f16", choices=["f32", "f16", "bf16"])
    ap.add_argument("--text-only", action="store_true", help="a plain Llama, no image")
    ap.add_argument("--kv-budget", type=float, default=0.1,
                    help="VL-Cache: fraction of the prompt's KV cache kept after prefill (1 = all)")
    ap.add_argument("--kv-policy", default="vl-cache", help="KV policy (vl-cache, h2o, snapkv, streamingllm, ...)")
    args = ap.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
