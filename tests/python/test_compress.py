"""KV-cache compression end to end (Session.compress, Model.generate(kv_budget=...)) against
independent references: kvref.py (the rules) on explicit attention matrices, and npllama.py (a
float64 NumPy Llama decoder that attends only to the kept entries).

Models (all tiny, f32 GGUF, f32 KV cache so the comparisons are tight):
  - "gqa": hfmodels.make_llama, 2 layers, 4 query heads / 2 KV heads; "mha": the same with 4 KV heads.
    Reference attention: npllama's A (float64, from the model's own Q and K).
  - "llava": llavamodels.make_llava15 (text 2 layers, GQA 4:2, 16 image tokens), the image in the middle
    of the prompt (also: at the very end, and no image). Reference attention: HF eager attention
    (output_attentions, float32, as test_attn_stats_hf.py); the decode reference is npllama on HF's
    inputs_embeds (image features merged by HF).

Tolerances and why:
  - NP_HF_TOL 1e-5: npllama (float64) against HF float32, max |diff| / max |HF| of logits, and max
    |diff| of attention weights; HF's float32 rounding is ~1e-6 relative (measured 7e-7).
  - LOGIT_TOL 1e-5: our float32 logits against npllama's float64, max |diff| / max |ref| over the steps;
    measured <= 1.0e-6 on every model and policy here (float32 rounding of the same arithmetic), so 10x
    that, and 10x below the issue's f32 bound of 1e-4.
  - Greedy tokens must be identical; the fixture asserts every reference step's top-1 / top-2 gap is
    >= GAP (1e-4 of max |logit|, 10x LOGIT_TOL, so more than twice the largest allowed error), so float32
    rounding cannot flip an argmax.
  - Kept sets must be equal. Our kernel's scores differ from the reference by <= 1e-5 of the layer's
    max score (test_attn_stats_hf); the fixture asserts every top-k cut has a gap >= CUT_MARGIN (1e-4 of
    that max, 10x) unless both sides are exactly equal (max-pooling copies one value; both sides then
    tie and the lower position wins). Likewise no attention weight lies within a relative THR_MARGIN
    (1e-4) of its sparsity threshold, so counts are exact and sparsity must agree to 1e-6 (the brief's
    bound; it is a count ratio, equal counts give ~1e-16).
  - A session whose arithmetic is the same as another's (reset vs fresh, clone vs never cloned, full
    policy vs no compression) is compared bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import oracle

torch = oracle("torch")
oracle("transformers")

import vlcache_native as vc  # noqa: E402
from vlcache_native import kvcache  # noqa: E402

import hfmodels as H  # noqa: E402
import kvref as K  # noqa: E402
import llavamodels as LV  # noqa: E402
import npllama as N  # noqa: E402

NP_HF_TOL = 1e-5
LOGIT_TOL = 1e-5
GAP = 1e-4
CUT_MARGIN = 1e-4
THR_MARGIN = 1e-4
SPARSITY_TOL = 1e-6
N_STEPS = 8
BUDGETS = (0.1, 0.3, 1.0)
POLICIES = list(kvcache.POLICIES)
SCORED = {"vl-cache": "pv", "vl-cache-uniform": "pv", "h2o": "h2o", "sparsity-h2o": "h2o", "snapkv": "snap",
          "pyramidkv": "snap", "adakv": "snap"}

TEXT_PROMPT = ("Hello The model cache is a token of vision and language. We stream 42 images to the llama, "
               "and the llama says hello to the world: the cache of tokens is small, the image is large, and "
               "the language model reads them all.")
# The prompts are chosen so that no reference quantity sits on a near-tie (asserted by the tests).
LLAVA_MID = "A chat between a human and an assistant. USER: <image>\nWhat is shown in this picture? ASSISTANT:"
LLAVA_END = ("A chat between a curious human and an artificial intelligence assistant. The assistant "
             "gives good answers. USER: describe this picture <image>")
LLAVA_TEXT = ("A chat between a curious human and an artificial intelligence assistant. The assistant "
              "gives helpful, detailed, and polite answers to the human's questions. USER: What is the "
              "weather like today? ASSISTANT:")


def rel_err(a, b) -> float:
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b)) / np.max(np.abs(b)))


# ---------------------------------------------------------------------------------------------
# fixtures


class Case:
    """One model + one prompt: our chunks, the reference attention A, spans, and npllama's prefill."""

    def __init__(self, name, model, np_model, chunks, A, spans, pre):
        self.name, self.model, self.np, self.chunks, self.A, self.spans, self.pre = \
            name, model, np_model, chunks, A, spans, pre
        self.m = pre.m
        self.L, self.Hkv = model.n_layer, model.n_head_kv
        self.G = model.info["n_head"] // model.n_head_kv
        self.D = model.head_dim
        self.rows = K.post_vision_window(self.m, spans)

    def ref(self, policy, budget, **params):
        return K.select(policy, self.A, G=self.G, image_spans=self.spans, alpha=budget, **params)

    def scores(self, kind):
        """Reference per-layer scores [L][Hkv, m] of a policy's kind (before selection)."""
        if kind == "pv":
            return [K.post_vision_scores(a, self.rows, self.G) for a in self.A]
        if kind == "h2o":
            return [K.h2o_scores(a, self.G) for a in self.A]
        return [K.snapkv_scores(a, self.G) for a in self.A]


class TextModel:
    def __init__(self, root, tok_dir, kv_heads):
        self.hf_dir = H.make_llama(root / "hf", kv_heads=kv_heads, tokenizer_dir=tok_dir)
        self.hf, self.tok = H.load_hf(self.hf_dir)
        self.hf.set_attn_implementation("eager")
        self.gguf = H.convert(self.hf_dir, root / "m-f32.gguf", "f32")
        self.model = vc.Model(self.gguf, n_ctx=256, kv_type="f32", n_threads=2)
        self.np = N.NpLlama.from_hf(self.hf)
        self.ids = self.tok(TEXT_PROMPT).input_ids
        pre = self.np.prefill(ids=self.ids)
        self.case = Case(f"text-kv{kv_heads}", self.model, self.np, [list(self.ids)], pre.A, None, pre)


def hf_llava_run(hf, proc, prompt, images):
    """(input ids [m], inputs_embeds [m, E] float64, per-layer eager attention [H, m, m] float64, logits)."""
    enc = proc(text=prompt, images=list(images) if images else None, return_tensors="pt")
    got = {}

    def hook(_mod, args, kwargs):
        got["e"] = kwargs.get("inputs_embeds", args[0] if args else None).detach().clone()

    handle = hf.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            out = hf(**enc, output_attentions=True)
    finally:
        handle.remove()
    return (enc["input_ids"][0].numpy(), got["e"][0].double().numpy(),
            [a[0].double().numpy() for a in out.attentions], out.logits[0].double().numpy())


class LlavaModel:
    def __init__(self, root):
        self.hf_dir = LV.make_llava15(root / "hf")
        self.gguf = LV.convert(self.hf_dir, root / "m-f32.gguf", "f32")
        self.hf, self.proc = LV.load_hf(self.hf_dir)
        self.hf.set_attn_implementation("eager")
        self.model = vc.Model(self.gguf, n_ctx=256, kv_type="f32", n_threads=2)
        self.np = N.NpLlama.from_hf(self.hf)
        self.image = LV.make_image(40, 30)
        self.cases = {}

    def case(self, which):
        if which not in self.cases:
            prompt = {"mid": LLAVA_MID, "end": LLAVA_END, "text": LLAVA_TEXT}[which]
            images = [] if which == "text" else [self.image]
            ids, embeds, A, logits = hf_llava_run(self.hf, self.proc, prompt, images)
            chunks = self.model.prompt_chunks(prompt, images)
            img = np.flatnonzero(ids == self.hf.config.image_token_id)
            spans = [(int(img[0]), len(img))] if len(img) else []
            assert sum(len(c) for c in chunks) == len(ids)
            pre = self.np.prefill(embeds=embeds)
            # npllama on HF's merged embeddings reproduces HF (the LLaVA half of test_npllama_matches_hf)
            assert rel_err(pre.logits, logits) <= NP_HF_TOL
            assert max(np.max(np.abs(a - b)) for a, b in zip(pre.A, A)) <= NP_HF_TOL
            self.cases[which] = Case(f"llava-{which}", self.model, self.np, chunks, A, spans, pre)
        return self.cases[which]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return H.train_spm(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="module")
def gqa(tmp_path_factory, tok_dir):
    t = TextModel(tmp_path_factory.mktemp("gqa"), tok_dir, kv_heads=2)
    yield t
    t.model.close()


@pytest.fixture(scope="module")
def mha(tmp_path_factory, tok_dir):
    t = TextModel(tmp_path_factory.mktemp("mha"), tok_dir, kv_heads=4)
    yield t
    t.model.close()


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    t = LlavaModel(tmp_path_factory.mktemp("llava"))
    yield t
    t.model.close()


@pytest.fixture
def case(request, gqa, mha, llava):
    return {"gqa": lambda: gqa.case, "mha": lambda: mha.case, "llava-mid": lambda: llava.case("mid"),
            "llava-end": lambda: llava.case("end"), "llava-text": lambda: llava.case("text")}[request.param]()


# ---------------------------------------------------------------------------------------------
# margins: the fixtures must not sit on a near-tie (else float32 rounding decides, not the rules)


def threshold_margin(A_l, rows, p=0.01) -> float:
    """Smallest |A - p * rowmax| / (p * rowmax) over the causal entries of `rows`."""
    sub = A_l[:, rows, :]
    visible = np.arange(A_l.shape[1])[None, :] <= rows[:, None]
    thr = p * np.where(visible, sub, -np.inf).max(axis=-1, keepdims=True)
    return float(np.min(np.abs(sub - thr)[:, visible] / np.broadcast_to(thr, sub.shape)[:, visible]))


def cut_gap(score, n_sel) -> float:
    """Gap between the n_sel-th best and the next score (order: score desc, position asc), relative to
    max |score|; inf when nothing is cut; 0 only for an exact tie (max-pooled copies), which both sides
    break the same way."""
    score = np.asarray(score, dtype=np.float64).ravel()
    if n_sel <= 0 or n_sel >= len(score):
        return math.inf
    order = np.lexsort((np.arange(len(score)), -score))
    gap = score[order[n_sel - 1]] - score[order[n_sel]]
    return math.inf if gap == 0 else gap / np.max(np.abs(score))


def assert_no_near_tie(case, policy, ref, params=None):
    """Every top-k cut of `policy` in the reference is >= CUT_MARGIN away from flipping."""
    params = {**K.DEFAULTS, **(params or {})}
    if policy not in SCORED:
        return
    m = case.m
    for il, s in enumerate(case.scores(SCORED[policy])):
        scale = np.max(np.abs(s))
        k = int(ref["layer_budgets"][il])
        if k >= m:
            continue
        w = K.recent_window(k, params["recent_frac"])
        cuts = []
        if policy == "adakv":
            cuts.append((s[:, : m - w], case.Hkv * (k - w)))          # the global top-(Hkv * B')
            cuts += [(s[g, : m - w], int(ref["head_budgets"][il][g]) - w) for g in range(case.Hkv)]
        else:
            cuts += [(s[g, : m - w], k - w) for g in range(case.Hkv)]
        for sc, n in cuts:
            gap = cut_gap(sc * (np.max(np.abs(sc)) / scale), n)  # relative to the layer's max score
            assert gap >= CUT_MARGIN, (f"{case.name} {policy} layer {il}: a top-{n} cut has a relative gap "
                                       f"{gap:.1e} < {CUT_MARGIN}; change the fixture")


def assert_kept_equal(got, want, what):
    bad = []
    for il, (gl, wl) in enumerate(zip(got, want)):
        for g, (a, b) in enumerate(zip(gl, wl)):
            if not np.array_equal(np.asarray(a), np.asarray(b)):
                bad.append(f"layer {il} head {g}: got {list(map(int, a))}, expected {list(map(int, b))}")
    assert len(got) == len(want) and all(len(a) == len(b) for a, b in zip(got, want)), what
    assert not bad, f"{what}: kept sets differ\n" + "\n".join(bad)


# ---------------------------------------------------------------------------------------------
# the reference decoder itself


def test_npllama_matches_hf(gqa, mha):
    """npllama against HF (float32): prompt logits and attention, full-cache decode against one HF
    forward of the longer sequence, greedy tokens against HF generate, and a pruned-cache decode
    against HF with a per-head 4-D mask (the same kept set in every layer, which HF can express)."""
    for t in (gqa, mha):
        ids, m, pre = t.ids, len(t.ids), t.case.pre
        assert m > 40  # the text window (last 32 rows) is a strict part of the prompt
        with torch.no_grad():
            out = t.hf(torch.tensor([ids]), output_attentions=True)
        assert rel_err(pre.logits, out.logits[0].double().numpy()) <= NP_HF_TOL
        assert max(np.max(np.abs(a - b[0].double().numpy())) for a, b in zip(pre.A, out.attentions)) <= NP_HF_TOL
        toks, lg = t.np.greedy(t.np.cache(pre), pre.logits[-1], N_STEPS)
        with torch.no_grad():
            full = t.hf(torch.tensor([ids + toks])).logits[0, m:].double().numpy()
            hg = t.hf.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=N_STEPS,
                               min_new_tokens=N_STEPS, pad_token_id=0)[0, m:].tolist()
        assert rel_err(lg, full) <= NP_HF_TOL
        assert toks == hg
        # pruned cache: query head h of a decoded row sees kept[h // G] and the decoded tokens
        rng = np.random.default_rng(7)
        H_, G = t.np.H, t.np.G
        kept_g = [np.sort(rng.choice(m, 12, replace=False)) for _ in range(t.np.Hkv)]
        c = t.np.cache(pre, [kept_g] * t.np.n_layer)
        lg = np.array([t.np.step(c, tk) for tk in toks])
        n = m + len(toks)
        mask = np.full((1, H_, n, n), -np.inf)
        for h in range(H_):
            for i in range(n):
                if i < m:
                    mask[0, h, i, : i + 1] = 0
                else:
                    mask[0, h, i, kept_g[h // G]] = 0
                    mask[0, h, i, m: i + 1] = 0
        with torch.no_grad():
            ref = t.hf(torch.tensor([ids + toks]), attention_mask=torch.tensor(mask, dtype=torch.float32))
        ref = ref.logits[0, m:].double().numpy()
        assert rel_err(lg, ref) <= NP_HF_TOL
        assert rel_err(lg, full) > 0.05  # pruning changed the result: the check above can fail


# ---------------------------------------------------------------------------------------------
# kept sets against kvref


def prefill_compress(case, policy, budget, kv_stats=True, **params):
    s = case.model.session()
    s.prefill(case.chunks, kv_stats=kv_stats)
    rep = s.compress(budget, policy, **params)
    return s, rep


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", ["gqa", "llava-mid"], indirect=True)
def test_kept_sets(case, policy, budget):
    ref = case.ref(policy, budget)
    for il, a in enumerate(case.A):
        mg = threshold_margin(a, case.rows)
        assert mg > THR_MARGIN, f"{case.name} layer {il}: a weight lies within {mg:.1e} of its threshold"
    assert_no_near_tie(case, policy, ref)
    s, rep = prefill_compress(case, policy, budget)
    with s:
        assert isinstance(rep, kvcache.CompressReport)
        assert rep.policy == policy and rep.budget == budget and rep.n_prompt == case.m
        np.testing.assert_array_equal(rep.layer_budgets, ref["layer_budgets"])
        assert rep.sparsity is not None
        np.testing.assert_allclose(rep.sparsity, ref["sparsity"], rtol=0, atol=SPARSITY_TOL)
        assert_kept_equal(rep.kept, ref["kept"], f"{case.name} {policy} {budget}")
        assert s.compressed
        lens = np.asarray(s.kv_lengths())
        assert lens.shape == (case.L, case.Hkv)
        np.testing.assert_array_equal(lens, ref["head_budgets"])
        for il in range(case.L):
            for g in range(case.Hkv):
                np.testing.assert_array_equal(s.kv_positions(il, g), ref["kept"][il][g])
        total = int(ref["head_budgets"].sum())
        if policy == "full" or budget == 1.0:
            assert total == case.L * case.Hkv * case.m
        else:
            assert total < case.L * case.Hkv * case.m
        assert abs(rep.kept_fraction - total / (case.L * case.Hkv * case.m)) < 1e-12


@pytest.mark.parametrize("case", ["llava-end", "llava-text"], indirect=True)
@pytest.mark.parametrize("policy", ["vl-cache", "snapkv", "sparsity-h2o"])
def test_kept_sets_window_edges(case, policy):
    """Image at the very end of the prompt, and no image: the window is the last min(32, m) rows."""
    assert case.m > 32
    np.testing.assert_array_equal(case.rows, np.arange(case.m - 32, case.m))
    if case.name == "llava-end":
        assert case.spans and case.spans[0][0] + case.spans[0][1] == case.m
    else:
        assert case.spans == []
    for a in case.A:
        assert threshold_margin(a, case.rows) > THR_MARGIN
    ref = case.ref(policy, 0.3)
    assert_no_near_tie(case, policy, ref)
    s, rep = prefill_compress(case, policy, 0.3, kv_stats=policy)
    with s:
        np.testing.assert_array_equal(rep.layer_budgets, ref["layer_budgets"])
        np.testing.assert_allclose(rep.sparsity, ref["sparsity"], rtol=0, atol=SPARSITY_TOL)
        assert_kept_equal(rep.kept, ref["kept"], f"{case.name} {policy}")


# ---------------------------------------------------------------------------------------------
# decoding on the compressed cache against npllama


def ref_greedy(case, kept, n=N_STEPS):
    """npllama's greedy decode attending only to `kept`; asserts no near-tie in any step."""
    toks, lg = case.np.greedy(case.np.cache(case.pre, kept), case.pre.logits[-1], n)
    for row in np.vstack([case.pre.logits[-1][None], lg[:-1]]):
        top = np.sort(row)[-2:]
        assert top[1] - top[0] >= GAP * np.max(np.abs(row)), f"{case.name}: a greedy step is a near-tie"
    return toks, lg


def our_greedy(s, first_logits, n=N_STEPS):
    toks, outs, logits = [], [], first_logits
    for _ in range(n):
        t = int(np.argmax(logits))
        toks.append(t)
        logits = s.decode(t)
        outs.append(logits)
    return toks, np.array(outs)


def check_decode(case, s, first, kept, what, n=N_STEPS):
    rtoks, rlg = ref_greedy(case, kept, n)
    toks, lg = our_greedy(s, first, n)
    err = rel_err(lg, rlg)
    print(f"\n{what}: decode rel err {err:.2e}")
    assert toks == rtoks, f"{what}: tokens {toks}, reference {rtoks}"
    assert err <= LOGIT_TOL, f"{what}: logits rel err {err:.2e}"
    m = case.m
    for il in range(case.L):
        for g in range(case.Hkv):
            np.testing.assert_array_equal(s.kv_positions(il, g), np.concatenate([kept[il][g], np.arange(m, m + n)]))
    return rtoks, rlg


@pytest.mark.parametrize("policy", ["vl-cache", "h2o", "adakv", "streamingllm"])
@pytest.mark.parametrize("case", ["gqa", "mha", "llava-mid"], indirect=True)
def test_decode_matches_reference(case, policy):
    budget = 0.1
    ref = case.ref(policy, budget)
    assert_no_near_tie(case, policy, ref)
    with case.model.session() as s:
        first = s.prefill(case.chunks, kv_stats=policy)
        assert rel_err(first, case.pre.logits[-1]) <= LOGIT_TOL
        rep = s.compress(budget, policy, decode_room=N_STEPS)
        assert_kept_equal(rep.kept, ref["kept"], f"{case.name} {policy}")
        _, rlg = check_decode(case, s, first, ref["kept"], f"{case.name} {policy} {budget}")
    # the pruning matters here, so the comparison above discriminates
    _, full = case.np.greedy(case.np.cache(case.pre), case.pre.logits[-1], N_STEPS)
    assert rel_err(rlg, full) > 1e-2


def test_decode_past_room_grows(gqa):
    """decode_room=2 then 8 steps: the buffers grow and decoding still equals the reference."""
    case = gqa.case
    ref = case.ref("vl-cache", 0.1)
    with case.model.session() as s:
        first = s.prefill(case.chunks, kv_stats="vl-cache")
        s.compress(0.1, decode_room=2)
        b0 = s.stats()["kv_bytes"]
        check_decode(case, s, first, ref["kept"], "room 2")
        assert s.stats()["kv_bytes"] > b0


def test_tiny_budget_window_only(gqa):
    """A budget so small that T = L: k_l = 1 per layer, the recent window takes all of it (the last
    prompt position); with recent_frac=0 the one kept entry is the best score instead."""
    case = gqa.case
    ref = case.ref("vl-cache", 1e-3)
    np.testing.assert_array_equal(ref["layer_budgets"], [1] * case.L)
    with case.model.session() as s:
        first = s.prefill(case.chunks, kv_stats="vl-cache")
        rep = s.compress(1e-3, "vl-cache", decode_room=N_STEPS)
        np.testing.assert_array_equal(rep.layer_budgets, [1] * case.L)
        assert_kept_equal(rep.kept, [[np.array([case.m - 1])] * case.Hkv] * case.L, "tiny budget")
        check_decode(case, s, first, ref["kept"], "tiny budget")
    ref0 = case.ref("vl-cache", 1e-3, recent_frac=0.0)
    assert_no_near_tie(case, "vl-cache", ref0, dict(recent_frac=0.0))
    with case.model.session() as s:
        s.prefill(case.chunks, kv_stats="vl-cache")
        rep = s.compress(1e-3, "vl-cache", recent_frac=0.0)
        assert_kept_equal(rep.kept, ref0["kept"], "tiny budget, recent_frac 0")
        assert any(int(h[0]) != case.m - 1 for layer in rep.kept for h in layer)


def test_tokens_decoded_before_compress_are_kept(gqa):
    """Two tokens decoded on the full cache, then compress: they stay, and decoding continues at m + 2."""
    case, m = gqa.case, gqa.case.m
    ref = case.ref("vl-cache", 0.1)
    c = case.np.cache(case.pre)
    rtoks, rlg = case.np.greedy(c, case.pre.logits[-1], 2)
    c.prune(ref["kept"], m)
    rt2, rl2 = case.np.greedy(c, rlg[-1], 4)
    with case.model.session() as s:
        first = s.prefill(case.chunks, kv_stats="vl-cache")
        toks, lg = our_greedy(s, first, 2)
        assert toks == rtoks
        rep = s.compress(0.1)
        assert rep.n_prompt == m
        assert_kept_equal(rep.kept, ref["kept"], "compress after 2 decode steps")
        for il in range(case.L):
            for g in range(case.Hkv):
                np.testing.assert_array_equal(s.kv_positions(il, g), np.concatenate([ref["kept"][il][g], [m, m + 1]]))
        assert s.n_past == m + 2
        t2, l2 = our_greedy(s, lg[-1], 4)
        assert t2 == rt2 and rel_err(l2, rl2) <= LOGIT_TOL


# ---------------------------------------------------------------------------------------------
# generate


def test_generate_kv_budget(gqa):
    model, ids = gqa.model, gqa.ids
    base = model.generate(ids, max_tokens=N_STEPS)
    assert base.stats.kv is None
    assert len(base.tokens) > 1
    for kw in (dict(kv_budget=1.0), dict(kv_budget=0.1, kv_policy="full")):
        c = model.generate(ids, max_tokens=N_STEPS, **kw)
        assert c.tokens == base.tokens, kw
        assert c.stats.kv is not None and all(len(h) == gqa.case.m for layer in c.stats.kv.kept for h in layer)
    c = model.generate(ids, max_tokens=N_STEPS, kv_budget=0.1)
    rep = c.stats.kv
    assert isinstance(rep, kvcache.CompressReport)
    assert rep.policy == "vl-cache" and rep.budget == 0.1 and rep.n_prompt == gqa.case.m
    ref = gqa.case.ref("vl-cache", 0.1)
    np.testing.assert_array_equal(rep.layer_budgets, ref["layer_budgets"])
    np.testing.assert_allclose(rep.sparsity, ref["sparsity"], rtol=0, atol=SPARSITY_TOL)
    assert_kept_equal(rep.kept, ref["kept"], "generate kv_budget=0.1")
    assert 0 < rep.kv_bytes_after < rep.kv_bytes_before and rep.seconds >= 0
    rtoks, _ = ref_greedy(gqa.case, ref["kept"])
    n = len(c.tokens)
    assert c.tokens == rtoks[:n]
    assert n == N_STEPS or model.is_eog(rtoks[n])
    c2 = model.generate(ids, max_tokens=N_STEPS, kv_budget=0.1, kv_policy="streamingllm", kv_params=dict(n_sink=2))
    assert_kept_equal(c2.stats.kv.kept, gqa.case.ref("streamingllm", 0.1, n_sink=2)["kept"], "kv_params n_sink")


# ---------------------------------------------------------------------------------------------
# memory


def test_memory_after_compress(gqa):
    case = gqa.case
    room, elem = 16, 4  # f32 KV
    entry = 2 * case.D * elem + 4  # K and V rows + the int32 position
    with case.model.session() as s:
        s.prefill(case.chunks, kv_stats="vl-cache")
        before = s.stats()["kv_bytes"]
        rep = s.compress(0.1, decode_room=room)
        after = s.stats()["kv_bytes"]
        assert rep.kv_bytes_before == before
        assert rep.kv_bytes_after == after
        kept = sum(len(h) for layer in rep.kept for h in layer)
        room_bytes = case.L * case.Hkv * room * entry
        exact = kept * entry + room_bytes
        print(f"\nKV bytes: before {before}, after {after}, kept entries + room {exact}")
        assert after <= 0.1 * before + room_bytes
        assert after == exact  # vlcache.h: kv_bytes_after = kept entries + decode room, positions included
        assert after >= kept * 2 * case.D * elem  # the kept K and V themselves are held


# ---------------------------------------------------------------------------------------------
# errors and life cycle


def test_bad_budgets_and_params(gqa):
    case = gqa.case
    with case.model.session() as s:
        s.prefill(case.chunks, kv_stats=True)
        for b in (0, 0.0, -0.1, 1.5, float("nan"), float("inf")):
            with pytest.raises(vc.InvalidArgumentError):
                s.compress(b)
        with pytest.raises(vc.InvalidArgumentError):
            s.compress(0.1, "no-such-policy")
        with pytest.raises(TypeError):
            s.compress(0.1, bogus=1)
        assert not s.compressed
        rep = s.compress(0.1)  # the failed calls changed nothing
        assert_kept_equal(rep.kept, case.ref("vl-cache", 0.1)["kept"], "after failed calls")


def test_compress_twice(gqa):
    case = gqa.case
    ref = case.ref("h2o", 0.3)
    with case.model.session() as s:
        first = s.prefill(case.chunks, kv_stats=True)
        s.compress(0.3, "h2o", decode_room=N_STEPS)
        with pytest.raises(vc.InvalidArgumentError):
            s.compress(0.1, "h2o")
        assert s.compressed
        check_decode(case, s, first, ref["kept"], "after a second compress failed")


def test_compress_before_prefill(gqa):
    with gqa.model.session() as s:
        with pytest.raises(vc.InvalidArgumentError):
            s.compress(0.1)
        with pytest.raises(vc.InvalidArgumentError):
            s.compress(0.1, "streamingllm")
        assert not s.compressed


def test_missing_statistics(gqa):
    case = gqa.case
    with case.model.session() as s:
        s.prefill(case.chunks, kv_stats="vl-cache")  # window set only
        with pytest.raises(vc.InvalidArgumentError, match="kv_stats|set_attn_stats"):
            s.compress(0.1, "h2o")
        with pytest.raises(vc.InvalidArgumentError, match="kv_stats|set_attn_stats"):
            s.compress(0.1, "snapkv")
        assert not s.compressed
        rep = s.compress(0.1, "vl-cache")
        assert_kept_equal(rep.kept, case.ref("vl-cache", 0.1)["kept"], "vl-cache after failed h2o")
    with case.model.session() as s:
        s.prefill(case.chunks)  # no statistics at all
        with pytest.raises(vc.InvalidArgumentError, match="kv_stats|set_attn_stats"):
            s.compress(0.1, "vl-cache")
        rep = s.compress(0.1, "streamingllm")  # needs none
        assert rep.sparsity is None and rep.n_prompt == case.m
        assert_kept_equal(rep.kept, case.ref("streamingllm", 0.1)["kept"], "streamingllm without statistics")
    with case.model.session() as s:  # H2O sums every prompt row: the session must start empty
        s.prefill(case.chunks[0][:5])
        with pytest.raises(vc.InvalidArgumentError):
            s.prefill(case.chunks[0][5:], kv_stats="h2o")
        assert s.n_past == 5


def test_reset_after_compress(gqa):
    case = gqa.case
    other = gqa.tok("Hello world, the vision model reads an image and a token.").input_ids
    with case.model.session() as fresh:
        want = fresh.prefill(other, all_logits=True)
        want_d = fresh.decode(int(np.argmax(want[-1])))
    with case.model.session() as s:
        s.prefill(case.chunks, kv_stats=True)
        s.compress(0.1)
        s.decode(5)
        s.reset()
        assert not s.compressed and s.n_past == 0
        got = s.prefill(other, all_logits=True)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(s.decode(int(np.argmax(want[-1]))), want_d)
        assert (np.asarray(s.kv_lengths()) == len(other) + 1).all()


def test_clone_then_compress(gqa):
    case = gqa.case
    ref = case.ref("vl-cache", 0.1)
    t = int(np.argmax(case.pre.logits[-1]))
    with case.model.session() as plain:
        plain.prefill(case.chunks, kv_stats=True)
        want = [plain.decode(t), plain.decode(7)]
    with case.model.session() as s:
        first = s.prefill(case.chunks, kv_stats=True)
        c = s.clone()
        with c:
            rep = c.compress(0.1, decode_room=N_STEPS)
            assert c.compressed and not s.compressed
            assert_kept_equal(rep.kept, ref["kept"], "clone")
            assert (np.asarray(s.kv_lengths()) == case.m).all() and s.n_past == case.m
            got = [s.decode(t), s.decode(7)]
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
            check_decode(case, c, first, ref["kept"], "compressed clone")
            # a clone of a compressed session decodes the same as its source
            d = c.clone()
            with d:
                assert d.compressed
                np.testing.assert_array_equal(d.decode(3), c.decode(3))
