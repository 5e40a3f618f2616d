// kvpolicy.c: the KV-cache policy planner. Given the per-layer sparsities and the per-key
// attention sums a policy reads, decides how many prompt entries each layer keeps (k_l) and
// which positions each layer and KV head keeps: VL-Cache (sparsity budgets + post-vision
// scores) and the baselines (full, StreamingLLM, H2O, SnapKV, PyramidKV, AdaKV, random and
// the two ablations), each one row of the POLICIES table below. Also vlc_kv_params_init /
// _size and the table's readers (vlc_kv_policy_name, _needs, _ranks_by).
//
// Every rule is the one of tests/python/kvref.py and the integer results are bit-identical
// to it: floating expressions are evaluated in kvref's order and sums follow NumPy's
// pairwise summation (np_sum below), so the breakpoints, remainders and ties come out the
// same. Arithmetic is double throughout.
//
// What it is not: it never touches K / V or a session (the session side of
// vlc_session_compress gathers the statistics, calls vlc_kv_plan and moves the entries), and
// it does not compute attention statistics (the attention kernels do). vlc_kv_plan is a pure
// function: its scratch is allocated and freed inside the call, nothing is kept between calls.
// Sizes: L = n_layer, Hkv = n_head_kv, m = prompt entries ranked.
#include "error.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define VLC_KV_EPS 1e-9 // kvref.RECENT_EPS: guards every float -> integer floor / ceil

// ---------------------------------------------------------------------------
// parameters

void vlc_kv_params_init(vlc_kv_params * p) {
    if (!p) {
        return;
    }
    memset(p, 0, sizeof(*p));
    p->policy       = VLC_KV_VLCACHE;
    p->budget       = 0.1;
    p->recent_frac  = 0.1;
    p->clip_lo      = 0.01;
    p->clip_hi      = 1.0;
    p->exact_total  = 1;
    p->pool_kernel  = 7;
    p->n_sink       = 4;
    p->floor_alpha  = 0.2;
    p->pyramid_beta = 20.0;
    p->seed         = 0;
    p->decode_room  = 256;
}

size_t vlc_kv_params_size(void)       { return sizeof(vlc_kv_params); }
size_t vlc_compress_report_size(void) { return sizeof(vlc_compress_report); }

// ---------------------------------------------------------------------------
// the policies: one row each (a new policy is a row here, plus its enum value in vlcache.h)

// How many prompt entries each layer keeps (k_l).
typedef enum budget_rule {
    BUDGET_ALL,       // every entry (full)
    BUDGET_UNIFORM,   // T // L each, the T % L leftovers to the lowest layers
    BUDGET_SPARSITY,  // VL-Cache: apportioned to the layers' post-vision densities 1 - gamma_l
    BUDGET_PYRAMID,   // PyramidKV: linearly decreasing from layer 0
} budget_rule;

// Which k_l entries a layer's KV head keeps.
typedef enum keep_rule {
    KEEP_TOP,         // the recent window + the top scores (the sums of set ranks_by)
    KEEP_TOP_POOLED,  // the same after a 1-D max-pool of the scores (SnapKV)
    KEEP_ADAKV,       // pooled, with the layer's budget split across its heads by score
    KEEP_STREAMING,   // n_sink first entries + the most recent
    KEEP_RANDOM,      // the recent window + the top splitmix64(seed) scores
} keep_rule;

typedef struct policy_row {
    const char * name;      // the Python / CLI name
    budget_rule  budget;
    keep_rule    keep;
    int          ranks_by;  // the vlc_attn_set whose per-key sums rank entries, or -1
} policy_row;

static const policy_row POLICIES[VLC_KV_N_POLICIES] = {
    [VLC_KV_FULL]            = { "full", BUDGET_ALL, KEEP_TOP, -1 },
    [VLC_KV_VLCACHE]         = { "vl-cache", BUDGET_SPARSITY, KEEP_TOP, VLC_ATTN_WINDOW },
    [VLC_KV_STREAMINGLLM]    = { "streamingllm", BUDGET_UNIFORM, KEEP_STREAMING, -1 },
    [VLC_KV_H2O]             = { "h2o", BUDGET_UNIFORM, KEEP_TOP, VLC_ATTN_H2O },
    [VLC_KV_SNAPKV]          = { "snapkv", BUDGET_UNIFORM, KEEP_TOP_POOLED, VLC_ATTN_SNAPKV },
    [VLC_KV_PYRAMIDKV]       = { "pyramidkv", BUDGET_PYRAMID, KEEP_TOP_POOLED, VLC_ATTN_SNAPKV },
    [VLC_KV_ADAKV]           = { "adakv", BUDGET_UNIFORM, KEEP_ADAKV, VLC_ATTN_SNAPKV },
    [VLC_KV_RANDOM]          = { "random", BUDGET_UNIFORM, KEEP_RANDOM, -1 },
    [VLC_KV_VLCACHE_UNIFORM] = { "vl-cache-uniform", BUDGET_UNIFORM, KEEP_TOP, VLC_ATTN_WINDOW },
    [VLC_KV_SPARSITY_H2O]    = { "sparsity-h2o", BUDGET_SPARSITY, KEEP_TOP, VLC_ATTN_H2O },
};

static const policy_row * policy_get(int32_t policy) {
    return policy >= 0 && policy < VLC_KV_N_POLICIES ? &POLICIES[policy] : NULL;
}

const char * vlc_kv_policy_name(int32_t policy) {
    const policy_row * r = policy_get(policy);
    return r ? r->name : NULL;
}

int32_t vlc_kv_policy_needs(int32_t policy) {
    const policy_row * r = policy_get(policy);
    if (!r) {
        return -1;
    }
    return (r->budget == BUDGET_SPARSITY ? 1 << VLC_ATTN_WINDOW : 0) | (r->ranks_by >= 0 ? 1 << r->ranks_by : 0);
}

int32_t vlc_kv_policy_ranks_by(int32_t policy) {
    const policy_row * r = policy_get(policy);
    return r ? r->ranks_by : -1;
}

static vlc_status check_params(const vlc_kv_params * p) {
    VLC_CHECK(p->policy >= 0 && p->policy < VLC_KV_N_POLICIES, VLC_STATUS_INVALID_ARG,
              "policy = %d, expected a vlc_kv_policy in 0..%d", p->policy, VLC_KV_N_POLICIES - 1);
    VLC_CHECK(isfinite(p->budget) && p->budget > 0.0 && p->budget <= 1.0, VLC_STATUS_INVALID_ARG,
              "budget = %g, expected a fraction in (0, 1]", p->budget);
    VLC_CHECK(isfinite(p->recent_frac) && p->recent_frac >= 0.0 && p->recent_frac <= 1.0, VLC_STATUS_INVALID_ARG,
              "recent_frac = %g, expected a fraction in [0, 1]", p->recent_frac);
    VLC_CHECK(isfinite(p->clip_lo) && isfinite(p->clip_hi) && p->clip_lo >= 0.0 && p->clip_lo <= p->clip_hi &&
                  p->clip_hi > 0.0,
              VLC_STATUS_INVALID_ARG, "clip = (clip_lo = %g, clip_hi = %g), expected 0 <= clip_lo <= clip_hi, clip_hi > 0",
              p->clip_lo, p->clip_hi);
    VLC_CHECK(p->exact_total == 0 || p->exact_total == 1, VLC_STATUS_INVALID_ARG,
              "exact_total = %d, expected 0 or 1", p->exact_total);
    VLC_CHECK(p->pool_kernel >= 1 && p->pool_kernel % 2 == 1, VLC_STATUS_INVALID_ARG,
              "pool_kernel = %d, expected an odd number >= 1", p->pool_kernel);
    VLC_CHECK(p->n_sink >= 0, VLC_STATUS_INVALID_ARG, "n_sink = %d, expected >= 0", p->n_sink);
    VLC_CHECK(isfinite(p->floor_alpha) && p->floor_alpha >= 0.0 && p->floor_alpha <= 1.0, VLC_STATUS_INVALID_ARG,
              "floor_alpha = %g, expected a fraction in [0, 1]", p->floor_alpha);
    VLC_CHECK(isfinite(p->pyramid_beta) && p->pyramid_beta >= 1.0, VLC_STATUS_INVALID_ARG,
              "pyramid_beta = %g, expected a finite number >= 1", p->pyramid_beta);
    return VLC_STATUS_OK;
}

// ---------------------------------------------------------------------------
// NumPy's float64 sum (pairwise, 8 accumulators per block of <= 128), so that sums over
// subsets of layers round exactly as kvref's x.sum() does.

static double np_sum(const double * x, int64_t n) {
    if (n < 8) {
        double res = 0.0;
        for (int64_t i = 0; i < n; i++) {
            res += x[i];
        }
        return res;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; j++) {
            r[j] = x[j];
        }
        int64_t i = 8;
        for (; i < n - (n % 8); i += 8) {
            for (int j = 0; j < 8; j++) {
                r[j] += x[i + j];
            }
        }
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) {
            res += x[i];
        }
        return res;
    }
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return np_sum(x, n2) + np_sum(x + n2, n - n2);
}

// ---------------------------------------------------------------------------
// ranking: (score desc, key asc), a strict total order since keys are distinct

typedef struct vlc_ranked {
    double  s;
    int64_t key;
} vlc_ranked;

static inline int ranked_before(const vlc_ranked * a, const vlc_ranked * b) {
    return a->s > b->s || (a->s == b->s && a->key < b->key);
}

static int ranked_cmp(const void * pa, const void * pb) {
    const vlc_ranked * a = pa;
    const vlc_ranked * b = pb;
    return ranked_before(a, b) ? -1 : ranked_before(b, a) ? 1 : 0;
}

static inline void ranked_swap(vlc_ranked * a, vlc_ranked * b) {
    vlc_ranked t = *a;
    *a = *b;
    *b = t;
}

// Reorders x [n] so that x[0 .. k) are the k first elements in ranked order (in any order).
// Quickselect (median of three, Hoare partition) with a sort as the depth-limited fallback.
static void select_first(vlc_ranked * x, int64_t n, int64_t k) {
    if (k <= 0 || k >= n) {
        return;
    }
    int64_t lo = 0, hi = n; // invariant: [0, lo) < [lo, hi) < [hi, n) and lo <= k <= hi
    int depth = 8;
    for (int64_t t = n; t > 1; t >>= 1) {
        depth += 2;
    }
    while (hi - lo > 16 && lo < k && k < hi) {
        if (depth-- == 0) {
            break;
        }
        int64_t mid = lo + (hi - lo) / 2;
        if (ranked_before(&x[mid], &x[lo]))    ranked_swap(&x[mid], &x[lo]);
        if (ranked_before(&x[hi - 1], &x[lo])) ranked_swap(&x[hi - 1], &x[lo]);
        if (ranked_before(&x[hi - 1], &x[mid])) ranked_swap(&x[hi - 1], &x[mid]);
        const vlc_ranked p = x[mid]; // x[lo] < p < x[hi - 1]: both parts are non-empty
        int64_t i = lo - 1, j = hi;
        for (;;) {
            do { i++; } while (ranked_before(&x[i], &p));
            do { j--; } while (ranked_before(&p, &x[j]));
            if (i >= j) {
                break;
            }
            ranked_swap(&x[i], &x[j]);
        }
        // [lo, j] <= p <= [j + 1, hi)
        if (k <= j + 1) {
            hi = j + 1;
        } else {
            lo = j + 1;
        }
    }
    if (lo < k && k < hi) {
        qsort(x + lo, (size_t) (hi - lo), sizeof(vlc_ranked), ranked_cmp);
    }
}

// ---------------------------------------------------------------------------
// budgets (kvref: total_budget, largest_remainder, water_fill, the *_budgets)

// T = clamp(floor(alpha * (L * m) + 0.5), L, L * m)
static int64_t total_budget(double alpha, int64_t L, int64_t m) {
    const int64_t Lm = L * m;
    double t = floor(alpha * (double) Lm + 0.5);
    if (t < (double) L)  t = (double) L;
    if (t > (double) Lm) t = (double) Lm;
    return (int64_t) t;
}

// ceil(recent_frac * k - 1e-9), at most k; 0 when recent_frac == 0
static int64_t recent_window(int64_t k, double recent_frac) {
    if (!(recent_frac > 0.0)) {
        return 0;
    }
    const double w = ceil(recent_frac * (double) k - VLC_KV_EPS);
    return w < (double) k ? (int64_t) w : k;
}

typedef struct vlc_frac {
    double  frac;
    int64_t idx;
} vlc_frac;

static int frac_cmp(const void * pa, const void * pb) { // frac desc, then index asc
    const vlc_frac * a = pa;
    const vlc_frac * b = pb;
    if (a->frac != b->frac) {
        return a->frac > b->frac ? -1 : 1;
    }
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

// k [n]: floor(t_i), then the total - sum floor missing units to the largest fractional
// parts (ties to the lower index). fr: scratch [n].
static vlc_status largest_remainder(const double * t, int64_t n, int64_t total, int64_t * k, vlc_frac * fr) {
    int64_t sum = 0;
    for (int64_t i = 0; i < n; i++) {
        k[i] = (int64_t) floor(t[i]);
        sum += k[i];
    }
    const int64_t R = total - sum;
    if (R < 0 || R > n) {
        return VLC_ERR(VLC_STATUS_INTERNAL, "targets (sum of floors %lld) far from the total %lld",
                       (long long) sum, (long long) total);
    }
    for (int64_t i = 0; i < n; i++) {
        fr[i].frac = t[i] - (double) k[i];
        fr[i].idx  = i;
    }
    qsort(fr, (size_t) n, sizeof(vlc_frac), frac_cmp);
    for (int64_t r = 0; r < R; r++) {
        k[fr[r].idx] += 1;
    }
    return VLC_STATUS_OK;
}

static int dbl_cmp(const void * pa, const void * pb) {
    const double a = *(const double *) pa;
    const double b = *(const double *) pb;
    return a < b ? -1 : a > b;
}

// Scratch of water_fill (views into one allocation).
typedef struct vlc_wf_scratch {
    double * w;       // [n] the weights (ones when all are zero)
    double * s_floor; // [n] below this s entry i sits at lo (inf for zero weights)
    double * s_cap;   // [n] from this s on entry i sits at hi (inf for zero weights)
    double * bp;      // [2n] sorted distinct breakpoints
    double * buf;     // [n] subsets compacted for np_sum
} vlc_wf_scratch;

// Sum over i of clip(s w_i, lo, hi), with the sets compared by breakpoints (kvref f(s)).
static double wf_f(const vlc_wf_scratch * ws, int64_t n, double s, double lo, double hi) {
    int64_t n_cap = 0, n_floor = 0, n_free = 0;
    for (int64_t i = 0; i < n; i++) {
        const int capped = ws->s_cap[i] <= s;
        const int floored = ws->s_floor[i] >= s;
        n_cap += capped;
        n_floor += floored;
        if (!capped && !floored) {
            ws->buf[n_free++] = ws->w[i];
        }
    }
    return (double) n_cap * hi + (double) n_floor * lo + s * np_sum(ws->buf, n_free);
}

// t [n] real, t_i = clip(s w_i, lo, hi) with sum t == total (kvref.water_fill, step by step).
static void water_fill(const double * weights, int64_t n, int64_t total, double lo, double hi, double * t,
                       vlc_wf_scratch * ws) {
    double * w = ws->w;
    int all_zero = 1;
    for (int64_t i = 0; i < n; i++) {
        all_zero &= weights[i] == 0.0;
    }
    for (int64_t i = 0; i < n; i++) {
        w[i] = all_zero ? 1.0 : weights[i];
    }
    const double tn = (double) total / (double) n;
    if (tn < lo) lo = tn;
    if (tn > hi) hi = tn;
    if (hi == lo) {
        for (int64_t i = 0; i < n; i++) {
            t[i] = lo;
        }
        return;
    }
    int64_t n_bp = 0;
    for (int64_t i = 0; i < n; i++) {
        if (w[i] > 0.0) {
            ws->s_floor[i] = lo / w[i];
            ws->s_cap[i]   = hi / w[i];
            ws->bp[n_bp++] = ws->s_floor[i];
            ws->bp[n_bp++] = ws->s_cap[i];
        } else {
            ws->s_floor[i] = INFINITY;
            ws->s_cap[i]   = INFINITY;
        }
    }
    qsort(ws->bp, (size_t) n_bp, sizeof(double), dbl_cmp);
    int64_t n_uniq = 0;
    for (int64_t i = 0; i < n_bp; i++) {
        if (n_uniq == 0 || ws->bp[i] != ws->bp[n_uniq - 1]) {
            ws->bp[n_uniq++] = ws->bp[i];
        }
    }
    // f(s) is continuous and nondecreasing; walk its breakpoints
    double s_lo = 0.0, s_hi = 0.0;
    int found = 0;
    for (int64_t b = 0; b < n_uniq; b++) {
        if (wf_f(ws, n, ws->bp[b], lo, hi) >= (double) total) {
            s_hi = ws->bp[b];
            found = 1;
            break;
        }
        s_lo = ws->bp[b];
    }
    if (!found) {
        // every weighted entry capped and the total still not reached: zero weights share the rest
        int64_t n_pos = 0, n_zero = 0;
        for (int64_t i = 0; i < n; i++) {
            t[i] = w[i] > 0.0 ? hi : lo;
            if (w[i] > 0.0) {
                ws->buf[n_pos++] = t[i];
            } else {
                n_zero++;
            }
        }
        if (n_zero > 0) {
            const double share = ((double) total - np_sum(ws->buf, n_pos)) / (double) n_zero;
            for (int64_t i = 0; i < n; i++) {
                if (!(w[i] > 0.0)) {
                    t[i] = share;
                }
            }
        }
        return;
    }
    // sets on (s_lo, s_hi]: capped, floored, free; free entries share what the others leave
    int64_t n_fixed = 0;
    int any_free = 0;
    for (int64_t i = 0; i < n; i++) {
        const int capped = ws->s_cap[i] <= s_lo;
        const int floored = ws->s_floor[i] >= s_hi;
        t[i] = capped ? hi : lo;
        if (capped || floored) {
            ws->buf[n_fixed++] = t[i];
        } else {
            any_free = 1;
        }
    }
    if (!any_free) {
        return;
    }
    const double rest = (double) total - np_sum(ws->buf, n_fixed);
    int64_t n_free = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!(ws->s_cap[i] <= s_lo) && !(ws->s_floor[i] >= s_hi)) {
            ws->buf[n_free++] = w[i];
        }
    }
    const double w_free = np_sum(ws->buf, n_free);
    for (int64_t i = 0; i < n; i++) {
        if (!(ws->s_cap[i] <= s_lo) && !(ws->s_floor[i] >= s_hi)) {
            t[i] = rest * w[i] / w_free;
        }
    }
}

// Scratch of the budget functions, for n entries.
typedef struct vlc_budget_scratch {
    vlc_wf_scratch wf;
    double *       in; // [n] the weights handed to apportion
    double *       t;  // [n] water_fill's real targets
    vlc_frac *     fr; // [n]
} vlc_budget_scratch;

// water_fill then largest_remainder: out [n] integers summing to total.
static vlc_status apportion(const double * weights, int64_t n, int64_t total, double lo, double hi,
                            vlc_budget_scratch * bs, int64_t * out) {
    water_fill(weights, n, total, lo, hi, bs->t, &bs->wf);
    return largest_remainder(bs->t, n, total, out, bs->fr);
}

// Every layer T // L, the T % L leftovers to the lowest layers.
static void uniform_budgets(double alpha, int64_t L, int64_t m, int64_t * out) {
    const int64_t T = total_budget(alpha, L, m);
    for (int64_t l = 0; l < L; l++) {
        out[l] = T / L + (l < T % L ? 1 : 0);
    }
}

// VL-Cache layer budgets from the sparsities gamma [L] (kvref.vlcache_budgets).
static vlc_status vlcache_budgets(const double * gamma, int64_t L, int64_t m, const vlc_kv_params * p,
                                  vlc_budget_scratch * bs, int64_t * out) {
    double * d = bs->in; // [L] densities
    for (int64_t l = 0; l < L; l++) {
        d[l] = 1.0 - gamma[l];
    }
    if (!p->exact_total) {
        // the paper's rule: beta_l = clip(d_l / sum(d) alpha L), k_l = floor(beta_l m); the total drifts
        const double Z = np_sum(d, L);
        for (int64_t l = 0; l < L; l++) {
            double beta = Z > 0.0 ? d[l] / Z * p->budget * (double) L : p->budget;
            if (beta < p->clip_lo) beta = p->clip_lo;
            if (beta > p->clip_hi) beta = p->clip_hi;
            double k = floor(beta * (double) m + VLC_KV_EPS);
            if (k < 1.0)        k = 1.0;
            if (k > (double) m) k = (double) m;
            out[l] = (int64_t) k;
        }
        return VLC_STATUS_OK;
    }
    const int64_t T = total_budget(p->budget, L, m);
    double lo = floor(p->clip_lo * (double) m + VLC_KV_EPS); // integer token bounds
    if (lo < 1.0) lo = 1.0;
    double hi = floor(p->clip_hi * (double) m + VLC_KV_EPS);
    if (hi < 1.0)        hi = 1.0;
    if (hi > (double) m) hi = (double) m;
    return apportion(d, L, T, lo, hi, bs, out);
}

// PyramidKV: linearly decreasing budgets summing to T (kvref.pyramid_budgets).
static vlc_status pyramid_budgets(double alpha, int64_t L, int64_t m, double beta, vlc_budget_scratch * bs,
                                  int64_t * out) {
    const int64_t T = total_budget(alpha, L, m);
    if (L == 1) {
        out[0] = T;
        return VLC_STATUS_OK;
    }
    const double C = (double) T / (double) L;
    double lo = C / beta;
    double hi = 2.0 * C - lo;
    if (hi > (double) m) {
        hi = (double) m;
        lo = 2.0 * C - hi;
    }
    double * line = bs->in; // [L] targets, layer 0 largest
    for (int64_t l = 0; l < L; l++) {
        line[l] = hi - (double) l * (hi - lo) / (double) (L - 1);
    }
    return apportion(line, L, T, 1.0, (double) m, bs, out);
}

// ---------------------------------------------------------------------------
// scores

// splitmix64 output c (c >= 1) of seed: mix(seed + c * golden)
static inline uint64_t splitmix64_at(uint64_t seed, uint64_t c) {
    uint64_t z = seed + c * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// out [m]: random scores of layer l, KV head h (top 53 bits of output (l Hkv + h) m + j + 1).
static void random_scores(uint64_t seed, int64_t l, int64_t h, int64_t Hkv, int64_t m, double * out) {
    const uint64_t base = ((uint64_t) l * (uint64_t) Hkv + (uint64_t) h) * (uint64_t) m;
    for (int64_t j = 0; j < m; j++) {
        out[j] = (double) (splitmix64_at(seed, base + (uint64_t) j + 1) >> 11);
    }
}

// out [m]: max of x over [j - kernel/2, j + kernel/2] clipped to [0, m) (monotone deque).
static void max_pool(const double * x, int64_t m, int32_t kernel, double * out, int64_t * dq) {
    const int64_t r = kernel / 2;
    int64_t head = 0, tail = 0, next = 0; // dq[head, tail): indices with decreasing values
    for (int64_t j = 0; j < m; j++) {
        const int64_t right = j + r < m - 1 ? j + r : m - 1;
        for (; next <= right; next++) {
            while (tail > head && x[dq[tail - 1]] <= x[next]) {
                tail--;
            }
            dq[tail++] = next;
        }
        while (dq[head] < j - r) {
            head++;
        }
        out[j] = x[dq[head]];
    }
}

// ---------------------------------------------------------------------------
// selection (kvref: select_top, streaming_keep, adakv_head_budgets)

// keep [m]: the last w positions plus the top (k - w) scores among the others (ties: lower
// position); everything when k >= m. rk: scratch [m].
static void select_top(const double * score, int64_t m, int64_t k, int64_t w, uint8_t * keep, vlc_ranked * rk) {
    if (k >= m) {
        memset(keep, 1, (size_t) m);
        return;
    }
    if (w > k) {
        w = k;
    }
    const int64_t cand = m - w;
    const int64_t n = k - w;
    memset(keep, 0, (size_t) cand);
    memset(keep + cand, 1, (size_t) w);
    if (n <= 0) {
        return;
    }
    for (int64_t j = 0; j < cand; j++) {
        rk[j].s   = score[j];
        rk[j].key = j;
    }
    select_first(rk, cand, n);
    for (int64_t i = 0; i < n; i++) {
        keep[rk[i].key] = 1;
    }
}

// keep [m]: the first s tokens plus the last n_recent, n_recent = max(k - n_sink, recent window).
static void streaming_keep(int64_t m, int64_t k, int64_t n_sink, double recent_frac, uint8_t * keep) {
    if (k >= m) {
        memset(keep, 1, (size_t) m);
        return;
    }
    int64_t n_recent = k - n_sink;
    const int64_t w = recent_window(k, recent_frac);
    if (w > n_recent) {
        n_recent = w;
    }
    const int64_t s = k - n_recent;
    memset(keep, 0, (size_t) m);
    memset(keep, 1, (size_t) s);
    memset(keep + (m - n_recent), 1, (size_t) n_recent);
}

// nb [Hkv]: AdaKV per-head counts of scored tokens (window excluded) summing to Hkv (k - w).
// scores [Hkv, m] pooled; rk: scratch [Hkv m]; t [Hkv], fr [Hkv] scratch.
static vlc_status adakv_head_budgets(const double * scores, int64_t Hkv, int64_t m, int64_t k, int64_t w,
                                     double floor_alpha, int64_t * nb, vlc_ranked * rk, double * t, vlc_frac * fr) {
    const int64_t Bp = k - w;
    if (Bp <= 0) {
        for (int64_t h = 0; h < Hkv; h++) {
            nb[h] = 0;
        }
        return VLC_STATUS_OK;
    }
    const int64_t cand = m - w;
    int64_t n = 0;
    for (int64_t h = 0; h < Hkv; h++) {
        for (int64_t j = 0; j < cand; j++) {
            rk[n].s   = scores[h * m + j];
            rk[n].key = j * Hkv + h; // position asc, then head asc
            n++;
        }
    }
    const int64_t n_won = Hkv * Bp;
    select_first(rk, n, n_won);
    for (int64_t h = 0; h < Hkv; h++) {
        t[h] = 0.0;
    }
    for (int64_t i = 0; i < n_won; i++) {
        t[rk[i].key % Hkv] += 1.0;
    }
    const double keep_frac = 1.0 - floor_alpha;
    const double floor_part = floor_alpha * (double) Bp;
    for (int64_t h = 0; h < Hkv; h++) {
        t[h] = t[h] * keep_frac + floor_part;
    }
    return largest_remainder(t, Hkv, n_won, nb, fr);
}

// ---------------------------------------------------------------------------
// the planner

vlc_status vlc_kv_plan(const vlc_kv_params * params, int32_t n_layer, int32_t n_head_kv, int32_t n_prompt,
                       const double * sparsity, const double * scores, uint8_t * keep, int32_t * layer_budgets) {
    VLC_CHECK(params != NULL, VLC_STATUS_INVALID_ARG, "params is NULL");
    VLC_TRY(check_params(params));
    VLC_CHECK(n_layer > 0, VLC_STATUS_INVALID_ARG, "n_layer = %d, expected > 0", n_layer);
    VLC_CHECK(n_head_kv > 0, VLC_STATUS_INVALID_ARG, "n_head_kv = %d, expected > 0", n_head_kv);
    VLC_CHECK(n_prompt > 0, VLC_STATUS_INVALID_ARG, "m = %d, expected > 0", n_prompt);
    VLC_CHECK(keep != NULL, VLC_STATUS_INVALID_ARG, "keep is NULL");
    const int64_t      L = n_layer, Hkv = n_head_kv, m = n_prompt;
    const policy_row * P = policy_get(params->policy);
    VLC_CHECK(L * Hkv <= INT64_MAX / m && (uint64_t) (L * Hkv * m) <= SIZE_MAX / sizeof(vlc_ranked),
              VLC_STATUS_INVALID_ARG, "n_layer x n_head_kv x m = %lld x %lld x %lld is too large",
              (long long) L, (long long) Hkv, (long long) m);

    if (P->budget == BUDGET_SPARSITY) {
        VLC_CHECK(sparsity != NULL, VLC_STATUS_INVALID_ARG, "sparsity is NULL; policy %s needs the layer sparsities",
                  P->name);
        for (int64_t l = 0; l < L; l++) {
            VLC_CHECK(isfinite(sparsity[l]) && sparsity[l] >= 0.0 && sparsity[l] <= 1.0, VLC_STATUS_INVALID_ARG,
                      "sparsity[%lld] = %g, expected a fraction in [0, 1]", (long long) l, sparsity[l]);
        }
    }
    if (P->ranks_by >= 0) {
        VLC_CHECK(scores != NULL, VLC_STATUS_INVALID_ARG, "scores is NULL; policy %s needs per-key attention sums",
                  P->name);
        const int64_t n = L * Hkv * m;
        for (int64_t i = 0; i < n; i++) {
            VLC_CHECK(isfinite(scores[i]), VLC_STATUS_INVALID_ARG,
                      "scores[%lld][%lld][%lld] = %g, expected a finite number", (long long) (i / (Hkv * m)),
                      (long long) (i / m % Hkv), (long long) (i % m), scores[i]);
        }
    }

    // scratch: budget work [L], per-layer scores [Hkv m], ranking [m] or [Hkv m] (AdaKV)
    const int pooled = P->keep == KEEP_TOP_POOLED || P->keep == KEEP_ADAKV;
    const int own_scores = pooled || P->keep == KEEP_RANDOM;  // scores made here, per layer
    const int64_t n_rank = P->keep == KEEP_ADAKV ? Hkv * m : m;
    const int64_t n_hd = Hkv > L ? Hkv : L;
    double *     bwork = malloc((size_t) (8 * L) * sizeof(double));
    vlc_frac *   fr    = malloc((size_t) n_hd * sizeof(vlc_frac));
    int64_t *    kl    = malloc((size_t) L * sizeof(int64_t));
    int64_t *    nb    = malloc((size_t) Hkv * sizeof(int64_t));
    double *     ht    = malloc((size_t) Hkv * sizeof(double));
    vlc_ranked * rk    = malloc((size_t) n_rank * sizeof(vlc_ranked));
    double *     ls    = own_scores ? malloc((size_t) (Hkv * m) * sizeof(double)) : NULL;
    int64_t *    dq    = pooled ? malloc((size_t) m * sizeof(int64_t)) : NULL;
    vlc_status   st    = VLC_STATUS_OK;
    if (!bwork || !fr || !kl || !nb || !ht || !rk || (own_scores && !ls) || (pooled && !dq)) {
        st = VLC_ERR(VLC_STATUS_OOM, "scratch for m = %lld, n_layer = %lld, n_head_kv = %lld", (long long) m,
                     (long long) L, (long long) Hkv);
        goto done;
    }
    vlc_budget_scratch bs = {
        .wf = {.w = bwork, .s_floor = bwork + L, .s_cap = bwork + 2 * L, .bp = bwork + 3 * L, .buf = bwork + 5 * L},
        .in = bwork + 6 * L,
        .t  = bwork + 7 * L,
        .fr = fr,
    };

    // layer budgets k_l
    switch (P->budget) {
        case BUDGET_ALL:
            for (int64_t l = 0; l < L; l++) {
                kl[l] = m;
            }
            break;
        case BUDGET_SPARSITY:
            st = vlcache_budgets(sparsity, L, m, params, &bs, kl);
            break;
        case BUDGET_PYRAMID:
            st = pyramid_budgets(params->budget, L, m, params->pyramid_beta, &bs, kl);
            break;
        case BUDGET_UNIFORM:
            uniform_budgets(params->budget, L, m, kl);
            break;
    }
    if (st < 0) {
        goto done;
    }

    // kept positions per layer and KV head
    for (int64_t l = 0; l < L; l++) {
        const int64_t k = kl[l];
        const int64_t w = recent_window(k, params->recent_frac);
        uint8_t * keep_l = keep + (size_t) (l * Hkv * m);  // [Hkv, m]
        const double * sc_l = scores ? scores + (size_t) (l * Hkv * m) : NULL; // [Hkv, m]
        if (k >= m) {
            memset(keep_l, 1, (size_t) (Hkv * m));
            continue;
        }
        if (P->keep == KEEP_STREAMING) {
            for (int64_t h = 0; h < Hkv; h++) {
                streaming_keep(m, k, params->n_sink, params->recent_frac, keep_l + h * m);
            }
            continue;
        }
        const double * s = sc_l; // [Hkv, m] the scores ranked
        if (pooled) {
            for (int64_t h = 0; h < Hkv; h++) {
                max_pool(sc_l + h * m, m, params->pool_kernel, ls + h * m, dq);
            }
            s = ls;
        } else if (P->keep == KEEP_RANDOM) {
            for (int64_t h = 0; h < Hkv; h++) {
                random_scores(params->seed, l, h, Hkv, m, ls + h * m);
            }
            s = ls;
        }
        if (P->keep == KEEP_ADAKV) {
            st = adakv_head_budgets(s, Hkv, m, k, w, params->floor_alpha, nb, rk, ht, fr);
            if (st < 0) {
                goto done;
            }
            for (int64_t h = 0; h < Hkv; h++) {
                select_top(s + h * m, m, w + nb[h], w, keep_l + h * m, rk);
            }
        } else {
            for (int64_t h = 0; h < Hkv; h++) {
                select_top(s + h * m, m, k, w, keep_l + h * m, rk);
            }
        }
    }
    if (layer_budgets) {
        for (int64_t l = 0; l < L; l++) {
            layer_budgets[l] = (int32_t) kl[l];
        }
    }

done:
    free(bwork);
    free(fr);
    free(kl);
    free(nb);
    free(ht);
    free(rk);
    free(ls);
    free(dq);
    return st;
}
