"""llavamodels.py: tiny random LLaVA-1.5 / LLaVA-1.6 Hugging Face fixtures for the Python tests.

What it is:
  - make_llava15(dir, ...) : a random LlavaForConditionalGeneration (CLIP vision tower, mlp2x_gelu
                             projector, Llama/Mistral text model with GQA) saved with its tokenizer
                             and processor, ready for HF's LlavaProcessor and for our converter.
  - make_llava16(dir, ...) : the same as LlavaNextForConditionalGeneration ("anyres" tiles,
                             image_newline, LlavaNextProcessor).
  - load_hf(dir)           : (model float32 eval, processor) loaded back with transformers.
  - hf_run(model, processor, text, images) : HF's end-to-end reference for one prompt: input_ids,
                             pixel_values, image_sizes, the image embeddings exactly as HF inserts
                             them at the <image> positions, and the logits.
  - hf_greedy(...)         : HF greedy generation (token ids after the prompt).
  - make_image(w, h, ...)  : a deterministic PIL test image (gradients + noise), any size/mode.
  - load_state(dir)        : checkpoint tensors under naming-scheme-independent names.
  - convert(dir, out, ...) : our tools/convert_hf_to_gguf.py convert() (with chat_template).

What it is not: not a test, and it needs neither the C library nor a network connection.
Everything is tiny: building + saving a model takes about a second on 2 cores.

Typical use:
    import llavamodels as L
    d = L.make_llava15(tmp_path / "hf")                      # 32x32 tiles, 8x8 patches, 16 image tokens
    gguf_path = L.convert(d, tmp_path / "m.gguf", "f32")
    model, proc = L.load_hf(d)
    ref = L.hf_run(model, proc, L.PROMPT_15, [L.make_image(40, 30)])
    ref["pixel_values"], ref["image_embeds"], ref["logits"]   # numpy arrays to compare against

Sizes (defaults): vision S=32, P=8 -> N=16 patches (+CLS), width C=32, 3 layers, 2 heads,
MLP 64, quick_gelu; feature layer -2 -> hidden state 2 (2 layers stored by our converter);
text: hidden 64, 2 layers, 4 heads / 2 KV heads, MLP 128, vocab 512 SentencePiece pieces +
"<image>" (id 512) = 513. LLaVA-1.5: 16 image tokens per image ("default" strategy drops CLS).
LLaVA-1.6 default pinpoints [[32,64],[64,32],[64,64]] (height, width): up to 4 tiles + the base
image; the number of image tokens depends on the image size (HF's unpadding + one newline per row).

Checkpoint naming (`naming=`): transformers keeps changing where it writes LLaVA tensors, and
real checkpoints exist in every form. "saved" = whatever this transformers' save_pretrained
writes (5.x: language_model.model.*, language_model.lm_head.weight, vision_tower.* without
vision_model., multi_modal_projector.*, image_newline); "new" = transformers >= 4.52 in-memory
names (model.language_model.*, lm_head.weight, model.vision_tower.vision_model.*,
model.multi_modal_projector.*, model.image_newline); "legacy" = llava-hf hub files
(language_model.model.*, language_model.lm_head.weight, vision_tower.vision_model.*,
multi_modal_projector.*, image_newline). transformers loads all three (tested in
test_convert_llava.py).

Processor files: processor.save_pretrained writes processor_config.json (transformers 5 nests the
image processor in it) and the tokenizer; with preprocessor=True (default) the image processor is
also saved on its own as preprocessor_config.json, as on the llava-hf hub repos.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

import hfmodels as H

PathLike = Union[str, Path]

IMAGE_TOKEN = "<image>"
# Prompts in the three chat formats, one image each (what the processors expect as text).
PROMPT_15 = "USER: <image>\nWhat is this? ASSISTANT:"
PROMPT_16_MISTRAL = "[INST] <image>\nWhat is this? [/INST]"
PROMPT_16_VICUNA = ("A chat between a curious human and an artificial intelligence assistant. "
                    "The assistant gives helpful, detailed, and polite answers to the human's "
                    "questions. USER: <image>\nWhat is this? ASSISTANT:")

TEXT_DEFAULTS: Dict[str, Any] = dict(hidden=64, layers=2, heads=4, kv_heads=2, ff=128, vocab=None,
                                     head_dim=None, tie=False, rope_theta=10000.0, rms_eps=1e-5,
                                     arch="llama", ctx=512)
VISION_DEFAULTS: Dict[str, Any] = dict(image_size=32, patch_size=8, hidden=32, layers=3, heads=2, ff=64,
                                       act="quick_gelu", eps=1e-5, projection_dim=16)
PINPOINTS_DEFAULT = [[32, 64], [64, 32], [64, 64]]


# ---------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------

def _merge(defaults: Dict[str, Any], given: Optional[Dict[str, Any]], what: str) -> Dict[str, Any]:
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"llavamodels: unknown {what} option(s) {unknown}; known: {sorted(defaults)}")
    out = dict(defaults)
    out.update(given)
    return out


def _tokenizer(out_dir: Path, tokenizer_dir: Optional[PathLike], pad_token: bool):
    """SentencePiece tokenizer (hfmodels.train_spm) + "<image>" (and "<pad>") as added special tokens."""
    from transformers import AddedToken, AutoTokenizer
    if tokenizer_dir is None:
        H.train_spm(out_dir)
    else:
        for name in H.TOKENIZER_FILES:
            src = Path(tokenizer_dir) / name
            if src.is_file():
                shutil.copy(src, out_dir / name)
    tok = AutoTokenizer.from_pretrained(str(out_dir))
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    if pad_token and "<pad>" not in tok.get_vocab():
        tok.add_special_tokens({"pad_token": AddedToken("<pad>", special=True, normalized=False)})
    return tok


def _init_weights(model, text_hidden: int, seed: int) -> None:
    """Non-degenerate random weights (HF's std-0.02 init would make everything near-constant).

    Text: as hfmodels.make_llama (linear N(0, 1/fan_in), embeddings/lm_head N(0, 9/hidden),
    RMSNorm 1 + N(0, 0.01)). Vision/projector: linear and conv N(0, 1/fan_in), biases N(0, 0.01),
    LayerNorm weight 1 + N(0, 0.01) and bias N(0, 0.01), class/position embeddings N(0, 0.25).
    image_newline N(0, 9/hidden) like a token embedding.
    """
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            r = torch.randn(p.shape, generator=gen)
            if "embed_tokens" in name or "lm_head" in name or name.endswith("image_newline"):
                p.copy_(r * (3.0 / text_hidden ** 0.5))
            elif name.endswith("class_embedding") or "position_embedding" in name:
                p.copy_(0.5 * r)
            elif p.ndim == 1 and name.endswith(".bias"):
                p.copy_(0.1 * r)
            elif p.ndim == 1:
                p.copy_(1.0 + 0.1 * r)
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(r / fan_in ** 0.5)


def _canonical(name: str) -> str:
    """Any LLaVA checkpoint / in-memory name -> text.*, lm_head.weight, vision.*, projector.*,
    image_newline."""
    for pat, rep in ((r"^(model\.language_model\.|language_model\.model\.)", "text."),
                     (r"^(language_model\.)?lm_head\.", "lm_head."),
                     (r"^(model\.)?vision_tower\.(vision_model\.)?", "vision."),
                     (r"^(model\.)?multi_modal_projector\.", "projector."),
                     (r"^(model\.)?image_newline$", "image_newline")):
        new, n = re.subn(pat, rep, name)
        if n:
            return new
    raise ValueError(f"llavamodels: unrecognized LLaVA tensor name {name!r}")


_SCHEMES = {
    "new": {"text.": "model.language_model.", "lm_head.": "lm_head.",
            "vision.": "model.vision_tower.vision_model.", "projector.": "model.multi_modal_projector.",
            "image_newline": "model.image_newline"},
    "legacy": {"text.": "language_model.model.", "lm_head.": "language_model.lm_head.",
               "vision.": "vision_tower.vision_model.", "projector.": "multi_modal_projector.",
               "image_newline": "image_newline"},
}


def _rename_checkpoint(out_dir: Path, naming: str) -> None:
    """Rewrite out_dir/model.safetensors with the given naming scheme."""
    from safetensors.torch import load_file, save_file
    st = out_dir / "model.safetensors"
    sd = load_file(str(st))
    table = _SCHEMES[naming]
    out = {}
    for name, t in sd.items():
        c = _canonical(name)
        for k, v in table.items():
            if c.startswith(k):
                out[v + c[len(k):]] = t.contiguous().clone()
                break
    save_file(out, str(st), metadata={"format": "pt"})


def _make(kind: str, out_dir: PathLike, *, text: Optional[Dict[str, Any]], vision: Optional[Dict[str, Any]],
          feature_layer: Any, strategy: str, seed: int, pad: bool, grid_pinpoints: Optional[List[List[int]]],
          projector_act: str, naming: str, dtype: Any, pad_token: bool, tokenizer_dir: Optional[PathLike],
          preprocessor: bool) -> Path:
    import torch
    import transformers as tf

    t = _merge(TEXT_DEFAULTS, text, "text")
    v = _merge(VISION_DEFAULTS, vision, "vision")
    if naming not in ("saved", "new", "legacy"):
        raise ValueError(f"llavamodels: naming must be 'saved', 'new' or 'legacy', got {naming!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tok = _tokenizer(out_dir, tokenizer_dir, pad_token)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    n_tok = len(tok)
    vocab = n_tok if t["vocab"] is None else int(t["vocab"])
    if vocab < n_tok:
        raise ValueError(f"llavamodels: vocab={vocab} is smaller than the tokenizer ({n_tok} tokens)")

    common = dict(vocab_size=vocab, hidden_size=t["hidden"], num_hidden_layers=t["layers"],
                  num_attention_heads=t["heads"], num_key_value_heads=t["kv_heads"],
                  intermediate_size=t["ff"],
                  head_dim=t["head_dim"] if t["head_dim"] is not None else t["hidden"] // t["heads"],
                  rms_norm_eps=t["rms_eps"], max_position_embeddings=t["ctx"],
                  tie_word_embeddings=t["tie"], bos_token_id=1, eos_token_id=2,
                  pad_token_id=tok.pad_token_id if pad_token else None,
                  rope_parameters={"rope_type": "default", "rope_theta": float(t["rope_theta"])})
    if t["arch"] == "llama":
        tcfg = tf.LlamaConfig(**common)
    elif t["arch"] == "mistral":
        tcfg = tf.MistralConfig(**common, sliding_window=None)
    else:
        raise ValueError(f"llavamodels: text arch must be 'llama' or 'mistral', got {t['arch']!r}")
    vcfg = tf.CLIPVisionConfig(image_size=v["image_size"], patch_size=v["patch_size"], hidden_size=v["hidden"],
                               num_hidden_layers=v["layers"], num_attention_heads=v["heads"],
                               intermediate_size=v["ff"], hidden_act=v["act"], layer_norm_eps=v["eps"],
                               projection_dim=v["projection_dim"])
    n_patch = (v["image_size"] // v["patch_size"]) ** 2
    cfg_kw = dict(vision_config=vcfg, text_config=tcfg, image_token_id=image_id,
                  vision_feature_layer=feature_layer, vision_feature_select_strategy=strategy,
                  projector_hidden_act=projector_act, tie_word_embeddings=t["tie"])
    size = dict(size={"shortest_edge": v["image_size"]},
                crop_size={"height": v["image_size"], "width": v["image_size"]})
    if kind == "1.5":
        cfg = tf.LlavaConfig(**cfg_kw, image_seq_length=n_patch + (strategy == "full"))
        model_cls, proc_cls = tf.LlavaForConditionalGeneration, tf.LlavaProcessor
        ip = tf.LlavaImageProcessor(do_pad=True, **size) if pad else tf.CLIPImageProcessor(**size)
    else:
        pins = [list(p) for p in (grid_pinpoints if grid_pinpoints is not None else PINPOINTS_DEFAULT)]
        cfg = tf.LlavaNextConfig(**cfg_kw, image_grid_pinpoints=pins)
        model_cls, proc_cls = tf.LlavaNextForConditionalGeneration, tf.LlavaNextProcessor
        ip = tf.LlavaNextImageProcessor(image_grid_pinpoints=pins, **size)

    torch.manual_seed(seed)
    model = model_cls(cfg)
    _init_weights(model, t["hidden"], seed)
    model.eval()
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    if naming != "saved":
        _rename_checkpoint(out_dir, naming)

    proc = proc_cls(image_processor=ip, tokenizer=tok, patch_size=v["patch_size"],
                    vision_feature_select_strategy=strategy, image_token=IMAGE_TOKEN,
                    num_additional_image_tokens=1)
    proc.save_pretrained(str(out_dir))
    if preprocessor:
        ip.save_pretrained(str(out_dir))
    return out_dir


def make_llava15(out_dir: PathLike, *, text: Optional[Dict[str, Any]] = None,
                 vision: Optional[Dict[str, Any]] = None, feature_layer: Any = -2, strategy: str = "default",
                 seed: int = 0, pad: bool = False, projector_act: str = "gelu", naming: str = "saved",
                 dtype: Any = None, pad_token: bool = False, tokenizer_dir: Optional[PathLike] = None,
                 preprocessor: bool = True) -> Path:
    """Save a random tiny LlavaForConditionalGeneration (LLaVA-1.5) to out_dir; returns out_dir.

    text   : overrides of TEXT_DEFAULTS, the knobs of hfmodels.make_llama: hidden, layers, heads,
             kv_heads (GQA), ff, vocab (None = tokenizer size; larger pads the embedding like
             llava-hf's 32064, the converter then adds [PAD{id}] tokens), head_dim, tie, rope_theta,
             rms_eps, arch ("llama" | "mistral"), ctx (max_position_embeddings).
    vision : overrides of VISION_DEFAULTS: image_size, patch_size, hidden, layers, heads, ff,
             act ("quick_gelu" | "gelu"), eps, projection_dim.
    feature_layer : config.vision_feature_layer (int, HF indexing: -2 = second to last hidden
             state; a list is written as is, e.g. to test the converter's refusal).
    strategy : vision_feature_select_strategy, "default" (drop CLS) or "full".
    pad    : image processor LlavaImageProcessor(do_pad=True) (pad to square with the mean
             colour, as original LLaVA-1.5) instead of CLIPImageProcessor.
    projector_act : projector_hidden_act ("gelu" = exact erf GELU, LLaVA's).
    naming : checkpoint tensor names, "saved" | "new" | "legacy" (module docstring).
    dtype  : torch dtype of the saved weights (default float32; bfloat16/float16 test the
             converter's input paths).
    pad_token : also add "<pad>" (id after "<image>") as the tokenizer's pad token, like llava-hf.
    tokenizer_dir : copy tokenizer files from here instead of training (train_spm is ~0.1 s).
    preprocessor : also write preprocessor_config.json (else only processor_config.json).
    Weights: fixed seed, see _init_weights. Tokenizer: hfmodels.train_spm + "<image>" added as a
    special token at id 512 (config.image_token_id).
    """
    return _make("1.5", out_dir, text=text, vision=vision, feature_layer=feature_layer, strategy=strategy,
                 seed=seed, pad=pad, grid_pinpoints=None, projector_act=projector_act, naming=naming,
                 dtype=dtype, pad_token=pad_token, tokenizer_dir=tokenizer_dir, preprocessor=preprocessor)


def make_llava16(out_dir: PathLike, *, text: Optional[Dict[str, Any]] = None,
                 vision: Optional[Dict[str, Any]] = None, feature_layer: Any = -2, strategy: str = "default",
                 seed: int = 0, grid_pinpoints: Optional[List[List[int]]] = None,
                 projector_act: str = "gelu", naming: str = "saved", dtype: Any = None,
                 pad_token: bool = False, tokenizer_dir: Optional[PathLike] = None,
                 preprocessor: bool = True) -> Path:
    """Save a random tiny LlavaNextForConditionalGeneration (LLaVA-1.6, anyres) to out_dir.

    Same options as make_llava15 (without pad: LlavaNextImageProcessor always pads tiles), plus
    grid_pinpoints: candidate resolutions as [height, width] pairs, multiples of the tile side
    (default PINPOINTS_DEFAULT = [[32, 64], [64, 32], [64, 64]]), written both to config.json
    and to the LlavaNextImageProcessor. With text=dict(arch="mistral") this is the
    LLaVA-1.6-Mistral shape (the converter's default chat template is then llava-1.6-mistral;
    with Llama, llava-1.6-vicuna). Returns out_dir.
    """
    return _make("1.6", out_dir, text=text, vision=vision, feature_layer=feature_layer, strategy=strategy,
                 seed=seed, pad=False, grid_pinpoints=grid_pinpoints, projector_act=projector_act,
                 naming=naming, dtype=dtype, pad_token=pad_token, tokenizer_dir=tokenizer_dir,
                 preprocessor=preprocessor)


# ---------------------------------------------------------------------------------------
# Loading and HF reference runs
# ---------------------------------------------------------------------------------------

def load_hf(hf_dir: PathLike):
    """(model, processor) from a make_llava15/16 directory; model float32, eval mode."""
    import torch
    import transformers as tf
    cfg = json.loads((Path(hf_dir) / "config.json").read_text())
    cls = (tf.LlavaNextForConditionalGeneration if "LlavaNextForConditionalGeneration" in cfg["architectures"]
           else tf.LlavaForConditionalGeneration)
    model = cls.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    return model, tf.AutoProcessor.from_pretrained(str(hf_dir))


def hf_run(model, processor, text: str, images: Optional[Sequence[Any]] = None) -> Dict[str, np.ndarray]:
    """HF reference for one prompt (batch 1), all as numpy:

      input_ids    [T] int64  : processor output (each <image> already expanded to its tokens)
      pixel_values float32    : 1.5 [n_img, 3, S, S]; 1.6 [n_img, n_tiles_max, 3, S, S]
      image_sizes  [n_img, 2] : (height, width), 1.6 only (absent for 1.5)
      inputs_embeds [T, E]    : what the language model received (text and image rows)
      image_embeds [n, E]     : the rows at image-token positions, in order (all images
                                concatenated), i.e. exactly the image features HF inserted
      logits       [T, V]
    The embeddings are captured with a forward pre-hook on the language model, so this does not
    depend on transformers' internal feature API.
    """
    import torch
    enc = processor(text=text, images=list(images) if images else None, return_tensors="pt")
    captured: Dict[str, Any] = {}

    def hook(_mod, args, kwargs):
        captured["embeds"] = kwargs.get("inputs_embeds", args[0] if args else None).detach().clone()

    lm = model.model.language_model
    handle = lm.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            out = model(**enc)
    finally:
        handle.remove()
    ids = enc["input_ids"][0]
    embeds = captured["embeds"][0]
    res = {"input_ids": ids.numpy(), "inputs_embeds": embeds.float().numpy(),
           "image_embeds": embeds[ids == model.config.image_token_id].float().numpy(),
           "logits": out.logits[0].float().numpy()}
    if "pixel_values" in enc:
        res["pixel_values"] = enc["pixel_values"].float().numpy()
    if "image_sizes" in enc:
        res["image_sizes"] = enc["image_sizes"].numpy()
    return res


def hf_greedy(model, processor, text: str, images: Optional[Sequence[Any]] = None,
              n_tokens: int = 20) -> List[int]:
    """HF greedy decoding: the n_tokens new token ids after the prompt (no early stop at EOS)."""
    import torch
    enc = processor(text=text, images=list(images) if images else None, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=n_tokens, min_new_tokens=n_tokens,
                             pad_token_id=0)
    return out[0, enc["input_ids"].shape[1]:].tolist()


def make_image(width: int, height: int, seed: int = 0, mode: str = "RGB"):
    """A deterministic PIL image: colour gradients plus noise (so resizing, cropping and tile
    order all matter), converted to `mode` ("RGB", "RGBA", "L", "P", ...)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1),
                     127.5 + 127.5 * np.sin((x + 2 * y) / 5.0)], axis=-1)
    arr = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def load_state(hf_dir: PathLike) -> Dict[str, Any]:
    """Checkpoint tensors (torch, stored dtype) under scheme-independent names: text.<rest>
    (e.g. text.layers.0.self_attn.q_proj.weight), lm_head.weight, vision.<rest> (e.g.
    vision.encoder.layers.0.mlp.fc1.weight), projector.<rest> (linear_1.weight ...), image_newline."""
    from safetensors.torch import load_file
    out = {}
    for f in sorted(Path(hf_dir).glob("*.safetensors")):
        for k, t in load_file(str(f)).items():
            out[_canonical(k)] = t
    return out


def convert(hf_dir: PathLike, outfile: PathLike, outtype: str = "f32",
            chat_template: Optional[str] = None) -> Path:
    """Our converter on hf_dir (no progress output); returns the GGUF path."""
    return H.converter_module().convert(hf_dir, outfile, outtype, progress=False,
                                        chat_template=chat_template)
