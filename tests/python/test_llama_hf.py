"""The C Llama forward pass against Hugging Face transformers (float32, CPU) on tiny random models.

Every model is built by hfmodels.make_llama (fixed seed), converted by our
tools/convert_hf_to_gguf.py and run through the Python API. Measures and tolerances:

- rel err = max |ours - hf| / max |hf| over all prefill logits of a 40-token prompt.
- f32 weights + f32 KV: <= 1e-4 (the issue's bound; the two sides differ only in f32
  summation order, measured ~1e-6).
- f16 / bf16 weights against HF run on the *same rounded weights* in f32: <= 1e-4 (this
  isolates our F16/BF16 row kernels from the rounding itself).
- f16 weights + the default f16 KV against the original f32 HF model: <= 1e-2 (the issue's
  bound; f16 rounding of weights and cache is ~5e-4 relative per value).
- 30 greedy tokens identical to HF generate(do_sample=False).
- Decode with the KV cache against one full prefill of the same sequence, and results for
  n_threads 1 / 2 / 3 and for chunked prefill (n_batch 7): the arithmetic is the same
  per output element, so these are asserted bit for bit.

Run with -s to see the measured errors (the closing note of the Foundation issue quotes them).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import oracle

torch = oracle("torch")
oracle("transformers")

import vlcache_native as vc  # noqa: E402
from hfmodels import convert, load_hf, make_llama, train_spm  # noqa: E402

PROMPT = ("Hello World, the model cache is a token of vision and language. "
          "We stream 42 images to the llama: café, naïve, 日本語 😀!")
N_GEN = 30

# name -> make_llama keyword arguments (hidden 64, 2 layers, 4 heads, ff 128 unless given)
MODELS = {
    "mha": dict(),
    "gqa2": dict(kv_heads=2),
    "hidden96_hd48": dict(hidden=96, heads=2, kv_heads=2),
    "hd48_q_wider_than_hidden": dict(hidden=96, heads=4, kv_heads=2, head_dim=48),
    "tied": dict(tie=True),
    "theta500k": dict(rope_theta=500000.0),
    "eps1e-6": dict(rms_eps=1e-6),
    "rope_linear2": dict(kv_heads=2, rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "mistral_gqa": dict(arch="mistral", kv_heads=1),
}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return train_spm(tmp_path_factory.mktemp("spm"))


class Built:
    """One test model: HF directory, converted GGUFs (lazily, per outtype), HF model, prompt ids."""

    def __init__(self, root, tok_dir, name, kwargs):
        self.root = root
        self.name = name
        self.hf_dir = make_llama(root / "hf", tokenizer_dir=tok_dir, **kwargs)
        self.hf, self.tok = load_hf(self.hf_dir)
        self.ids = self.tok(PROMPT).input_ids
        assert len(self.ids) >= 30, len(self.ids)
        self._gguf = {}
        self._ref = None

    def gguf(self, outtype: str) -> str:
        if outtype not in self._gguf:
            self._gguf[outtype] = str(convert(self.hf_dir, self.root / f"m-{outtype}.gguf", outtype))
        return self._gguf[outtype]

    def ref_logits(self, round_to=None) -> np.ndarray:
        """HF float32 logits of the prompt; round_to: first round every 2-D weight to that dtype."""
        model = self.hf
        if round_to is not None:
            model, _ = load_hf(self.hf_dir)
            with torch.no_grad():
                for p in model.parameters():
                    if p.ndim >= 2:
                        p.copy_(p.to(round_to).to(torch.float32))
        with torch.no_grad():
            return model(torch.tensor([self.ids])).logits[0].numpy()


@pytest.fixture(scope="module", params=list(MODELS))
def built(request, tmp_path_factory, tok_dir):
    name = request.param
    return Built(tmp_path_factory.mktemp(name), tok_dir, name, MODELS[name])


def run_prefill(path, ids, *, kv_type="f32", n_threads=2, n_batch=512):
    with vc.Model(path, n_ctx=128, n_threads=n_threads, n_batch=n_batch, kv_type=kv_type) as m, m.session() as s:
        return s.prefill(ids, all_logits=True)


# ---------------------------------------------------------------------------------------
# logits


def test_prefill_logits_f32(built):
    ref = built.ref_logits()
    ours = run_prefill(built.gguf("f32"), built.ids)
    err = rel_err(ours, ref)
    print(f"\n[{built.name}] f32 weights, f32 KV: max rel err {err:.3g}")
    assert ours.shape == ref.shape
    assert err <= 1e-4


@pytest.mark.parametrize("outtype,dtype", [("f16", "float16"), ("bf16", "bfloat16")])
def test_prefill_logits_half_weights_same_rounding(built, outtype, dtype):
    ref = built.ref_logits(round_to=getattr(torch, dtype))
    ours = run_prefill(built.gguf(outtype), built.ids)
    err = rel_err(ours, ref)
    print(f"\n[{built.name}] {outtype} weights vs HF on the same rounded weights, f32 KV: max rel err {err:.3g}")
    assert err <= 1e-4


def test_prefill_logits_f16_weights_f16_kv(built):
    ref = built.ref_logits()
    ours = run_prefill(built.gguf("f16"), built.ids, kv_type="f16")
    err = rel_err(ours, ref)
    print(f"\n[{built.name}] f16 weights, f16 KV vs HF f32: max rel err {err:.3g}")
    assert err <= 1e-2


# ---------------------------------------------------------------------------------------
# generation and the KV cache


def test_greedy_tokens_match_hf_generate(built):
    ids = built.ids[:12]
    cfg = built.hf.generation_config
    cfg.eos_token_id = None  # 30 tokens exactly, as our loop below (EOS has no special meaning here)
    cfg.pad_token_id = 0
    with torch.no_grad():
        out = built.hf.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=N_GEN,
                                generation_config=cfg)
    hf_tokens = out[0, len(ids):].tolist()
    assert len(hf_tokens) == N_GEN

    with vc.Model(built.gguf("f32"), n_ctx=128, n_threads=2, kv_type="f32") as m, m.session() as s:
        logits = s.prefill(ids)
        ours = []
        for _ in range(N_GEN):
            t = int(np.argmax(logits))
            ours.append(t)
            logits = s.decode(t)
    assert ours == hf_tokens


@pytest.mark.parametrize("kv_type", ["f32", "f16"])
def test_decode_with_cache_equals_full_recompute(built, kv_type):
    ids = built.ids
    full = run_prefill(built.gguf("f32"), ids, kv_type=kv_type)
    split = 10
    with vc.Model(built.gguf("f32"), n_ctx=128, n_threads=2, kv_type=kv_type) as m, m.session() as s:
        rows = [s.prefill(ids[:split], all_logits=True)]
        for t in ids[split:]:
            rows.append(s.decode(t)[None, :])
        assert s.n_past == len(ids)
    inc = np.concatenate(rows)
    # same arithmetic per element in both paths (matmul rows, tiled attention from entry 0)
    np.testing.assert_array_equal(inc, full)


def test_threads_and_chunking_give_identical_results(built):
    path = built.gguf("f16")
    ref = run_prefill(path, built.ids, kv_type="f16", n_threads=1)
    for n_threads in (2, 3):
        np.testing.assert_array_equal(run_prefill(path, built.ids, kv_type="f16", n_threads=n_threads), ref)
    np.testing.assert_array_equal(run_prefill(path, built.ids, kv_type="f16", n_threads=2, n_batch=7), ref)
    # last-row-only prefill over several chunks gives the last row
    with vc.Model(path, n_ctx=128, n_threads=2, n_batch=7, kv_type="f16") as m, m.session() as s:
        np.testing.assert_array_equal(s.prefill(built.ids), ref[-1])
        # decode after a reset starts again from position 0
        s.reset()
        np.testing.assert_array_equal(s.prefill(built.ids[:1]), ref[0])


@pytest.mark.parametrize("name", ["gqa2", "theta500k"])
def test_long_sequence_many_attention_tiles(tmp_path, tok_dir, name):
    """300 positions: several 64-key attention tiles, RoPE angles up to ~300 rad, and a
    prefill split in 128-token chunks, against HF; then decode vs recompute over the tail."""
    b = Built(tmp_path, tok_dir, name, MODELS[name])
    rng = np.random.default_rng(0)
    ids = [1] + rng.integers(3, b.hf.config.vocab_size, size=299).tolist()
    with torch.no_grad():
        ref = b.hf(torch.tensor([ids])).logits[0].numpy()
    with vc.Model(b.gguf("f32"), n_ctx=320, n_threads=2, n_batch=128, kv_type="f32") as m, m.session() as s:
        ours = s.prefill(ids, all_logits=True)
        s.reset()
        s.prefill(ids[:290])
        tail = np.stack([s.decode(t) for t in ids[290:]])
    err = rel_err(ours, ref)
    print(f"\n[{name}] 300 tokens, f32 weights, f32 KV: max rel err {err:.3g}")
    assert err <= 1e-4
    np.testing.assert_array_equal(tail, ours[290:])


# ---------------------------------------------------------------------------------------
# what model.c refuses, and how it says so (the basic cases live in test_errors.py)


def _edit_missing_attn_k(p):
    p.tensors = [t for t in p.tensors if t[0] != "blk.1.attn_k.weight"]


def _edit_type(type_id, block, block_bytes):
    def edit(p):
        t = p.tensor("blk.0.attn_q.weight")
        t[1], t[3] = type_id, bytes(t[2][0] * t[2][1] // block * block_bytes)
    return edit


def _edit_bias(p):
    rows = p.tensor("blk.0.attn_q.weight")[2][1]
    p.tensors.append(["blk.0.attn_q.bias", 0, [rows], bytes(4 * rows)])


def _edit_u32(key, value):
    import struct

    from ggufedit import gguf_string as _s

    def edit(p):
        p.kvs[key] = _s(key) + struct.pack("<II", 4, value)
    return edit


@pytest.mark.parametrize("edit,exc,match", [
    (_edit_missing_attn_k, vc.ModelFormatError, "missing tensor 'blk.1.attn_k.weight'"),
    (_edit_type(9, 32, 40), vc.UnsupportedError, r"tensor 'blk.0.attn_q.weight' has type Q8_1, not supported"),
    (_edit_type(12, 32, 18), vc.ModelFormatError,  # rows of 64 cannot hold Q4_K's 256-element blocks
     r"tensor 'blk.0.attn_q.weight': ne\[0\] = 64 is not a multiple of the Q4_K block size 256"),
    (lambda p: p.set_str("llama.rope.scaling.type", "yarn"), vc.UnsupportedError, "scaling.type 'yarn'"),
    (_edit_bias, vc.UnsupportedError, "'blk.0.attn_q.bias': biases are not supported"),
    (_edit_u32("llama.attention.head_count_kv", 3), vc.ModelFormatError, "not a multiple of head_count_kv = 3"),
    (_edit_u32("llama.rope.dimension_count", 8), vc.UnsupportedError, "dimension_count = 8 differs from head_dim"),
    (lambda p: p.kvs.pop("llama.attention.layer_norm_rms_epsilon"), vc.ModelFormatError,
     "missing required key 'llama.attention.layer_norm_rms_epsilon'"),
])
def test_model_refuses_with_a_message(tiny_gguf, tmp_path, edit, exc, match):
    from ggufedit import Parts

    p = Parts(tiny_gguf)
    edit(p)
    path = tmp_path / "edited.gguf"
    path.write_bytes(p.bytes())
    with pytest.raises(exc, match=match):
        vc.Model(path)
