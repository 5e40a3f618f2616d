"""Attention statistics of the public API (Session.set_attn_stats / attn_stats) against Hugging Face.

The tiny LLaVA-1.5 of llavamodels.py (text model: 2 layers, 4 query heads, 2 KV heads, so GQA 2:1),
converted to f32 and run with an f32 KV cache. Hugging Face runs the same prompt with eager attention
and output_attentions=True, which gives every layer's full weight matrix A[l] [H, m, m]; kvref.py
(the NumPy statement of VLCACHE.md) turns those into the reference statistics. Ours come from the
tiled attention kernel, which never forms A.

Compared, per layer: sparsity (Eq. 2), post-vision scores [Hkv, m], and the H2O and SnapKV column
sums (SnapKV before its pooling: kernel 1), for a prompt with one image (window = the rows after the
image) and a text-only prompt (window = its last 32 rows).

Tolerances:
- scores: max |ours - ref| / max |ref| per layer <= 1e-5. Both sides compute the weights in float32
  from f32 weights in a different order, so each weight carries ~1e-7..1e-6 relative error; the sums
  run over <= 4 heads x m rows in double, which adds nothing measurable.
- sparsity: a count of weights >= p * row max changes by 1 when a weight within float error of the
  threshold lands on the other side, and one count moves the sparsity by 1 / (H * sum(i + 1)) ~ 1e-3
  here, far above 1e-6. So "equal within 1e-6" means equal counts. The test first checks that no HF
  weight lies within a relative 1e-4 of its threshold (100x the weights' float error); then the
  counts must agree exactly and the sparsities to 1e-12 (double rounding of the mean over heads).
  If a fixture change ever puts a weight that close, the margin check fails and says so.
"""

import numpy as np
import pytest
from conftest import oracle

import vlcache_native as vc

torch = oracle("torch")
import llavamodels as L
import kvref as K

SCORE_TOL = 1e-5
MARGIN = 1e-4
TEXT_PROMPT = ("A chat between a curious human and an artificial intelligence assistant. The assistant "
               "gives helpful, detailed, and polite answers to the human's questions. USER: What is the "
               "weather like today, and should I take an umbrella? ASSISTANT:")


class Fixture:
    def __init__(self, tmp):
        self.hf_dir = L.make_llava15(tmp / "hf")
        self.gguf = L.convert(self.hf_dir, tmp / "model-f32.gguf", "f32")
        self.hf, self.proc = L.load_hf(self.hf_dir)
        self.hf.set_attn_implementation("eager")  # explicit softmax matrices (sdpa returns none)
        self.model = vc.Model(self.gguf, n_ctx=256, kv_type="f32", n_threads=2)
        self.G = self.model.info["n_head"] // self.model.n_head_kv

    def hf_attention(self, prompt, images):
        """(input ids [m], per-layer weights [H, m, m] float64) from HF eager attention."""
        enc = self.proc(text=prompt, images=list(images) if images else None, return_tensors="pt")
        with torch.no_grad():
            out = self.hf(**enc, output_attentions=True)
        assert len(out.attentions) == self.model.n_layer
        return enc["input_ids"][0].numpy(), [a[0].double().numpy() for a in out.attentions]

    def ours(self, chunks, w0, m, p, snapkv_window, n_batch=512):
        with self.model.session(n_batch=n_batch) as s:
            s.set_attn_stats(w0, p=p, h2o=True, snapkv_window=snapkv_window, window_end=m)
            s.prefill(chunks)
            st = s.attn_stats()
            spans = s.image_spans
        return st, spans


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    f = Fixture(tmp_path_factory.mktemp("attn_stats"))
    yield f
    f.model.close()


def rel_err(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def threshold_margin(A_l, rows, p) -> float:
    """Smallest |A - p * rowmax| / (p * rowmax) over the causal entries of `rows` (inf when p == 0)."""
    if p == 0:
        return np.inf
    sub = A_l[:, rows, :]
    visible = np.arange(A_l.shape[1])[None, :] <= rows[:, None]
    thr = p * np.where(visible, sub, -np.inf).max(axis=-1, keepdims=True)
    return float(np.min(np.abs(sub - thr)[:, visible] / np.broadcast_to(thr, sub.shape)[:, visible]))


def compare(fx, A, rows, st, p, snapkv_window, what):
    m = A[0].shape[1]
    H = A[0].shape[0]
    assert st["rows"] == len(rows)
    assert st["scores"].shape == (len(A), fx.model.n_head_kv, m)
    errs, margins = [], []
    for il, A_l in enumerate(A):
        margin = threshold_margin(A_l, rows, p)
        margins.append(margin)
        assert margin > MARGIN, f"{what} layer {il}: an HF weight lies within {margin:.1e} of p * row max"
        ref = K.layer_sparsity(A_l, rows, p)
        # the counts themselves: sparsity * H * total is an integer count of sparse entries
        total = float(np.sum(rows + 1))
        assert round(st["sparsity"][il] * H * total) == round(ref * H * total)
        assert abs(st["sparsity"][il] - ref) <= 1e-12, (il, st["sparsity"][il], ref)
        e = [rel_err(st["scores"][il], K.post_vision_scores(A_l, rows, fx.G)),
             rel_err(st["h2o"][il], K.h2o_scores(A_l, fx.G)),
             rel_err(st["snapkv"][il], K.snapkv_scores(A_l, fx.G, window=snapkv_window, kernel=1))]
        errs.append(e)
        assert max(e) <= SCORE_TOL, (il, e)
    print(f"\n{what} p={p}: m={m}, window rows {rows[0]}..{rows[-1]}, sparsity {np.round(st['sparsity'], 4)}, "
          f"threshold margin {min(margins):.1e}, score/h2o/snapkv rel err {np.max(errs, axis=0)}")


@pytest.mark.parametrize("p", [0.01, 0.1])
def test_image_prompt(fx, p):
    image = L.make_image(40, 30)
    ids, A = fx.hf_attention(L.PROMPT_15, [image])
    m = len(ids)
    chunks = fx.model.prompt_chunks(L.PROMPT_15, [image])
    # w0 before prefill: the position after the last image chunk
    pos, w0 = 0, None
    for c in chunks:
        pos += len(c)
        if isinstance(c, np.ndarray) and c.ndim == 2:
            w0 = pos
    assert pos == m and w0 is not None and w0 < m
    st, spans = fx.ours(chunks, w0, m, p, snapkv_window=8)
    rows = K.post_vision_window(m, spans)
    assert rows[0] == w0 and len(rows) == m - w0
    # the image span is where HF put the image tokens
    img = np.flatnonzero(ids == fx.hf.config.image_token_id)
    assert spans == [(int(img[0]), len(img))]
    compare(fx, A, rows, st, p, 8, "image prompt")
    # the statistics do not depend on the chunking of the rows
    st5, _ = fx.ours(chunks, w0, m, p, snapkv_window=8, n_batch=5)
    for k in ("sparsity", "scores", "h2o", "snapkv"):
        np.testing.assert_array_equal(st5[k], st[k])


def test_text_prompt_last_32(fx):
    ids, A = fx.hf_attention(TEXT_PROMPT, None)
    m = len(ids)
    assert m > 40
    chunks = fx.model.prompt_chunks(TEXT_PROMPT)
    np.testing.assert_array_equal(np.concatenate([np.asarray(c) for c in chunks]), ids)
    rows = K.post_vision_window(m, [], default_window=32)
    st, spans = fx.ours(chunks, int(rows[0]), m, 0.01, snapkv_window=32)
    assert spans == [] and len(rows) == 32
    compare(fx, A, rows, st, 0.01, 32, "text prompt")
    np.testing.assert_array_equal(st["scores"], st["snapkv"])  # same rows, same sums


def test_api_rules(fx):
    ids = fx.model.tokenize(TEXT_PROMPT)
    m = len(ids)
    with fx.model.session() as s:
        with pytest.raises(vc.VlcacheError, match="off"):
            s.attn_stats()
        for kw, name in [(dict(p=1.5), "p = 1.5"), (dict(p=float("nan")), "p = nan"),
                         (dict(window_end=300), "window_end = 300"), (dict(h2o=True), "h2o"),
                         (dict(snapkv_window=4), "snapkv_window = 4"),
                         (dict(window_end=m, snapkv_window=m + 1), f"snapkv_window = {m + 1}")]:
            with pytest.raises(vc.InvalidArgumentError, match=name):
                s.set_attn_stats(0, **kw)
        with pytest.raises(vc.InvalidArgumentError, match="window_start"):
            s.set_attn_stats(-1)
        # open window (window_end None): prefill rows then decode steps are gathered
        s.set_attn_stats(m - 4)
        st = s.attn_stats()
        assert st["rows"] == 0 and np.all(np.isnan(st["sparsity"])) and st["h2o"] is None and st["snapkv"] is None
        assert st["scores"].shape == (fx.model.n_layer, fx.model.n_head_kv, 0)
        s.prefill(ids)
        st = s.attn_stats()
        assert st["rows"] == 4 and np.all(np.isfinite(st["sparsity"]))
        # every window row's weights sum to 1 per query head: the scores of a layer sum to H * rows
        np.testing.assert_allclose(st["scores"].sum(axis=(1, 2)), fx.model.info["n_head"] * 4, rtol=1e-6)
        assert np.all(st["scores"] > 0)  # every key is causally visible to the window rows
        s.decode(int(ids[-1]))
        st2 = s.attn_stats()
        assert st2["rows"] == 5 and st2["scores"].shape[2] == m + 1 and np.all(st2["scores"][:, :, m] > 0)
        # rows already run cannot start a window
        with pytest.raises(vc.InvalidArgumentError, match=f"window_start = {m - 1}"):
            s.set_attn_stats(m - 1)
        assert s.attn_stats()["rows"] == 5  # a failed call changes nothing
        s.set_attn_stats(enabled=False)
        with pytest.raises(vc.InvalidArgumentError, match="off"):
            s.attn_stats()
        s.set_attn_stats(window_end=m + 3)  # window_start None = n_past
        s.decode(1)
        assert s.attn_stats()["rows"] == 1
        s.reset()  # reset turns them off
        with pytest.raises(vc.InvalidArgumentError, match="off"):
            s.attn_stats()
