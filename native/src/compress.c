// compress.c: VL-Cache's steps D-E for one session: the attention statistics gathered
// during prefill (stats.c) -> a plan of what each layer and KV head keeps (vlc_kv_plan,
// kvpolicy.c) -> the compaction of the cache (kvcache.c), with the byte counts before and
// after. Every check and allocation comes before the compaction, so a failed call
// leaves the session as it was.
#include "error.h"
#include "kvcache.h"
#include "model.h"
#include "stats.h"

#include <stdlib.h>
#include <string.h>

static const char * const set_names[VLC_ATTN_N_SETS] = { "post-vision window", "H2O (every row)",
                                                         "SnapKV (last rows)" };

// Statistics set ss covers its rows up to the prompt's end m.
static vlc_status check_rows(const vlc_stats_set * ss, int set, int32_t m) {
    VLC_CHECK(ss != NULL, VLC_STATUS_INVALID_ARG,
              "this policy ranks tokens by the %s attention statistics, which were not gathered: turn them on "
              "before the prompt's prefill (vlc_session_set_attn_stats; in Python, Session.prefill(kv_stats=...))",
              set_names[set]);
    const int32_t end = ss->r1 < m ? ss->r1 : m;
    VLC_CHECK(ss->rows == end - ss->r0, VLC_STATUS_INVALID_ARG,
              "the %s statistics cover %d of the rows %d .. %d: prefill the whole prompt before compressing",
              set_names[set], ss->rows, ss->r0, end - 1);
    return VLC_STATUS_OK;
}

vlc_status vlc_text_state_compress(vlc_text_state * st, const vlc_kv_params * p, int32_t * layer_budgets,
                                   vlc_compress_report * out) {
    const vlc_kvcache * kv     = vlc_text_state_kv(st);
    const vlc_stats *   stats  = vlc_text_state_stats(st);
    const int32_t       n_past = vlc_text_state_n_past(st), n_ctx = vlc_text_state_n_ctx(st);
    const int32_t       L = kv->n_layer, Hkv = kv->n_head_kv;
    VLC_CHECK(n_past > 0, VLC_STATUS_INVALID_ARG, "nothing to compress: the session is empty (prefill a prompt first)");
    VLC_CHECK(!kv->compressed, VLC_STATUS_INVALID_ARG,
              "the KV cache is already compressed; reset the session and prefill again to compress it differently");
    const int32_t needs = vlc_kv_policy_needs(p->policy);
    VLC_CHECK(needs >= 0, VLC_STATUS_INVALID_ARG, "policy = %d, expected a vlc_kv_policy 0 .. %d", p->policy,
              VLC_KV_N_POLICIES - 1);
    VLC_CHECK(p->decode_room >= -1, VLC_STATUS_INVALID_ARG, "decode_room = %d, expected >= 0 or -1 (up to n_ctx)",
              p->decode_room);

    // the prompt: the statistics' rows end there (the window set is on whenever any is)
    const vlc_stats_set * win = vlc_stats_get(stats, VLC_ATTN_WINDOW);
    const int32_t         m   = win && win->r1 < n_past ? win->r1 : n_past;
    for (int set = 0; set < VLC_ATTN_N_SETS; set++) {
        if (needs & (1 << set)) {
            VLC_TRY(check_rows(vlc_stats_get(stats, set), set, m));
        }
    }

    const size_t nk       = (size_t) L * (size_t) Hkv * (size_t) m;
    double *     sparsity = NULL;
    double *     scores   = NULL;
    uint8_t *    keep     = malloc(nk);
    int32_t *    budgets  = malloc((size_t) L * sizeof(int32_t));
    vlc_status   rc       = keep && budgets ? VLC_STATUS_OK
                                            : VLC_ERR(VLC_STATUS_OOM, "cannot allocate the plan (%zu entries)", nk);
    if (rc == VLC_STATUS_OK && (needs & (1 << VLC_ATTN_WINDOW))) {
        sparsity = malloc((size_t) L * sizeof(double));
        rc = sparsity ? VLC_STATUS_OK : VLC_ERR(VLC_STATUS_OOM, "cannot allocate %d sparsities", L);
        for (int32_t il = 0; rc == VLC_STATUS_OK && il < L; il++) {
            sparsity[il] = vlc_stats_sparsity(stats, VLC_ATTN_WINDOW, il);
        }
    }
    // scores [L, Hkv, m]: the sums of the set that ranks the policy's tokens
    const int set = vlc_kv_policy_ranks_by(p->policy);
    if (rc == VLC_STATUS_OK && set >= 0) {
        scores = malloc(nk * sizeof(double));
        rc = scores ? VLC_STATUS_OK : VLC_ERR(VLC_STATUS_OOM, "cannot allocate %zu scores", nk);
        const int32_t ld = rc == VLC_STATUS_OK ? vlc_stats_get(stats, set)->ld : 0;
        for (int32_t il = 0; rc == VLC_STATUS_OK && il < L; il++) {
            const double * cs = vlc_stats_colsum(stats, set, il);  // [Hkv, ld], ld >= m
            for (int32_t g = 0; g < Hkv; g++) {
                memcpy(scores + ((size_t) il * Hkv + g) * m, cs + (size_t) g * ld, (size_t) m * sizeof(double));
            }
        }
    }
    if (rc == VLC_STATUS_OK) {
        rc = vlc_kv_plan(p, L, Hkv, m, sparsity, scores, keep, budgets);
    }
    const uint64_t before = kv->bytes;
    if (rc == VLC_STATUS_OK) {
        const int32_t left = n_ctx - n_past;
        const int32_t room = p->decode_room < 0 || p->decode_room > left ? left : p->decode_room;
        rc = vlc_text_state_compact(st, keep, m, room);
    }
    if (rc == VLC_STATUS_OK) {
        int64_t total = 0;
        for (size_t i = 0; i < nk; i++) {
            total += keep[i];
        }
        if (layer_budgets) {
            memcpy(layer_budgets, budgets, (size_t) L * sizeof(int32_t));
        }
        if (out) {
            *out = (vlc_compress_report) {
                .n_prompt = m, .total = total, .kv_bytes_before = before, .kv_bytes_after = kv->bytes,
            };
        }
    }
    free(keep);
    free(budgets);
    free(sparsity);
    free(scores);
    return rc;
}
