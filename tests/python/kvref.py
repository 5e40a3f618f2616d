"""NumPy reference of every KV-cache policy: the oracle the C implementation is tested against.

What it is: a small, slow, explicit-matrix statement of VL-Cache (shared/docs/VLCACHE.md, §1.3-1.9,
our defaults table) and of the baselines of §3, written to be read like a spec. Every function takes
the prompt's attention weights as full matrices and returns plain NumPy values.

What it is not: a fast implementation, a model runner, or a cache. It never touches K or V; it only
says which prompt positions each layer and KV head keeps.

Shapes: L = layers, H = query heads, Hkv = KV heads, G = H / Hkv (GQA group size; query head h reads
KV head h // G), m = prompt length, D = head dim. A[l] is [H, m, m]: row i holds the causal softmax
weights of query i over keys 0..i; entries j > i are exactly 0. Arithmetic is float64.

Rules fixed here where VLCACHE.md is silent (each is marked "choice" below):
- window: rows after the last image token; no image, or an image that ends the prompt: last
  min(window, m) rows.
- total budget: T = clamp(floor(alpha * (L * m) + 0.5), L, L * m) tokens per KV head over all layers
  (round half up; at least 1 token per layer).
- exact total: continuous water-filling t_l = clip(s * w_l, lo, hi) with sum t_l = T, then
  largest-remainder rounding (ties to the lower index). Used for vl-cache, uniform and pyramid
  budgets and for AdaKV's head split.
- recent window: w = min(k, ceil(recent_frac * k - 1e-9)); the epsilon absorbs 0.14 * 50 = 7.000000000000001.
  The same 1e-9 guards every other float -> integer floor (RECENT_EPS).
- ties in top-k: the lower position wins. Kept positions are returned in ascending order.
- random: splitmix64 scores (C can reproduce them), not NumPy's generator.
"""

import math

import numpy as np

# ---------------------------------------------------------------------------------------------
# parameters

POLICIES = ("vl-cache", "full", "streamingllm", "h2o", "snapkv", "pyramidkv", "adakv", "random",
            "vl-cache-uniform", "sparsity-h2o")

DEFAULTS = dict(
    p=0.01,              # sparsity threshold, relative to the row max (Eq. 1)
    recent_frac=0.1,     # recent window = ceil(recent_frac * k_l) last prompt tokens
    clip=(0.01, 1.0),    # layer budget fraction range (Algorithm 1)
    exact_total=True,    # re-balance so sum_l k_l == T exactly
    window=32,           # SnapKV observation window; also the post-vision window without an image
    pool_kernel=7,       # SnapKV / AdaKV max-pool kernel (odd)
    n_sink=4,            # StreamingLLM attention sinks
    seed=0,              # random policy
    floor_alpha=0.2,     # AdaKV safeguard fraction
    pyramid_beta=20.0,   # PyramidKV min = C / beta
)

RECENT_EPS = 1e-9


# ---------------------------------------------------------------------------------------------
# attention

def attention_from_qk(q, k, scale=None):
    """Causal softmax weights [H, m, m] from q [H, m, D] and k [Hkv, m, D] (GQA: head h uses k[h // G]).

    scale defaults to 1/sqrt(D). Entries above the diagonal are exactly 0; each row sums to 1.
    """
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    H, m, D = q.shape
    Hkv = k.shape[0]
    if k.shape[1:] != (m, D) or H % Hkv != 0:
        raise ValueError(f"attention_from_qk: q {q.shape} and k {k.shape} do not match")
    G = H // Hkv
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    kr = np.repeat(k, G, axis=0)                          # [H, m, D], head h -> k[h // G]
    s = np.einsum("hid,hjd->hij", q, kr) * scale          # [H, m, m]
    upper = np.triu(np.ones((m, m), dtype=bool), 1)
    s[:, upper] = -np.inf
    s -= s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


def _check_attention(A, G):
    """Validates A ([L, H, m, m] array or list of [H, m, m]) and returns (list of float64 arrays, L, H, m)."""
    layers = [np.asarray(a, dtype=np.float64) for a in A]
    if not layers:
        raise ValueError("no layers")
    H, m, m2 = layers[0].shape
    if m != m2 or m < 1:
        raise ValueError(f"attention must be [H, m, m], got {layers[0].shape}")
    if G < 1 or H % G != 0:
        raise ValueError(f"G={G} does not divide H={H}")
    upper = np.triu(np.ones((m, m), dtype=bool), 1)
    for l, a in enumerate(layers):
        if a.shape != (H, m, m):
            raise ValueError(f"layer {l}: shape {a.shape}, expected {(H, m, m)}")
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError(f"layer {l}: weights must be finite and >= 0")
        if np.any(a[:, upper] != 0):
            raise ValueError(f"layer {l}: weights above the diagonal must be 0 (causal)")
    return layers, len(layers), H, m


# ---------------------------------------------------------------------------------------------
# statistics

def post_vision_window(m, image_spans=None, default_window=32):
    """Query rows [r0, m) used for sparsity and scores, as an int64 array.

    With images: rows after the last image token (v = max(pos0 + n)) through m - 1 (VLCACHE.md §1.2).
    No image, or an image ending the prompt (v == m, choice: the paper is silent): the last
    min(default_window, m) rows, as SnapKV does.
    """
    if m < 1 or default_window < 1:
        raise ValueError(f"m={m} and default_window={default_window} must be >= 1")
    v = 0
    for pos0, n in (image_spans or []):
        if pos0 < 0 or n < 1 or pos0 + n > m:
            raise ValueError(f"image span ({pos0}, {n}) outside a prompt of {m} tokens")
        v = max(v, pos0 + n)
    if image_spans and v < m:
        r0 = v
    else:
        r0 = m - min(default_window, m)
    return np.arange(r0, m, dtype=np.int64)


def layer_sparsity(A_l, rows, p):
    """Eq. 1/2: fraction of causal entries in `rows` with weight < p * (row max), averaged over query heads.

    Per head h: 1 - #{(i, j): i in rows, j <= i, A[h,i,j] >= p * max_{j' <= i} A[h,i,j']} / sum_{i in rows}(i + 1).
    The max and the count run over causally visible keys only (diagonal included); a weight equal to
    the threshold is kept (not sparse).
    """
    A_l = np.asarray(A_l, dtype=np.float64)
    rows = np.asarray(rows, dtype=np.int64)
    H, m, _ = A_l.shape
    sub = A_l[:, rows, :]                                       # [H, R, m]
    visible = np.arange(m)[None, :] <= rows[:, None]            # [R, m]
    rowmax = np.where(visible, sub, -np.inf).max(axis=-1, keepdims=True)
    kept = (sub >= p * rowmax) & visible                        # [H, R, m]
    denom = float(np.sum(rows + 1))
    gamma_h = 1.0 - kept.sum(axis=(1, 2)) / denom               # [H]
    return float(gamma_h.mean())


def _group_sum(s, G):
    """[H, m] per query head -> [Hkv, m]: KV head g sums query heads g*G .. g*G + G - 1."""
    H, m = s.shape
    return s.reshape(H // G, G, m).sum(axis=1)


def post_vision_scores(A_l, rows, G):
    """§1.6: [Hkv, m] score of each key = sum over the group's query heads and over `rows` of its weight."""
    A_l = np.asarray(A_l, dtype=np.float64)
    return _group_sum(A_l[:, np.asarray(rows, dtype=np.int64), :].sum(axis=1), G)


def h2o_scores(A_l, G):
    """§3 H2O (one-shot): [Hkv, m] column sums over all prompt rows, summed over the group."""
    A_l = np.asarray(A_l, dtype=np.float64)
    return _group_sum(A_l.sum(axis=1), G)


def max_pool_1d(x, kernel):
    """Max over [j - kernel//2, j + kernel//2] clipped to the array (same length; -inf padding), last axis."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"pool kernel must be odd and >= 1, got {kernel}")
    r = kernel // 2
    if r == 0:
        return np.array(x, dtype=np.float64)
    pad = [(0, 0)] * (x.ndim - 1) + [(r, r)]
    xp = np.pad(np.asarray(x, dtype=np.float64), pad, constant_values=-np.inf)
    return np.lib.stride_tricks.sliding_window_view(xp, kernel, axis=-1).max(axis=-1)


def snapkv_scores(A_l, G, window=32, kernel=7):
    """§3 SnapKV: [Hkv, m] column sums over the last min(window, m) rows, group-summed, then max-pooled.

    Choice: pooling runs after the group sum (so C only needs per-KV-head sums) and over all m keys.
    """
    A_l = np.asarray(A_l, dtype=np.float64)
    m = A_l.shape[1]
    rows = np.arange(m - min(window, m), m)
    return max_pool_1d(_group_sum(A_l[:, rows, :].sum(axis=1), G), kernel)


def splitmix64_scores(seed, n, offset=0):
    """Outputs offset+1 .. offset+n of splitmix64 seeded with `seed`, as uint64 [n].

    Output c (c >= 1) = mix(seed + c * 0x9E3779B97F4A7C15) mod 2^64.
    """
    M = (1 << 64) - 1
    c = np.arange(offset + 1, offset + n + 1, dtype=np.uint64)
    z = np.uint64(seed & M) + c * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def random_scores(seed, l, Hkv, m):
    """[Hkv, m] scores of the random policy in layer l: head h, position j uses splitmix64 output
    (l * Hkv + h) * m + j + 1, top 53 bits as a float64 (exact)."""
    z = splitmix64_scores(seed, Hkv * m, offset=l * Hkv * m)
    return (z >> np.uint64(11)).astype(np.float64).reshape(Hkv, m)


# ---------------------------------------------------------------------------------------------
# budgets

def total_budget(alpha, L, m):
    """T = clamp(floor(alpha * (L * m) + 0.5), L, L * m): tokens per KV head summed over layers."""
    _check_alpha(alpha)
    return int(min(max(math.floor(alpha * (L * m) + 0.5), L), L * m))


def _check_alpha(alpha):
    if not (alpha > 0.0 and alpha <= 1.0):
        raise ValueError(f"budget alpha must be in (0, 1], got {alpha}")


def largest_remainder(targets, total):
    """Integers k with sum k == total, k_i in {floor(t_i), floor(t_i) + 1}.

    Requires sum(targets) == total up to rounding. Starts from floor(t_i); the R = total - sum floor
    missing units go to the largest fractional parts, ties to the lower index.
    """
    t = np.asarray(targets, dtype=np.float64)
    k = np.floor(t).astype(np.int64)
    R = int(total - k.sum())
    if R < 0 or R > len(t):
        raise ValueError(f"targets sum {t.sum()} far from total {total}")
    frac = t - k
    order = np.lexsort((np.arange(len(t)), -frac))            # largest frac first, then lower index
    k[order[:R]] += 1
    return k


def water_fill(weights, total, lo, hi):
    """Real t_i = clip(s * w_i, lo, hi) with sum t_i == total (s found exactly by breakpoints).

    If total is outside [n * lo, n * hi], the violated bound is moved to total / n.
    Zero weights stay at lo. All-zero weights are treated as all equal.
    Free entries get remaining * w_i / sum(free w), the same as s * w_i.
    """
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite and >= 0")
    if w.sum() == 0:
        w = np.ones(n)
    lo = min(lo, total / n)
    hi = max(hi, total / n)
    if hi == lo:
        return np.full(n, float(lo))
    pos = w > 0
    w_pos = np.where(pos, w, 1.0)
    s_floor = np.where(pos, lo / w_pos, np.inf)          # below this s entry i sits at lo
    s_cap = np.where(pos, hi / w_pos, np.inf)            # from this s on entry i sits at hi

    def parts(s_left, s_right):
        """Sets on the interval (s_left, s_right], by comparing breakpoints only (no rounding)."""
        capped = s_cap <= s_left
        floored = s_floor >= s_right
        return capped, floored, ~capped & ~floored

    def f(s):
        capped, floored, free = parts(s, s)
        return capped.sum() * hi + floored.sum() * lo + s * w[free].sum()

    # f(s) = sum clip(s w_i, lo, hi) is continuous and nondecreasing; walk its breakpoints.
    s_lo = 0.0
    for s in np.unique(np.concatenate([s_floor[pos], s_cap[pos]])):
        if f(s) >= total:
            break
        s_lo = s
    else:
        # every weighted entry is capped and the total is still not reached: zero weights share the rest
        t = np.where(pos, hi, lo).astype(np.float64)
        t[~pos] = (total - t[pos].sum()) / max(1, int((~pos).sum()))
        return t
    capped, floored, free = parts(s_lo, s)
    t = np.where(capped, hi, lo).astype(np.float64)
    if free.any():
        t[free] = (total - t[~free].sum()) * w[free] / w[free].sum()
    return t


def apportion(weights, total, lo, hi):
    """water_fill then largest_remainder: integers summing to `total`, proportional to weights within [lo, hi]."""
    return largest_remainder(water_fill(weights, total, lo, hi), total)


def uniform_budgets(alpha, L, m):
    """Every layer T // L tokens; the T % L leftover tokens go to the lowest layers (+1 each)."""
    T = total_budget(alpha, L, m)
    return np.array([T // L + (1 if l < T % L else 0) for l in range(L)], dtype=np.int64)


def vlcache_budgets(sparsities, alpha, m, L=None, clip=(0.01, 1.0), exact_total=True):
    """§1.5 layer budgets k_l (tokens per KV head) from layer sparsities γ_l.

    d_l = 1 - γ_l (density), β_l = clip(d_l / Σd · α · L, clip_lo, clip_hi).
    exact_total=False (the paper, S4's int()): k_l = max(1, min(m, floor(β_l · m + 1e-9))); the total
    may drift. The epsilon keeps 0.4 * 10 = 3.9999999999999996 at 4.
    exact_total=True (our default): k = apportion(d, T, lo, hi) with integer token bounds
    lo = max(1, floor(clip_lo·m + 1e-9)), hi = min(m, floor(clip_hi·m + 1e-9)): the clip is applied and
    the mass it removes or adds is spread over the unclipped layers in proportion to density, then
    rounded by largest remainder. Without clipping this equals β_l·m up to rounding. Integer bounds
    keep clipped layers off the remainder ties, so a denser layer never gets fewer tokens.
    """
    g = np.asarray(sparsities, dtype=np.float64)
    L = len(g) if L is None else L
    if len(g) != L:
        raise ValueError(f"{len(g)} sparsities for L={L}")
    _check_alpha(alpha)
    c_lo, c_hi = clip
    if not (0.0 <= c_lo <= c_hi and c_hi > 0):
        raise ValueError(f"bad clip range {clip}")
    d = 1.0 - g
    if not exact_total:
        Z = d.sum()
        beta = d / Z * alpha * L if Z > 0 else np.full(L, alpha)
        beta = np.clip(beta, c_lo, c_hi)
        return np.clip(np.floor(beta * m + RECENT_EPS).astype(np.int64), 1, m)
    T = total_budget(alpha, L, m)
    lo = max(1, math.floor(c_lo * m + RECENT_EPS))
    hi = min(m, max(1, math.floor(c_hi * m + RECENT_EPS)))
    return apportion(d, T, float(lo), float(hi))


def pyramid_budgets(alpha, L, m, beta=20.0):
    """§3 PyramidKV: linearly decreasing budgets (layer 0 largest) summing to T exactly.

    C = T / L, lo = C / beta, hi = 2C - lo; if hi > m: hi = m, lo = 2C - m. Targets hi - l (hi - lo)/(L - 1)
    (L == 1: C), then apportion(targets, T, 1, m). Choice: the pyramid spans the whole budget k_l, the
    recent window is taken inside it (the original excludes its fixed window w first).
    """
    T = total_budget(alpha, L, m)
    C = T / L
    if L == 1:
        return np.array([T], dtype=np.int64)
    lo = C / beta
    hi = 2 * C - lo
    if hi > m:
        hi = float(m)
        lo = 2 * C - hi
    line = hi - np.arange(L) * (hi - lo) / (L - 1)
    return apportion(line, T, 1.0, float(m))


def adakv_head_budgets(scores, k, w, floor_alpha=0.2):
    """§3 AdaKV split of one layer: per-KV-head counts of scored tokens (window excluded), sum Hkv * (k - w).

    B' = k - w. Over all heads' candidates (positions < m - w) take the global top Hkv * B' (order: score
    desc, position asc, head asc) and count n_h per head. Targets n_h (1 - a) + a B' (sum Hkv B'),
    rounded by largest remainder (ties to the lower head). Choice: the original rounds each head with
    round(n_h (1 - a) + int(a B')), whose sum can drift; ours keeps the layer total exact.
    """
    Hkv, m = scores.shape
    Bp = k - w
    if Bp <= 0:
        return np.zeros(Hkv, dtype=np.int64)
    cand = scores[:, : m - w]                                     # [Hkv, m - w]
    heads, posn = np.meshgrid(np.arange(Hkv), np.arange(m - w), indexing="ij")
    order = np.lexsort((heads.ravel(), posn.ravel(), -cand.ravel()))
    won = heads.ravel()[order[: Hkv * Bp]]
    n = np.bincount(won, minlength=Hkv).astype(np.float64)
    return largest_remainder(n * (1 - floor_alpha) + floor_alpha * Bp, Hkv * Bp)


# ---------------------------------------------------------------------------------------------
# selection

def recent_window(k, recent_frac=0.1):
    """w = min(k, ceil(recent_frac * k - 1e-9)): the last w prompt tokens are always kept (w >= 1 if frac > 0)."""
    return int(min(k, math.ceil(recent_frac * k - RECENT_EPS))) if recent_frac > 0 else 0


def select_top(score, k, w):
    """Kept positions of one head: the last w positions plus the top (k - w) scores among the others.

    k >= m keeps everything. Ties go to the lower position. Returns sorted int64 positions.
    """
    m = len(score)
    if k >= m:
        return np.arange(m, dtype=np.int64)
    w = min(w, k)
    cand = m - w
    order = np.lexsort((np.arange(cand), -np.asarray(score[:cand], dtype=np.float64)))
    keep = np.concatenate([order[: k - w], np.arange(cand, m)])
    return np.sort(keep).astype(np.int64)


def streaming_keep(m, k, n_sink=4, recent_frac=0.1):
    """StreamingLLM: the first s tokens plus the last k - s, where the recent part is at least the recent window:
    n_recent = max(k - n_sink, recent_window(k)), s = k - n_recent."""
    if k >= m:
        return np.arange(m, dtype=np.int64)
    n_recent = max(k - n_sink, recent_window(k, recent_frac))
    s = k - n_recent
    return np.concatenate([np.arange(s), np.arange(m - n_recent, m)]).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# policies

def select(policy, A, *, G, image_spans=None, alpha, **params):
    """Runs one policy on the prompt attention A (L x [H, m, m]) and returns

    dict(sparsity=[L] float, layer_budgets=[L] int (tokens per KV head; AdaKV: the mean over heads),
         head_budgets=[L, Hkv] int, kept=[L][Hkv] sorted int64 positions, total=T, rows=post-vision rows).

    Policies (k_l: layer budget, w_l = recent_window(k_l), scores per KV head):
      vl-cache          sparsity budgets (vlcache_budgets) + post-vision scores
      full              everything (alpha is still validated)
      streamingllm      uniform budgets; n_sink first tokens + the most recent
      h2o               uniform budgets + column sums over all rows
      snapkv            uniform budgets + last-`window` column sums, max-pooled
      pyramidkv         pyramid budgets + snapkv scores
      adakv             uniform budgets, head split by adakv_head_budgets on snapkv scores
      random            uniform budgets + splitmix64 scores (seed)
      vl-cache-uniform  uniform budgets + post-vision scores
      sparsity-h2o      sparsity budgets + H2O scores
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown parameters {sorted(unknown)}")
    P = {**DEFAULTS, **params}
    if not 0.0 <= P["recent_frac"] <= 1.0:
        raise ValueError(f"recent_frac must be in [0, 1], got {P['recent_frac']}")
    _check_alpha(alpha)
    layers, L, H, m = _check_attention(A, G)
    Hkv = H // G
    rows = post_vision_window(m, image_spans, P["window"])
    sparsity = np.array([layer_sparsity(a, rows, P["p"]) for a in layers])
    T = total_budget(alpha, L, m)

    if policy == "full":
        budgets = np.full(L, m, dtype=np.int64)
    elif policy in ("vl-cache", "sparsity-h2o"):
        budgets = vlcache_budgets(sparsity, alpha, m, L, tuple(P["clip"]), P["exact_total"])
    elif policy == "pyramidkv":
        budgets = pyramid_budgets(alpha, L, m, P["pyramid_beta"])
    else:
        budgets = uniform_budgets(alpha, L, m)

    kept, head_budgets = [], []
    for l, a in enumerate(layers):
        k = int(budgets[l])
        w = recent_window(k, P["recent_frac"])
        if policy == "full" or k >= m:
            per_head = [np.arange(m, dtype=np.int64) for _ in range(Hkv)]
        elif policy == "streamingllm":
            per_head = [streaming_keep(m, k, P["n_sink"], P["recent_frac"]) for _ in range(Hkv)]
        elif policy == "adakv":
            s = snapkv_scores(a, G, P["window"], P["pool_kernel"])
            nb = adakv_head_budgets(s, k, w, P["floor_alpha"])
            per_head = [select_top(s[h], w + int(nb[h]), w) for h in range(Hkv)]
        else:
            if policy in ("vl-cache", "vl-cache-uniform"):
                s = post_vision_scores(a, rows, G)
            elif policy in ("h2o", "sparsity-h2o"):
                s = h2o_scores(a, G)
            elif policy in ("snapkv", "pyramidkv"):
                s = snapkv_scores(a, G, P["window"], P["pool_kernel"])
            else:  # random
                s = random_scores(P["seed"], l, Hkv, m)
            per_head = [select_top(s[h], k, w) for h in range(Hkv)]
        kept.append(per_head)
        head_budgets.append([len(x) for x in per_head])
    return dict(sparsity=sparsity, layer_budgets=np.asarray(budgets, dtype=np.int64),
                head_budgets=np.array(head_budgets, dtype=np.int64), kept=kept, total=T, rows=rows)
