// stats.h: the attention statistics gathered during prefill (VLCACHE.md §1.3-1.6, §3).
//
// Off by default. Up to three sets of query rows (vlc_attn_set, the public names), each
// with, per layer: the per-key sums of the attention weights over its rows (per KV head,
// summed over the group's query heads; accumulated in double from the f32 weights the
// attention uses) and, per query head, the count of causal weights >= p * (row max) with
// the number of causal entries. The attention keeps each covered row's final softmax
// (max, sum) in s->ml; vlc_stats_gather then revisits the keys of those rows, tile by
// tile, in tasks that each own one block of one KV head's entries: no row x key matrix,
// no shared writes, one summation order whatever the thread count or chunking.
// Rows are gathered as the forward passes reach them, across any number of calls and
// chunks; rows outside every set (decode steps after the window) cost nothing. They need
// an uncompressed cache, where entry index == position.
// Letters: L = n_layer, H = n_head, Hkv = n_head_kv, G = H / Hkv.
#pragma once

#include "kvcache.h"
#include "threads.h"
#include "vlcache.h"

#include <stddef.h>
#include <stdint.h>

enum { VLC_ATTN_N_SETS = 3 };  // VLC_ATTN_WINDOW, VLC_ATTN_H2O, VLC_ATTN_SNAPKV

typedef struct vlc_stats_set {
    int       on;
    int32_t   r0, r1;   // rows [r0, r1), absolute positions
    int32_t   rows;     // rows gathered so far
    int32_t   ld;       // entries per KV head in colsum (no row of the set sees more)
    double *  colsum;   // [L, Hkv, ld] per-key weight sums
    int64_t * count;    // [L, H] weights >= p * row max
    int64_t * total;    // [L] causal entries per query head
} vlc_stats_set;

typedef struct vlc_stats {
    int                   on;
    vlc_attn_stats_params prm;   // as enabled (for copies)
    int32_t               n_layer, n_head, n_head_kv;
    vlc_stats_set         set[VLC_ATTN_N_SETS];
    float *               ml;    // [n_batch, H, 2] final softmax (max, sum) of each chunk row and head
    int64_t *             cnt;   // [Hkv * nblk, G] per-task partial counts
    int32_t               nblk;  // most key blocks of one KV head
} vlc_stats;

// The one validation of a request, in the public names: NULL or a message-carrying
// VLC_STATUS_INVALID_ARG for a session at n_past of n_ctx positions.
vlc_status vlc_stats_check(const vlc_attn_stats_params * p, int32_t n_past, int32_t n_ctx, int compressed);

// Turns on the sets p asks for (p passed vlc_stats_check), zeroed, for rows run in chunks
// of at most n_batch; the buffers are allocated here, so that the forward pass allocates
// nothing. On VLC_STATUS_OOM s is off.
vlc_status vlc_stats_enable(vlc_stats * s, const vlc_attn_stats_params * p, int32_t n_ctx, int32_t n_batch,
                            int32_t n_layer, int32_t n_head, int32_t n_head_kv);
void       vlc_stats_free(vlc_stats * s);  // off, buffers freed
// dst, enabled with src's parameters and shape, gets src's sums and counts.
void       vlc_stats_copy(vlc_stats * dst, const vlc_stats * src);

// Whether some set gathers the row at position pos.
int  vlc_stats_covers(const vlc_stats * s, int32_t pos);
// Rows [*lo, *hi) of the chunk of T rows at p0 that some set covers (empty: *lo >= *hi).
void vlc_stats_chunk_rows(const vlc_stats * s, int32_t p0, int32_t T, int32_t * lo, int32_t * hi);

// After the attention of layer il over the chunk of T rows at p0 (queries q [T, H*D], the
// chunk's entries written to kv but not yet counted in its lengths, their (max, sum) in
// s->ml): every set with rows in the chunk gathers them. work: per-thread scratch of
// vlc_cpu_attn_stats_work_floats(D) floats at work_stride.
void vlc_stats_gather(vlc_stats * s, const vlc_kvcache * kv, int32_t il, int32_t p0, int32_t T, const float * q,
                      vlc_pool * pool, float * work, size_t work_stride);

// The set, when on; NULL when off or not a set.
const vlc_stats_set * vlc_stats_get(const vlc_stats * s, int set);
// Per-key sums of layer il of the set: [Hkv, ld] (entries past the rows' causal reach
// stay 0); NULL when the set is off.
const double * vlc_stats_colsum(const vlc_stats * s, int set, int32_t il);
// Layer sparsity, VLCACHE.md Eq. 2: mean over query heads h of 1 - count_h / total
// (double, heads in order); NAN when the set is off or no row was gathered.
double         vlc_stats_sparsity(const vlc_stats * s, int set, int32_t il);
