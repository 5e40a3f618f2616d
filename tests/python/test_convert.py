"""test_convert.py: tools/convert_hf_to_gguf.py against tiny Hugging Face models.

What it checks (with gguf.GGUFReader; no C library needed):
  - llama.* / general.* / tokenizer.* keys and values against config.json and the tokenizer;
  - tensor names, GGUF shapes (ne order), types (1-D always F32), llama.cpp's offset layout;
  - tensor values EXACTLY: F32 bit-equal to HF, F16/BF16 bit-equal to torch's own rounding of
    the HF weights (both round to nearest even), Q/K rows checked through the index formula of
    GGUF_LLAVA.md §1.7 and through RoPE equivalence;
  - tied embeddings -> no output.weight; sharded and BF16 checkpoints; Mistral; linear rope;
  - vocabulary: tokens/scores/types equal the SentencePiece proto (read with sentencepiece's own
    protobuf classes, not our parser); a tokenizer.json-only model gives the same tokens and
    types, and scores that make llama.cpp-style score-ordered merging reproduce HF's BPE;
  - clear errors for missing config, unsupported architecture, missing tensors, bad dtype.
Exactness is the right tolerance here: conversion is a copy plus a deterministic rounding.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import oracle

import hfmodels as H
from hfmodels import expected_bits, gguf_row_source

torch = oracle("torch")
safetensors_torch = oracle("safetensors.torch")

conv = H.converter_module()
GGML = {"f32": "F32", "f16": "F16", "bf16": "BF16"}


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return H.train_spm(tmp_path_factory.mktemp("tok"), vocab_size=512, seed=0)


@pytest.fixture(scope="module")
def hf_tok(tok_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(tok_dir))


@pytest.fixture(scope="module")
def spm_proto(tok_dir):
    from sentencepiece import sentencepiece_model_pb2 as pb
    m = pb.ModelProto()
    m.ParseFromString((tok_dir / "tokenizer.model").read_bytes())
    return m


def hf_state(hf_dir: Path) -> dict:
    """All checkpoint tensors as float32 torch tensors (safetensors read by the safetensors lib)."""
    files = sorted(hf_dir.glob("*.safetensors"))
    out = {}
    for f in files:
        for k, v in safetensors_torch.load_file(str(f)).items():
            out[k] = v
    return out


# ---------------------------------------------------------------------------------------
# Checking a converted file against the HF directory
# ---------------------------------------------------------------------------------------

def check_model(hf_dir: Path, path: Path, outtype: str):
    """Checks every key and tensor of a converted file against the HF directory."""
    cfg = json.loads((hf_dir / "config.json").read_text())
    kv, tensors = H.read_gguf(path)
    rope = cfg.get("rope_parameters") or {}
    n_embd, n_head = cfg["hidden_size"], cfg["num_attention_heads"]
    n_kv = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or n_embd // n_head

    assert kv["general.architecture"] == "llama"
    assert kv["general.file_type"] == {"f32": 0, "f16": 1, "bf16": 32}[outtype]
    assert kv["general.name"] == hf_dir.name
    assert kv["vlcache.format_version"] == 1
    assert kv["llama.vocab_size"] == cfg["vocab_size"]
    assert kv["llama.context_length"] == cfg["max_position_embeddings"]
    assert kv["llama.embedding_length"] == n_embd
    assert kv["llama.block_count"] == cfg["num_hidden_layers"]
    assert kv["llama.feed_forward_length"] == cfg["intermediate_size"]
    assert kv["llama.attention.head_count"] == n_head
    assert kv["llama.attention.head_count_kv"] == n_kv
    assert kv["llama.attention.layer_norm_rms_epsilon"] == np.float32(cfg["rms_norm_eps"])
    assert kv["llama.rope.freq_base"] == np.float32(rope["rope_theta"])
    assert kv["llama.rope.dimension_count"] == hd
    if hd != n_embd // n_head:
        assert kv["llama.attention.key_length"] == hd
        assert kv["llama.attention.value_length"] == hd
    else:
        assert "llama.attention.key_length" not in kv
    if rope.get("rope_type") == "linear":
        assert kv["llama.rope.scaling.type"] == "linear"
        assert kv["llama.rope.scaling.factor"] == np.float32(rope["factor"])
    else:
        assert "llama.rope.scaling.type" not in kv
    assert kv["tokenizer.ggml.model"] == "llama"
    assert len(kv["tokenizer.ggml.tokens"]) == cfg["vocab_size"]
    assert len(kv["tokenizer.ggml.scores"]) == cfg["vocab_size"]
    assert len(kv["tokenizer.ggml.token_type"]) == cfg["vocab_size"]
    assert (kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.eos_token_id"],
            kv["tokenizer.ggml.unknown_token_id"]) == (1, 2, 0)
    assert kv["tokenizer.ggml.add_bos_token"] is True
    assert kv["tokenizer.ggml.add_eos_token"] is False
    assert kv["tokenizer.ggml.add_space_prefix"] is True

    # Tensor names, shapes, types, values.
    sd = hf_state(hf_dir)
    tied = cfg.get("tie_word_embeddings", False)
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    if not tied:
        names["output.weight"] = "lm_head.weight"
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        names.update({
            f"blk.{i}.attn_norm.weight": p + "input_layernorm.weight",
            f"blk.{i}.attn_q.weight": p + "self_attn.q_proj.weight",
            f"blk.{i}.attn_k.weight": p + "self_attn.k_proj.weight",
            f"blk.{i}.attn_v.weight": p + "self_attn.v_proj.weight",
            f"blk.{i}.attn_output.weight": p + "self_attn.o_proj.weight",
            f"blk.{i}.ffn_norm.weight": p + "post_attention_layernorm.weight",
            f"blk.{i}.ffn_gate.weight": p + "mlp.gate_proj.weight",
            f"blk.{i}.ffn_up.weight": p + "mlp.up_proj.weight",
            f"blk.{i}.ffn_down.weight": p + "mlp.down_proj.weight",
        })
    assert set(tensors) == set(names)
    for gname, hname in names.items():
        ttype, ne, data = tensors[gname]
        ref = sd[hname]
        assert ne == tuple(reversed(ref.shape)), gname
        if ref.ndim == 1:
            assert ttype == "F32", gname
            want = ref.float().numpy()
        else:
            assert ttype == GGML[outtype], gname
            want = expected_bits(ref, outtype)
        if gname.endswith("attn_q.weight") or gname.endswith("attn_k.weight"):
            heads = n_head if "attn_q" in gname else n_kv
            want = want[gguf_row_source(want.shape[0], heads)]
        assert data.dtype == want.dtype, gname
        assert np.array_equal(data.view(np.uint8), np.ascontiguousarray(want).view(np.uint8)), gname

    # llama.cpp's loader requires tensor data contiguous in tensor-info order, 32-aligned.
    import gguf
    r = gguf.GGUFReader(str(path))
    off = r.data_offset
    for t in r.tensors:
        assert t.data_offset == off, t.name
        off += (t.n_bytes + 31) // 32 * 32
    return kv, tensors


# ---------------------------------------------------------------------------------------
# Model shapes x output types
# ---------------------------------------------------------------------------------------

CASES = {
    "mha": dict(),
    "gqa2": dict(kv_heads=2),
    "h96_hd48": dict(hidden=96, heads=2, kv_heads=2, head_dim=48, ff=160),
    "hd_not_hidden_over_heads": dict(hidden=64, heads=4, kv_heads=2, head_dim=32),
    "tied": dict(tie=True),
    "theta500k_eps1e-6": dict(rope_theta=500000.0, rms_eps=1e-6),
    "mistral": dict(arch="mistral", kv_heads=2),
    "linear_rope": dict(rope_scaling={"rope_type": "linear", "factor": 4.0}),
    "sharded": dict(kv_heads=2, max_shard_size="40KB"),
}


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("case", list(CASES))
def test_convert_case(case, outtype, tok_dir, tmp_path):
    hf_dir = H.make_llama(tmp_path / case, tokenizer_dir=tok_dir, seed=3, **CASES[case])
    if case == "sharded":
        assert (hf_dir / "model.safetensors.index.json").is_file()
        assert len(list(hf_dir.glob("*.safetensors"))) > 1
    path = H.convert(hf_dir, tmp_path / f"{case}.{outtype}.gguf", outtype)
    kv, tensors = check_model(hf_dir, path, outtype)
    if case == "tied":
        assert "output.weight" not in tensors
    if case == "mistral":
        assert json.loads((hf_dir / "config.json").read_text())["architectures"] == ["MistralForCausalLM"]


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16"])
def test_bf16_checkpoint(outtype, tok_dir, tmp_path):
    """A checkpoint stored in BF16 (the usual case for real models)."""
    hf_dir = H.make_llama(tmp_path / "bf", tokenizer_dir=tok_dir, kv_heads=2, dtype=torch.bfloat16)
    header = json.loads((hf_dir / "model.safetensors").read_bytes()[8:][:struct.unpack(
        "<Q", (hf_dir / "model.safetensors").read_bytes()[:8])[0]])
    assert header["model.embed_tokens.weight"]["dtype"] == "BF16"
    check_model(hf_dir, H.convert(hf_dir, tmp_path / "bf.gguf", outtype), outtype)


def test_permutation_matches_rope(tok_dir, tmp_path):
    """Adjacent-pair RoPE on the GGUF Q/K rows == HF rotate-half RoPE on the HF rows,
    so attention scores are unchanged (the reason for the permutation, §1.7)."""
    hf_dir = H.make_llama(tmp_path / "m", tokenizer_dir=tok_dir, kv_heads=2)
    _, tensors = H.read_gguf(H.convert(hf_dir, tmp_path / "m.gguf", "f32"))
    sd = hf_state(hf_dir)
    n_head, n_kv, d, base = 4, 2, 16, 10000.0
    x = np.random.default_rng(0).standard_normal(64).astype(np.float64)
    inv = base ** (-np.arange(0, d, 2) / d)                       # [d/2]

    def rope_half(v, pos):                                         # HF: pairs (j, j + d/2)
        v = v.reshape(-1, d)
        c, s = np.cos(pos * inv), np.sin(pos * inv)
        a, b = v[:, :d // 2], v[:, d // 2:]
        return np.concatenate([a * c - b * s, b * c + a * s], axis=1)

    def rope_pair(v, pos):                                         # llama.cpp NORM: (2j, 2j+1)
        v = v.reshape(-1, d // 2, 2)
        c, s = np.cos(pos * inv), np.sin(pos * inv)
        a, b = v[..., 0], v[..., 1]
        return np.stack([a * c - b * s, b * c + a * s], axis=-1).reshape(-1, d)

    q_hf = sd["model.layers.0.self_attn.q_proj.weight"].double().numpy() @ x
    k_hf = sd["model.layers.0.self_attn.k_proj.weight"].double().numpy() @ x
    q_gg = tensors["blk.0.attn_q.weight"][2].astype(np.float64) @ x
    k_gg = tensors["blk.0.attn_k.weight"][2].astype(np.float64) @ x
    for pq, pk in [(5, 2), (17, 17), (100, 3)]:
        s_hf = rope_half(q_hf, pq) @ rope_half(k_hf, pk).T          # [n_head, n_kv]
        s_gg = rope_pair(q_gg, pq) @ rope_pair(k_gg, pk).T
        assert s_hf.shape == (n_head, n_kv)
        np.testing.assert_allclose(s_gg, s_hf, rtol=1e-12, atol=1e-12)


def test_permute_roundtrip():
    w = np.arange(48 * 5, dtype=np.float32).reshape(48, 5)
    for heads in (1, 2, 3, 6):
        p = conv.permute_qk(w, heads)
        assert np.array_equal(p, w[gguf_row_source(48, heads)])
        assert np.array_equal(conv.qk_row_order(48, heads), gguf_row_source(48, heads))
        assert np.array_equal(conv.unpermute_qk(p, heads), w)


def test_bf16_rounding_matches_torch():
    """Round-to-nearest-even, ties, subnormals, inf, NaN, overflow to inf."""
    rng = np.random.default_rng(1)
    specials = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, 1e-40, -1e-42, 3.4e38, -3.4e38,
                         1.00390625, 1.01171875, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8,
                         np.finfo(np.float32).max, np.finfo(np.float32).tiny], dtype=np.float32)
    # Exact ties: low 16 bits == 0x8000, with even and odd upper halves.
    ties = (rng.integers(0, 0x7F00, 1000, dtype=np.uint32) << 16 | 0x8000).astype(np.uint32).view(np.float32)
    x = np.concatenate([specials, ties, rng.standard_normal(20000).astype(np.float32) * 10.0])
    got = conv.f32_to_bf16_bits(x)
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(got, want)
    nan = conv.f32_to_bf16_bits(np.array([np.nan, -np.nan], dtype=np.float32))
    assert np.isnan(conv.bf16_bits_to_f32(nan)).all()
    assert np.array_equal(conv.bf16_bits_to_f32(got[:4]), x[:4])


# ---------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------

def test_vocab_equals_spm_proto(tok_dir, spm_proto, tmp_path):
    hf_dir = H.make_llama(tmp_path / "m", tokenizer_dir=tok_dir)
    path = H.convert(hf_dir, tmp_path / "m.gguf", "f16")
    kv, _ = H.read_gguf(path)
    toks = H.read_gguf_tokens(path)
    pieces = spm_proto.pieces
    assert len(toks) == len(pieces) == 512
    assert toks == [p.piece.encode("utf-8") for p in pieces]
    assert np.array_equal(np.array(kv["tokenizer.ggml.scores"], dtype=np.float32),
                          np.array([p.score for p in pieces], dtype=np.float32))
    assert kv["tokenizer.ggml.token_type"] == [int(p.type) for p in pieces]
    # The proto really has every kind we map: unknown, control, byte, normal.
    assert {int(p.type) for p in pieces} == {1, 2, 3, 6}
    assert toks[3:259] == [f"<0x{i:02X}>".encode() for i in range(256)]
    # Our own protobuf reader agrees on the normalizer/trainer fields too.
    m = conv.load_spm_model(tok_dir / "tokenizer.model")
    assert m.add_dummy_prefix == spm_proto.normalizer_spec.add_dummy_prefix
    assert m.model_type == spm_proto.trainer_spec.model_type == 2
    assert m.ids == {"unk": 0, "bos": 1, "eos": 2, "pad": -1}


def spm_tokenize(text: str, tokens, scores):
    """llama.cpp's SPM merge algorithm in plain Python: split into UTF-8 characters, repeatedly
    merge the adjacent pair whose concatenation is a token with the highest score (leftmost on
    ties), then map leftovers to <0xNN> byte tokens.
    The space prefix follows HF's Metaspace(prepend_scheme="first"), which adds no '▁' when the
    text already starts with a space (SentencePiece and llama.cpp always add one): this test is
    about the merge order, not about that difference."""
    ids = {}
    for i, t in enumerate(tokens):
        ids.setdefault(t, i)
    if text == "":
        return []
    s = ("" if text.startswith(" ") else "\u2581") + text.replace(" ", "\u2581")
    sym = list(s)
    while True:
        best = None
        for i in range(len(sym) - 1):
            tid = ids.get((sym[i] + sym[i + 1]).encode("utf-8"))
            if tid is not None and (best is None or scores[tid] > best[0]):
                best = (scores[tid], i)
        if best is None:
            break
        i = best[1]
        sym[i:i + 2] = [sym[i] + sym[i + 1]]
    out = []
    for piece in sym:
        tid = ids.get(piece.encode("utf-8"))
        if tid is not None:
            out.append(tid)
        else:
            out.extend(ids[f"<0x{b:02X}>".encode()] for b in piece.encode("utf-8"))
    return out


TEXTS = ["Hello World", "the model and the cache", " leading space", "trailing space ",
         "two  spaces", "tab\there", "new\nline", "digits 1234567890", "café naïve über",
         "日本語 東京 中文", "emoji 😀🚀 ❤️", "rare ∮ ⅋ 𝔸", "", " ", "a", "Straße...!!"]


@pytest.mark.parametrize("source", ["tokenizer.model", "tokenizer.json"])
def test_score_order_reproduces_hf(source, tok_dir, hf_tok, spm_proto, tmp_path):
    """With the written scores, llama.cpp-style score-ordered merging gives HF's tokens.
    For tokenizer.json-only models this is what our choice of scores (-merge rank) buys."""
    hf_dir = H.make_llama(tmp_path / "m", tokenizer_dir=tok_dir)
    if source == "tokenizer.json":
        (hf_dir / "tokenizer.model").unlink()
    path = H.convert(hf_dir, tmp_path / "m.gguf", "f16")
    kv, _ = H.read_gguf(path)
    toks = H.read_gguf_tokens(path)
    scores = kv["tokenizer.ggml.scores"]
    # Same token list and types whichever file the vocabulary came from.
    assert toks == [p.piece.encode("utf-8") for p in spm_proto.pieces]
    assert kv["tokenizer.ggml.token_type"] == [int(p.type) for p in spm_proto.pieces]
    assert kv["tokenizer.ggml.add_space_prefix"] is True
    assert kv["tokenizer.ggml.add_bos_token"] is True
    texts = TEXTS + H.corpus_lines(seed=7, n_lines=150)
    n_multi = 0
    for text in texts:
        want = hf_tok.encode(text, add_special_tokens=False)
        assert spm_tokenize(text, toks, scores) == want, repr(text)
        n_multi += any(len(toks[i]) > 3 for i in want)
    assert n_multi > 100  # merges actually happened


def test_added_tokens_and_padding(tok_dir, tmp_path):
    """Added special -> CONTROL, added normal -> USER_DEFINED, ids kept; vocab padded with
    [PAD{id}] UNUSED tokens up to config.vocab_size; chat template copied."""
    from transformers import AutoTokenizer, AddedToken
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    tok.add_tokens([AddedToken("<|im_start|>", special=True)])
    tok.add_tokens([AddedToken("<user_tok>", special=False)])
    tdir = tmp_path / "tok2"
    tok.save_pretrained(str(tdir))
    (tdir / "tokenizer.model").write_bytes((tok_dir / "tokenizer.model").read_bytes())
    tcfg = json.loads((tdir / "tokenizer_config.json").read_text())
    tcfg["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (tdir / "tokenizer_config.json").write_text(json.dumps(tcfg))
    assert len(tok) == 514
    hf_dir = H.make_llama(tmp_path / "m", tokenizer_dir=tdir, vocab=520)
    for source in ("tokenizer.model", "tokenizer.json"):
        if source == "tokenizer.json":
            (hf_dir / "tokenizer.model").unlink()
        path = H.convert(hf_dir, tmp_path / "m.gguf", "f32")
        kv, tensors = H.read_gguf(path)
        toks = H.read_gguf_tokens(path)
        types = kv["tokenizer.ggml.token_type"]
        assert len(toks) == 520 and tensors["token_embd.weight"][1] == (64, 520)
        assert toks[512] == b"<|im_start|>" and types[512] == 3, source
        assert toks[513] == b"<user_tok>" and types[513] == 4, source
        assert toks[514:] == [f"[PAD{i}]".encode() for i in range(514, 520)]
        assert types[514:] == [5] * 6
        assert types[:3] == [2, 3, 3]
        assert kv["tokenizer.chat_template"] == tcfg["chat_template"]


def test_add_bos_eos_from_tokenizer_config(tok_dir, tmp_path):
    hf_dir = H.make_llama(tmp_path / "m", tokenizer_dir=tok_dir)
    tcfg = json.loads((hf_dir / "tokenizer_config.json").read_text())
    tcfg.update(add_bos_token=False, add_eos_token=True)
    (hf_dir / "tokenizer_config.json").write_text(json.dumps(tcfg))
    kv, _ = H.read_gguf(H.convert(hf_dir, tmp_path / "m.gguf", "f32"))
    assert kv["tokenizer.ggml.add_bos_token"] is False
    assert kv["tokenizer.ggml.add_eos_token"] is True


# ---------------------------------------------------------------------------------------
# Errors and CLI
# ---------------------------------------------------------------------------------------

def _edit_config(hf_dir: Path, **changes):
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg.update(changes)
    (hf_dir / "config.json").write_text(json.dumps(cfg))


@pytest.fixture
def small_model(tok_dir, tmp_path):
    return H.make_llama(tmp_path / "m", tokenizer_dir=tok_dir, layers=1)


def test_error_missing_config(small_model, tmp_path):
    (small_model / "config.json").unlink()
    with pytest.raises(conv.ConvertError, match="config.json not found"):
        H.convert(small_model, tmp_path / "x.gguf")


def test_error_unsupported_architecture(small_model, tmp_path):
    _edit_config(small_model, architectures=["GPT2LMHeadModel"])
    with pytest.raises(conv.ConvertError, match="unsupported architecture GPT2LMHeadModel"):
        H.convert(small_model, tmp_path / "x.gguf")


def test_error_unsupported_rope_scaling(small_model, tmp_path):
    _edit_config(small_model, rope_parameters={"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4})
    with pytest.raises(conv.ConvertError, match="unsupported rope scaling type 'yarn'"):
        H.convert(small_model, tmp_path / "x.gguf")


def test_error_missing_tensor(small_model, tmp_path):
    st = small_model / "model.safetensors"
    sd = safetensors_torch.load_file(str(st))
    del sd["model.layers.0.mlp.up_proj.weight"]
    safetensors_torch.save_file(sd, str(st))
    out = tmp_path / "x.gguf"
    with pytest.raises(conv.ConvertError, match=r"missing tensor.*model\.layers\.0\.mlp\.up_proj\.weight"):
        H.convert(small_model, out)
    assert not out.exists() and not (tmp_path / "x.gguf.part").exists()


def test_error_wrong_shape(small_model, tmp_path):
    _edit_config(small_model, intermediate_size=96)
    with pytest.raises(conv.ConvertError, match=r"gate_proj.weight' has shape \[128, 64\], expected \[96, 64\]"):
        H.convert(small_model, tmp_path / "x.gguf")


def test_error_unknown_dtype(small_model, tmp_path):
    st = small_model / "model.safetensors"
    sd = safetensors_torch.load_file(str(st))
    sd["model.norm.weight"] = sd["model.norm.weight"].to(torch.float64)
    safetensors_torch.save_file(sd, str(st))
    with pytest.raises(conv.ConvertError, match="tensor 'model.norm.weight' has unsupported dtype 'F64'"):
        H.convert(small_model, tmp_path / "x.gguf")


def test_error_truncated_safetensors(small_model, tmp_path):
    st = small_model / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(conv.ConvertError, match="data_offsets"):
        H.convert(small_model, tmp_path / "x.gguf")


def test_error_no_tokenizer(small_model, tmp_path):
    for name in ("tokenizer.model", "tokenizer.json"):
        (small_model / name).unlink()
    with pytest.raises(conv.ConvertError, match="no tokenizer found"):
        H.convert(small_model, tmp_path / "x.gguf")


def test_error_byte_level_tokenizer_json(small_model, tmp_path):
    (small_model / "tokenizer.model").unlink()
    tj = json.loads((small_model / "tokenizer.json").read_text())
    tj["model"]["byte_fallback"] = False
    tj["pre_tokenizer"] = {"type": "ByteLevel"}
    (small_model / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(conv.ConvertError, match="byte_fallback"):
        H.convert(small_model, tmp_path / "x.gguf")


def test_pytorch_bin_checkpoint(small_model, tmp_path):
    """Legacy pytorch_model.bin (torch is importable in the test environment)."""
    ref = H.convert(small_model, tmp_path / "ref.gguf", "f16")
    st = small_model / "model.safetensors"
    torch.save(safetensors_torch.load_file(str(st)), small_model / "pytorch_model.bin")
    st.unlink()
    out = H.convert(small_model, tmp_path / "bin.gguf", "f16")
    assert out.read_bytes() == ref.read_bytes()


def test_cli(small_model, tmp_path):
    out = tmp_path / "cli.gguf"
    res = subprocess.run([sys.executable, str(H.CONVERTER_PATH), str(small_model), "--outfile", str(out),
                          "--outtype", "bf16"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stderr  # progress / summary goes to stderr
    kv, tensors = H.read_gguf(out)
    assert kv["general.file_type"] == 32 and tensors["token_embd.weight"][0] == "BF16"
    bad = subprocess.run([sys.executable, str(H.CONVERTER_PATH), str(tmp_path / "nope"), "--outfile",
                          str(out)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "error:" in bad.stderr and "nope" in bad.stderr
