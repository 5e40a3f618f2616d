#!/usr/bin/env python3
"""vlcache_native.convert: Hugging Face Llama/Mistral/LLaVA checkpoint -> GGUF
(``vlcache-native convert``; tools/convert_hf_to_gguf.py is the same as a script).

What it is:
  - Input: a LlamaForCausalLM or MistralForCausalLM directory (config.json; model.safetensors
    or sharded model-*.safetensors + model.safetensors.index.json; tokenizer.model and/or
    tokenizer.json with tokenizer_config.json, special_tokens_map.json, added_tokens.json).
  - Output: one GGUF v3 file written with the `gguf` package, with llama.cpp's key names,
    tensor names and Q/K row permutation (docs GGUF_LLAVA.md §1.5-1.7), F32/F16/BF16 weights
    (1-D tensors always F32), and the SentencePiece-style ("llama") vocabulary.
  - LLaVA: a LlavaForConditionalGeneration (LLaVA-1.5) or LlavaNextForConditionalGeneration
    (LLaVA-1.6) directory with a Llama/Mistral/Vicuna text model and a CLIP vision tower, in
    any of the checkpoint naming schemes transformers and the llava-hf hub use, becomes ONE
    GGUF (general.architecture "llava"): the text model as above plus clip.* / vlcache.* keys
    and v.* / mm.* tensors, exactly the layout of tools/GGUF_FORMAT.md. Only the ViT layers up
    to vision_feature_layer are stored; the image processor settings
    (preprocessor_config.json) and the chat template name travel in the file.
  - Streaming: safetensors are read with numpy.memmap and each tensor is converted and
    written on its own, so peak memory is about one tensor, never two copies of the model.
  - No torch and no sentencepiece at convert time: the safetensors format and the
    SentencePiece ModelProto are parsed here. torch is used only for legacy
    pytorch_model*.bin checkpoints, and only if it is importable.

What it is not:
  - Not a quantizer (F32/F16/BF16 only), not a general llama.cpp converter, and it does not
    write llama.cpp's text + mmproj pairs: other architectures, non-CLIP vision towers
    (SigLIP, ...), several feature layers, rope scaling other than linear, byte-level
    (GPT-2/Llama-3 style) BPE tokenizers and non-SiLU activations are refused with an error.

Usage:
  vlcache-native convert MODEL_DIR --outfile OUT.gguf --outtype f32|f16|bf16
  python tools/convert_hf_to_gguf.py MODEL_DIR ...   (the same)
      [--chat-template llava-1.5|llava-1.6-mistral|llava-1.6-vicuna]   (LLaVA only)
From Python:
  convert(model_dir, outfile, outtype="f16", chat_template=None) -> pathlib.Path
"""
from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

try:
    import gguf
except ImportError as exc:  # pragma: no cover - the package depends on gguf
    raise SystemExit("convert_hf_to_gguf: the 'gguf' package is required (pip install gguf)") from exc

# Version of our own additions to the GGUF layout (key vlcache.format_version).
VLCACHE_FORMAT_VERSION = 1

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")

OUTTYPES = {
    # outtype: (ggml type of 2-D tensors, general.file_type)
    "f32":  (gguf.GGMLQuantizationType.F32,  gguf.LlamaFileType.ALL_F32),
    "f16":  (gguf.GGMLQuantizationType.F16,  gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
}

# llama.cpp token types (tokenizer.ggml.token_type); equal to SentencePiece's enum values.
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# Scores llama.cpp's converter gives to added tokens and to the [PAD{id}] fillers.
ADDED_TOKEN_SCORE = -1000.0
PAD_TOKEN_SCORE = -10000.0

_BYTE_TOKEN_RE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


class ConvertError(Exception):
    """Bad or unsupported input; the message names the file, key or tensor at fault."""


# --------------------------------------------------------------------------------------
# Checkpoint reading (safetensors via numpy.memmap; legacy .bin via torch if available)
# --------------------------------------------------------------------------------------

# safetensors dtype -> (numpy dtype of the raw data, our tag). BF16 is kept as raw uint16.
_ST_DTYPES = {
    "F32": (np.dtype("<f4"), "F32"),
    "F16": (np.dtype("<f2"), "F16"),
    "BF16": (np.dtype("<u2"), "BF16"),
}


@dataclass
class TensorEntry:
    """Where one checkpoint tensor lives. shape is the torch/numpy shape (outermost first)."""
    name: str
    dtype: str            # "F32" | "F16" | "BF16"
    shape: Tuple[int, ...]
    path: Path
    offset: int = 0       # absolute byte offset in the file (safetensors only)
    nbytes: int = 0


def read_safetensors_header(path: Path) -> Dict[str, TensorEntry]:
    """Parse a .safetensors header: u64 LE header length, JSON header, then raw data.

    Every entry is checked against the file size and its dtype/shape; no data is read.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ConvertError(f"{path}: too short for a safetensors file ({size} bytes)")
        (n_header,) = struct.unpack("<Q", head)
        if n_header > size - 8 or n_header > 100 * 1024 * 1024:
            raise ConvertError(f"{path}: safetensors header length {n_header} exceeds the file size {size}")
        try:
            header = json.loads(f.read(n_header).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConvertError(f"{path}: safetensors header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ConvertError(f"{path}: safetensors header is not a JSON object")
    base = 8 + n_header
    out: Dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConvertError(f"{path}: malformed header entry for tensor {name!r}: {info!r}") from exc
        if dtype not in _ST_DTYPES:
            raise ConvertError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r} "
                               f"(supported: {', '.join(_ST_DTYPES)})")
        if any(d < 0 for d in shape):
            raise ConvertError(f"{path}: tensor {name!r} has a negative dimension {shape}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * _ST_DTYPES[dtype][0].itemsize
        if begin < 0 or end - begin != nbytes or base + end > size:
            raise ConvertError(f"{path}: tensor {name!r} data_offsets [{begin}, {end}] do not match "
                               f"shape {list(shape)} {dtype} ({nbytes} bytes) within file size {size}")
        out[name] = TensorEntry(name, dtype, shape, path, base + begin, nbytes)
    return out


class Checkpoint:
    """All tensors of a checkpoint, loaded lazily one at a time."""

    def __init__(self, entries: Dict[str, TensorEntry], torch_state: Optional[Dict[str, Any]] = None):
        self.entries = entries
        self._torch_state = torch_state or {}   # name -> torch tensor (legacy .bin only)

    def names(self) -> List[str]:
        return list(self.entries)

    def load(self, name: str) -> np.ndarray:
        """Raw tensor data: float32, float16, or uint16 holding BF16 bits (see entries[name].dtype).

        For safetensors this is a read-only memory map of just this tensor (no copy).
        """
        e = self.entries[name]
        if name in self._torch_state:
            return self._load_torch(e)
        np_dtype = _ST_DTYPES[e.dtype][0]
        if e.nbytes == 0:
            return np.zeros(e.shape, dtype=np_dtype)
        # One map per tensor: it is unmapped when the caller drops the array, so resident
        # memory stays about one tensor even for a 7B checkpoint.
        return np.memmap(e.path, dtype=np_dtype, mode="r", offset=e.offset, shape=e.shape)

    def _load_torch(self, e: TensorEntry) -> np.ndarray:
        import torch  # only reachable when torch imported fine in open_checkpoint
        t = self._torch_state[e.name]
        if t.dtype == torch.bfloat16:
            return t.contiguous().view(torch.int16).numpy().view(np.uint16)
        return t.contiguous().numpy()


def _load_torch_entries(files: List[Path], ckpt_state: Dict[str, Any]) -> Dict[str, TensorEntry]:
    try:
        import torch
    except ImportError as exc:
        raise ConvertError(f"{files[0].parent}: only pytorch_model*.bin weights were found and torch is "
                           "not importable; install torch or re-save the model with "
                           "save_pretrained(safe_serialization=True)") from exc
    tags = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    entries: Dict[str, TensorEntry] = {}
    for p in files:
        try:
            sd = torch.load(p, map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types
            raise ConvertError(f"{p}: cannot load with torch.load: {exc}") from exc
        for name, t in sd.items():
            if t.dtype not in tags:
                raise ConvertError(f"{p}: tensor {name!r} has unsupported dtype {t.dtype}")
            entries[name] = TensorEntry(name, tags[t.dtype], tuple(t.shape), p)
            ckpt_state[name] = t
    return entries


def open_checkpoint(model_dir: Path) -> Checkpoint:
    """Find the weights: model.safetensors, a sharded index, any *.safetensors, or *.bin."""
    index = model_dir / "model.safetensors.index.json"
    single = model_dir / "model.safetensors"
    files: List[Path]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConvertError(f"{index}: not a valid safetensors index (weight_map missing)") from exc
        if not isinstance(weight_map, dict):
            raise ConvertError(f"{index}: weight_map is not an object")
        files = []
        for shard in weight_map.values():
            p = model_dir / shard
            if p not in files:
                files.append(p)
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise ConvertError(f"{index}: shard file(s) missing: {', '.join(missing)}")
    elif single.is_file():
        files = [single]
    else:
        files = sorted(model_dir.glob("*.safetensors"))
    if files:
        entries: Dict[str, TensorEntry] = {}
        for p in files:
            for name, e in read_safetensors_header(p).items():
                if name in entries:
                    raise ConvertError(f"{p}: tensor {name!r} also appears in {entries[name].path}")
                entries[name] = e
        return Checkpoint(entries)

    bins = sorted(model_dir.glob("pytorch_model*.bin"))
    if bins:
        state: Dict[str, Any] = {}
        entries = _load_torch_entries(bins, state)
        return Checkpoint(entries, torch_state=state)
    raise ConvertError(f"{model_dir}: no weights found (model.safetensors, "
                       "model.safetensors.index.json or pytorch_model*.bin)")


# --------------------------------------------------------------------------------------
# Float conversions
# --------------------------------------------------------------------------------------

def bf16_bits_to_f32(u: np.ndarray) -> np.ndarray:
    """uint16 BF16 bit patterns -> float32 (exact)."""
    return (u.astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> uint16 BF16 bit patterns, round to nearest even; NaN stays a (quiet) NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    if nan.any():
        rounded = np.where(nan, (u >> np.uint32(16)) | np.uint32(0x0040), rounded)
    return rounded.astype(np.uint16)


def to_f32(raw: np.ndarray, tag: str) -> np.ndarray:
    if tag == "BF16":
        return bf16_bits_to_f32(raw)
    return raw.astype(np.float32, copy=False)


def cast_chunk(raw: np.ndarray, tag: str, out: gguf.GGMLQuantizationType) -> np.ndarray:
    """Raw source data (tag F32/F16/BF16) -> the output ggml type's numpy representation
    (float32, float16, or uint16 BF16 bits). F16 and BF16 outputs round to nearest even."""
    if out == gguf.GGMLQuantizationType.F32:
        return to_f32(raw, tag)
    if out == gguf.GGMLQuantizationType.F16:
        if tag == "F16":
            return raw
        with np.errstate(over="ignore"):
            return to_f32(raw, tag).astype(np.float16)
    if out == gguf.GGMLQuantizationType.BF16:
        return raw if tag == "BF16" else f32_to_bf16_bits(to_f32(raw, tag))
    raise ConvertError(f"unsupported output type {out!r}")  # pragma: no cover


# Rows converted at a time: keeps temporaries to a few MiB whatever the tensor size.
_CHUNK_BYTES = 16 << 20


def convert_tensor(raw: np.ndarray, tag: str, out: gguf.GGMLQuantizationType, permute_heads: int,
                   name: str) -> np.ndarray:
    """One checkpoint tensor -> contiguous output data, Q/K rows permuted if permute_heads > 0.

    Works row-chunk by row-chunk into one preallocated output array (the permutation is applied
    as a row gather), so peak memory is the output tensor plus a small chunk. When nothing
    changes (same type, no permutation) the memory-mapped input is returned as is.
    """
    out_dtype = {gguf.GGMLQuantizationType.F32: np.dtype(np.float32),
                 gguf.GGMLQuantizationType.F16: np.dtype(np.float16),
                 gguf.GGMLQuantizationType.BF16: np.dtype(np.uint16)}[out]
    same = (tag, out) in (("F32", gguf.GGMLQuantizationType.F32), ("F16", gguf.GGMLQuantizationType.F16),
                          ("BF16", gguf.GGMLQuantizationType.BF16))
    if same and not permute_heads:
        return raw
    rows = raw.shape[0] if raw.ndim else 1
    order = qk_row_order(rows, permute_heads) if permute_heads else None
    res = np.empty(raw.shape, dtype=out_dtype)
    row_bytes = max(1, raw.nbytes // max(rows, 1))
    step = max(1, _CHUNK_BYTES // row_bytes)
    overflow = False
    for a in range(0, rows, step):
        b = min(rows, a + step)
        chunk = raw[a:b] if order is None else raw[order[a:b]]
        conv = cast_chunk(chunk, tag, out)
        if out == gguf.GGMLQuantizationType.F16 and tag != "F16" and np.isinf(conv).any():
            overflow |= bool(np.isinf(conv).sum() != np.isinf(to_f32(chunk, tag)).sum())
        res[a:b] = conv
    if overflow:
        print(f"convert_hf_to_gguf: warning: {name}: values beyond the F16 range became inf",
              file=sys.stderr)
    return res


# --------------------------------------------------------------------------------------
# Hyperparameters
# --------------------------------------------------------------------------------------

@dataclass
class HParams:
    arch: str
    n_vocab: int
    n_ctx: int
    n_embd: int
    n_layer: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rms_eps: float
    rope_theta: float
    rope_scaling_type: Optional[str]    # None or "linear"
    rope_scaling_factor: float
    tie_embeddings: bool
    attention_bias: bool
    mlp_bias: bool
    config: Dict[str, Any] = field(repr=False, default_factory=dict)


def _req(cfg: Dict[str, Any], key: str, path: Path) -> Any:
    if key not in cfg or cfg[key] is None:
        raise ConvertError(f"{path}: required key {key!r} is missing")
    return cfg[key]


def read_config(model_dir: Path) -> Tuple[Dict[str, Any], Path]:
    """config.json as a dict, and its path."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise ConvertError(f"{model_dir}: config.json not found (is this a Hugging Face model directory?)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConvertError(f"{path}: invalid JSON: {exc}") from exc
    if not isinstance(cfg, dict):
        raise ConvertError(f"{path}: not a JSON object")
    return cfg, path


def read_hparams(model_dir: Path) -> HParams:
    cfg, path = read_config(model_dir)
    try:
        return _hparams_from_config(cfg, path)
    except (TypeError, ValueError) as exc:
        raise ConvertError(f"{path}: bad value in config: {exc}") from exc


def _hparams_from_config(cfg: Dict[str, Any], path: Path) -> HParams:
    archs = cfg.get("architectures") or []
    arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
    if arch is None:
        name = archs[0] if archs else f"model_type={cfg.get('model_type')!r} (no 'architectures')"
        raise ConvertError(f"{path}: unsupported architecture {name}; "
                           f"supported: {', '.join(SUPPORTED_ARCHITECTURES + LLAVA_ARCHITECTURES)}")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ConvertError(f"{path}: unsupported hidden_act {act!r} (Llama uses 'silu')")

    n_embd = int(_req(cfg, "hidden_size", path))
    n_head = int(_req(cfg, "num_attention_heads", path))
    n_head_kv = int(cfg.get("num_key_value_heads") or n_head)
    head_dim = int(cfg.get("head_dim") or (n_embd // n_head))
    if n_head <= 0 or n_head_kv <= 0 or n_head % n_head_kv != 0:
        raise ConvertError(f"{path}: num_attention_heads={n_head} is not a multiple of "
                           f"num_key_value_heads={n_head_kv}")
    if head_dim <= 0 or head_dim % 2 != 0:
        raise ConvertError(f"{path}: head_dim={head_dim} must be positive and even for RoPE")

    # transformers >= 5 writes rope_parameters {rope_type, rope_theta, factor, ...};
    # older configs write rope_theta and rope_scaling {type|rope_type, factor}.
    rope = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    if not isinstance(rope, dict) or not isinstance(scaling, dict):
        raise ConvertError(f"{path}: rope_parameters/rope_scaling must be objects")
    rope_theta = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    rtype = scaling.get("rope_type", scaling.get("type")) or rope.get("rope_type") or "default"
    factor = float(scaling.get("factor", rope.get("factor", 1.0)) or 1.0)
    if rtype == "default":
        rope_scaling_type = None
    elif rtype == "linear":
        rope_scaling_type = "linear"
    else:
        raise ConvertError(f"{path}: unsupported rope scaling type {rtype!r} (supported: linear)")

    if arch == "MistralForCausalLM":
        sw = cfg.get("sliding_window")
        n_ctx = int(cfg.get("max_position_embeddings", 2048))
        if sw is not None and int(sw) < n_ctx:
            print(f"convert_hf_to_gguf: warning: sliding_window={sw} is not represented in GGUF "
                  "(as in llama.cpp); attention will be full-context", file=sys.stderr)

    return HParams(
        arch=arch,
        n_vocab=int(_req(cfg, "vocab_size", path)),
        n_ctx=int(cfg.get("max_position_embeddings", 2048)),
        n_embd=n_embd,
        n_layer=int(_req(cfg, "num_hidden_layers", path)),
        n_ff=int(_req(cfg, "intermediate_size", path)),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=rope_theta,
        rope_scaling_type=rope_scaling_type,
        rope_scaling_factor=factor,
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention_bias=bool(cfg.get("attention_bias", False)),
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        config=cfg,
    )


# --------------------------------------------------------------------------------------
# Tensor plan: HF name -> GGUF name, expected shape, Q/K permutation
# --------------------------------------------------------------------------------------

def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half row order -> llama.cpp adjacent-pair order (GGUF_LLAVA.md §1.7).

    w: [n_head*d, ...] (a weight [n_head*d, n_embd] or a bias [n_head*d]).
    gguf_row[h*d + 2*j + t] = hf_row[h*d + t*(d/2) + j], j in [0, d/2), t in {0, 1}.
    A pure row reorder: valid for any dtype, including BF16 bit patterns.
    """
    rows = w.shape[0]
    d = rows // n_head
    return np.ascontiguousarray(
        w.reshape(n_head, 2, d // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def qk_row_order(n_rows: int, n_head: int) -> np.ndarray:
    """order[r] = HF row stored at GGUF row r, i.e. permute_qk(w) == w[order]."""
    return permute_qk(np.arange(n_rows, dtype=np.int64), n_head)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of permute_qk (GGUF adjacent-pair rows -> HF rotate-half rows)."""
    rows = w.shape[0]
    d = rows // n_head
    return np.ascontiguousarray(
        w.reshape(n_head, d // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


@dataclass
class PlannedTensor:
    gguf_name: str
    hf_name: str
    shape: Tuple[int, ...]          # numpy order (outermost first)
    permute_heads: int = 0          # 0 = no Q/K permutation, else the head count to use
    keep_f32: bool = False          # always F32 whatever --outtype (1-D tensors are F32 anyway)


def check_plan(plan: List[PlannedTensor], ckpt: Checkpoint, what: str, ignorable: Sequence[str] = ()) -> None:
    """Every planned tensor present with its shape; no checkpoint tensor left unexplained
    (except the `ignorable` names and rotary inv_freq buffers)."""
    missing = [t.hf_name for t in plan if t.hf_name not in ckpt.entries]
    if missing:
        more = f" (and {len(missing) - 8} more)" if len(missing) > 8 else ""
        raise ConvertError(f"missing tensor(s) in the checkpoint: {', '.join(missing[:8])}{more}")
    for t in plan:
        got = ckpt.entries[t.hf_name].shape
        if tuple(got) != t.shape:
            raise ConvertError(f"tensor {t.hf_name!r} has shape {list(got)}, expected {list(t.shape)} "
                               "from config.json")
    used = {t.hf_name for t in plan}
    skip = set(ignorable)
    unexpected = [n for n in ckpt.entries
                  if n not in used and n not in skip and not n.endswith("rotary_emb.inv_freq")]
    if unexpected:
        more = f" (and {len(unexpected) - 8} more)" if len(unexpected) > 8 else ""
        raise ConvertError(f"unexpected tensor(s) for {what}: {', '.join(unexpected[:8])}{more}")


def plan_tensors(hp: HParams, ckpt: Checkpoint, *, prefix: str = "model.",
                 lm_head: str = "lm_head.weight", check: bool = True) -> List[PlannedTensor]:
    """The text-model GGUF tensors to write, in file order.

    prefix: checkpoint prefix of the decoder (`model.` for LlamaForCausalLM; LLaVA checkpoints
    use `model.language_model.` or `language_model.model.`); lm_head: the output projection's
    checkpoint name. check: verify presence/shapes and refuse unexplained tensors (the LLaVA
    path checks once over text and vision plans together).
    """
    e, hd = hp.n_embd, hp.head_dim
    q_out, kv_out = hp.n_head * hd, hp.n_head_kv * hd
    plan: List[PlannedTensor] = []

    def add(gname: str, hname: str, shape: Tuple[int, ...], perm: int = 0) -> None:
        plan.append(PlannedTensor(gname, hname, shape, perm))

    add("token_embd.weight", prefix + "embed_tokens.weight", (hp.n_vocab, e))
    for i in range(hp.n_layer):
        p, b = f"{prefix}layers.{i}.", f"blk.{i}."
        add(b + "attn_norm.weight", p + "input_layernorm.weight", (e,))
        add(b + "attn_q.weight", p + "self_attn.q_proj.weight", (q_out, e), hp.n_head)
        add(b + "attn_k.weight", p + "self_attn.k_proj.weight", (kv_out, e), hp.n_head_kv)
        add(b + "attn_v.weight", p + "self_attn.v_proj.weight", (kv_out, e))
        add(b + "attn_output.weight", p + "self_attn.o_proj.weight", (e, q_out))
        if hp.attention_bias:
            add(b + "attn_q.bias", p + "self_attn.q_proj.bias", (q_out,), hp.n_head)
            add(b + "attn_k.bias", p + "self_attn.k_proj.bias", (kv_out,), hp.n_head_kv)
            add(b + "attn_v.bias", p + "self_attn.v_proj.bias", (kv_out,))
            add(b + "attn_output.bias", p + "self_attn.o_proj.bias", (e,))
        add(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", (e,))
        add(b + "ffn_gate.weight", p + "mlp.gate_proj.weight", (hp.n_ff, e))
        add(b + "ffn_up.weight", p + "mlp.up_proj.weight", (hp.n_ff, e))
        add(b + "ffn_down.weight", p + "mlp.down_proj.weight", (e, hp.n_ff))
        if hp.mlp_bias:
            add(b + "ffn_gate.bias", p + "mlp.gate_proj.bias", (hp.n_ff,))
            add(b + "ffn_up.bias", p + "mlp.up_proj.bias", (hp.n_ff,))
            add(b + "ffn_down.bias", p + "mlp.down_proj.bias", (e,))
    add("output_norm.weight", prefix + "norm.weight", (e,))
    # Tied embeddings (or no lm_head in the checkpoint): no output.weight; llama.cpp then
    # reuses token_embd.weight.
    if not hp.tie_embeddings and lm_head in ckpt.entries:
        add("output.weight", lm_head, (hp.n_vocab, e))
    if check:
        check_plan(plan, ckpt, hp.arch, ignorable=(lm_head,))  # lm_head: present but tied
    return plan


# --------------------------------------------------------------------------------------
# SentencePiece ModelProto reader (protobuf wire format, just the fields we need)
# --------------------------------------------------------------------------------------

def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ConvertError("tokenizer.model: truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ConvertError("tokenizer.model: varint longer than 10 bytes")


def _proto_fields(buf: bytes) -> Iterator[Tuple[int, int, Any]]:
    """Yield (field number, wire type, value) of one message. value is int for varint and
    fixed types (raw little-endian bits) and bytes for length-delimited fields."""
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        fnum, wtype = key >> 3, key & 7
        if wtype == 0:
            val, pos = _varint(buf, pos)
        elif wtype == 1:
            if pos + 8 > n:
                raise ConvertError("tokenizer.model: truncated fixed64 field")
            val = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wtype == 2:
            ln, pos = _varint(buf, pos)
            if pos + ln > n:
                raise ConvertError(f"tokenizer.model: field {fnum} length {ln} runs past the end")
            val = buf[pos:pos + ln]
            pos += ln
        elif wtype == 5:
            if pos + 4 > n:
                raise ConvertError("tokenizer.model: truncated fixed32 field")
            val = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        else:
            raise ConvertError(f"tokenizer.model: unsupported protobuf wire type {wtype} (field {fnum})")
        yield fnum, wtype, val


def _int32(v: int) -> int:
    """Protobuf int32 varints are sign-extended to 64 bits."""
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >= (1 << 63) else v


@dataclass
class SpmModel:
    pieces: List[bytes]
    scores: List[float]
    types: List[int]
    model_type: int = 1          # TrainerSpec.ModelType: UNIGRAM=1, BPE=2, WORD=3, CHAR=4
    add_dummy_prefix: bool = True
    ids: Dict[str, int] = field(default_factory=lambda: {"unk": 0, "bos": 1, "eos": 2, "pad": -1})


def load_spm_model(path: Path) -> SpmModel:
    """Parse tokenizer.model (sentencepiece_model.proto ModelProto).

    ModelProto: pieces=1 (SentencePiece), trainer_spec=2, normalizer_spec=3.
    SentencePiece: piece=1 string, score=2 float, type=3 enum (NORMAL=1 ... BYTE=6).
    TrainerSpec: model_type=3, unk_id=40, bos_id=41, eos_id=42, pad_id=43.
    NormalizerSpec: add_dummy_prefix=3 (default true).
    """
    buf = path.read_bytes()
    m = SpmModel([], [], [])
    for fnum, wtype, val in _proto_fields(buf):
        if fnum == 1 and wtype == 2:
            piece, score, ptype = b"", 0.0, TOKEN_NORMAL
            for f2, w2, v2 in _proto_fields(val):
                if f2 == 1 and w2 == 2:
                    piece = bytes(v2)
                elif f2 == 2 and w2 == 5:
                    score = struct.unpack("<f", struct.pack("<I", v2))[0]
                elif f2 == 3 and w2 == 0:
                    ptype = int(v2)
            if ptype not in (1, 2, 3, 4, 5, 6):
                raise ConvertError(f"{path}: piece {len(m.pieces)} {piece!r} has unknown type {ptype}")
            m.pieces.append(piece)
            m.scores.append(score)
            m.types.append(ptype)
        elif fnum == 2 and wtype == 2:
            names = {40: "unk", 41: "bos", 42: "eos", 43: "pad"}
            for f2, w2, v2 in _proto_fields(val):
                if f2 == 3 and w2 == 0:
                    m.model_type = int(v2)
                elif f2 in names and w2 == 0:
                    m.ids[names[f2]] = _int32(v2)
        elif fnum == 3 and wtype == 2:
            for f2, w2, v2 in _proto_fields(val):
                if f2 == 3 and w2 == 0:
                    m.add_dummy_prefix = bool(v2)
    if not m.pieces:
        raise ConvertError(f"{path}: no pieces found; not a SentencePiece model")
    for p in m.pieces:
        try:
            p.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConvertError(f"{path}: piece {p!r} is not valid UTF-8") from exc
    return m


# --------------------------------------------------------------------------------------
# Vocabulary assembly
# --------------------------------------------------------------------------------------

@dataclass
class Vocab:
    tokens: List[bytes]
    scores: List[float]
    types: List[int]
    special_ids: Dict[str, int]              # bos/eos/unk/pad -> id
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    chat_templates: Dict[str, str]           # "" = default template, else named ones
    prepend_scheme: Optional[str]            # vlcache.tokenizer.prepend_scheme, see _prepend_scheme
    source: str                              # "tokenizer.model" | "tokenizer.json"


def _read_json(path: Path) -> Optional[Any]:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConvertError(f"{path}: invalid JSON: {exc}") from exc


def _token_content(entry: Any) -> Optional[str]:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return entry["content"]
    return None


def _vocab_from_tokenizer_json(tj: Dict[str, Any], path: Path, unk_text: Optional[str]
                               ) -> Tuple[List[bytes], List[float], List[int]]:
    """Base vocabulary of a SentencePiece-style BPE tokenizer.json (byte_fallback, '▁' spaces).

    Scores: llama.cpp's tokenizer merges the adjacent pair whose concatenation has the highest
    score. HF BPE merges the pair with the lowest merge rank. So a token made by merges gets
    score -rank of the first (lowest-rank) merge that makes it; then "highest score" picks
    the same merge as "lowest rank" (exactly so for merges derived from a SentencePiece model,
    whose merges list every pair that forms a vocabulary piece, ordered by piece). Tokens no
    merge makes (characters) get -(n_merges + id), below every merged token, like
    SentencePiece's own ordering; byte and special tokens get 0.
    (llama.cpp's own LlamaHfVocab gives every token -1000, which loses the merge order.)
    """
    model = tj.get("model") or {}
    mtype = model.get("type")
    if mtype != "BPE" or not model.get("byte_fallback", False):
        pre = json.dumps(tj.get("pre_tokenizer"))[:80]
        raise ConvertError(f"{path}: unsupported tokenizer: model type {mtype!r}, byte_fallback="
                           f"{model.get('byte_fallback')!r}, pre_tokenizer {pre}; only SentencePiece-style "
                           "BPE with byte_fallback (Llama/Mistral) can be converted")
    vocab: Dict[str, int] = model.get("vocab") or {}
    if not vocab:
        raise ConvertError(f"{path}: model.vocab is empty")
    n = max(vocab.values()) + 1
    tokens: List[Optional[bytes]] = [None] * n
    for text, tid in vocab.items():
        if tid < 0 or tokens[tid] is not None:
            raise ConvertError(f"{path}: bad or duplicate vocab id {tid} for {text!r}")
        tokens[tid] = text.encode("utf-8")
    merges = model.get("merges") or []
    best_rank: Dict[int, int] = {}
    for rank, m in enumerate(merges):
        if isinstance(m, str):
            parts = m.split(" ")
        else:
            parts = list(m)
        if len(parts) != 2:
            raise ConvertError(f"{path}: malformed merge #{rank}: {m!r}")
        tid = vocab.get(parts[0] + parts[1])
        if tid is None:
            raise ConvertError(f"{path}: merge #{rank} {m!r} makes a token missing from the vocab")
        best_rank.setdefault(tid, rank)
    scores: List[float] = []
    types: List[int] = []
    for tid in range(n):
        tok = tokens[tid]
        if tok is None:
            tokens[tid] = f"[PAD{tid}]".encode("utf-8")
            scores.append(PAD_TOKEN_SCORE)
            types.append(TOKEN_UNUSED)
            continue
        text = tok.decode("utf-8")
        if _BYTE_TOKEN_RE.fullmatch(text):
            scores.append(0.0)
            types.append(TOKEN_BYTE)
        elif unk_text is not None and text == unk_text:
            scores.append(0.0)
            types.append(TOKEN_UNKNOWN)
        elif tid in best_rank:
            scores.append(-float(best_rank[tid]))
            types.append(TOKEN_NORMAL)
        else:
            scores.append(-float(len(merges) + tid))
            types.append(TOKEN_NORMAL)
    return [t for t in tokens if t is not None], scores, types


def _flag_from_post_processor(tj: Optional[Dict[str, Any]], bos: Optional[str], eos: Optional[str]
                              ) -> Tuple[Optional[bool], Optional[bool]]:
    """add_bos/add_eos as HF's TemplateProcessing 'single' template would apply them."""
    if not tj:
        return None, None
    pp = tj.get("post_processor")
    if pp is None:
        return False, False
    procs = pp.get("processors", [pp]) if isinstance(pp, dict) else []
    for proc in procs:
        if proc.get("type") == "TemplateProcessing":
            single = proc.get("single") or []
            first = single[0].get("SpecialToken", {}).get("id") if single else None
            last = single[-1].get("SpecialToken", {}).get("id") if single else None
            return (first is not None and first == bos), (last is not None and last == eos)
    return False, False


def _space_prefix_from_tokenizer_json(tj: Dict[str, Any]) -> Optional[bool]:
    """True if HF prepends '▁' to the text (Metaspace prepend_scheme first/always, or a
    Prepend('▁') normalizer); False if it has a Metaspace that never prepends; else None."""
    def walk(node: Any) -> Iterator[Dict[str, Any]]:
        if isinstance(node, dict):
            yield node
            for key in ("normalizers", "pretokenizers"):
                for sub in node.get(key) or []:
                    yield from walk(sub)
    for node in walk(tj.get("normalizer")):
        if node.get("type") == "Prepend" and node.get("prepend") == "\u2581":
            return True
    for node in walk(tj.get("pre_tokenizer")):
        if node.get("type") == "Metaspace":
            scheme = node.get("prepend_scheme")
            if scheme is None:
                return bool(node.get("add_prefix_space", True))
            return scheme in ("first", "always")
    if tj.get("normalizer") is not None or tj.get("pre_tokenizer") is not None:
        return False
    return None


def load_vocab(model_dir: Path, n_vocab: int) -> Vocab:
    """Build the GGUF vocabulary from tokenizer.model (preferred, like llama.cpp) or
    tokenizer.json, then apply added tokens, special ids, BOS/EOS flags and chat template."""
    spm_path = model_dir / "tokenizer.model"
    tj_path = model_dir / "tokenizer.json"
    tj = _read_json(tj_path)
    tcfg = _read_json(model_dir / "tokenizer_config.json") or {}
    stmap = _read_json(model_dir / "special_tokens_map.json") or {}
    added_json = _read_json(model_dir / "added_tokens.json") or {}
    cfg = _read_json(model_dir / "config.json") or {}

    def special_text(typ: str) -> Optional[str]:
        return _token_content(tcfg.get(f"{typ}_token")) or _token_content(stmap.get(f"{typ}_token"))

    spm: Optional[SpmModel] = None
    if spm_path.is_file():
        spm = load_spm_model(spm_path)
        if spm.model_type != 2:
            print(f"convert_hf_to_gguf: warning: {spm_path} is not a BPE model (model_type="
                  f"{spm.model_type}); llama.cpp-style score-ordered merges only approximate it",
                  file=sys.stderr)
        tokens, scores, types = list(spm.pieces), list(spm.scores), list(spm.types)
        source = "tokenizer.model"
    elif tj is not None:
        tokens, scores, types = _vocab_from_tokenizer_json(tj, tj_path, special_text("unk"))
        source = "tokenizer.json"
    else:
        raise ConvertError(f"{model_dir}: no tokenizer found (tokenizer.model or tokenizer.json)")

    n_base = len(tokens)
    if n_base > n_vocab:
        raise ConvertError(f"{model_dir}: the tokenizer has {n_base} tokens but the model's vocab_size "
                           f"(embedding rows) is {n_vocab}")
    # Pad to the embedding size with unused [PAD{id}] tokens (llama.cpp's convention).
    for tid in range(n_base, n_vocab):
        tokens.append(f"[PAD{tid}]".encode("utf-8"))
        scores.append(PAD_TOKEN_SCORE)
        types.append(TOKEN_UNUSED)

    # Added tokens: (id, text, special) from tokenizer.json, tokenizer_config and added_tokens.json.
    added: Dict[int, Tuple[str, bool]] = {}
    for text, tid in (added_json.items() if isinstance(added_json, dict) else []):
        added[int(tid)] = (text, False)
    for tid, info in (tcfg.get("added_tokens_decoder") or {}).items():
        if _token_content(info) is not None:
            added[int(tid)] = (_token_content(info), bool(info.get("special", False)))
    for info in (tj or {}).get("added_tokens") or []:
        if isinstance(info, dict) and "id" in info and isinstance(info.get("content"), str):
            added[int(info["id"])] = (info["content"], bool(info.get("special", False)))
    for tid in sorted(added):
        text, special = added[tid]
        if tid < 0 or tid >= n_vocab:
            print(f"convert_hf_to_gguf: warning: added token {text!r} id {tid} is outside the "
                  f"vocabulary (size {n_vocab}); ignored", file=sys.stderr)
            continue
        same_text = tokens[tid] == text.encode("utf-8")
        if same_text and types[tid] in (TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_BYTE):
            continue  # already typed by the base vocabulary (e.g. <unk>, <s>, </s>)
        if same_text and types[tid] == TOKEN_USER_DEFINED and not special:
            continue
        if special:
            types[tid] = TOKEN_CONTROL
            if same_text and tid < n_base:
                scores[tid] = 0.0  # like SentencePiece's control pieces
        else:
            # llama.cpp matches user-defined tokens against raw text: un-escape SentencePiece spaces.
            text = text.replace("\u2581", " ")
            types[tid] = TOKEN_USER_DEFINED
        if not same_text or tid >= n_base:
            scores[tid] = ADDED_TOKEN_SCORE
        tokens[tid] = text.encode("utf-8")

    # Special token ids: tokenizer_config / special_tokens_map text, then config.json ids,
    # then the SentencePiece trainer ids.
    first_id: Dict[bytes, int] = {}
    for tid, tok in enumerate(tokens):
        first_id.setdefault(tok, tid)
    special_ids: Dict[str, int] = {}
    for typ in ("bos", "eos", "unk", "pad"):
        tid: Optional[int] = None
        text = special_text(typ)
        if text is not None:
            tid = first_id.get(text.encode("utf-8"))
        if tid is None:
            v = cfg.get(f"{typ}_token_id")
            if isinstance(v, list) and v:
                v = v[0]
            if isinstance(v, int) and not isinstance(v, bool):
                tid = v
        if tid is None and spm is not None and spm.ids.get(typ, -1) >= 0:
            tid = spm.ids[typ]
        if tid is None and typ == "unk":
            tid = next((i for i, t in enumerate(types) if t == TOKEN_UNKNOWN), None)
        if tid is not None:
            if not 0 <= tid < n_vocab:
                print(f"convert_hf_to_gguf: warning: {typ} token id {tid} outside the vocabulary; "
                      "ignored", file=sys.stderr)
                continue
            special_ids[typ] = tid

    # BOS/EOS flags: explicit tokenizer_config, then tokenizer.json's post-processor, then
    # SentencePiece defaults (BOS yes, EOS no).
    bos_text = tokens[special_ids["bos"]].decode("utf-8") if "bos" in special_ids else None
    eos_text = tokens[special_ids["eos"]].decode("utf-8") if "eos" in special_ids else None
    pp_bos, pp_eos = _flag_from_post_processor(tj, bos_text, eos_text)
    add_bos = tcfg.get("add_bos_token")
    if not isinstance(add_bos, bool):
        add_bos = pp_bos if pp_bos is not None else True
    add_eos = tcfg.get("add_eos_token")
    if not isinstance(add_eos, bool):
        add_eos = pp_eos if pp_eos is not None else False

    # Space prefix: what the HF fast tokenizer does when there is one, else the SPM model.
    add_space_prefix = _space_prefix_from_tokenizer_json(tj) if tj is not None else None
    if add_space_prefix is None:
        add_space_prefix = spm.add_dummy_prefix if spm is not None else True

    # Chat template(s): tokenizer_config.json, else chat_template.jinja / chat_template.json.
    templates: Dict[str, str] = {}
    ct = tcfg.get("chat_template")
    if ct is None and (model_dir / "chat_template.jinja").is_file():
        ct = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    if ct is None:
        ct = (_read_json(model_dir / "chat_template.json") or {}).get("chat_template")
    if isinstance(ct, str):
        templates[""] = ct
    elif isinstance(ct, list):
        for item in ct:
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                name = item.get("name", "default")
                templates["" if name == "default" else name] = item["template"]

    return Vocab(tokens, scores, types, special_ids, add_bos, add_eos, add_space_prefix,
                 templates, _prepend_scheme(tcfg, tj), source)


def _prepend_scheme(tcfg: Dict[str, Any], tj: Optional[Dict[str, Any]]) -> Optional[str]:
    """When transformers puts the "▁" space marker in front of a text fragment.

    transformers 5 rebuilds Llama tokenizers with a Metaspace pre-tokenizer whose scheme is
    "first" (legacy=False, its default) or "always" (legacy=True); other tokenizer classes
    use tokenizer.json's own Metaspace, if it has one. None leaves the SentencePiece rule.
    """
    cls = str(tcfg.get("tokenizer_class") or "LlamaTokenizer").replace("Fast", "")
    if cls == "LlamaTokenizer":
        return "always" if tcfg.get("legacy") is True else "first"
    pre = (tj or {}).get("pre_tokenizer") or {}
    for p in pre.get("pretokenizers", [pre]):
        if isinstance(p, dict) and p.get("type") == "Metaspace" and p.get("prepend_scheme") in ("first", "always"):
            return p["prepend_scheme"]
    return None


# --------------------------------------------------------------------------------------
# LLaVA: config, checkpoint naming, vision/projector tensor plan, image processor settings
# (layout: tools/GGUF_FORMAT.md, "One-file LLaVA")
# --------------------------------------------------------------------------------------

LLAVA_ARCHITECTURES = ("LlavaForConditionalGeneration", "LlavaNextForConditionalGeneration")
CHAT_TEMPLATES = ("llava-1.5", "llava-1.6-mistral", "llava-1.6-vicuna")

# Defaults of transformers' config classes. llava-hf hub configs leave most text_config /
# vision_config keys out and rely on them (llava-1.5-7b-hf's text_config has no hidden_size).
_TEXT_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "llama": dict(architectures=["LlamaForCausalLM"], vocab_size=32000, hidden_size=4096,
                  intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                  max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0,
                  hidden_act="silu", tie_word_embeddings=False),
    "mistral": dict(architectures=["MistralForCausalLM"], vocab_size=32000, hidden_size=4096,
                    intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, max_position_embeddings=4096 * 32, rms_norm_eps=1e-6,
                    rope_theta=10000.0, hidden_act="silu", sliding_window=4096,
                    tie_word_embeddings=False),
}
_CLIP_VISION_DEFAULTS: Dict[str, Any] = dict(
    hidden_size=768, intermediate_size=3072, projection_dim=512, num_hidden_layers=12,
    num_attention_heads=12, num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu",
    layer_norm_eps=1e-5)
# LlavaNextConfig's default image_grid_pinpoints, (height, width) pairs.
_LLAVA_NEXT_DEFAULT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass
class VisionHParams:
    arch: str                      # one of LLAVA_ARCHITECTURES
    image_size: int                # tile side S, pixels
    patch_size: int                # P
    n_embd: int                    # ViT width C
    n_ff: int                      # ViT MLP width F
    n_head: int
    n_layer_hf: int                # encoder layers in the checkpoint
    feature_layer: int             # selected hidden state k in [0, n_layer_hf] = layers stored
    eps: float
    projection_dim: int
    use_gelu: bool                 # ViT MLP activation: gelu (erf) vs quick_gelu
    select_strategy: str           # "default" | "full"
    projector_act: str             # projector_hidden_act, verbatim
    image_token_id: int
    grid_pinpoints: Optional[List[Tuple[int, int]]]   # LLaVA-1.6: (height, width) pairs
    chat_template: str             # one of CHAT_TEMPLATES

    @property
    def is_next(self) -> bool:
        return self.arch == "LlavaNextForConditionalGeneration"


def _as_int(v: Any, what: str, path: Path) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
        raise ConvertError(f"{path}: {what} must be an integer, got {v!r}")
    return int(v)


def _llava_text_config(cfg: Dict[str, Any], path: Path) -> Dict[str, Any]:
    """text_config completed with the text model class's defaults (as transformers does)."""
    tc = cfg.get("text_config") or {}
    if not isinstance(tc, dict):
        raise ConvertError(f"{path}: text_config is not an object")
    mt = tc.get("model_type", "llama")
    if mt not in _TEXT_DEFAULTS:
        raise ConvertError(f"{path}: text model {mt!r} (text_config.model_type) is not supported; "
                           f"LLaVA text models: {', '.join(_TEXT_DEFAULTS)}")
    merged = dict(_TEXT_DEFAULTS[mt])
    merged.update(tc)
    if not merged.get("architectures"):
        merged["architectures"] = _TEXT_DEFAULTS[mt]["architectures"]
    if tc.get("vocab_size") is None:
        merged["vocab_size"] = cfg.get("vocab_size") or _TEXT_DEFAULTS[mt]["vocab_size"]
    if "tie_word_embeddings" not in tc and "tie_word_embeddings" in cfg:
        merged["tie_word_embeddings"] = cfg["tie_word_embeddings"]
    return merged


def read_llava_hparams(cfg: Dict[str, Any], path: Path, arch: str, chat_template: Optional[str]
                       ) -> Tuple[HParams, VisionHParams]:
    """Text (llama.*) and vision hyperparameters of a LLaVA-1.5 / LLaVA-1.6 config.json."""
    tcfg = _llava_text_config(cfg, path)
    try:
        hp = _hparams_from_config(tcfg, Path(f"{path} (text_config)"))
    except (TypeError, ValueError) as exc:
        raise ConvertError(f"{path}: bad value in text_config: {exc}") from exc

    vc = cfg.get("vision_config") or {}
    if not isinstance(vc, dict):
        raise ConvertError(f"{path}: vision_config is not an object")
    vmt = vc.get("model_type", "clip_vision_model")
    if vmt != "clip_vision_model":
        raise ConvertError(f"{path}: vision tower {vmt!r} (vision_config.model_type) is not supported; "
                           "only CLIP vision towers ('clip_vision_model') can be converted")
    v = dict(_CLIP_VISION_DEFAULTS)
    v.update({k: val for k, val in vc.items() if val is not None})
    S = _as_int(v["image_size"], "vision_config.image_size", path)
    P = _as_int(v["patch_size"], "vision_config.patch_size", path)
    C = _as_int(v["hidden_size"], "vision_config.hidden_size", path)
    n_head = _as_int(v["num_attention_heads"], "vision_config.num_attention_heads", path)
    L = _as_int(v["num_hidden_layers"], "vision_config.num_hidden_layers", path)
    if _as_int(v["num_channels"], "vision_config.num_channels", path) != 3:
        raise ConvertError(f"{path}: vision_config.num_channels={v['num_channels']} (only RGB, 3, is supported)")
    if P <= 0 or S <= 0 or S % P != 0:
        raise ConvertError(f"{path}: vision_config.image_size={S} is not a positive multiple of patch_size={P}")
    if n_head <= 0 or C % n_head != 0:
        raise ConvertError(f"{path}: vision_config.hidden_size={C} is not a multiple of num_attention_heads={n_head}")
    act = v["hidden_act"]
    if act not in ("gelu", "quick_gelu"):
        raise ConvertError(f"{path}: vision_config.hidden_act {act!r} is not supported (gelu, quick_gelu)")

    fl = cfg.get("vision_feature_layer", -2)
    if isinstance(fl, (list, tuple)):
        if len(fl) != 1:
            raise ConvertError(f"{path}: vision_feature_layer={list(fl)}: multiple feature layers not supported")
        fl = fl[0]
    fl = _as_int(fl, "vision_feature_layer", path)
    k = fl if fl >= 0 else L + fl + 1
    if not 0 <= k <= L:
        raise ConvertError(f"{path}: vision_feature_layer={fl} is outside the {L}-layer vision tower")

    strategy = cfg.get("vision_feature_select_strategy", "default")
    if strategy not in ("default", "full"):
        raise ConvertError(f"{path}: vision_feature_select_strategy {strategy!r} is not supported (default, full)")
    pact = cfg.get("projector_hidden_act", "gelu")
    if not isinstance(pact, str):
        raise ConvertError(f"{path}: projector_hidden_act must be a string, got {pact!r}")
    if cfg.get("multimodal_projector_bias", True) is False:
        raise ConvertError(f"{path}: multimodal_projector_bias=false (a projector without biases) is not supported")
    tid = cfg.get("image_token_id")
    if tid is None:
        tid = cfg.get("image_token_index", 32000)
    tid = _as_int(tid, "image_token_id", path)

    pins: Optional[List[Tuple[int, int]]] = None
    if arch == "LlavaNextForConditionalGeneration":
        raw = cfg.get("image_grid_pinpoints") or _LLAVA_NEXT_DEFAULT_PINPOINTS
        pins = []
        for pair in raw if isinstance(raw, list) else [raw]:
            if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                    or any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in pair)):
                raise ConvertError(f"{path}: image_grid_pinpoints entry {pair!r} is not a [height, width] "
                                   "pair of positive integers")
            pins.append((int(pair[0]), int(pair[1])))

    if chat_template is None:
        if arch == "LlavaForConditionalGeneration":
            chat_template = "llava-1.5"
        elif hp.arch == "MistralForCausalLM":
            chat_template = "llava-1.6-mistral"
        else:
            chat_template = "llava-1.6-vicuna"
    elif chat_template not in CHAT_TEMPLATES:
        raise ConvertError(f"unknown chat template {chat_template!r} (choose from {', '.join(CHAT_TEMPLATES)})")

    try:
        vp = VisionHParams(
            arch=arch, image_size=S, patch_size=P, n_embd=C,
            n_ff=_as_int(v["intermediate_size"], "vision_config.intermediate_size", path),
            n_head=n_head, n_layer_hf=L, feature_layer=k, eps=float(v["layer_norm_eps"]),
            projection_dim=_as_int(v["projection_dim"], "vision_config.projection_dim", path),
            use_gelu=(act == "gelu"), select_strategy=strategy, projector_act=pact,
            image_token_id=tid, grid_pinpoints=pins, chat_template=chat_template)
    except (TypeError, ValueError) as exc:
        raise ConvertError(f"{path}: bad value in vision_config: {exc}") from exc
    return hp, vp


@dataclass
class LlavaNames:
    """Checkpoint prefixes of one LLaVA checkpoint. Both naming schemes occur:
    transformers >= 4.52 in memory / its saves: model.language_model.*, lm_head.weight,
    model.vision_tower.[vision_model.]*, model.multi_modal_projector.*, model.image_newline;
    llava-hf hub files (and transformers 5's save_pretrained): language_model.model.*,
    language_model.lm_head.weight, vision_tower.[vision_model.]*, multi_modal_projector.*,
    image_newline."""
    text: str          # ends with "." (then embed_tokens.weight, layers.N..., norm.weight)
    lm_head: str       # full name (may be absent when tied)
    vision: str        # ends with "." (then embeddings.*, pre_layrnorm.*, encoder.layers.N.*)
    projector: str     # ends with "." (then linear_1.*, linear_2.*)
    newline: str       # full name


def llava_names(ckpt: Checkpoint) -> LlavaNames:
    def first(cands: Sequence[str], suffix: str, what: str) -> str:
        for c in cands:
            if c + suffix in ckpt.entries:
                return c
        raise ConvertError(f"the checkpoint has no {what} (looked for "
                           f"{', '.join(c + suffix for c in cands)})")
    text = first(("model.language_model.", "language_model.model."), "embed_tokens.weight",
                 "text model")
    vision = first(("model.vision_tower.vision_model.", "vision_tower.vision_model.",
                    "model.vision_tower.", "vision_tower."), "embeddings.patch_embedding.weight",
                   "CLIP vision tower")
    proj = first(("model.multi_modal_projector.", "multi_modal_projector."), "linear_1.weight",
                 "multi_modal_projector")
    lm_head = next((n for n in ("lm_head.weight", "language_model.lm_head.weight") if n in ckpt.entries),
                   "lm_head.weight")
    newline = next((n for n in ("model.image_newline", "image_newline") if n in ckpt.entries),
                   "model.image_newline" if text.startswith("model.") else "image_newline")
    return LlavaNames(text, lm_head, vision, proj, newline)


def plan_vision(vp: VisionHParams, n_embd_text: int, names: LlavaNames, ckpt: Checkpoint
                ) -> Tuple[List[PlannedTensor], List[str]]:
    """The v.* / mm.* tensors in file order, and the checkpoint tensors deliberately not
    written (post_layernorm, layers past the feature layer, position_ids buffers)."""
    C, F, P, E = vp.n_embd, vp.n_ff, vp.patch_size, n_embd_text
    n_pos = (vp.image_size // P) ** 2 + 1
    v, m = names.vision, names.projector
    plan: List[PlannedTensor] = []

    def add(gname: str, hname: str, shape: Tuple[int, ...], keep_f32: bool = False) -> None:
        plan.append(PlannedTensor(gname, hname, shape, 0, keep_f32))

    add("v.patch_embd.weight", v + "embeddings.patch_embedding.weight", (C, 3, P, P))
    add("v.class_embd", v + "embeddings.class_embedding", (C,))
    add("v.position_embd.weight", v + "embeddings.position_embedding.weight", (n_pos, C), keep_f32=True)
    add("v.pre_ln.weight", v + "pre_layrnorm.weight", (C,))
    add("v.pre_ln.bias", v + "pre_layrnorm.bias", (C,))
    for i in range(vp.feature_layer):
        p, b = f"{v}encoder.layers.{i}.", f"v.blk.{i}."
        add(b + "ln1.weight", p + "layer_norm1.weight", (C,))
        add(b + "ln1.bias", p + "layer_norm1.bias", (C,))
        for g, h in (("attn_q", "q_proj"), ("attn_k", "k_proj"), ("attn_v", "v_proj"), ("attn_out", "out_proj")):
            add(f"{b}{g}.weight", f"{p}self_attn.{h}.weight", (C, C))
            add(f"{b}{g}.bias", f"{p}self_attn.{h}.bias", (C,))
        add(b + "ln2.weight", p + "layer_norm2.weight", (C,))
        add(b + "ln2.bias", p + "layer_norm2.bias", (C,))
        add(b + "ffn_up.weight", p + "mlp.fc1.weight", (F, C))
        add(b + "ffn_up.bias", p + "mlp.fc1.bias", (F,))
        add(b + "ffn_down.weight", p + "mlp.fc2.weight", (C, F))
        add(b + "ffn_down.bias", p + "mlp.fc2.bias", (C,))
    add("mm.0.weight", m + "linear_1.weight", (E, C))
    add("mm.0.bias", m + "linear_1.bias", (E,))
    add("mm.2.weight", m + "linear_2.weight", (E, E))
    add("mm.2.bias", m + "linear_2.bias", (E,))
    if vp.is_next:
        add("v.image_newline", names.newline, (E,))

    ignorable = [v + "post_layernorm.weight", v + "post_layernorm.bias", v + "embeddings.position_ids"]
    dropped = tuple(f"{v}encoder.layers.{i}." for i in range(vp.feature_layer, vp.n_layer_hf))
    ignorable += [n for n in ckpt.entries if dropped and n.startswith(dropped)]
    return plan, ignorable


def image_processor_config(model_dir: Path, vp: VisionHParams) -> Tuple[str, Dict[str, Any], str]:
    """(JSON text stored in vlcache.image.processor, the parsed object, where it came from).

    preprocessor_config.json verbatim; else the "image_processor" object of
    processor_config.json (transformers 5 saves only that); else a config synthesized from
    the vision config (CLIPImageProcessor for LLaVA-1.5, LlavaNextImageProcessor for 1.6),
    with a warning.
    """
    pre = model_dir / "preprocessor_config.json"
    if pre.is_file():
        text = pre.read_text(encoding="utf-8")
        obj = _read_json(pre)
        if not isinstance(obj, dict):
            raise ConvertError(f"{pre}: not a JSON object")
        return text, obj, str(pre)
    pc_path = model_dir / "processor_config.json"
    pc = _read_json(pc_path)
    if isinstance(pc, dict) and isinstance(pc.get("image_processor"), dict):
        obj = pc["image_processor"]
        return json.dumps(obj, indent=2, sort_keys=True) + "\n", obj, f"{pc_path} (image_processor)"
    S = vp.image_size
    obj = {
        "image_processor_type": "LlavaNextImageProcessor" if vp.is_next else "CLIPImageProcessor",
        "do_resize": True, "size": {"shortest_edge": S}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": S, "width": S},
        "do_rescale": True, "rescale_factor": 1.0 / 255.0,
        "do_normalize": True, "image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD),
        "do_convert_rgb": True,
    }
    if vp.is_next:
        obj["image_grid_pinpoints"] = [list(p) for p in vp.grid_pinpoints or []]
        obj["do_pad"] = True
    print(f"convert_hf_to_gguf: warning: {model_dir}: no preprocessor_config.json or processor_config.json; "
          f"using a default {obj['image_processor_type']} ({S}x{S}, OpenAI CLIP mean/std)", file=sys.stderr)
    return json.dumps(obj, indent=2, sort_keys=True) + "\n", obj, "synthesized"


def _mean_std(obj: Dict[str, Any], key: str, default: List[float], where: str) -> List[float]:
    val = obj.get(key, default)
    if isinstance(val, (int, float)) and not isinstance(val, bool):
        val = [float(val)] * 3
    if (not isinstance(val, list) or len(val) != 3
            or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in val)):
        raise ConvertError(f"{where}: {key} must be 3 numbers, got {val!r}")
    return [float(x) for x in val]


def _check_processor(obj: Dict[str, Any], vp: VisionHParams, where: str) -> None:
    """Warn where the processor and the model config disagree (Hugging Face would misbehave too)."""
    crop = obj.get("crop_size")
    if isinstance(crop, dict) and obj.get("do_center_crop", True):
        h, w = crop.get("height"), crop.get("width")
        if (h, w) != (vp.image_size, vp.image_size):
            print(f"convert_hf_to_gguf: warning: {where}: crop_size {h}x{w} differs from the vision "
                  f"tower's image_size {vp.image_size}", file=sys.stderr)
    if vp.is_next and "image_grid_pinpoints" in obj:
        theirs = [tuple(p) for p in obj["image_grid_pinpoints"] or []]
        if theirs != list(vp.grid_pinpoints or []):
            print(f"convert_hf_to_gguf: warning: {where}: image_grid_pinpoints {theirs} differ from "
                  f"config.json's {vp.grid_pinpoints}", file=sys.stderr)


def _image_token(model_dir: Path, vocab: Vocab, vp: VisionHParams) -> str:
    """The placeholder text; checks the tokenizer has it at image_token_id."""
    pc = _read_json(model_dir / "processor_config.json")
    want = pc.get("image_token", "<image>") if isinstance(pc, dict) else "<image>"
    tid = vp.image_token_id
    if not 0 <= tid < len(vocab.tokens):
        raise ConvertError(f"{model_dir / 'config.json'}: image_token_id {tid} is outside the vocabulary "
                           f"({len(vocab.tokens)} tokens)")
    got = vocab.tokens[tid].decode("utf-8", errors="replace")
    if got != want:
        raise ConvertError(f"{model_dir}: image_token_id {tid} is {got!r} in the tokenizer, expected {want!r} "
                           "(add it as an added token, as llava-hf tokenizers do)")
    return want


# --------------------------------------------------------------------------------------
# Progress display (stderr; tqdm when importable)
# --------------------------------------------------------------------------------------

class _Progress:
    def __init__(self, n_tensors: int, total_bytes: int, enabled: bool):
        self.n, self.total, self.enabled = n_tensors, total_bytes, enabled
        self.i, self.done, self.t0 = 0, 0, time.time()
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="Writing",
                                file=sys.stderr)
            except ImportError:
                self.bar = None
        self.tty = enabled and sys.stderr.isatty()

    def update(self, name: str, nbytes: int) -> None:
        self.i += 1
        self.done += nbytes
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.i}/{self.n} {name}", refresh=False)
            self.bar.update(nbytes)
            return
        mib = 1024.0 * 1024.0
        line = (f"[{self.i:4d}/{self.n}] {self.done / mib:9.1f}/{self.total / mib:.1f} MiB "
                f"{100.0 * self.done / max(self.total, 1):5.1f}%  {name}")
        if self.tty:
            sys.stderr.write("\r" + line.ljust(100))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        elif self.tty:
            sys.stderr.write("\n")
        sys.stderr.write(f"convert_hf_to_gguf: wrote {self.n} tensors, "
                         f"{self.done / (1024.0 * 1024.0):.1f} MiB in {time.time() - self.t0:.1f} s\n")


# --------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------

def _nbytes(shape: Sequence[int], t: gguf.GGMLQuantizationType) -> int:
    n = int(np.prod(shape, dtype=np.int64))
    return n * (4 if t == gguf.GGMLQuantizationType.F32 else 2)


def _np_dtype(t: gguf.GGMLQuantizationType) -> np.dtype:
    return {gguf.GGMLQuantizationType.F32: np.dtype(np.float32),
            gguf.GGMLQuantizationType.F16: np.dtype(np.float16),
            gguf.GGMLQuantizationType.BF16: np.dtype(np.uint16)}[t]


def _add_vision_kv(w: gguf.GGUFWriter, model_dir: Path, vp: VisionHParams, vocab: Vocab) -> None:
    """clip.* and vlcache.* keys of the one-file LLaVA (tools/GGUF_FORMAT.md), with the
    value types llama.cpp's clip.cpp asserts (u32 ints, f32 eps, bool flags)."""
    token = _image_token(model_dir, vocab, vp)
    proc_text, proc, where = image_processor_config(model_dir, vp)
    _check_processor(proc, vp, where)
    i32 = gguf.GGUFValueType.INT32
    f32 = gguf.GGUFValueType.FLOAT32
    w.add_bool("clip.has_vision_encoder", True)
    w.add_string("clip.projector_type", "mlp")
    w.add_uint32("clip.vision.image_size", vp.image_size)
    w.add_uint32("clip.vision.patch_size", vp.patch_size)
    w.add_uint32("clip.vision.embedding_length", vp.n_embd)
    w.add_uint32("clip.vision.feed_forward_length", vp.n_ff)
    w.add_uint32("clip.vision.projection_dim", vp.projection_dim)
    w.add_uint32("clip.vision.attention.head_count", vp.n_head)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", vp.eps)
    w.add_uint32("clip.vision.block_count", vp.feature_layer)
    w.add_key_value("clip.vision.feature_layer", [vp.feature_layer], gguf.GGUFValueType.ARRAY, sub_type=i32)
    w.add_key_value("clip.vision.image_mean", _mean_std(proc, "image_mean", OPENAI_CLIP_MEAN, where),
                    gguf.GGUFValueType.ARRAY, sub_type=f32)
    w.add_key_value("clip.vision.image_std", _mean_std(proc, "image_std", OPENAI_CLIP_STD, where),
                    gguf.GGUFValueType.ARRAY, sub_type=f32)
    w.add_bool("clip.use_gelu", vp.use_gelu)
    w.add_string("vlcache.vision.select_strategy", vp.select_strategy)
    w.add_string("vlcache.projector.act", vp.projector_act)
    w.add_string("vlcache.image.processor", proc_text)
    w.add_string("vlcache.image.token", token)
    w.add_uint32("vlcache.image.token_id", vp.image_token_id)
    w.add_string("vlcache.chat_template", vp.chat_template)
    if vp.is_next:
        flat = [x for pair in vp.grid_pinpoints or [] for x in pair]
        w.add_key_value("clip.vision.image_grid_pinpoints", flat, gguf.GGUFValueType.ARRAY, sub_type=i32)
        w.add_string("clip.vision.mm_patch_merge_type", "spatial_unpad")


def convert(model_dir: "os.PathLike[str] | str", outfile: "os.PathLike[str] | str",
            outtype: str = "f16", *, progress: bool = True, chat_template: Optional[str] = None) -> Path:
    """Convert a HF Llama/Mistral or LLaVA-1.5/1.6 directory to GGUF at `outfile`; returns the path.

    chat_template (LLaVA only): one of CHAT_TEMPLATES for vlcache.chat_template; None picks
    llava-1.5 for LlavaForConditionalGeneration, and for LlavaNextForConditionalGeneration
    llava-1.6-mistral (Mistral text model) or llava-1.6-vicuna (Llama text model).
    Raises ConvertError (with the file, key or tensor named) on bad or unsupported input.
    On error no partial output file is left behind.
    """
    model_dir = Path(model_dir)
    outfile = Path(outfile)
    if outtype not in OUTTYPES:
        raise ConvertError(f"unknown outtype {outtype!r} (choose from {', '.join(OUTTYPES)})")
    if not model_dir.is_dir():
        raise ConvertError(f"{model_dir}: not a directory")
    wtype, ftype = OUTTYPES[outtype]

    cfg, cfg_path = read_config(model_dir)
    archs = cfg.get("architectures") or []
    llava_arch = next((a for a in archs if a in LLAVA_ARCHITECTURES), None) if isinstance(archs, list) else None
    vp: Optional[VisionHParams] = None
    if llava_arch is not None:
        hp, vp = read_llava_hparams(cfg, cfg_path, llava_arch, chat_template)
        ckpt = open_checkpoint(model_dir)
        names = llava_names(ckpt)
        text_prefix = names.text
        plan = plan_tensors(hp, ckpt, prefix=names.text, lm_head=names.lm_head, check=False)
        vplan, ignorable = plan_vision(vp, hp.n_embd, names, ckpt)
        if names.lm_head not in {t.hf_name for t in plan}:
            ignorable.append(names.lm_head)
        plan += vplan
    else:
        if chat_template is not None:
            raise ConvertError(f"{cfg_path}: --chat-template applies to LLaVA models only, not to {archs}")
        try:
            hp = _hparams_from_config(cfg, cfg_path)
        except (TypeError, ValueError) as exc:
            raise ConvertError(f"{cfg_path}: bad value in config: {exc}") from exc
        ckpt = open_checkpoint(model_dir)
        text_prefix = "model."
    emb = ckpt.entries.get(text_prefix + "embed_tokens.weight")
    if emb is not None and len(emb.shape) == 2 and emb.shape[0] != hp.n_vocab:
        raise ConvertError(f"{cfg_path}: vocab_size={hp.n_vocab} but {emb.name} has {emb.shape[0]} rows")
    if vp is None:
        plan = plan_tensors(hp, ckpt)
    else:
        check_plan(plan, ckpt, str(llava_arch), ignorable)
    vocab = load_vocab(model_dir, hp.n_vocab)

    # general.architecture is "llava" for the one-file LLaVA; the text keys stay llama.*
    # (the writer's helpers format their keys with w.arch).
    w = gguf.GGUFWriter(None, "llama" if vp is None else "llava")
    w.arch = "llama"
    w.add_name(model_dir.resolve().name)
    w.add_file_type(int(ftype))
    w.add_uint32("vlcache.format_version", VLCACHE_FORMAT_VERSION)

    w.add_vocab_size(hp.n_vocab)
    w.add_context_length(hp.n_ctx)
    w.add_embedding_length(hp.n_embd)
    w.add_block_count(hp.n_layer)
    w.add_feed_forward_length(hp.n_ff)
    w.add_head_count(hp.n_head)
    w.add_head_count_kv(hp.n_head_kv)
    w.add_layer_norm_rms_eps(hp.rms_eps)
    w.add_rope_freq_base(hp.rope_theta)
    w.add_rope_dimension_count(hp.head_dim)
    if hp.head_dim != hp.n_embd // hp.n_head or hp.n_embd % hp.n_head != 0:
        w.add_key_length(hp.head_dim)
        w.add_value_length(hp.head_dim)
    if hp.rope_scaling_type == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(hp.rope_scaling_factor)

    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(vocab.tokens)
    w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    for typ, tid in vocab.special_ids.items():
        getattr(w, f"add_{typ}_token_id")(tid)
    w.add_add_bos_token(vocab.add_bos)
    w.add_add_eos_token(vocab.add_eos)
    w.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.prepend_scheme is not None:
        w.add_string("vlcache.tokenizer.prepend_scheme", vocab.prepend_scheme)
    for name, tmpl in vocab.chat_templates.items():
        w.add_string("tokenizer.chat_template" + (f".{name}" if name else ""), tmpl)
    if vp is not None:
        _add_vision_kv(w, model_dir, vp, vocab)

    out_types = [gguf.GGMLQuantizationType.F32 if len(t.shape) == 1 or t.keep_f32 else wtype for t in plan]
    for t, ot in zip(plan, out_types):
        w.add_tensor_info(t.gguf_name, t.shape, _np_dtype(ot), _nbytes(t.shape, ot),
                          raw_dtype=ot if ot == gguf.GGMLQuantizationType.BF16 else None)

    total = sum(_nbytes(t.shape, ot) for t, ot in zip(plan, out_types))
    outfile.parent.mkdir(parents=True, exist_ok=True)
    tmp = outfile.with_name(outfile.name + ".part")
    bar = _Progress(len(plan), total, progress)
    try:
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for t, ot in zip(plan, out_types):
            raw = ckpt.load(t.hf_name)
            data = convert_tensor(raw, ckpt.entries[t.hf_name].dtype, ot, t.permute_heads, t.hf_name)
            w.write_tensor_data(data)
            del raw, data
            bar.update(t.gguf_name, _nbytes(t.shape, ot))
        w.close()
        os.replace(tmp, outfile)
    except BaseException:
        w.close()
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    bar.close()
    return outfile


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description="Convert a Hugging Face LlamaForCausalLM / MistralForCausalLM directory to GGUF "
                    "(llama.cpp-compatible keys, tensor names and Q/K permutation), or a "
                    "LlavaForConditionalGeneration / LlavaNextForConditionalGeneration directory to one "
                    "GGUF with the text model and the CLIP vision tower (tools/GGUF_FORMAT.md).")
    ap.add_argument("model", type=Path, help="directory with config.json, safetensors and tokenizer files")
    ap.add_argument("--outfile", type=Path, default=None,
                    help="output path (default: MODEL/ggml-model-OUTTYPE.gguf)")
    ap.add_argument("--outtype", choices=list(OUTTYPES), default="f16",
                    help="type of 2-D tensors; 1-D tensors (norms) are always f32 (default: f16)")
    ap.add_argument("--chat-template", choices=list(CHAT_TEMPLATES), default=None,
                    help="LLaVA only: prompt format stored as vlcache.chat_template (default: llava-1.5 "
                         "for LLaVA-1.5; llava-1.6-mistral or llava-1.6-vicuna for LLaVA-1.6 by text model)")
    ap.add_argument("--no-progress", action="store_true", help="do not print the progress bar")
    args = ap.parse_args(argv)
    outfile = args.outfile or (args.model / f"ggml-model-{args.outtype}.gguf")
    try:
        path = convert(args.model, outfile, args.outtype, progress=not args.no_progress,
                       chat_template=args.chat_template)
    except ConvertError as exc:
        print(f"convert_hf_to_gguf: error: {exc}", file=sys.stderr)
        return 1
    print(f"convert_hf_to_gguf: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
