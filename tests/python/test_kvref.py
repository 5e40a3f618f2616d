"""Tests of the NumPy KV-policy reference (kvref.py): hand-computed cases, invariants, ties, edge cases.

Exact equality is used wherever the inputs are exactly representable (powers of two, integers);
float comparisons elsewhere use 1e-12, far above float64 rounding of sums of <= 100 terms.
"""

import math

import numpy as np
import pytest

import kvref as K


def causal_rows(*rows):
    """[1, m, m] attention from explicit causal rows (row i has i + 1 entries)."""
    m = len(rows)
    a = np.zeros((1, m, m))
    for i, r in enumerate(rows):
        assert len(r) == i + 1
        a[0, i, : i + 1] = r
    return a


def random_attention(rng, L, H, Hkv, m, D=8, sharp=3.0):
    return [K.attention_from_qk(rng.normal(size=(H, m, D)) * sharp, rng.normal(size=(Hkv, m, D)) * sharp)
            for _ in range(L)]


# ---------------------------------------------------------------------------------------------
# attention

def test_attention_from_qk_matches_a_loop_with_gqa():
    rng = np.random.default_rng(1)
    H, Hkv, m, D = 4, 2, 7, 5
    q, k = rng.normal(size=(H, m, D)), rng.normal(size=(Hkv, m, D))
    A = K.attention_from_qk(q, k)
    for h in range(H):
        for i in range(m):
            s = np.array([q[h, i] @ k[h // 2, j] / math.sqrt(D) for j in range(i + 1)])
            e = np.exp(s - s.max())
            np.testing.assert_allclose(A[h, i, : i + 1], e / e.sum(), rtol=1e-12, atol=1e-15)
            assert np.all(A[h, i, i + 1:] == 0)
    np.testing.assert_allclose(A.sum(-1), 1.0, rtol=1e-12)


def test_non_causal_or_mis_shaped_attention_is_rejected():
    a = np.full((1, 2, 2), 0.5)                       # row 0 sees key 1: not causal
    with pytest.raises(ValueError, match="diagonal"):
        K.select("full", [a], G=1, alpha=0.5)
    with pytest.raises(ValueError, match="divide"):
        K.select("full", [causal_rows([1.0], [0.5, 0.5])] * 2, G=2, alpha=0.5)


# ---------------------------------------------------------------------------------------------
# window

def test_post_vision_window_cases():
    assert K.post_vision_window(50, [(5, 20)]).tolist() == list(range(25, 50))     # after the image
    assert K.post_vision_window(50, [(30, 5), (5, 10)]).tolist() == list(range(35, 50))  # after the LAST span
    assert K.post_vision_window(50, None).tolist() == list(range(18, 50))          # no image: last 32
    assert K.post_vision_window(10, []).tolist() == list(range(10))                # shorter than 32: all
    assert K.post_vision_window(50, [(10, 40)]).tolist() == list(range(18, 50))    # image at the end: last 32
    assert K.post_vision_window(50, [(10, 39)]).tolist() == [49]                   # one-row window
    assert K.post_vision_window(5, [(0, 5)], default_window=2).tolist() == [3, 4]
    for bad in [[(45, 10)], [(-1, 3)], [(3, 0)]]:
        with pytest.raises(ValueError):
            K.post_vision_window(50, bad)


# ---------------------------------------------------------------------------------------------
# sparsity

def test_layer_sparsity_by_hand():
    # rows 1 and 2, p = 0.01. Row 1 = [0.995, 0.005]: threshold 0.00995, one entry below.
    # Row 2 = [0.5, 0.3, 0.2]: nothing below. Causal entries: 2 + 3 = 5 (not 2 * 3 = 6) -> 1/5.
    a = causal_rows([1.0], [0.995, 0.005], [0.5, 0.3, 0.2])
    assert K.layer_sparsity(a, [1, 2], 0.01) == pytest.approx(0.2, abs=1e-15)
    # a second head with nothing below the threshold: mean over query heads = 0.1
    b = causal_rows([1.0], [0.5, 0.5], [1 / 3, 1 / 3, 1 / 3])
    assert K.layer_sparsity(np.concatenate([a, b]), [1, 2], 0.01) == pytest.approx(0.1, abs=1e-15)


def test_threshold_is_inclusive_and_relative_to_row_max():
    a = causal_rows([1.0], [0.5, 0.5], [0.5, 0.25, 0.25])     # exactly representable
    # p = 0.5: threshold of row 2 = 0.25, and 0.25 >= 0.25 is kept -> sparsity 0
    assert K.layer_sparsity(a, [2], 0.5) == 0.0
    # p = 0.51: the two 0.25 weights fall below -> 2 of 3 causal entries
    assert K.layer_sparsity(a, [2], 0.51) == pytest.approx(2 / 3, abs=1e-15)
    # scaling a row (relative threshold) changes nothing
    assert K.layer_sparsity(a * 0.5, [2], 0.51) == pytest.approx(2 / 3, abs=1e-15)


# ---------------------------------------------------------------------------------------------
# scores

def test_post_vision_scores_by_hand_and_gqa_sum():
    a = causal_rows([1.0], [0.75, 0.25], [0.5, 0.25, 0.25])
    b = causal_rows([1.0], [0.5, 0.5], [0.25, 0.25, 0.5])
    A = np.concatenate([a, b])                        # H = 2, G = 2 -> one KV head
    # rows 1..2: head a gives [1.25, 0.5, 0.25], head b [0.75, 0.75, 0.5]
    assert K.post_vision_scores(A, [1, 2], 2).tolist() == [[2.0, 1.25, 0.75]]
    assert K.post_vision_scores(A, [1, 2], 1).tolist() == [[1.25, 0.5, 0.25], [0.75, 0.75, 0.5]]
    # H2O: all rows; head a [2.25, 0.5, 0.25], head b [1.75, 0.75, 0.5]
    assert K.h2o_scores(A, 2).tolist() == [[4.0, 1.25, 0.75]]


def test_gqa_aggregation_equals_summing_the_group():
    rng = np.random.default_rng(2)
    A = random_attention(rng, 1, 8, 2, 23)[0]          # G = 4
    rows = np.arange(10, 23)
    per_q = K.post_vision_scores(A, rows, 1)           # [8, m]
    np.testing.assert_allclose(K.post_vision_scores(A, rows, 4), [per_q[:4].sum(0), per_q[4:].sum(0)], rtol=1e-12)
    hq = K.h2o_scores(A, 1)
    np.testing.assert_allclose(K.h2o_scores(A, 4), [hq[:4].sum(0), hq[4:].sum(0)], rtol=1e-12)


def test_max_pool_and_snapkv_scores():
    assert K.max_pool_1d(np.array([0, 5, 0, 0, 1.0]), 3).tolist() == [5, 5, 5, 1, 1]
    assert K.max_pool_1d(np.array([0, 5, 0, 0, 1.0]), 1).tolist() == [0, 5, 0, 0, 1]
    with pytest.raises(ValueError):
        K.max_pool_1d(np.zeros(4), 4)
    a = causal_rows([1.0], [0.75, 0.25], [0.5, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25])
    # window 2 -> rows 2, 3: column sums [0.75, 0.5, 0.5, 0.25]; kernel 3 -> [0.75, 0.75, 0.5, 0.5]
    assert K.snapkv_scores(a, 1, window=2, kernel=3).tolist() == [[0.75, 0.75, 0.5, 0.5]]


def test_splitmix64_known_vectors():
    # reference outputs of splitmix64 (Vigna): seed 1234567 -> 6457827717110365317, 3203168211198807973
    assert [int(x) for x in K.splitmix64_scores(1234567, 2)] == [6457827717110365317, 3203168211198807973]
    assert int(K.splitmix64_scores(0, 1)[0]) == 0xE220A8397B1DCDAF
    # layer offsets continue the same sequence
    assert K.random_scores(7, 1, 2, 5).ravel().tolist() == \
        (K.splitmix64_scores(7, 20)[10:] >> np.uint64(11)).astype(float).tolist()


# ---------------------------------------------------------------------------------------------
# budgets

def test_total_budget_rounding_and_bounds():
    assert K.total_budget(0.1, 2, 25) == 5                  # 5.0
    assert K.total_budget(0.25, 1, 10) == 3                 # 2.5 rounds half up
    assert K.total_budget(0.01, 4, 10) == 4                 # 0.4 -> at least 1 per layer
    assert K.total_budget(1.0, 3, 7) == 21
    for bad in [0.0, -0.1, 1.0001, float("nan")]:
        with pytest.raises(ValueError):
            K.total_budget(bad, 2, 10)


def test_vlcache_budgets_by_hand():
    # densities 0.5, 0.25, Z = 0.75, alpha L = 0.6 -> beta 0.4, 0.2 -> 4, 2 tokens of m = 10
    assert K.vlcache_budgets([0.5, 0.75], 0.3, 10).tolist() == [4, 2]
    assert K.vlcache_budgets([0.5, 0.75], 0.3, 10, exact_total=False).tolist() == [4, 2]
    # densities 1, .1, .1, Z = 1.2, alpha L = 1.5: beta 1.25 -> 1 (cap), 0.125, 0.125.
    # paper: 10, 1, 1 (total 12 instead of 15). exact: layer 0 at 10, the 5 left split 2.5 / 2.5,
    # largest remainder tie -> lower layer: 10, 3, 2.
    assert K.vlcache_budgets([0, 0.9, 0.9], 0.5, 10, exact_total=False).tolist() == [10, 1, 1]
    assert K.vlcache_budgets([0, 0.9, 0.9], 0.5, 10).tolist() == [10, 3, 2]
    # floor: densities 1, 1e-4, alpha L = 0.2, m = 1000: beta ~0.19998, ~2e-5 -> 0.01.
    # paper: 199 + 10 = 209 (not 200); exact: 190 + 10.
    assert K.vlcache_budgets([0, 0.9999], 0.1, 1000, exact_total=False).tolist() == [199, 10]
    assert K.vlcache_budgets([0, 0.9999], 0.1, 1000).tolist() == [190, 10]


def test_vlcache_budget_invariants_on_random_inputs():
    rng = np.random.default_rng(3)
    for _ in range(400):
        L = int(rng.integers(1, 40))
        m = int(rng.integers(1, 3000))
        alpha = float(rng.choice([rng.uniform(0.001, 1.0), 0.01, 0.05, 0.1, 1.0]))
        g = rng.uniform(0.0, 1.0, L) ** rng.uniform(0.1, 3.0)
        g = np.minimum(g, 1 - 1e-6)                     # real attention always has density > 0
        k = K.vlcache_budgets(g, alpha, m)
        T = K.total_budget(alpha, L, m)
        assert k.sum() == T
        assert k.min() >= 1 and k.max() <= m
        dens = 1 - g
        order = np.argsort(dens, kind="stable")
        assert np.all(np.diff(k[order]) >= 0), "a denser layer never gets fewer tokens"
        # no clipping active -> within 1 token of the paper's beta * m
        beta = dens / dens.sum() * alpha * L
        if np.all((beta >= 0.01) & (beta <= 1)) and T == alpha * L * m and m >= 100:
            assert np.all(np.abs(k - beta * m) < 1 + 1e-9)


def test_water_fill_matches_bisection():
    # t_i = clip(s w_i, lo, hi) with sum t = total; bisection on s to 1e-13 relative gives the same t
    rng = np.random.default_rng(8)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        w = rng.uniform(0, 1, n) ** 3
        lo, hi = float(rng.uniform(0, 5)), float(rng.uniform(5, 50))
        total = float(rng.uniform(n * lo, n * hi))
        t = K.water_fill(w, total, lo, hi)
        a, b = 0.0, 2 * hi / w.min()
        for _ in range(200):
            s = (a + b) / 2
            a, b = (s, b) if np.clip(s * w, lo, hi).sum() < total else (a, s)
        np.testing.assert_allclose(t, np.clip(a * w, lo, hi), rtol=1e-9, atol=1e-9)
        assert abs(t.sum() - total) < 1e-9 * total


def test_uniform_and_pyramid_budgets_by_hand():
    assert K.uniform_budgets(7 / 30, 3, 10).tolist() == [3, 2, 2]          # T = 7
    # T = 60, C = 20, min = 1, max = 39 -> 39, 20, 1
    assert K.pyramid_budgets(0.2, 3, 100).tolist() == [39, 20, 1]
    # T = 72, C = 24, max 46.8 > 30 -> max 30, min 18 -> 30, 24, 18
    assert K.pyramid_budgets(0.8, 3, 30).tolist() == [30, 24, 18]
    # T = 36, C = 12: line 23.4, 12, 0.6; floor 1 -> 35 left split 23.4 : 12 = 23.14, 11.86 -> 23, 12, 1
    assert K.pyramid_budgets(0.3, 3, 40).tolist() == [23, 12, 1]
    assert K.pyramid_budgets(0.3, 1, 40).tolist() == [12]
    rng = np.random.default_rng(4)
    for _ in range(200):
        L, m, alpha = int(rng.integers(1, 40)), int(rng.integers(1, 3000)), float(rng.uniform(0.001, 1))
        for k in (K.uniform_budgets(alpha, L, m), K.pyramid_budgets(alpha, L, m)):
            assert k.sum() == K.total_budget(alpha, L, m) and k.min() >= 1 and k.max() <= m
        assert np.all(np.diff(K.pyramid_budgets(alpha, L, m)) <= 0)


def test_adakv_head_split_by_hand():
    # m = 10, k = 5, w = 1 -> B' = 4, 8 scored slots; head 0 beats head 1 everywhere -> n = 8, 0.
    # targets 8 * 0.8 + 0.8 = 7.2 and 0.8 -> floors 7, 0, the one left goes to frac .8 -> 7, 1
    s = np.stack([10 + np.arange(10.0), np.arange(10.0)])
    assert K.adakv_head_budgets(s, 5, 1).tolist() == [7, 1]
    assert K.adakv_head_budgets(s, 5, 1, floor_alpha=1.0).tolist() == [4, 4]   # all safeguard = uniform
    assert K.adakv_head_budgets(s, 1, 1).tolist() == [0, 0]                    # window fills the budget


# ---------------------------------------------------------------------------------------------
# selection

def test_select_top_by_hand_ties_and_edges():
    # k = 4 -> w = ceil(0.4) = 1 keeps position 5; top 3 of positions 0..4 by score: 0, 2 (ties at 5), 3
    assert K.select_top(np.array([5, 1, 5, 3, 2, 0.0]), 4, K.recent_window(4)).tolist() == [0, 2, 3, 5]
    assert K.select_top(np.ones(6), 3, 1).tolist() == [0, 1, 5]            # ties -> lower positions
    assert K.select_top(np.ones(6), 6, 1).tolist() == list(range(6))       # k >= m keeps all
    assert K.select_top(np.ones(6), 9, 1).tolist() == list(range(6))
    assert K.select_top(np.array([9, 0, 0, 0.0]), 1, 1).tolist() == [3]    # k = 1: only the recent token
    assert K.select_top(np.array([9, 0, 0, 0.0]), 2, 5).tolist() == [2, 3]  # window capped at k


def test_recent_window():
    assert [K.recent_window(k) for k in (1, 9, 10, 11, 20, 30, 31)] == [1, 1, 1, 2, 2, 3, 4]
    assert K.recent_window(7, 0.0) == 0 and K.recent_window(7, 1.0) == 7


def test_streaming_keep():
    assert K.streaming_keep(20, 10).tolist() == [0, 1, 2, 3, 14, 15, 16, 17, 18, 19]
    assert K.streaming_keep(20, 3).tolist() == [0, 1, 19]       # recent part never below the window
    assert K.streaming_keep(20, 1).tolist() == [19]
    assert K.streaming_keep(5, 5).tolist() == list(range(5))


# ---------------------------------------------------------------------------------------------
# policies end to end

def test_vlcache_select_by_hand():
    # one layer, one head, m = 4, image at (0, 2) -> rows 2, 3. alpha = 0.5 -> T = 2 -> w = 1
    a = causal_rows([1.0], [0.5, 0.5], [0.125, 0.75, 0.125], [0.5, 0.25, 0.125, 0.125])
    r = K.select("vl-cache", [a], G=1, image_spans=[(0, 2)], alpha=0.5)
    # p = 0.01: nothing below -> sparsity 0. scores over rows 2,3: [0.625, 1.0, 0.25, 0.125]
    # keep position 3 (recent) + the best of 0..2 -> position 1
    assert r["sparsity"].tolist() == [0.0]
    assert r["layer_budgets"].tolist() == [2]
    assert [x.tolist() for x in r["kept"][0]] == [[1, 3]]
    # H2O on the same: column sums over all rows [2.125, 1.25, 0.25, 0.125] -> position 0
    r = K.select("h2o", [a], G=1, image_spans=[(0, 2)], alpha=0.5)
    assert [x.tolist() for x in r["kept"][0]] == [[0, 3]]


def test_select_composes_the_documented_pieces():
    rng = np.random.default_rng(5)
    A = random_attention(rng, 3, 4, 2, 50)
    spans = [(4, 30)]
    r = K.select("vl-cache", A, G=2, image_spans=spans, alpha=0.2)
    rows = np.arange(34, 50)
    g = [K.layer_sparsity(a, rows, 0.01) for a in A]
    np.testing.assert_allclose(r["sparsity"], g, rtol=0, atol=0)
    k = K.vlcache_budgets(g, 0.2, 50)
    assert r["layer_budgets"].tolist() == k.tolist()
    for l in range(3):
        s = K.post_vision_scores(A[l], rows, 2)
        for h in range(2):
            assert r["kept"][l][h].tolist() == K.select_top(s[h], k[l], K.recent_window(k[l])).tolist()


@pytest.mark.parametrize("shape", [(3, 4, 4, 37), (2, 8, 2, 40), (4, 4, 1, 19), (1, 2, 2, 1)])
def test_policy_invariants(shape):
    L, H, Hkv, m = shape
    rng = np.random.default_rng(sum(shape))
    A = random_attention(rng, L, H, Hkv, m)
    for spans in (None, [(1, m // 2)] if m > 2 else None, [(0, m)]):
        for alpha in (0.05, 0.1, 0.37, 1.0):
            T = K.total_budget(alpha, L, m)
            for pol in K.POLICIES:
                r = K.select(pol, A, G=H // Hkv, image_spans=spans, alpha=alpha, seed=3)
                assert r["sparsity"].shape == (L,) and np.all((r["sparsity"] >= 0) & (r["sparsity"] < 1))
                budgets = r["layer_budgets"]
                assert r["head_budgets"].shape == (L, Hkv)
                if pol == "full" or alpha == 1.0:
                    assert budgets.tolist() == [m] * L
                else:
                    assert budgets.sum() == T, pol
                for l in range(L):
                    w = K.recent_window(int(budgets[l]))
                    sizes = [len(x) for x in r["kept"][l]]
                    if pol == "adakv":
                        assert sum(sizes) == Hkv * budgets[l]
                    else:
                        assert sizes == [budgets[l]] * Hkv
                    for x in r["kept"][l]:
                        assert x.dtype == np.int64
                        assert np.all(np.diff(x) > 0) and x[0] >= 0 and x[-1] < m   # sorted, unique, in range
                        assert set(range(m - w, m)) <= set(x.tolist())            # recent window kept
                    if pol in ("full",) or alpha == 1.0:
                        assert all(x.tolist() == list(range(m)) for x in r["kept"][l])


def test_random_policy_is_seeded():
    rng = np.random.default_rng(6)
    A = random_attention(rng, 2, 2, 2, 60)
    a = K.select("random", A, G=1, alpha=0.2, seed=1)["kept"]
    b = K.select("random", A, G=1, alpha=0.2, seed=1)["kept"]
    c = K.select("random", A, G=1, alpha=0.2, seed=2)["kept"]
    flat = lambda kept: [x.tolist() for layer in kept for x in layer]
    assert flat(a) == flat(b) and flat(a) != flat(c)


def test_ablations_share_their_halves():
    rng = np.random.default_rng(7)
    A = random_attention(rng, 4, 4, 2, 45, sharp=4.0)
    kw = dict(G=2, image_spans=[(3, 25)], alpha=0.15)
    vl, vu = K.select("vl-cache", A, **kw), K.select("vl-cache-uniform", A, **kw)
    h2o, sh = K.select("h2o", A, **kw), K.select("sparsity-h2o", A, **kw)
    assert sh["layer_budgets"].tolist() == vl["layer_budgets"].tolist()
    assert vu["layer_budgets"].tolist() == h2o["layer_budgets"].tolist() == K.uniform_budgets(0.15, 4, 45).tolist()


def test_bad_arguments():
    A = [causal_rows([1.0], [0.5, 0.5])]
    for alpha in (0.0, -1.0, 1.5):
        with pytest.raises(ValueError):
            K.select("vl-cache", A, G=1, alpha=alpha)
    with pytest.raises(ValueError):
        K.select("full", A, G=1, alpha=0.0)
    with pytest.raises(ValueError, match="unknown policy"):
        K.select("lru", A, G=1, alpha=0.5)
    with pytest.raises(TypeError, match="unknown parameters"):
        K.select("vl-cache", A, G=1, alpha=0.5, treshold=0.1)
