// stats.c: the attention statistics of chosen prefill rows (stats.h).
#include "stats.h"

#include "error.h"
#include "ops_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// Entries per gathering task: one task owns a block of one KV head's entries and visits
// the set's chunk rows in order, so every per-key sum is built in one fixed order.
enum { VLC_STATS_KBLK = 4 * VLC_ATTN_TILE };

vlc_status vlc_stats_check(const vlc_attn_stats_params * p, int32_t n_past, int32_t n_ctx, int compressed) {
    const int32_t end = p->window_end > 0 ? p->window_end : n_ctx;
    VLC_CHECK(isfinite(p->p) && p->p >= 0.0f && p->p <= 1.0f, VLC_STATUS_INVALID_ARG,
              "p = %g, expected a threshold in [0, 1]", p->p);
    VLC_CHECK(p->window_end >= 0 && p->window_end <= n_ctx, VLC_STATUS_INVALID_ARG,
              "window_end = %d, expected 0 (open) or 1 .. n_ctx = %d", p->window_end, n_ctx);
    VLC_CHECK(p->window_start >= n_past && p->window_start < end, VLC_STATUS_INVALID_ARG,
              "window_start = %d, expected n_past = %d (rows already run) .. %d (window_end - 1)", p->window_start,
              n_past, end - 1);
    VLC_CHECK(p->h2o == 0 || p->h2o == 1, VLC_STATUS_INVALID_ARG, "h2o = %d, expected 0 or 1", p->h2o);
    VLC_CHECK(!p->h2o || (p->window_end > 0 && n_past == 0), VLC_STATUS_INVALID_ARG,
              "h2o needs window_end > 0 (got %d) and an empty cache (n_past = %d)", p->window_end, n_past);
    VLC_CHECK(p->snapkv_window >= 0 &&
                  (p->snapkv_window == 0 || (p->window_end > 0 && p->snapkv_window <= p->window_end - n_past)),
              VLC_STATUS_INVALID_ARG, "snapkv_window = %d, expected 0 (off) or 1 .. window_end - n_past = %d",
              p->snapkv_window, p->window_end > 0 ? p->window_end - n_past : 0);
    VLC_CHECK(!compressed, VLC_STATUS_INVALID_ARG,
              "the KV cache is compressed: statistics need every position (reset the session first)");
    return VLC_STATUS_OK;
}

void vlc_stats_free(vlc_stats * s) {
    for (int set = 0; set < VLC_ATTN_N_SETS; set++) {
        vlc_stats_set * ss = &s->set[set];
        free(ss->colsum);
        free(ss->count);
        free(ss->total);
    }
    free(s->ml);
    free(s->cnt);
    memset(s, 0, sizeof(*s));
}

vlc_status vlc_stats_enable(vlc_stats * s, const vlc_attn_stats_params * p, int32_t n_ctx, int32_t n_batch,
                            int32_t n_layer, int32_t n_head, int32_t n_head_kv) {
    vlc_stats_free(s);
    const int32_t w1                 = p->window_end > 0 ? p->window_end : n_ctx;
    const int32_t r0[VLC_ATTN_N_SETS] = { p->window_start, 0, w1 - p->snapkv_window };
    const int     on[VLC_ATTN_N_SETS] = { 1, p->h2o != 0, p->snapkv_window > 0 };
    const int64_t nh                 = (int64_t) n_layer * n_head_kv;
    const int32_t G                  = n_head / n_head_kv;
    s->n_layer   = n_layer;
    s->n_head    = n_head;
    s->n_head_kv = n_head_kv;
    s->nblk      = (w1 + VLC_STATS_KBLK - 1) / VLC_STATS_KBLK;
    const size_t ml_sz  = (size_t) n_batch * (size_t) n_head * 2 * sizeof(float);
    const size_t cnt_sz = (size_t) n_head_kv * (size_t) s->nblk * (size_t) G * sizeof(int64_t);
    s->ml               = malloc(ml_sz);
    s->cnt              = malloc(cnt_sz);
    int    ok           = s->ml && s->cnt;
    size_t total        = ml_sz + cnt_sz;
    for (int set = 0; set < VLC_ATTN_N_SETS && ok; set++) {
        if (!on[set]) {
            continue;
        }
        vlc_stats_set * ss = &s->set[set];
        *ss = (vlc_stats_set) { .on = 1, .r0 = r0[set], .r1 = w1, .ld = w1 };
        ss->colsum = calloc((size_t) nh * (size_t) w1, sizeof(double));
        ss->count  = calloc((size_t) n_layer * (size_t) n_head, sizeof(int64_t));
        ss->total  = calloc((size_t) n_layer, sizeof(int64_t));
        ok         = ss->colsum && ss->count && ss->total;
        total += (size_t) nh * (size_t) w1 * sizeof(double);
    }
    if (!ok) {
        vlc_stats_free(s);
        return VLC_ERR(VLC_STATUS_OOM, "cannot allocate the attention statistics (about %zu bytes for rows %d .. %d)",
                       total, p->window_start, w1);
    }
    s->prm = *p;
    s->on  = 1;
    return VLC_STATUS_OK;
}

void vlc_stats_copy(vlc_stats * dst, const vlc_stats * src) {
    for (int set = 0; set < VLC_ATTN_N_SETS && src->on; set++) {
        const vlc_stats_set * a = &src->set[set];
        vlc_stats_set *       b = &dst->set[set];
        if (!a->on) {
            continue;
        }
        memcpy(b->colsum, a->colsum, (size_t) src->n_layer * src->n_head_kv * (size_t) a->ld * sizeof(double));
        memcpy(b->count, a->count, (size_t) src->n_layer * (size_t) src->n_head * sizeof(int64_t));
        memcpy(b->total, a->total, (size_t) src->n_layer * sizeof(int64_t));
        b->rows = a->rows;
    }
}

int vlc_stats_covers(const vlc_stats * s, int32_t pos) {
    for (int set = 0; s->on && set < VLC_ATTN_N_SETS; set++) {
        const vlc_stats_set * ss = &s->set[set];
        if (ss->on && pos >= ss->r0 && pos < ss->r1) {
            return 1;
        }
    }
    return 0;
}

void vlc_stats_chunk_rows(const vlc_stats * s, int32_t p0, int32_t T, int32_t * lo, int32_t * hi) {
    *lo = T;
    *hi = 0;
    for (int set = 0; s->on && set < VLC_ATTN_N_SETS; set++) {
        const vlc_stats_set * ss = &s->set[set];
        const int32_t         sa = ss->r0 > p0 ? ss->r0 - p0 : 0;
        const int32_t         sb = ss->r1 - p0 < T ? ss->r1 - p0 : T;
        if (ss->on && sa < sb) {
            *lo = sa < *lo ? sa : *lo;
            *hi = sb > *hi ? sb : *hi;
        }
    }
}

// What the gathering tasks of one (layer, set, chunk rows [sa, sb)) read.
typedef struct gather_ctx {
    vlc_stats *         s;
    vlc_stats_set *     ss;
    const vlc_kvcache * kv;
    const float *       q;      // [T, H*D] the chunk's queries
    int32_t             il;
    int32_t             sa, sb;
    float *             work;
    size_t              work_stride;
} gather_ctx;

// Task = (KV head g, key block b): chunk rows [sa, sb) against entries [b * KBLK, (b + 1) * KBLK).
static void gather_task(void * ctx, int64_t task, int ith) {
    const gather_ctx *    c  = ctx;
    const vlc_stats *     s  = c->s;
    const vlc_stats_set * ss = c->ss;
    const int64_t         g = task / s->nblk, b = task % s->nblk;
    const int32_t         G = s->n_head / s->n_head_kv;
    const int64_t         D = c->kv->head_dim, HD = (int64_t) s->n_head * D;
    const vlc_kv_head *   h  = vlc_kv_at(c->kv, c->il, (int32_t) g);
    const int64_t         j0 = b * VLC_STATS_KBLK;
    const int64_t         j1 = j0 + VLC_STATS_KBLK < ss->ld ? j0 + VLC_STATS_KBLK : ss->ld;
    const int64_t         n0 = h->n + c->sa + 1;  // entries visible to the first row
    int64_t *             cnt = s->cnt + task * G;
    memset(cnt, 0, (size_t) G * sizeof(int64_t));
    if (j0 >= n0 + (c->sb - c->sa) - 1) {
        return;  // no row of the chunk reaches this block
    }
    double * cs = ss->colsum + ((int64_t) c->il * s->n_head_kv + g) * ss->ld + j0;
    vlc_cpu_attn_stats(cs, cnt, c->q + c->sa * HD + g * G * D, HD, c->sb - c->sa, n0,
                       s->ml + (c->sa * s->n_head + g * G) * 2, (int64_t) s->n_head * 2, G, h->k, c->kv->type, j0, j1,
                       c->kv->head_dim, 1.0f / sqrtf((float) D), s->prm.p, c->work + (size_t) ith * c->work_stride);
}

void vlc_stats_gather(vlc_stats * s, const vlc_kvcache * kv, int32_t il, int32_t p0, int32_t T, const float * q,
                      vlc_pool * pool, float * work, size_t work_stride) {
    const int32_t G  = s->n_head / s->n_head_kv;
    const int64_t nb = vlc_kv_at(kv, il, 0)->n;  // entries before the chunk
    const int64_t nt = (int64_t) s->n_head_kv * s->nblk;
    for (int set = 0; set < VLC_ATTN_N_SETS; set++) {
        vlc_stats_set * ss = &s->set[set];
        const int32_t   sa = ss->r0 > p0 ? ss->r0 - p0 : 0;
        const int32_t   sb = ss->r1 - p0 < T ? ss->r1 - p0 : T;
        if (!ss->on || sa >= sb) {
            continue;
        }
        gather_ctx c = { s, ss, kv, q, il, sa, sb, work, work_stride };
        vlc_pool_run(pool, gather_task, &c, nt);
        int64_t * cnt = ss->count + (int64_t) il * s->n_head;  // integer partials: any order, one sum
        for (int64_t t = 0; t < nt; t++) {
            for (int32_t gg = 0; gg < G; gg++) {
                cnt[(t / s->nblk) * G + gg] += s->cnt[t * G + gg];
            }
        }
        for (int32_t r = sa; r < sb; r++) {
            ss->total[il] += nb + r + 1;
        }
        if (il == 0) {
            ss->rows += sb - sa;
        }
    }
}

const vlc_stats_set * vlc_stats_get(const vlc_stats * s, int set) {
    return s && s->on && set >= 0 && set < VLC_ATTN_N_SETS && s->set[set].on ? &s->set[set] : NULL;
}

const double * vlc_stats_colsum(const vlc_stats * s, int set, int32_t il) {
    const vlc_stats_set * ss = vlc_stats_get(s, set);
    if (!ss || il < 0 || il >= s->n_layer) {
        return NULL;
    }
    return ss->colsum + (int64_t) il * s->n_head_kv * ss->ld;
}

double vlc_stats_sparsity(const vlc_stats * s, int set, int32_t il) {
    const vlc_stats_set * ss = vlc_stats_get(s, set);
    if (!ss || il < 0 || il >= s->n_layer || ss->total[il] == 0) {
        return NAN;
    }
    const int64_t * cnt = ss->count + (int64_t) il * s->n_head;
    double          sum = 0.0;
    for (int32_t h = 0; h < s->n_head; h++) {
        sum += 1.0 - (double) cnt[h] / (double) ss->total[il];
    }
    return sum / s->n_head;
}
