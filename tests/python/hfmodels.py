"""hfmodels.py: tiny Hugging Face Llama/Mistral fixtures shared by the Python tests.

What it is:
  - train_spm(dir)       : a deterministic SentencePiece BPE tokenizer (byte fallback, Llama-like
                           options) trained on generated text, saved as tokenizer.model plus the
                           matching HF tokenizer files (tokenizer.json, tokenizer_config.json).
  - make_llama(dir, ...) : a random LlamaForCausalLM / MistralForCausalLM with a fixed seed and
                           non-degenerate weights, saved with save_pretrained (safetensors) next to
                           its tokenizer. Its vocab equals the tokenizer's size (unless `vocab` pads).
  - convert(dir, out)    : our tools/convert_hf_to_gguf.py convert(), imported by path.
  - read_gguf(path)      : metadata and tensors of a GGUF file as plain Python/NumPy values.
  - corpus_lines(seed)   : the generated training text (also handy as tokenizer test strings).

What it is not: not a test (no asserts about our code here) and it needs no C library.
Everything is small (building a model takes well under a second on 2 cores).

Typical use:
    from hfmodels import make_llama, convert
    hf_dir = make_llama(tmp_path / "hf", kv_heads=2)
    gguf_path = convert(hf_dir, tmp_path / "m.gguf", "f32")
"""
from __future__ import annotations

import importlib.util
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
CONVERTER_PATH = REPO_ROOT / "tools" / "convert_hf_to_gguf.py"

# Tokenizer files copied from a tokenizer directory into a model directory.
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja")

PathLike = Union[str, Path]

# ---------------------------------------------------------------------------------------
# Training text
# ---------------------------------------------------------------------------------------

_SYLLABLES = ["ka", "lo", "mi", "ne", "ra", "to", "su", "vi", "de", "po", "an", "el", "or",
              "th", "st", "qu", "ing", "er", "es", "ion", "ble", "ment", "pre", "con"]
_COMMON = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "with", "as", "on",
           "model", "cache", "token", "image", "vision", "language", "llama", "Hello", "World",
           "The", "A", "We", "It"]
_UNICODE = ["café", "naïve", "über", "señor", "façade", "Straße", "日本語", "東京", "中文",
            "привет", "мир", "Ελλάδα", "αβγ", "한국어", "😀", "🚀", "❤️", "→", "€", "½",
            "mañana", "déjà", "vu", "ümlaut", "ąę", "ก", "ע"]
_PUNCT = [".", ",", "!", "?", ";", ":", "-", "(", ")", "\"", "'", "...", "/", "#", "%"]


def corpus_lines(seed: int = 0, n_lines: int = 1500) -> List[str]:
    """Deterministic mixed text: English-like words, digits, punctuation, Unicode and
    irregular spacing (double spaces, tabs). Same (seed, n_lines) -> same lines."""
    rng = random.Random(seed)
    made = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(150)]
    lines = []
    for _ in range(n_lines):
        words = []
        for _ in range(rng.randint(4, 16)):
            r = rng.random()
            if r < 0.40:
                w = rng.choice(_COMMON)
            elif r < 0.75:
                w = rng.choice(made)
            elif r < 0.85:
                w = str(rng.randint(0, 10 ** rng.randint(1, 5)))
            elif r < 0.95:
                w = rng.choice(_UNICODE)
            else:
                w = rng.choice(_PUNCT)
            if rng.random() < 0.15:
                w += rng.choice(_PUNCT)
            words.append(w)
        sep = [rng.choice([" ", " ", " ", " ", "  ", "\t"]) for _ in words]
        lines.append("".join(w + s for w, s in zip(words, sep)).rstrip())
    return lines


# ---------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------

def train_spm(out_dir: PathLike, vocab_size: int = 512, seed: int = 0) -> Path:
    """Train a SentencePiece BPE tokenizer and write it plus the matching HF tokenizer.

    Writes out_dir/tokenizer.model (SentencePiece protobuf) and, via transformers'
    LlamaTokenizer.save_pretrained, tokenizer.json + tokenizer_config.json (add_bos_token
    True, add_eos_token False, like Llama 2). Options follow Llama's tokenizer: BPE,
    byte_fallback, split_digits, identity normalization, no whitespace squeezing, whitespace-only
    pieces allowed, dummy prefix, unk=0 bos=1 eos=2, no pad. Characters rarer than the coverage
    fall back to <0xNN> byte tokens. Deterministic for a given (vocab_size, seed).
    Returns out_dir.
    """
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = str(Path(tmp) / "spm")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(corpus_lines(seed)),
            model_prefix=prefix,
            vocab_size=vocab_size,
            model_type="bpe",
            byte_fallback=True,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=True,
            character_coverage=0.995,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            num_threads=1,
            seed_sentencepiece_size=100000,
            minloglevel=2,
        )
        tok_src = Path(tmp) / "hf_src"
        tok_src.mkdir()
        shutil.copy(prefix + ".model", tok_src / "tokenizer.model")
        tok = LlamaTokenizer.from_pretrained(str(tok_src), add_bos_token=True, add_eos_token=False)
        tok.save_pretrained(str(out_dir))
        shutil.copy(prefix + ".model", out_dir / "tokenizer.model")
    return out_dir


def tokenizer_size(tok_dir: PathLike) -> int:
    """Number of token ids the HF tokenizer in tok_dir can produce (base vocab + added)."""
    from transformers import AutoTokenizer
    return len(AutoTokenizer.from_pretrained(str(tok_dir)))


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------

def make_llama(out_dir: PathLike, *, hidden: int = 64, layers: int = 2, heads: int = 4,
               kv_heads: int = 4, ff: int = 128, vocab: Optional[int] = None,
               head_dim: Optional[int] = None, tie: bool = False, rope_theta: float = 10000.0,
               rms_eps: float = 1e-5, seed: int = 0, tokenizer_dir: Optional[PathLike] = None,
               arch: str = "llama", dtype: Any = None, ctx: int = 512,
               rope_scaling: Optional[Dict[str, Any]] = None,
               max_shard_size: Optional[str] = None) -> Path:
    """Save a random LlamaForCausalLM ("llama") or MistralForCausalLM ("mistral") to out_dir.

    - Tokenizer: files copied from tokenizer_dir, or (None) train_spm(out_dir) is run.
    - vocab: None = the tokenizer's size; a larger value pads the embedding (the converter then
      adds [PAD{id}] tokens); smaller is an error.
    - Weights (torch.manual_seed(seed)): linear layers N(0, 1/fan_in) (unit-gain), embeddings
      N(0, 3/sqrt(hidden)) and lm_head N(0, 3/sqrt(hidden)) so logits have std ~3 and greedy
      tokens vary; RMSNorm weights 1 + N(0, 0.1) so a wrong norm shows. HF's default init
      (std 0.02) would give near-uniform logits.
    - dtype: torch dtype of the saved weights (default torch.float32; bfloat16/float16 test the
      converter's BF16/F16 input paths).
    - head_dim: None = hidden // heads. rope_scaling: e.g. {"rope_type": "linear", "factor": 2.0}.
    - Mistral: sliding_window is None (our runtime, like llama.cpp, has no sliding window).
    - max_shard_size: e.g. "40KB" to write sharded safetensors with an index.
    Returns out_dir.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        train_spm(out_dir)
    else:
        for name in TOKENIZER_FILES:
            src = Path(tokenizer_dir) / name
            if src.is_file():
                shutil.copy(src, out_dir / name)
    n_tok = tokenizer_size(out_dir)
    if vocab is None:
        vocab = n_tok
    if vocab < n_tok:
        raise ValueError(f"make_llama: vocab={vocab} is smaller than the tokenizer ({n_tok} tokens)")

    common = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=ff,
                  head_dim=head_dim if head_dim is not None else hidden // heads,
                  rms_norm_eps=rms_eps, max_position_embeddings=ctx, tie_word_embeddings=tie,
                  bos_token_id=1, eos_token_id=2)
    rope = {"rope_type": "default", "rope_theta": float(rope_theta)}
    if rope_scaling:
        rope = dict(rope_scaling, rope_theta=float(rope_theta))
    if arch == "llama":
        cfg = LlamaConfig(**common, rope_parameters=rope)
        cls = LlamaForCausalLM
    elif arch == "mistral":
        cfg = MistralConfig(**common, rope_parameters=rope, sliding_window=None)
        cls = MistralForCausalLM
    else:
        raise ValueError(f"make_llama: arch must be 'llama' or 'mistral', got {arch!r}")

    torch.manual_seed(seed)
    model = cls(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.ndim == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * (3.0 / hidden ** 0.5))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
    model.eval()
    if dtype is not None:
        model = model.to(dtype)
    kwargs: Dict[str, Any] = {"safe_serialization": True}
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(str(out_dir), **kwargs)
    return out_dir


def load_hf(hf_dir: PathLike):
    """(model, tokenizer) from a make_llama directory, model in float32 eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(hf_dir))


# ---------------------------------------------------------------------------------------
# Converter and GGUF reading
# ---------------------------------------------------------------------------------------

def converter_module():
    """tools/convert_hf_to_gguf.py imported by path (cached in sys.modules)."""
    name = "convert_hf_to_gguf"
    mod = sys.modules.get(name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(name, CONVERTER_PATH)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return mod


def convert(hf_dir: PathLike, outfile: PathLike, outtype: str = "f32") -> Path:
    """Convert hf_dir with our converter (no progress output); returns the GGUF path."""
    return converter_module().convert(hf_dir, outfile, outtype, progress=False)


def gguf_row_source(n_rows: int, n_head: int) -> np.ndarray:
    """src[r] = the HF row stored at GGUF row r, by GGUF_LLAVA.md §1.7's Q/K permutation
    gguf_row[h*d + 2*j + t] = hf_row[h*d + t*(d/2) + j] (written independently of the converter)."""
    d = n_rows // n_head
    src = np.empty(n_rows, dtype=np.int64)
    for h in range(n_head):
        for j in range(d // 2):
            for t in range(2):
                src[h * d + 2 * j + t] = h * d + t * (d // 2) + j
    return src


def expected_bits(t, outtype: str) -> np.ndarray:
    """torch's own rounding of an HF tensor to the output type: values (f32, f16) or raw bits (bf16)."""
    import torch
    t32 = t.float()
    if outtype == "f32":
        return t32.numpy()
    if outtype == "f16":
        return t32.to(torch.float16).numpy()
    return t32.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def read_gguf(path: PathLike) -> Tuple[Dict[str, Any], Dict[str, Tuple[str, Tuple[int, ...], np.ndarray]]]:
    """Read a GGUF file with gguf.GGUFReader.

    Returns (kv, tensors):
      kv[key]        -> str | int | float | bool | list (token strings are str; see
                        read_gguf_tokens for exact bytes)
      tensors[name]  -> (ggml type name "F32"/"F16"/"BF16"/..., ne (GGUF order, innermost first),
                         data as numpy in torch order: float32/float16, or uint16 bits for BF16)
    """
    import gguf
    r = gguf.GGUFReader(str(path))
    kv: Dict[str, Any] = {}
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        kv[key] = f.contents()
    tensors = {}
    for t in r.tensors:
        ne = tuple(int(x) for x in t.shape)
        shape = tuple(reversed(ne))
        tname = t.tensor_type.name
        if tname == "BF16":
            data = np.asarray(t.data).view(np.uint16).reshape(shape)
        else:
            data = np.asarray(t.data).reshape(shape)
        tensors[t.name] = (tname, ne, data)
    return kv, tensors


def read_gguf_tokens(path: PathLike) -> List[bytes]:
    """tokenizer.ggml.tokens as exact bytes."""
    import gguf
    f = gguf.GGUFReader(str(path)).fields["tokenizer.ggml.tokens"]
    return [bytes(f.parts[i]) for i in f.data]
