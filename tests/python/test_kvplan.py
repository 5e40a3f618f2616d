"""The C KV-cache planner (vlc_kv_plan through kvcache.plan) against the NumPy reference kvref.py.

Every comparison is exact: layer budgets and kept masks are integers, and the C planner is
required to reproduce kvref bit for bit (same float expression order, NumPy's pairwise sums),
so there is no tolerance anywhere in this file.

Two oracles:
- ref_plan: kvref.select's per-policy branches transcribed line by line, fed the statistics
  (sparsity, scores) directly instead of attention matrices (what the C planner receives);
- kvref.select itself on real attention matrices (attention_from_qk), with the statistics the
  session would gather from the same matrices fed to the C planner.
"""

import math

import numpy as np
import pytest

import kvref
from vlcache_native import kvcache as kc
from vlcache_native._ffi import ffi, lib
from vlcache_native.errors import InvalidArgumentError, check

POLICIES = kvref.POLICIES
assert set(POLICIES) == set(kc.POLICIES)


# ---------------------------------------------------------------------------------------------
# the reference on given statistics

def ref_plan(policy, alpha, *, m, L, Hkv, sparsity=None, scores=None, **params):
    """kvref.select's branches on (sparsity [L], scores [L, Hkv, m]) -> (budgets [L], keep [L, Hkv, m] bool).

    scores are the per-key sums the policy reads (post-vision / H2O / SnapKV before pooling), as
    the C planner receives them; the transcription below follows kvref.select line by line.
    """
    P = {**kvref.DEFAULTS, **params}
    kvref._check_alpha(alpha)
    if policy == "full":
        budgets = np.full(L, m, dtype=np.int64)
    elif policy in ("vl-cache", "sparsity-h2o"):
        budgets = kvref.vlcache_budgets(sparsity, alpha, m, L, tuple(P["clip"]), P["exact_total"])
    elif policy == "pyramidkv":
        budgets = kvref.pyramid_budgets(alpha, L, m, P["pyramid_beta"])
    else:
        budgets = kvref.uniform_budgets(alpha, L, m)

    keep = np.zeros((L, Hkv, m), dtype=bool)
    for l in range(L):
        k = int(budgets[l])
        w = kvref.recent_window(k, P["recent_frac"])
        if policy == "full" or k >= m:
            per_head = [np.arange(m, dtype=np.int64) for _ in range(Hkv)]
        elif policy == "streamingllm":
            per_head = [kvref.streaming_keep(m, k, P["n_sink"], P["recent_frac"]) for _ in range(Hkv)]
        elif policy == "adakv":
            s = kvref.max_pool_1d(scores[l], P["pool_kernel"])
            nb = kvref.adakv_head_budgets(s, k, w, P["floor_alpha"])
            per_head = [kvref.select_top(s[h], w + int(nb[h]), w) for h in range(Hkv)]
        else:
            if policy in ("vl-cache", "vl-cache-uniform"):
                s = scores[l]
            elif policy in ("h2o", "sparsity-h2o"):
                s = scores[l]
            elif policy in ("snapkv", "pyramidkv"):
                s = kvref.max_pool_1d(scores[l], P["pool_kernel"])
            else:  # random
                s = kvref.random_scores(P["seed"], l, Hkv, m)
            per_head = [kvref.select_top(s[h], k, w) for h in range(Hkv)]
        for h, pos in enumerate(per_head):
            keep[l, h, pos] = True
    return np.asarray(budgets, dtype=np.int64), keep


def compare(policy, alpha, *, m, L, Hkv, sparsity=None, scores=None, **params):
    """Runs both and asserts identical budgets and masks; returns the C result."""
    got = kc.plan(policy, alpha, m=m, n_layer=L, n_head_kv=Hkv, sparsity=sparsity, scores=scores, **params)
    want_b, want_keep = ref_plan(policy, alpha, m=m, L=L, Hkv=Hkv, sparsity=sparsity, scores=scores, **params)
    ctx = f"{policy} alpha={alpha} L={L} Hkv={Hkv} m={m} {params}"
    np.testing.assert_array_equal(got["layer_budgets"], want_b, err_msg=ctx)
    if not np.array_equal(got["keep"], want_keep):
        l, h = np.argwhere((got["keep"] != want_keep).any(axis=-1))[0]
        raise AssertionError(f"{ctx}: layer {l} head {h} kept {got['kept'][l][h]}, "
                             f"expected {np.flatnonzero(want_keep[l, h])}")
    # invariants the equality already implies, stated for the reader: per-head counts
    for l in range(L):
        k = int(got["layer_budgets"][l])
        n = got["keep"][l].sum(axis=-1)
        if policy == "adakv" and k < m:
            assert n.sum() == Hkv * k, ctx
        else:
            assert np.all(n == min(k, m)), ctx
    return got


def make_scores(rng, kind, L, Hkv, m):
    if kind == "float":
        return rng.random((L, Hkv, m))
    if kind == "ints":          # many exact ties
        return rng.integers(0, 3, size=(L, Hkv, m)).astype(np.float64)
    if kind == "const":         # every score tied
        return np.ones((L, Hkv, m))
    if kind == "zeros":
        return np.zeros((L, Hkv, m))
    if kind == "spiky":         # a few heavy hitters over a flat floor, as real attention
        s = rng.random((L, Hkv, m)) * 1e-3
        s[rng.random((L, Hkv, m)) < 0.05] += 1.0
        return s
    raise ValueError(kind)


def make_sparsity(rng, kind, L):
    if kind == "random":
        return rng.random(L)
    if kind == "high":          # sparse layers: many budgets hit the clip bounds
        return 1.0 - rng.random(L) ** 4 * 0.2
    if kind == "zeros":
        return np.zeros(L)
    if kind == "ones":          # all-zero densities: treated as all equal
        return np.ones(L)
    if kind == "dyadic":        # exact binary fractions: water-fill breakpoints hit the total exactly
        return rng.choice([0.0, 0.5, 0.75, 0.875, 1.0], size=L)
    if kind == "mixed":
        g = rng.random(L)
        g[rng.random(L) < 0.3] = 1.0
        return g
    raise ValueError(kind)


# ---------------------------------------------------------------------------------------------
# every policy x budgets x shapes x parameters

BUDGETS = (1e-6, 0.01, 0.05, 0.1, 0.25, 0.333, 0.5, 0.9, 1.0)
SHAPES = ((1, 1, 1), (1, 1, 9), (1, 3, 40), (4, 2, 33), (6, 1, 64), (3, 4, 128), (12, 2, 50))
PARAMS = (
    {},
    {"recent_frac": 0.0},
    {"recent_frac": 1.0},
    {"recent_frac": 0.3, "n_sink": 0, "pool_kernel": 1},
    {"n_sink": 50, "pool_kernel": 3, "floor_alpha": 0.0},
    {"floor_alpha": 1.0, "pyramid_beta": 1.0, "seed": 12345},
    {"clip": (0.0, 0.2), "exact_total": False},
    {"clip": (0.1, 0.3), "seed": 2**64 - 1},
    {"clip": (0.05, 1.0), "exact_total": False, "pyramid_beta": 3.5, "floor_alpha": 0.5},
    {"clip": (0.5, 0.5)},
    {"clip": (0.0, 2.0), "recent_frac": 0.05, "pool_kernel": 15},
)


@pytest.mark.parametrize("policy", POLICIES)
def test_policy_matches_reference(policy):
    rng = np.random.default_rng(POLICIES.index(policy))
    score_kinds = ("float", "ints", "const", "zeros", "spiky")
    sparsity_kinds = ("random", "high", "zeros", "ones", "dyadic", "mixed")
    n = 0
    for si, (L, Hkv, m) in enumerate(SHAPES):
        for bi, alpha in enumerate(BUDGETS):
            for pi, params in enumerate(PARAMS):
                if (si + bi + pi) % 3:  # a third of the grid, every value of each axis still covered
                    continue
                scores = make_scores(rng, score_kinds[(bi + pi) % len(score_kinds)], L, Hkv, m)
                sparsity = make_sparsity(rng, sparsity_kinds[(si + pi) % len(sparsity_kinds)], L)
                compare(policy, alpha, m=m, L=L, Hkv=Hkv, sparsity=sparsity, scores=scores, **params)
                n += 1
    assert n > 200


@pytest.mark.parametrize("exact_total", [True, False])
@pytest.mark.parametrize("kind", ["random", "high", "dyadic", "mixed", "ones"])
def test_sparsity_budgets_many_layers(exact_total, kind):
    """L up to 200 exercises NumPy's pairwise sum (blocks of 8, split above 128) in the C sums."""
    rng = np.random.default_rng(7)
    for L in (7, 8, 9, 63, 129, 200):
        for alpha in (0.003, 0.07, 0.1, 0.41, 0.9):
            for clip in ((0.01, 1.0), (0.02, 0.15), (0.0, 0.05)):
                m = int(rng.integers(10, 300))
                sp = make_sparsity(rng, kind, L)
                compare("vl-cache", alpha, m=m, L=L, Hkv=1, sparsity=sp, scores=rng.random((L, 1, m)),
                        clip=clip, exact_total=exact_total)


def test_pyramid_many_layers():
    rng = np.random.default_rng(8)
    for L in (2, 3, 16, 40, 130):
        for m in (1, 5, 100, 257):
            for alpha in (1e-6, 0.02, 0.1, 0.5, 0.75, 1.0):
                for beta in (1.0, 1.5, 20.0, 1e6):
                    compare("pyramidkv", alpha, m=m, L=L, Hkv=1, scores=rng.random((L, 1, m)), pyramid_beta=beta)


@pytest.mark.parametrize("policy", ["vl-cache", "snapkv", "adakv", "random", "h2o"])
def test_long_prompt(policy):
    """m = 2**20 in one layer (the quickselect, the pooling deque and large offsets of the random policy)."""
    rng = np.random.default_rng(9)
    m, Hkv = 1 << 20, 2
    scores = rng.integers(0, 1000, size=(1, Hkv, m)).astype(np.float64)  # many ties
    compare(policy, 0.01, m=m, L=1, Hkv=Hkv, sparsity=np.array([0.4]), scores=scores, seed=3)


def test_adakv_ties_across_heads():
    """Equal scores in different heads: the lower position wins, then the lower head."""
    for m in (10, 31):
        for Hkv in (2, 3, 8):
            scores = np.ones((2, Hkv, m))
            scores[1, :, ::3] = 2.0
            for alpha in (0.1, 0.3, 0.6):
                for fa in (0.0, 0.2, 1.0):
                    compare("adakv", alpha, m=m, L=2, Hkv=Hkv, scores=scores, floor_alpha=fa, pool_kernel=1)


def test_full_and_budget_one_keep_everything():
    rng = np.random.default_rng(10)
    for policy in POLICIES:
        got = kc.plan(policy, 1.0, m=17, n_layer=3, n_head_kv=2, sparsity=rng.random(3), scores=rng.random((3, 2, 17)))
        if policy in ("vl-cache", "sparsity-h2o"):
            # sparsity budgets at alpha = 1 are still T = L m split by density, clipped at m: all m
            assert list(got["layer_budgets"]) == [17, 17, 17]
        assert got["keep"].all(), policy
    got = kc.plan("full", 0.01, m=5, n_layer=2, n_head_kv=1)
    assert got["keep"].all() and list(got["layer_budgets"]) == [5, 5]


def test_random_policy_is_seeded_and_needs_no_scores():
    a = kc.plan("random", 0.3, m=50, n_layer=2, n_head_kv=2, seed=1)["keep"]
    b = kc.plan("random", 0.3, m=50, n_layer=2, n_head_kv=2, seed=1)["keep"]
    c = kc.plan("random", 0.3, m=50, n_layer=2, n_head_kv=2, seed=2)["keep"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    compare("random", 0.3, m=50, L=2, Hkv=2, seed=2)


def test_float_to_integer_epsilons():
    """0.14 * 50 = 7.000000000000001 gives a recent window of 7; 0.29 * 100 = 28.999999999999996 a bound of 29."""
    scores = np.zeros((1, 1, 100))
    scores[0, 0, :60] = 1.0
    got = compare("h2o", 0.5, m=100, L=1, Hkv=1, scores=scores, recent_frac=0.14)
    assert list(got["kept"][0][0]) == list(range(43)) + list(range(93, 100))
    for exact_total, want in ((True, [31, 29]), (False, [59, 29])):
        got = compare("vl-cache", 0.3, m=100, L=2, Hkv=1, sparsity=np.array([0.0, 0.99]), scores=np.ones((2, 1, 100)),
                      clip=(0.29, 1.0), exact_total=exact_total)
        assert list(got["layer_budgets"]) == want


def test_water_fill_expression_order():
    """Inputs (found by search) whose budgets change if the free share is computed as
    rest * (w / sum w) instead of kvref's rest * w / sum w: equal fractional parts break differently."""
    cases = [
        ([0.3, 0.2, 0.7, 0.35, 0.9, 0.15, 0.15, 0.7, 0.7, 0.45], 0.2, 144),
        ([0.15, 0.7, 0.9], 0.35, 290),
        ([0.15, 0.6, 0.1, 0.7, 0.35, 0.7, 0.3, 0.15], 0.15, 220),
    ]
    for g, alpha, m in cases:
        L = len(g)
        compare("vl-cache", alpha, m=m, L=L, Hkv=1, sparsity=np.array(g), scores=np.ones((L, 1, m)))


def test_streamingllm_shape():
    got = kc.plan("streamingllm", 0.2, m=50, n_layer=1, n_head_kv=1, n_sink=4)
    assert list(got["kept"][0][0]) == [0, 1, 2, 3] + list(range(44, 50))


# ---------------------------------------------------------------------------------------------
# real attention: kvref.select against the planner fed the statistics of the same matrices

def _stats_for(policy, A, rows, G, window, p):
    """(sparsity [L], scores [L, Hkv, m]) the session would hand the planner for `policy`."""
    sparsity = np.array([kvref.layer_sparsity(a, rows, p) for a in A])
    m = A[0].shape[-1]
    if policy in ("vl-cache", "vl-cache-uniform"):
        scores = np.stack([kvref.post_vision_scores(a, rows, G) for a in A])
    elif policy in ("h2o", "sparsity-h2o"):
        scores = np.stack([kvref.h2o_scores(a, G) for a in A])
    elif policy in ("snapkv", "pyramidkv", "adakv"):
        snap = np.arange(m - min(window, m), m)
        scores = np.stack([kvref._group_sum(np.asarray(a)[:, snap, :].sum(axis=1), G) for a in A])
    else:
        scores = None
    return sparsity, scores


@pytest.mark.parametrize("policy", POLICIES)
def test_select_on_real_attention(policy):
    rng = np.random.default_rng(11)
    cases = [  # L, H, Hkv, m, image spans, alpha, window, params
        (3, 4, 2, 40, [(5, 20)], 0.2, 32, {}),
        (2, 2, 2, 24, None, 0.1, 8, {"recent_frac": 0.25, "pool_kernel": 3}),
        (4, 4, 1, 30, [(0, 30)], 0.35, 32, {"clip": (0.05, 0.6), "exact_total": False, "n_sink": 2}),
        (1, 2, 1, 1, None, 0.5, 32, {}),
        (2, 6, 3, 45, [(3, 10), (20, 15)], 0.05, 16, {"floor_alpha": 0.5, "seed": 4}),
    ]
    for L, H, Hkv, m, spans, alpha, window, params in cases:
        G = H // Hkv
        A = [kvref.attention_from_qk(rng.normal(size=(H, m, 8)) * 3, rng.normal(size=(Hkv, m, 8)) * 3)
             for _ in range(L)]
        want = kvref.select(policy, A, G=G, image_spans=spans, alpha=alpha, window=window, **params)
        sparsity, scores = _stats_for(policy, A, want["rows"], G, window, kvref.DEFAULTS["p"])
        np.testing.assert_array_equal(sparsity, want["sparsity"])
        got = kc.plan(policy, alpha, m=m, n_layer=L, n_head_kv=Hkv, sparsity=sparsity, scores=scores, **params)
        np.testing.assert_array_equal(got["layer_budgets"], want["layer_budgets"])
        for l in range(L):
            for h in range(Hkv):
                np.testing.assert_array_equal(got["kept"][l][h], want["kept"][l][h], err_msg=f"{policy} l={l} h={h}")


# ---------------------------------------------------------------------------------------------
# defaults, needs, sizes

def test_defaults_needs_and_sizes():
    p = ffi.new("vlc_kv_params *")
    lib.vlc_kv_params_init(p)
    assert p.policy == lib.VLC_KV_VLCACHE and p.budget == 0.1
    assert (p.recent_frac, p.clip_lo, p.clip_hi) == (0.1, 0.01, 1.0)
    assert (p.exact_total, p.pool_kernel, p.n_sink, p.seed, p.decode_room) == (1, 7, 4, 0, 256)
    assert (p.floor_alpha, p.pyramid_beta) == (0.2, 20.0)
    d = kvref.DEFAULTS
    assert (p.recent_frac, (p.clip_lo, p.clip_hi), bool(p.exact_total), p.pool_kernel, p.n_sink, p.seed,
            p.floor_alpha, p.pyramid_beta) == (d["recent_frac"], d["clip"], d["exact_total"], d["pool_kernel"],
                                               d["n_sink"], d["seed"], d["floor_alpha"], d["pyramid_beta"])
    assert lib.vlc_kv_params_size() == ffi.sizeof("vlc_kv_params")
    assert lib.vlc_compress_report_size() == ffi.sizeof("vlc_compress_report")
    want = {"vl-cache": ["scores"], "vl-cache-uniform": ["scores"], "sparsity-h2o": ["scores", "h2o"],
            "h2o": ["h2o"], "snapkv": ["snapkv"], "pyramidkv": ["snapkv"], "adakv": ["snapkv"],
            "full": [], "streamingllm": [], "random": []}
    assert {pol: kc.needs(pol) for pol in POLICIES} == want
    assert lib.vlc_kv_policy_needs(-1) == -1 and lib.vlc_kv_policy_needs(lib.VLC_KV_N_POLICIES) == -1


def test_policy_table():
    """The Python names come from C's table, each under its own enum value; the set that
    ranks a policy's tokens is the one kvref scores it by."""
    assert (kc.POLICIES["full"], kc.POLICIES["vl-cache"], kc.POLICIES["h2o"], kc.POLICIES["adakv"],
            kc.POLICIES["sparsity-h2o"]) == (lib.VLC_KV_FULL, lib.VLC_KV_VLCACHE, lib.VLC_KV_H2O, lib.VLC_KV_ADAKV,
                                             lib.VLC_KV_SPARSITY_H2O)
    assert len(kc.POLICIES) == lib.VLC_KV_N_POLICIES
    ranks = {pol: lib.vlc_kv_policy_ranks_by(i) for pol, i in kc.POLICIES.items()}
    sets = {-1: None, lib.VLC_ATTN_WINDOW: "scores", lib.VLC_ATTN_H2O: "h2o", lib.VLC_ATTN_SNAPKV: "snapkv"}
    assert {pol: sets[r] for pol, r in ranks.items()} == {
        "full": None, "streamingllm": None, "random": None, "vl-cache": "scores", "vl-cache-uniform": "scores",
        "h2o": "h2o", "sparsity-h2o": "h2o", "snapkv": "snapkv", "pyramidkv": "snapkv", "adakv": "snapkv"}
    assert lib.vlc_kv_policy_name(-1) == ffi.NULL and lib.vlc_kv_policy_name(lib.VLC_KV_N_POLICIES) == ffi.NULL
    assert lib.vlc_kv_policy_ranks_by(lib.VLC_KV_N_POLICIES) == -1


# ---------------------------------------------------------------------------------------------
# invalid arguments: InvalidArgumentError naming the parameter

GOOD = dict(m=8, n_layer=2, n_head_kv=1, sparsity=np.array([0.5, 0.5]), scores=np.ones((2, 1, 8)))


@pytest.mark.parametrize("name, value", [
    ("budget", 0.0), ("budget", -0.1), ("budget", 1.5), ("budget", math.nan), ("budget", math.inf),
    ("recent_frac", -0.1), ("recent_frac", 1.01), ("recent_frac", math.nan),
    ("clip", (0.5, 0.2)), ("clip", (-0.1, 0.5)), ("clip", (0.0, 0.0)), ("clip", (0.0, math.inf)),
    ("exact_total", 2), ("exact_total", -1),
    ("pool_kernel", 0), ("pool_kernel", 2), ("pool_kernel", -3),
    ("n_sink", -1),
    ("floor_alpha", -0.01), ("floor_alpha", 1.5), ("floor_alpha", math.nan),
    ("pyramid_beta", 0.5), ("pyramid_beta", math.nan), ("pyramid_beta", math.inf),
])
def test_bad_parameter_is_named(name, value):
    for policy in ("vl-cache", "adakv", "full"):  # every parameter is checked whatever the policy
        if name == "budget":
            with pytest.raises(InvalidArgumentError, match="budget"):
                kc.plan(policy, value, **GOOD)
        else:
            with pytest.raises(InvalidArgumentError, match=name):
                kc.plan(policy, 0.5, **GOOD, **{name: value})


def test_budget_checked_in_c():
    """kvcache.py may reject a budget first; the C check must hold on its own."""
    keep = ffi.new("uint8_t[]", 16)
    sc = ffi.new("double[]", [1.0] * 16)
    for bad, text in [(1.5, "1.5"), (0.0, "0"), (-2.0, "-2"), (math.nan, "nan"), (math.inf, "inf")]:
        p = kc.kv_params("h2o", 0.5)
        p.budget = bad
        with pytest.raises(InvalidArgumentError, match=rf"budget = {text}, expected a fraction in \(0, 1\]"):
            check(lib.vlc_kv_plan(p, 2, 1, 8, ffi.NULL, sc, keep, ffi.NULL))


@pytest.mark.parametrize("policy", POLICIES)
def test_missing_or_bad_statistics(policy):
    needs_sp = policy in ("vl-cache", "sparsity-h2o")
    needs_sc = bool(kc.needs(policy))
    base = dict(m=8, n_layer=2, n_head_kv=1)
    sp, sc = np.array([0.5, 0.5]), np.ones((2, 1, 8))
    if needs_sp:
        with pytest.raises(InvalidArgumentError, match="sparsity"):
            kc.plan(policy, 0.5, **base, scores=sc)
        for bad in (1.5, -0.5, math.nan):
            with pytest.raises(InvalidArgumentError, match=r"sparsity\[1\]"):
                kc.plan(policy, 0.5, **base, scores=sc, sparsity=np.array([0.5, bad]))
    if needs_sc:
        with pytest.raises(InvalidArgumentError, match="scores"):
            kc.plan(policy, 0.5, **base, sparsity=sp)
        bad = sc.copy()
        bad[1, 0, 3] = math.nan
        with pytest.raises(InvalidArgumentError, match=r"scores\[1\]\[0\]\[3\]"):
            kc.plan(policy, 0.5, **base, sparsity=sp, scores=bad)
    if not needs_sp and not needs_sc:
        kc.plan(policy, 0.5, **base)  # neither is needed


def test_bad_sizes_and_pointers_in_c():
    p = kc.kv_params("h2o", 0.5)
    keep = ffi.new("uint8_t[]", 64)
    sc = ffi.new("double[]", [1.0] * 64)
    for args, name in [((0, 1, 8), "n_layer"), ((1, 0, 8), "n_head_kv"), ((1, 1, 0), "m"), ((1, 1, -5), "m")]:
        with pytest.raises(InvalidArgumentError, match=name):
            check(lib.vlc_kv_plan(p, *args, ffi.NULL, sc, keep, ffi.NULL))
    with pytest.raises(InvalidArgumentError, match="too large"):
        check(lib.vlc_kv_plan(p, 2**31 - 1, 2**31 - 1, 2**31 - 1, ffi.NULL, sc, keep, ffi.NULL))
    with pytest.raises(InvalidArgumentError, match="keep"):
        check(lib.vlc_kv_plan(p, 1, 1, 8, ffi.NULL, sc, ffi.NULL, ffi.NULL))
    with pytest.raises(InvalidArgumentError, match="params"):
        check(lib.vlc_kv_plan(ffi.NULL, 1, 1, 8, ffi.NULL, sc, keep, ffi.NULL))
    p.policy = 99
    with pytest.raises(InvalidArgumentError, match="policy = 99"):
        check(lib.vlc_kv_plan(p, 1, 1, 8, ffi.NULL, sc, keep, ffi.NULL))
    # layer_budgets may be NULL
    p = kc.kv_params("h2o", 0.5)
    assert lib.vlc_kv_plan(p, 1, 1, 8, ffi.NULL, sc, keep, ffi.NULL) == lib.VLC_STATUS_OK
    assert sum(keep[i] for i in range(8)) == 4


def test_python_side_rejections():
    with pytest.raises(InvalidArgumentError, match="unknown KV policy"):
        kc.plan("nope", 0.5, **GOOD)
    with pytest.raises(TypeError, match="window"):
        kc.plan("h2o", 0.5, **GOOD, window=3)
