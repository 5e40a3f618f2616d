// text.c: the Llama decoder's session state and forward pass on the CPU.
//
// Is: the KV cache (one buffer per layer and KV head, with its own length and the
// original position of every entry, so that a later compression can shrink each head
// independently), one scratch slab sized at create from n_batch, the thread pool, and
// vlc_text_forward: embed -> L x (RMSNorm, Q/K/V, RoPE, causal GQA attention, Wo +
// residual, RMSNorm, SwiGLU MLP + residual) -> final RMSNorm -> logits of the rows asked
// for. Prefill runs in chunks of n_batch tokens; decode is the same path with n = 1.
// Also: KV compaction (VL-Cache: keep the entries a policy chose, per layer and KV head)
// and the attention statistics of chosen query rows (model.h, sections below).
// Is not: the kernels themselves (ops_cpu.c), argument checks of the public API (api.c),
// the policies (kvpolicy.c). An uncompressed cache holds n_ctx entries per head from
// create on; a compacted head grows (1.5x, up to what the context can still take) when
// a forward pass needs more room, before anything runs.
// Letters: T = tokens of a chunk (<= B = n_batch), C = n_embd, H = n_head,
// Hkv = n_head_kv, G = H / Hkv, D = head_dim, F = n_ff, V = n_vocab, L = n_layer.
#include "model.h"

#include "error.h"
#include "ops_cpu.h"
#include "ops_qsimd.h"
#include "ops_simd.h"
#include "quant.h"
#include "threads.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

enum { VLC_MAX_CTX = 1 << 20 };

// ---------------------------------------------------------------------------
// state

// One KV head of one layer. Entries are kept in position order; entry i holds the key
// (already rotated by RoPE at pos[i]) and value of the token at original position pos[i].
typedef struct vlc_kv_head {
    void *    k;    // [cap, D] of type_kv
    void *    v;    // [cap, D] of type_kv
    int32_t * pos;  // [cap] original position of each entry
    int32_t   n;    // entries in use
    int32_t   cap;
} vlc_kv_head;

// One set of query rows whose attention statistics are gathered (model.h).
typedef struct vlc_stats_set {
    int       on;
    int32_t   r0, r1;   // rows [r0, r1), absolute positions
    int32_t   rows;     // rows gathered so far
    int32_t   ld;       // entries per KV head in colsum (no row in the set sees more)
    double *  colsum;   // [L, Hkv, ld] per-key weight sums
    int64_t * count;    // [L, H] weights >= p * row max
    int64_t * total;    // [L] causal entries per query head
} vlc_stats_set;

struct vlc_text_state {
    const vlc_model * m;
    int32_t           n_ctx;
    int32_t           n_batch;     // B
    int32_t           n_threads;
    uint32_t          type_kv;     // VLC_TYPE_F16 or VLC_TYPE_F32
    int32_t           n_past;      // tokens run so far = position of the next token

    vlc_kv_head *     kv;          // [L, Hkv]
    uint64_t          kv_bytes;    // bytes allocated for K, V and positions
    int               compressed;  // set by vlc_text_state_compact, cleared by reset

    vlc_pool *        pool;

    const float **    norm;        // [2L + 1] f32 views: attn_norm at 2l, ffn_norm at 2l+1, output_norm at 2L
    float *           norm_f32;    // [2L + 1, C] converted norms when the file's are not F32, else NULL

    float *           slab;        // everything below points into it
    float *           x;           // [B, C]    residual stream
    float *           xn;          // [B, C]    normalised input of a sub-block
    float *           q;           // [B, H*D]
    float *           k;           // [B, Hkv*D]
    float *           v;           // [B, Hkv*D]
    float *           att;         // [B, H*D]  attention output, heads concatenated
    float *           gate;        // [B, F]
    float *           up;          // [B, F]
    float *           rope;        // [B, D]    (cos, sin) pairs per position of the chunk
    float *           work;        // [n_threads, work_stride] per-thread kernel scratch
    size_t            work_stride; // floats
    float *           logits;      // [V] logits of the last position run
    void *            xq[3];       // [B, act row bytes] matmul inputs quantized for the block
                                   // weight types, per vlc_act_kind (NULL when no weight needs it)
    void *            xlaid;       // [VLC_QMM_TASK_MIN_TOK, laid bytes] the Q8A rows of a decode
                                   // step laid out once for the row kernels (vlc_qact_lay)
    int               has_logits;

    // attention statistics (all NULL / off unless vlc_text_state_set_stats enabled them)
    int               stats_on;
    vlc_stats_params  stats_prm;   // as given to vlc_text_state_set_stats (for clone)
    float             stats_p;
    vlc_stats_set     stats[VLC_STATS_N_SETS];
    float *           stats_ml;    // [B, H, 2] final softmax (max, sum) of each chunk row and head
    int64_t *         stats_cnt;   // [Hkv * stats_nblk, G] per-task partial counts
    int32_t           stats_nblk;  // most key blocks of one KV head
};

static void stats_free(vlc_text_state * st);

static size_t round16(size_t n) {
    return (n + 15) & ~(size_t) 15;  // keep every sub-buffer 64-byte aligned
}

static void kv_free(vlc_text_state * st) {
    if (!st->kv) {
        return;
    }
    const int64_t n = (int64_t) st->m->hp.n_layer * st->m->hp.n_head_kv;
    for (int64_t i = 0; i < n; i++) {
        free(st->kv[i].k);
        free(st->kv[i].v);
        free(st->kv[i].pos);
    }
    free(st->kv);
    st->kv       = NULL;
    st->kv_bytes = 0;
}

// Bytes one KV head holds per entry: key, value and position.
static size_t kv_entry_bytes(const vlc_text_state * st) {
    return 2 * (size_t) st->m->hp.head_dim * vlc_type_size(st->type_kv) + sizeof(int32_t);
}

// New buffers of cap entries for *h (old ones untouched); 0 when an allocation failed.
static int kv_head_alloc(const vlc_text_state * st, vlc_kv_head * h, int32_t cap) {
    const size_t kv_sz = (size_t) cap * (size_t) st->m->hp.head_dim * vlc_type_size(st->type_kv);
    h->k   = malloc(kv_sz ? kv_sz : 1);
    h->v   = malloc(kv_sz ? kv_sz : 1);
    h->pos = malloc(cap ? (size_t) cap * sizeof(int32_t) : 1);
    h->n   = 0;
    h->cap = cap;
    if (!h->k || !h->v || !h->pos) {
        free(h->k);
        free(h->v);
        free(h->pos);
        memset(h, 0, sizeof(*h));
        return 0;
    }
    return 1;
}

static vlc_status kv_alloc(vlc_text_state * st) {
    const vlc_hparams * hp    = &st->m->hp;
    const int64_t       n     = (int64_t) hp->n_layer * hp->n_head_kv;
    const uint64_t      total = (uint64_t) n * (uint64_t) st->n_ctx * kv_entry_bytes(st);

    st->kv = calloc((size_t) n, sizeof(vlc_kv_head));
    VLC_CHECK(st->kv != NULL, VLC_STATUS_OOM, "cannot allocate %" PRId64 " KV head records", n);
    for (int64_t i = 0; i < n; i++) {
        if (!kv_head_alloc(st, &st->kv[i], st->n_ctx)) {
            kv_free(st);
            return VLC_ERR(VLC_STATUS_OOM,
                           "cannot allocate the KV cache: %llu bytes (%d layers x %d KV heads x %d positions x %d dims, %s)",
                           (unsigned long long) total, hp->n_layer, hp->n_head_kv, st->n_ctx, hp->head_dim,
                           st->type_kv == VLC_TYPE_F16 ? "f16" : "f32");
        }
    }
    st->kv_bytes = total;
    return VLC_STATUS_OK;
}

// Makes room for n more entries in every KV head (only a compacted head can lack it):
// a short head grows to max(n_needed, 1.5 x cap), at most what the context can still
// take. On VLC_STATUS_OOM the heads already grown keep their (valid, larger) buffers.
static vlc_status kv_reserve(vlc_text_state * st, int32_t n) {
    const vlc_hparams * hp   = &st->m->hp;
    const int64_t       nh   = (int64_t) hp->n_layer * hp->n_head_kv;
    const size_t        row  = (size_t) hp->head_dim * vlc_type_size(st->type_kv);
    const int64_t       room = (int64_t) st->n_ctx - st->n_past;  // positions the context can still take
    for (int64_t i = 0; i < nh; i++) {
        vlc_kv_head * h    = &st->kv[i];
        const int64_t need = (int64_t) h->n + n;
        if (need <= h->cap) {
            continue;
        }
        int64_t cap = (int64_t) h->cap + h->cap / 2;
        cap         = cap < need ? need : cap;
        cap         = cap > h->n + room ? h->n + room : cap;
        void *    k   = realloc(h->k, (size_t) cap * row);
        if (k) {
            h->k = k;
        }
        void *    v   = k ? realloc(h->v, (size_t) cap * row) : NULL;
        if (v) {
            h->v = v;
        }
        int32_t * pos = v ? realloc(h->pos, (size_t) cap * sizeof(int32_t)) : NULL;
        if (!pos) {
            return VLC_ERR(VLC_STATUS_OOM, "cannot grow KV head %" PRId64 " of layer %" PRId64 " to %" PRId64 " entries",
                           i % hp->n_head_kv, i / hp->n_head_kv, cap);
        }
        h->pos = pos;
        st->kv_bytes += (uint64_t) (cap - h->cap) * kv_entry_bytes(st);
        h->cap = (int32_t) cap;
    }
    return VLC_STATUS_OK;
}

static vlc_status norms_init(vlc_text_state * st) {
    const vlc_model *   m  = st->m;
    const vlc_hparams * hp = &m->hp;
    const int32_t       nn = 2 * hp->n_layer + 1;
    st->norm = calloc((size_t) nn, sizeof(float *));
    VLC_CHECK(st->norm != NULL, VLC_STATUS_OOM, "cannot allocate %d norm views", nn);
    int all_f32 = m->output_norm.type == VLC_TYPE_F32;
    for (int32_t il = 0; il < hp->n_layer; il++) {
        all_f32 &= m->layers[il].attn_norm.type == VLC_TYPE_F32 && m->layers[il].ffn_norm.type == VLC_TYPE_F32;
    }
    if (!all_f32) {
        const size_t bytes = (size_t) nn * (size_t) hp->n_embd * sizeof(float);
        st->norm_f32 = malloc(bytes);
        VLC_CHECK(st->norm_f32 != NULL, VLC_STATUS_OOM, "cannot allocate %zu bytes for f32 norm weights", bytes);
    }
    for (int32_t i = 0; i < nn; i++) {
        const vlc_weight * w = i == nn - 1 ? &m->output_norm
                             : (i % 2 == 0 ? &m->layers[i / 2].attn_norm : &m->layers[i / 2].ffn_norm);
        if (w->type == VLC_TYPE_F32) {
            st->norm[i] = w->data;
        } else {
            float * dst = st->norm_f32 + (size_t) i * (size_t) hp->n_embd;
            vlc_cpu_to_f32(dst, w->data, w->type, hp->n_embd);
            st->norm[i] = dst;
        }
    }
    return VLC_STATUS_OK;
}

// Fewer tokens than this run a matmul as a decode step: activations quantized (and laid
// out) on the calling thread, a few long row ranges per thread.
enum { VLC_QMM_TASK_MIN_TOK = 16 };

// The widest matmul input of the decoder: n_embd, n_head * head_dim or n_ff.
static int64_t max_matmul_in(const vlc_hparams * hp) {
    const int64_t HD = (int64_t) hp->n_head * hp->head_dim;
    const int64_t m  = hp->n_embd > HD ? hp->n_embd : HD;
    return m > hp->n_ff ? m : hp->n_ff;
}

// The buffer for the activations of weight w, quantized once per matmul job (one per
// activation kind, rows as wide as any matmul input); nothing for float weights.
static vlc_status xq_need(vlc_text_state * st, const vlc_weight * w) {
    const int kind = vlc_act_kind(w->type);
    if (!kind || st->xq[kind]) {
        return VLC_STATUS_OK;
    }
    const size_t bytes = (size_t) st->n_batch * vlc_act_row_bytes(w->type, max_matmul_in(&st->m->hp));
    st->xq[kind]       = aligned_alloc(64, (bytes + 63) & ~(size_t) 63);
    VLC_CHECK(st->xq[kind] != NULL, VLC_STATUS_OOM, "cannot allocate %zu bytes of quantized activations", bytes);
    if (kind == VLC_ACT_Q8A) {
        const size_t lb = (size_t) VLC_QMM_TASK_MIN_TOK * vlc_qact_laid_bytes(w->type, max_matmul_in(&st->m->hp));
        st->xlaid       = aligned_alloc(64, (lb + 63) & ~(size_t) 63);
        VLC_CHECK(st->xlaid != NULL, VLC_STATUS_OOM, "cannot allocate %zu bytes of decode activations", lb);
    }
    return VLC_STATUS_OK;
}

static vlc_status xq_alloc(vlc_text_state * st) {
    const vlc_model * m = st->m;
    VLC_TRY(xq_need(st, &m->output));
    for (int32_t il = 0; il < m->hp.n_layer; il++) {
        const vlc_layer * L = &m->layers[il];
        const vlc_weight * ws[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
        for (size_t i = 0; i < sizeof(ws) / sizeof(ws[0]); i++) {
            VLC_TRY(xq_need(st, ws[i]));
        }
    }
    return VLC_STATUS_OK;
}

static vlc_status slab_alloc(vlc_text_state * st) {
    const vlc_hparams * hp = &st->m->hp;
    const size_t B = (size_t) st->n_batch, C = (size_t) hp->n_embd, F = (size_t) hp->n_ff;
    const size_t D = (size_t) hp->head_dim, HD = (size_t) hp->n_head * D, KD = (size_t) hp->n_head_kv * D;
    const int32_t G = hp->n_head / hp->n_head_kv;

    size_t ws     = (size_t) VLC_MATMUL_ROWS * (size_t) max_matmul_in(hp);
    size_t wa     = vlc_cpu_attn_work_floats(G, hp->head_dim);
    size_t wst    = vlc_cpu_attn_stats_work_floats(hp->head_dim);
    wa            = wa > wst ? wa : wst;
    st->work_stride = round16(ws > wa ? ws : wa);

    const size_t sizes[] = {
        round16(B * C), round16(B * C), round16(B * HD), round16(B * KD), round16(B * KD),
        round16(B * HD), round16(B * F), round16(B * F), round16(B * D),
        st->work_stride * (size_t) st->n_threads, round16((size_t) hp->n_vocab),
    };
    float ** ptrs[] = { &st->x, &st->xn, &st->q, &st->k, &st->v, &st->att, &st->gate, &st->up, &st->rope,
                        &st->work, &st->logits };
    size_t total = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        total += sizes[i];
    }
    st->slab = aligned_alloc(64, total * sizeof(float));
    VLC_CHECK(st->slab != NULL, VLC_STATUS_OOM, "cannot allocate the session scratch: %zu bytes (n_batch = %d, %d threads)",
              total * sizeof(float), st->n_batch, st->n_threads);
    size_t off = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        *ptrs[i] = st->slab + off;
        off += sizes[i];
    }
    return VLC_STATUS_OK;
}

vlc_status vlc_text_state_create(const vlc_model * m, const vlc_session_params * p, vlc_text_state ** out) {
    VLC_CHECK(out != NULL, VLC_STATUS_INVALID_ARG, "out is NULL");
    *out = NULL;
    VLC_CHECK(m != NULL && m->layers != NULL, VLC_STATUS_INVALID_ARG, "model is NULL or has no weights bound");
    vlc_session_params prm = { 0, 512, 0, VLC_TYPE_F16 };
    if (p) {
        prm = *p;
    }
    const vlc_hparams * hp = &m->hp;

    int32_t n_ctx = prm.n_ctx == 0 ? hp->n_ctx_train : prm.n_ctx;
    VLC_CHECK(n_ctx > 0 && n_ctx <= VLC_MAX_CTX, VLC_STATUS_INVALID_ARG,
              "n_ctx = %d%s, expected 1 .. %d", n_ctx, prm.n_ctx == 0 ? " (the model's training context)" : "",
              VLC_MAX_CTX);
    VLC_CHECK(prm.n_batch >= 0, VLC_STATUS_INVALID_ARG, "n_batch = %d, expected >= 0 (0 = 512)", prm.n_batch);
    int32_t n_batch = prm.n_batch == 0 ? 512 : prm.n_batch;
    n_batch         = n_batch > n_ctx ? n_ctx : n_batch;
    VLC_CHECK(prm.n_threads >= 0 && prm.n_threads <= 1024, VLC_STATUS_INVALID_ARG,
              "n_threads = %d, expected 0 .. 1024 (0 = all cores)", prm.n_threads);
    int32_t n_threads = prm.n_threads == 0 ? vlc_n_cpus() : prm.n_threads;
    VLC_CHECK(prm.type_kv == VLC_TYPE_F16 || prm.type_kv == VLC_TYPE_F32, VLC_STATUS_INVALID_ARG,
              "type_kv = %d, expected VLC_TYPE_F16 (%d) or VLC_TYPE_F32 (%d)", prm.type_kv, VLC_TYPE_F16,
              VLC_TYPE_F32);

    vlc_text_state * st = calloc(1, sizeof(*st));
    VLC_CHECK(st != NULL, VLC_STATUS_OOM, "cannot allocate the text state (%zu bytes)", sizeof(*st));
    st->m         = m;
    st->n_ctx     = n_ctx;
    st->n_batch   = n_batch;
    st->n_threads = n_threads;
    st->type_kv   = (uint32_t) prm.type_kv;

    vlc_status s = kv_alloc(st);
    if (s == VLC_STATUS_OK) {
        s = norms_init(st);
    }
    if (s == VLC_STATUS_OK) {
        s = slab_alloc(st);
    }
    if (s == VLC_STATUS_OK) {
        s = xq_alloc(st);
    }
    if (s == VLC_STATUS_OK) {
        s = vlc_pool_create(n_threads, &st->pool);
    }
    if (s != VLC_STATUS_OK) {
        vlc_text_state_free(st);
        return s;
    }
    *out = st;
    return VLC_STATUS_OK;
}

void vlc_text_state_free(vlc_text_state * st) {
    if (!st) {
        return;
    }
    vlc_pool_free(st->pool);
    stats_free(st);
    kv_free(st);
    free(st->norm);
    free(st->norm_f32);
    free(st->slab);
    for (int i = 0; i < 3; i++) {
        free(st->xq[i]);
    }
    free(st->xlaid);
    free(st);
}

void vlc_text_state_reset(vlc_text_state * st) {
    if (!st) {
        return;
    }
    const int64_t n = (int64_t) st->m->hp.n_layer * st->m->hp.n_head_kv;
    for (int64_t i = 0; i < n; i++) {
        st->kv[i].n = 0;
    }
    st->n_past     = 0;
    st->has_logits = 0;
    st->compressed = 0;  // compacted heads keep their buffers and grow again as needed
    stats_free(st);
}

int32_t vlc_text_state_n_past(const vlc_text_state * st) { return st ? st->n_past : 0; }
int32_t vlc_text_state_n_ctx(const vlc_text_state * st) { return st ? st->n_ctx : 0; }
uint64_t vlc_text_state_kv_bytes(const vlc_text_state * st) { return st ? st->kv_bytes : 0; }

const float * vlc_text_state_logits(const vlc_text_state * st) {
    return st && st->has_logits ? st->logits : NULL;
}

// ---------------------------------------------------------------------------
// parallel pieces of the forward pass

// What the per-token and per-head tasks of one chunk read.
typedef struct fwd_ctx {
    vlc_text_state * st;
    int32_t          il;      // layer
    int32_t          p0;      // position of the chunk's first token
    const int32_t *  tokens;  // [T] or NULL
    const float *    embd;    // [T, C] or NULL
    const float *    src;     // rmsnorm input rows  [*, C]
    float *          dst;     // rmsnorm output rows [*, C]
    const float *    w;       // rmsnorm weight [C]
    int32_t          T;       // tokens in the chunk
    int32_t          ml_lo;   // chunk rows [ml_lo, ml_hi) keep their softmax (max, sum) in stats_ml
    int32_t          ml_hi;
    int32_t          arows;   // rows per attention task (a block of consecutive chunk rows)
    int              set;     // statistics set of the current stats_task run
    int32_t          sa, sb;  // its chunk rows [sa, sb)
} fwd_ctx;

static void embed_task(void * ctx, int64_t i, int ith) {
    const fwd_ctx *   c = ctx;
    const vlc_model * m = c->st->m;
    const int64_t     C = m->hp.n_embd;
    float *           x = c->st->x + i * C;
    if (c->tokens) {
        const size_t row = vlc_row_bytes(m->tok_embd.type, C);
        vlc_cpu_to_f32(x, (const char *) m->tok_embd.data + (size_t) c->tokens[i] * row, m->tok_embd.type, C);
    } else {
        memcpy(x, c->embd + i * C, (size_t) C * sizeof(float));
    }
    const vlc_hparams * hp = &m->hp;
    vlc_cpu_rope_table(c->st->rope + i * hp->head_dim, c->p0 + (int32_t) i, hp->head_dim, hp->rope_freq_base,
                       hp->rope_freq_scale);
}

static void rmsnorm_task(void * ctx, int64_t i, int ith) {
    const fwd_ctx * c = ctx;
    const int64_t   C = c->st->m->hp.n_embd;
    vlc_cpu_rmsnorm(c->dst + i * C, c->src + i * C, c->w, C, c->st->m->hp.rms_eps);
}

static void rope_task(void * ctx, int64_t i, int ith) {
    const fwd_ctx *     c  = ctx;
    const vlc_hparams * hp = &c->st->m->hp;
    const int64_t       D  = hp->head_dim;
    const float *       cs = c->st->rope + i * D;
    vlc_cpu_rope(c->st->q + i * hp->n_head * D, hp->n_head, hp->head_dim, cs);
    vlc_cpu_rope(c->st->k + i * hp->n_head_kv * D, hp->n_head_kv, hp->head_dim, cs);
}

// Appends the chunk's K and V rows of KV head g to its buffers (length updated later).
static void kv_store_task(void * ctx, int64_t g, int ith) {
    const fwd_ctx *        c  = ctx;
    const vlc_text_state * st = c->st;
    const vlc_hparams *    hp = &st->m->hp;
    const int64_t          D = hp->head_dim, KD = (int64_t) hp->n_head_kv * D;
    const size_t           es = vlc_type_size(st->type_kv);
    vlc_kv_head *          h  = &st->kv[(int64_t) c->il * hp->n_head_kv + g];
    for (int32_t i = 0; i < c->T; i++) {
        const int64_t e = h->n + i;
        vlc_cpu_from_f32((char *) h->k + (size_t) (e * D) * es, st->k + i * KD + g * D, st->type_kv, D);
        vlc_cpu_from_f32((char *) h->v + (size_t) (e * D) * es, st->v + i * KD + g * D, st->type_kv, D);
        h->pos[e] = c->p0 + i;
    }
}

// Rows [i0, i1) of the chunk (block b, the longest rows first), KV head g: their G query
// heads attend causally to the head's entries from before the chunk plus the chunk's
// first i + 1. One kernel call per block, so each K / V tile is converted once per block;
// a row's bits do not depend on the block (ops_cpu.h), hence not on the thread count,
// n_batch or the chunking either.
static void attn_task(void * ctx, int64_t task, int ith) {
    const fwd_ctx *        c  = ctx;
    const vlc_text_state * st = c->st;
    const vlc_hparams *    hp = &st->m->hp;
    const int64_t          nb = (c->T + c->arows - 1) / c->arows;
    const int64_t          b = nb - 1 - task / hp->n_head_kv, g = task % hp->n_head_kv;
    const int64_t          i0 = b * c->arows, i1 = i0 + c->arows < c->T ? i0 + c->arows : c->T;
    const int32_t          G  = hp->n_head / hp->n_head_kv;
    const int64_t          D  = hp->head_dim, HD = (int64_t) hp->n_head * D;
    const vlc_kv_head *    h  = &st->kv[(int64_t) c->il * hp->n_head_kv + g];
    const float            scale = 1.0f / sqrtf((float) hp->head_dim);
    float *                ml = NULL;  // [T, H, 2]: kept for every row when a statistics set is on
    if (st->stats_ml && c->ml_lo < c->ml_hi) {
        ml = st->stats_ml + (i0 * hp->n_head + g * G) * 2;
    }
    vlc_cpu_attn_rows(st->att + i0 * HD + g * G * D, HD, ml, (int64_t) hp->n_head * 2, st->q + i0 * HD + g * G * D, HD,
                      (int32_t) (i1 - i0), h->n + i0 + 1, 1, G, h->k, h->v, st->type_kv, hp->head_dim, scale,
                      st->work + (size_t) ith * st->work_stride);
}

// Entries per statistics task: one task owns a block of one KV head's entries and visits
// the set's chunk rows in order, so every per-key sum is built in one fixed order.
enum { VLC_STATS_KBLK = 4 * VLC_ATTN_TILE };

// Task = (KV head g, key block b): the statistics of chunk rows [sa, sb) of set c->set
// against entries [b * KBLK, (b + 1) * KBLK) of KV head g of layer c->il.
static void stats_task(void * ctx, int64_t task, int ith) {
    const fwd_ctx *        c  = ctx;
    const vlc_text_state * st = c->st;
    const vlc_hparams *    hp = &st->m->hp;
    const vlc_stats_set *  ss = &st->stats[c->set];
    const int64_t          g = task / st->stats_nblk, b = task % st->stats_nblk;
    const int32_t          G  = hp->n_head / hp->n_head_kv;
    const int64_t          D  = hp->head_dim, HD = (int64_t) hp->n_head * D;
    const vlc_kv_head *    h  = &st->kv[(int64_t) c->il * hp->n_head_kv + g];
    const int64_t          j0 = b * VLC_STATS_KBLK;
    const int64_t          j1 = j0 + VLC_STATS_KBLK < ss->ld ? j0 + VLC_STATS_KBLK : ss->ld;
    const int64_t          n0 = h->n + c->sa + 1;  // entries visible to the first row
    int64_t *              cnt = st->stats_cnt + task * G;
    memset(cnt, 0, (size_t) G * sizeof(int64_t));
    if (j0 >= n0 + (c->sb - c->sa) - 1) {
        return;  // no row of the chunk reaches this block
    }
    double * cs = ss->colsum + ((int64_t) c->il * hp->n_head_kv + g) * ss->ld + j0;
    vlc_cpu_attn_stats(cs, cnt, st->q + c->sa * HD + g * G * D, HD, c->sb - c->sa, n0,
                       st->stats_ml + (c->sa * hp->n_head + g * G) * 2, (int64_t) hp->n_head * 2, G, h->k,
                       st->type_kv, j0, j1, hp->head_dim, 1.0f / sqrtf((float) hp->head_dim), st->stats_p,
                       st->work + (size_t) ith * st->work_stride);
}

// After the attention of layer c->il (before the chunk's entries are counted in the KV
// lengths): every set with rows in this chunk gathers them.
static void stats_run(vlc_text_state * st, fwd_ctx * c) {
    const vlc_hparams * hp = &st->m->hp;
    const int32_t       G  = hp->n_head / hp->n_head_kv;
    const int64_t       nb = st->kv[(int64_t) c->il * hp->n_head_kv].n;  // entries before the chunk
    for (int set = 0; set < VLC_STATS_N_SETS; set++) {
        vlc_stats_set * ss = &st->stats[set];
        if (!ss->on) {
            continue;
        }
        const int32_t sa = ss->r0 > c->p0 ? ss->r0 - c->p0 : 0;
        const int32_t sb = ss->r1 - c->p0 < c->T ? ss->r1 - c->p0 : c->T;
        if (sa >= sb) {
            continue;
        }
        c->set = set;
        c->sa  = sa;
        c->sb  = sb;
        vlc_pool_run(st->pool, stats_task, c, (int64_t) hp->n_head_kv * st->stats_nblk);
        // integer partial counts: any order gives the same sum
        int64_t * cnt = ss->count + (int64_t) c->il * hp->n_head;
        for (int64_t t = 0; t < (int64_t) hp->n_head_kv * st->stats_nblk; t++) {
            const int64_t g = t / st->stats_nblk;
            for (int32_t gg = 0; gg < G; gg++) {
                cnt[g * G + gg] += st->stats_cnt[t * G + gg];
            }
        }
        for (int32_t r = sa; r < sb; r++) {
            ss->total[c->il] += nb + r + 1;
        }
        if (c->il == 0) {
            ss->rows += sb - sa;
        }
    }
}

static void swiglu_task(void * ctx, int64_t i, int ith) {
    const fwd_ctx * c = ctx;
    const int64_t   F = c->st->m->hp.n_ff;
    vlc_cpu_swiglu(c->st->gate + i * F, c->st->gate + i * F, c->st->up + i * F, F);
}

// Up to three matmuls that read the same input, run as one pool job:
// y_k[t, o] (+)= W_k[o, :] . x[t, :], tasks = blocks of VLC_MATMUL_ROWS rows of each W_k.
typedef struct mm_out {
    float *            y;      // [T, ldy]
    int64_t            ldy;
    const vlc_weight * w;      // [n_out, n_in]
    int                accumulate;
    const void *       xq;     // block-quantized w: x quantized for it ([T] activation rows), else NULL
    const void *       laid;   // decode steps of legacy types: xq laid out (vlc_qact_lay), else NULL
} mm_out;

// Quantized prefill: rows per task, so that the activations a call interleaves for its
// token groups (ops_qsimd.c) are reused over many weight rows.
enum { VLC_QMM_TASK_ROWS = 128 };

// Decode matmuls: tasks per thread. Handing out 16-row tasks instead interleaved the
// threads' weight streams and left decode at the sum of compute and memory time (Q4_K_M
// tg128 on 2 threads: 34.7 tok/s with 16-row tasks, 48.2 with 1, 2 or 4 ranges per thread).
enum { VLC_DECODE_TASKS = 4 };

typedef struct mm_job {
    const float * x;      // [T, n_in]
    int64_t       n_in;
    int64_t       T;
    int           n;
    mm_out        out[3];
    int64_t       first[4];  // first task of each output; first[n] = total
    int64_t       rows[3];   // output rows per task of each output
    float *       work;
    size_t        work_stride;
} mm_job;

static void mm_task(void * ctx, int64_t task, int ith) {
    const mm_job * j = ctx;
    int            k = 0;
    while (task >= j->first[k + 1]) {
        k++;
    }
    const mm_out * o     = &j->out[k];
    const int64_t  n_out = o->w->ne[1];
    const int64_t  r0    = (task - j->first[k]) * j->rows[k];
    const int64_t  r1    = r0 + j->rows[k] < n_out ? r0 + j->rows[k] : n_out;
    if (o->xq) {
        vlc_qmatmul_rows(o->y, o->ldy, o->w->data, o->w->type, o->xq, j->n_in, j->T, r0, r1, o->accumulate,
                         o->laid);
    } else {
        vlc_cpu_matmul_rows(o->y, o->ldy, o->w->data, o->w->type, j->x, j->n_in, j->n_in, j->T, r0, r1,
                            o->accumulate, j->work + (size_t) ith * j->work_stride);
    }
}

typedef struct xq_job {
    const float * x;      // [T, n_in]
    int64_t       n_in;
    uint32_t      wtype;  // a weight type of the activation kind
    char *        xq;     // [T, rb]
    size_t        rb;
} xq_job;

static void xq_task(void * ctx, int64_t t, int ith) {
    const xq_job * j = ctx;
    vlc_quantize_act_row(j->wtype, j->x + t * j->n_in, j->xq + (size_t) t * j->rb, j->n_in);
}

static void mm_run(vlc_text_state * st, const float * x, int64_t n_in, int64_t T, int n, const mm_out * outs) {
    mm_job j = { .x = x, .n_in = n_in, .T = T, .n = n, .work = st->work, .work_stride = st->work_stride };
    j.first[0] = 0;
    int done[3] = { 0, 0, 0 };  // activation kinds quantized for this job
    for (int k = 0; k < n; k++) {
        j.out[k]       = outs[k];
        const int kind = vlc_act_kind(outs[k].w->type);
        if (kind) {  // quantize x once per kind, shared by every output that reads it
            if (!done[kind]) {
                xq_job q = { x, n_in, outs[k].w->type, st->xq[kind], vlc_act_row_bytes(outs[k].w->type, n_in) };
                if (T < VLC_QMM_TASK_MIN_TOK) {  // decode: one row, not worth waking the pool
                    for (int64_t t = 0; t < T; t++) {
                        xq_task(&q, t, 0);
                    }
                    if (kind == VLC_ACT_Q8A) {  // and laid out once for every row task
                        vlc_qact_lay(outs[k].w->type, q.xq, n_in, T, st->xlaid);
                    }
                } else {
                    vlc_pool_run(st->pool, xq_task, &q, T);
                }
                done[kind] = 1;
            }
            j.out[k].xq   = st->xq[kind];
            j.out[k].laid = kind == VLC_ACT_Q8A && T < VLC_QMM_TASK_MIN_TOK ? st->xlaid : NULL;
        }
        // Rows per task (the bits never depend on them). Few tokens (decode): the time is the
        // weight stream, so each thread gets a few long contiguous ranges that the hardware
        // and software prefetchers follow as one stream. Many tokens: float weights as many
        // rows as the SIMD GEMM reuses x over, while every thread still gets at least 4 tasks.
        const int64_t n_out = outs[k].w->ne[1];
        const int64_t n_th  = st->n_threads;
        int64_t       rows;
        if (T < VLC_QMM_TASK_MIN_TOK) {
            rows = (n_out + VLC_DECODE_TASKS * n_th - 1) / (VLC_DECODE_TASKS * n_th);
            rows = (rows + VLC_MATMUL_ROWS - 1) / VLC_MATMUL_ROWS * VLC_MATMUL_ROWS;
        } else {
            rows = kind ? VLC_QMM_TASK_ROWS : vlc_simd_task_rows(n_in, T);
            while (rows > VLC_MATMUL_ROWS && n_out < 4 * n_th * rows) {
                rows = rows / 2 > VLC_MATMUL_ROWS ? rows / 2 : VLC_MATMUL_ROWS;
            }
        }
        j.rows[k]      = rows;
        j.first[k + 1] = j.first[k] + (n_out + rows - 1) / rows;
    }
    vlc_pool_run(st->pool, mm_task, &j, j.first[n]);
}

// ---------------------------------------------------------------------------
// forward

// The first half of layer il for the T rows of c: attention rmsnorm, then Q, K and V (RoPE
// applied) into st->q, st->k, st->v.
static void layer_qkv(vlc_text_state * st, fwd_ctx * c, const vlc_layer * L, int32_t il) {
    const vlc_hparams * hp = &st->m->hp;
    const int64_t       HD = (int64_t) hp->n_head * hp->head_dim, KD = (int64_t) hp->n_head_kv * hp->head_dim;
    c->src = st->x;
    c->dst = st->xn;
    c->w   = st->norm[2 * il];
    vlc_pool_run(st->pool, rmsnorm_task, c, c->T);
    const mm_out o[3] = { { .y = st->q, .ldy = HD, .w = &L->wq },
                          { .y = st->k, .ldy = KD, .w = &L->wk },
                          { .y = st->v, .ldy = KD, .w = &L->wv } };
    mm_run(st, st->xn, hp->n_embd, c->T, 3, o);
    vlc_pool_run(st->pool, rope_task, c, c->T);
}

// The second half, after the attention wrote st->att: output projection + residual, then
// the FFN down(silu(gate(x)) * up(x)) + residual.
static void layer_ffn(vlc_text_state * st, fwd_ctx * c, const vlc_layer * L, int32_t il) {
    const vlc_hparams * hp = &st->m->hp;
    const int64_t       C = hp->n_embd, HD = (int64_t) hp->n_head * hp->head_dim, F = hp->n_ff;
    const mm_out        wo = { .y = st->x, .ldy = C, .w = &L->wo, .accumulate = 1 };
    mm_run(st, st->att, HD, c->T, 1, &wo);
    c->w = st->norm[2 * il + 1];
    vlc_pool_run(st->pool, rmsnorm_task, c, c->T);
    const mm_out gu[2] = { { .y = st->gate, .ldy = F, .w = &L->w_gate }, { .y = st->up, .ldy = F, .w = &L->w_up } };
    mm_run(st, st->xn, C, c->T, 2, gu);
    vlc_pool_run(st->pool, swiglu_task, c, c->T);
    const mm_out down = { .y = st->x, .ldy = C, .w = &L->w_down, .accumulate = 1 };
    mm_run(st, st->gate, F, c->T, 1, &down);
}

// Final norm of rows [lo, T) of c and their logits into y.
static void logits_rows(vlc_text_state * st, fwd_ctx * c, int32_t lo, float * y) {
    const vlc_hparams * hp = &st->m->hp;
    const int64_t       C  = hp->n_embd;
    c->src = st->x + lo * C;
    c->dst = st->xn + lo * C;
    c->w   = st->norm[2 * hp->n_layer];
    vlc_pool_run(st->pool, rmsnorm_task, c, c->T - lo);
    const mm_out o = { .y = y, .ldy = hp->n_vocab, .w = &st->m->output };
    mm_run(st, st->xn + lo * C, C, c->T - lo, 1, &o);
}

// Runs one chunk of T <= B tokens at positions n_past .. n_past+T-1 and writes the logits
// of the chunk rows [lo, T) into y ([T - lo, V]) when y != NULL.
static void forward_chunk(vlc_text_state * st, const int32_t * tokens, const float * embd, int32_t T,
                          int32_t lo, float * y) {
    const vlc_model *   m  = st->m;
    const vlc_hparams * hp = &m->hp;
    fwd_ctx             c  = { .st = st, .p0 = st->n_past, .tokens = tokens, .embd = embd, .T = T };

    // chunk rows some statistics set covers (their softmax max and sum are kept)
    c.ml_lo = T;
    c.ml_hi = 0;
    for (int set = 0; st->stats_on && set < VLC_STATS_N_SETS; set++) {
        const vlc_stats_set * ss = &st->stats[set];
        const int32_t         sa = ss->r0 > c.p0 ? ss->r0 - c.p0 : 0;
        const int32_t         sb = ss->r1 - c.p0 < T ? ss->r1 - c.p0 : T;
        if (ss->on && sa < sb) {
            c.ml_lo = sa < c.ml_lo ? sa : c.ml_lo;
            c.ml_hi = sb > c.ml_hi ? sb : c.ml_hi;
        }
    }

    // attention tasks: blocks of one kernel pass of rows, halved while there would be fewer
    // than 4 tasks per thread (any block size gives the same bits)
    c.arows = vlc_cpu_attn_pass_rows(hp->n_head / hp->n_head_kv);
    while (c.arows > 1 && ((T + c.arows - 1) / c.arows) * hp->n_head_kv < 4 * st->n_threads) {
        c.arows = (c.arows + 1) / 2;
    }

    // embeddings (and the RoPE angles of the chunk's positions)
    vlc_pool_run(st->pool, embed_task, &c, T);

    for (int32_t il = 0; il < hp->n_layer; il++) {
        const vlc_layer * L = &m->layers[il];
        c.il                = il;

        layer_qkv(st, &c, L, il);

        // append K and V to the cache
        vlc_pool_run(st->pool, kv_store_task, &c, hp->n_head_kv);

        // attention (and the statistics of the rows some set asks for)
        vlc_pool_run(st->pool, attn_task, &c, ((T + c.arows - 1) / c.arows) * hp->n_head_kv);
        if (c.ml_lo < c.ml_hi) {
            stats_run(st, &c);
        }
        for (int32_t g = 0; g < hp->n_head_kv; g++) {
            st->kv[(int64_t) il * hp->n_head_kv + g].n += T;
        }

        layer_ffn(st, &c, L, il);
    }
    st->n_past += T;

    // final norm and logits, only for the rows asked for
    if (y && lo < T) {
        logits_rows(st, &c, lo, y);
    }
}

vlc_status vlc_text_forward(vlc_text_state * st, const int32_t * tokens, const float * embd, int32_t n,
                            float * logits_out, int32_t n_out) {
    VLC_CHECK(st != NULL, VLC_STATUS_INVALID_ARG, "state is NULL");
    VLC_CHECK((tokens != NULL) != (embd != NULL), VLC_STATUS_INVALID_ARG,
              "exactly one of tokens and embd must be given");
    VLC_CHECK(n > 0, VLC_STATUS_INVALID_ARG, "n = %d, expected > 0", n);
    VLC_CHECK(n_out >= 0 && n_out <= n, VLC_STATUS_INVALID_ARG, "n_out = %d, expected 0 .. %d", n_out, n);
    VLC_CHECK(logits_out != NULL || n_out == 0, VLC_STATUS_INVALID_ARG, "logits_out is NULL with n_out = %d", n_out);
    VLC_CHECK((int64_t) st->n_past + n <= st->n_ctx, VLC_STATUS_CONTEXT_FULL,
              "%d positions do not fit: %d of the context's %d are used", n, st->n_past, st->n_ctx);
    const vlc_hparams * hp = &st->m->hp;
    if (tokens) {
        for (int32_t i = 0; i < n; i++) {
            VLC_CHECK(tokens[i] >= 0 && tokens[i] < hp->n_vocab, VLC_STATUS_INVALID_ARG,
                      "token id %d at index %d is out of range [0, %d)", tokens[i], i, hp->n_vocab);
        }
    }

    VLC_TRY(kv_reserve(st, n));

    const int64_t V       = hp->n_vocab;
    const int32_t first   = n_out > 0 ? n - n_out : n - 1;  // first row whose logits are computed
    st->has_logits        = 0;
    for (int32_t c0 = 0; c0 < n; c0 += st->n_batch) {
        const int32_t T  = n - c0 < st->n_batch ? n - c0 : st->n_batch;
        const int32_t lo = first > c0 ? first - c0 : 0;  // chunk-local first row with logits
        float *       y  = NULL;
        if (lo < T) {
            y = n_out > 0 ? logits_out + (int64_t) (c0 + lo - first) * V : st->logits;
        }
        forward_chunk(st, tokens ? tokens + c0 : NULL, embd ? embd + (int64_t) c0 * hp->n_embd : NULL, T, lo, y);
    }
    if (n_out > 0) {
        memcpy(st->logits, logits_out + (int64_t) (n_out - 1) * V, (size_t) V * sizeof(float));
    }
    st->has_logits = 1;
    return VLC_STATUS_OK;
}

// ---------------------------------------------------------------------------
// batched decoding: one position for each of n states of one model. The matmuls and the
// per-row ops run once over the n rows in the first state's scratch and pool; only the KV
// store and the attention are per state, each row against its own cache.

typedef struct batch_ctx {
    vlc_text_state *         st;      // whose scratch and pool run the step
    vlc_text_state * const * sts;     // [T] the row's states
    const int32_t *          tokens;  // [T]
    int32_t                  il;
} batch_ctx;

static void embed_batch_task(void * ctx, int64_t i, int ith) {
    const batch_ctx *   b  = ctx;
    vlc_text_state *    st = b->st;
    const vlc_model *   m  = st->m;
    const vlc_hparams * hp = &m->hp;
    const int64_t       C  = hp->n_embd;
    const size_t        row = vlc_row_bytes(m->tok_embd.type, C);
    vlc_cpu_to_f32(st->x + i * C, (const char *) m->tok_embd.data + (size_t) b->tokens[i] * row, m->tok_embd.type, C);
    vlc_cpu_rope_table(st->rope + i * hp->head_dim, b->sts[i]->n_past, hp->head_dim, hp->rope_freq_base,
                       hp->rope_freq_scale);
}

// Task = (row i, KV head g): row i's K and V appended to state i's cache, then its G query
// heads attend over that head's entries (the call a one-row forward_chunk makes).
static void attn_batch_task(void * ctx, int64_t task, int ith) {
    const batch_ctx *        b  = ctx;
    const vlc_text_state *   st = b->st;
    const vlc_hparams *      hp = &st->m->hp;
    const int64_t            i = task / hp->n_head_kv, g = task % hp->n_head_kv;
    const vlc_text_state *   si = b->sts[i];
    const int32_t            G  = hp->n_head / hp->n_head_kv;
    const int64_t            D = hp->head_dim, HD = (int64_t) hp->n_head * D, KD = (int64_t) hp->n_head_kv * D;
    const size_t             es = vlc_type_size(si->type_kv);
    vlc_kv_head *            h  = &si->kv[(int64_t) b->il * hp->n_head_kv + g];
    vlc_cpu_from_f32((char *) h->k + (size_t) (h->n * D) * es, st->k + i * KD + g * D, si->type_kv, D);
    vlc_cpu_from_f32((char *) h->v + (size_t) (h->n * D) * es, st->v + i * KD + g * D, si->type_kv, D);
    h->pos[h->n] = si->n_past;
    vlc_cpu_attn_rows(st->att + i * HD + g * G * D, HD, NULL, 0, st->q + i * HD + g * G * D, HD, 1, h->n + 1, 1, G,
                      h->k, h->v, si->type_kv, hp->head_dim, 1.0f / sqrtf((float) hp->head_dim),
                      st->work + (size_t) ith * st->work_stride);
}

// T <= st->n_batch rows in st's scratch; logits of every row into y [T, V].
static void forward_batch_chunk(vlc_text_state * st, vlc_text_state * const * sts, const int32_t * tokens, int32_t T,
                                float * y) {
    const vlc_model *   m  = st->m;
    const vlc_hparams * hp = &m->hp;
    batch_ctx           b  = { .st = st, .sts = sts, .tokens = tokens };
    fwd_ctx             c  = { .st = st, .T = T };  // the per-row tasks of forward_chunk
    vlc_pool_run(st->pool, embed_batch_task, &b, T);
    for (int32_t il = 0; il < hp->n_layer; il++) {
        const vlc_layer * L = &m->layers[il];
        layer_qkv(st, &c, L, il);
        b.il = il;
        vlc_pool_run(st->pool, attn_batch_task, &b, (int64_t) T * hp->n_head_kv);
        for (int32_t i = 0; i < T; i++) {
            for (int32_t g = 0; g < hp->n_head_kv; g++) {
                sts[i]->kv[(int64_t) il * hp->n_head_kv + g].n += 1;
            }
        }
        layer_ffn(st, &c, L, il);
    }
    logits_rows(st, &c, 0, y);
    for (int32_t i = 0; i < T; i++) {
        sts[i]->n_past += 1;
        memcpy(sts[i]->logits, y + (int64_t) i * hp->n_vocab, (size_t) hp->n_vocab * sizeof(float));
        sts[i]->has_logits = 1;
    }
}

// Whether a statistics set of st gathers the row at position pos.
static int stats_cover(const vlc_text_state * st, int32_t pos) {
    for (int set = 0; st->stats_on && set < VLC_STATS_N_SETS; set++) {
        const vlc_stats_set * ss = &st->stats[set];
        if (ss->on && pos >= ss->r0 && pos < ss->r1) {
            return 1;
        }
    }
    return 0;
}

vlc_status vlc_text_batch_prepare(vlc_text_state * const * sts, const int32_t * tokens, int32_t n) {
    VLC_CHECK(sts != NULL && tokens != NULL, VLC_STATUS_INVALID_ARG, "states or tokens is NULL");
    VLC_CHECK(n > 0, VLC_STATUS_INVALID_ARG, "n = %d states, expected > 0", n);
    for (int32_t i = 0; i < n; i++) {
        const vlc_text_state * si = sts[i];
        VLC_CHECK(si != NULL, VLC_STATUS_INVALID_ARG, "state %d is NULL", i);
        VLC_CHECK(si->m == sts[0]->m, VLC_STATUS_INVALID_ARG, "state %d belongs to another model than state 0", i);
        for (int32_t j = 0; j < i; j++) {
            VLC_CHECK(sts[j] != si, VLC_STATUS_INVALID_ARG, "states %d and %d are the same state", j, i);
        }
        VLC_CHECK(tokens[i] >= 0 && tokens[i] < si->m->hp.n_vocab, VLC_STATUS_INVALID_ARG,
                  "token id %d of state %d is out of range [0, %d)", tokens[i], i, si->m->hp.n_vocab);
        VLC_CHECK(si->n_past < si->n_ctx, VLC_STATUS_CONTEXT_FULL, "state %d: all %d positions of its context are used",
                  i, si->n_ctx);
        VLC_CHECK(!stats_cover(si, si->n_past), VLC_STATUS_INVALID_ARG,
                  "state %d gathers attention statistics at position %d: decode it alone", i, si->n_past);
    }
    for (int32_t i = 0; i < n; i++) {  // room for one entry per head (only capacity changes)
        VLC_TRY(kv_reserve(sts[i], 1));
    }
    return VLC_STATUS_OK;
}

vlc_status vlc_text_forward_batch(vlc_text_state * const * sts, const int32_t * tokens, int32_t n, float * logits_out) {
    VLC_CHECK(logits_out != NULL, VLC_STATUS_INVALID_ARG, "logits_out is NULL");
    VLC_TRY(vlc_text_batch_prepare(sts, tokens, n));
    const int64_t V = sts[0]->m->hp.n_vocab;
    for (int32_t c0 = 0; c0 < n; c0 += sts[0]->n_batch) {
        const int32_t T = n - c0 < sts[0]->n_batch ? n - c0 : sts[0]->n_batch;
        forward_batch_chunk(sts[0], sts + c0, tokens + c0, T, logits_out + c0 * V);
    }
    return VLC_STATUS_OK;
}

// ---------------------------------------------------------------------------
// attention statistics (model.h). The attention task keeps each covered row's final
// softmax max and sum; stats_run then revisits the keys of those rows, tile by tile,
// in tasks that each own one block of one KV head's entries (no row x key matrix, no
// shared writes, one summation order whatever the thread count or chunking).

static void stats_free(vlc_text_state * st) {
    for (int set = 0; set < VLC_STATS_N_SETS; set++) {
        vlc_stats_set * ss = &st->stats[set];
        free(ss->colsum);
        free(ss->count);
        free(ss->total);
        memset(ss, 0, sizeof(*ss));
    }
    free(st->stats_ml);
    free(st->stats_cnt);
    st->stats_ml   = NULL;
    st->stats_cnt  = NULL;
    st->stats_nblk = 0;
    st->stats_on   = 0;
}

vlc_status vlc_text_state_set_stats(vlc_text_state * st, const vlc_stats_params * sp) {
    VLC_CHECK(st != NULL, VLC_STATUS_INVALID_ARG, "state is NULL");
    if (!sp) {
        stats_free(st);
        return VLC_STATUS_OK;
    }
    const vlc_hparams * hp = &st->m->hp;
    const int32_t       w1 = sp->w1 > 0 ? sp->w1 : st->n_ctx;
    VLC_CHECK(isfinite(sp->p) && sp->p >= 0.0f && sp->p <= 1.0f, VLC_STATUS_INVALID_ARG,
              "p = %g, expected a threshold in [0, 1]", sp->p);
    VLC_CHECK(w1 <= st->n_ctx, VLC_STATUS_INVALID_ARG, "w1 = %d is past the context (n_ctx = %d)", sp->w1, st->n_ctx);
    VLC_CHECK(sp->w0 >= st->n_past && sp->w0 < w1, VLC_STATUS_INVALID_ARG,
              "w0 = %d, expected %d (rows already run: n_past) .. %d (w1 - 1)", sp->w0, st->n_past, w1 - 1);
    VLC_CHECK(!sp->all_rows || (sp->w1 > 0 && st->n_past == 0), VLC_STATUS_INVALID_ARG,
              "all_rows needs w1 > 0 (got %d) and no rows run yet (n_past = %d)", sp->w1, st->n_past);
    VLC_CHECK(sp->last_w >= 0 && (sp->last_w == 0 || (sp->w1 > 0 && sp->last_w <= sp->w1 - st->n_past)),
              VLC_STATUS_INVALID_ARG, "last_w = %d, expected 0 or 1 .. %d (w1 = %d minus n_past = %d)", sp->last_w,
              sp->w1 > 0 ? sp->w1 - st->n_past : 0, sp->w1, st->n_past);
    VLC_CHECK(!st->compressed, VLC_STATUS_INVALID_ARG,
              "the KV cache is compressed: statistics need every position (reset the session first)");
    const int64_t nh = (int64_t) hp->n_layer * hp->n_head_kv;

    stats_free(st);
    const int32_t r0[VLC_STATS_N_SETS] = { sp->w0, 0, w1 - sp->last_w };
    const int     on[VLC_STATS_N_SETS] = { 1, sp->all_rows != 0, sp->last_w > 0 };
    const int32_t G                    = hp->n_head / hp->n_head_kv;
    const size_t  ml_sz  = (size_t) st->n_batch * (size_t) hp->n_head * 2 * sizeof(float);
    st->stats_nblk       = (w1 + VLC_STATS_KBLK - 1) / VLC_STATS_KBLK;
    const size_t  cnt_sz = (size_t) hp->n_head_kv * (size_t) st->stats_nblk * (size_t) G * sizeof(int64_t);
    st->stats_ml         = malloc(ml_sz);
    st->stats_cnt        = malloc(cnt_sz);
    int ok               = st->stats_ml && st->stats_cnt;
    size_t total         = ml_sz + cnt_sz;
    for (int set = 0; set < VLC_STATS_N_SETS && ok; set++) {
        if (!on[set]) {
            continue;
        }
        vlc_stats_set * ss = &st->stats[set];
        ss->on             = 1;
        ss->r0             = r0[set];
        ss->r1             = w1;
        ss->ld             = w1;
        const size_t cs_sz = (size_t) nh * (size_t) w1 * sizeof(double);
        ss->colsum         = calloc((size_t) nh * (size_t) w1, sizeof(double));
        ss->count          = calloc((size_t) hp->n_layer * (size_t) hp->n_head, sizeof(int64_t));
        ss->total          = calloc((size_t) hp->n_layer, sizeof(int64_t));
        ok                 = ss->colsum && ss->count && ss->total;
        total += cs_sz;
    }
    if (!ok) {
        stats_free(st);
        return VLC_ERR(VLC_STATUS_OOM, "cannot allocate the attention statistics (about %zu bytes for rows %d .. %d)",
                       total, sp->w0, w1);
    }
    st->stats_prm = *sp;
    st->stats_p   = sp->p;
    st->stats_on  = 1;
    return VLC_STATUS_OK;
}

static const vlc_stats_set * stats_get(const vlc_text_state * st, int set, int32_t il) {
    if (!st || set < 0 || set >= VLC_STATS_N_SETS || !st->stats[set].on || il < 0 || il >= st->m->hp.n_layer) {
        return NULL;
    }
    return &st->stats[set];
}

int vlc_text_state_stats_on(const vlc_text_state * st, int set) {
    return stats_get(st, set, 0) != NULL;
}

int vlc_text_state_stats_range(const vlc_text_state * st, int set, int32_t * r0, int32_t * r1) {
    const vlc_stats_set * ss = stats_get(st, set, 0);
    if (!ss) {
        return 0;
    }
    *r0 = ss->r0;
    *r1 = ss->r1;
    return 1;
}

int32_t vlc_text_state_stats_rows(const vlc_text_state * st, int set) {
    const vlc_stats_set * ss = stats_get(st, set, 0);
    return ss ? ss->rows : 0;
}

int32_t vlc_text_state_stats_ld(const vlc_text_state * st, int set) {
    const vlc_stats_set * ss = stats_get(st, set, 0);
    return ss ? ss->ld : 0;
}

const double * vlc_text_state_stats_colsum(const vlc_text_state * st, int set, int32_t il) {
    const vlc_stats_set * ss = stats_get(st, set, il);
    return ss ? ss->colsum + (int64_t) il * st->m->hp.n_head_kv * ss->ld : NULL;
}

const int64_t * vlc_text_state_stats_count(const vlc_text_state * st, int set, int32_t il) {
    const vlc_stats_set * ss = stats_get(st, set, il);
    return ss ? ss->count + (int64_t) il * st->m->hp.n_head : NULL;
}

int64_t vlc_text_state_stats_total(const vlc_text_state * st, int set, int32_t il) {
    const vlc_stats_set * ss = stats_get(st, set, il);
    return ss ? ss->total[il] : 0;
}

double vlc_text_state_stats_sparsity(const vlc_text_state * st, int set, int32_t il) {
    const vlc_stats_set * ss = stats_get(st, set, il);
    if (!ss || ss->total[il] == 0) {
        return NAN;
    }
    const int32_t   H   = st->m->hp.n_head;
    const int64_t * cnt = ss->count + (int64_t) il * H;
    double          sum = 0.0;
    for (int32_t h = 0; h < H; h++) {
        sum += 1.0 - (double) cnt[h] / (double) ss->total[il];
    }
    return sum / H;
}

// ---------------------------------------------------------------------------
// KV compaction and copies

int32_t vlc_text_state_kv_len(const vlc_text_state * st, int32_t il, int32_t g) {
    return st->kv[(int64_t) il * st->m->hp.n_head_kv + g].n;
}

const int32_t * vlc_text_state_kv_pos(const vlc_text_state * st, int32_t il, int32_t g) {
    return st->kv[(int64_t) il * st->m->hp.n_head_kv + g].pos;
}

int vlc_text_state_compressed(const vlc_text_state * st) { return st->compressed; }

vlc_status vlc_text_state_compact(vlc_text_state * st, const uint8_t * keep, int32_t m, int32_t room) {
    VLC_CHECK(st && keep, VLC_STATUS_INVALID_ARG, "state or keep is NULL");
    VLC_CHECK(m >= 1 && m <= st->n_past, VLC_STATUS_INVALID_ARG, "m = %d, expected 1 .. n_past = %d", m, st->n_past);
    VLC_CHECK(room >= 0, VLC_STATUS_INVALID_ARG, "room = %d, expected >= 0", room);
    const vlc_hparams * hp  = &st->m->hp;
    const int64_t       nh  = (int64_t) hp->n_layer * hp->n_head_kv;
    const size_t        row = (size_t) hp->head_dim * vlc_type_size(st->type_kv);

    vlc_kv_head * fresh = calloc((size_t) nh, sizeof(vlc_kv_head));
    VLC_CHECK(fresh != NULL, VLC_STATUS_OOM, "cannot allocate %" PRId64 " KV head records", nh);
    uint64_t bytes = 0;
    for (int64_t i = 0; i < nh; i++) {
        const vlc_kv_head * h  = &st->kv[i];
        const uint8_t *     kp = keep + i * m;  // [L, Hkv, m]: head i = il * Hkv + g
        int32_t             n  = 0;
        for (int32_t e = 0; e < h->n; e++) {
            n += h->pos[e] >= m || kp[h->pos[e]];
        }
        if (!kv_head_alloc(st, &fresh[i], n + room)) {
            for (int64_t j = 0; j < i; j++) {
                free(fresh[j].k);
                free(fresh[j].v);
                free(fresh[j].pos);
            }
            free(fresh);
            return VLC_ERR(VLC_STATUS_OOM, "cannot allocate %d entries for KV head %" PRId64 " of layer %" PRId64,
                           n + room, i % hp->n_head_kv, i / hp->n_head_kv);
        }
        bytes += (uint64_t) (n + room) * kv_entry_bytes(st);
    }
    for (int64_t i = 0; i < nh; i++) {
        vlc_kv_head * h  = &st->kv[i];
        vlc_kv_head * f  = &fresh[i];
        const uint8_t * kp = keep + i * m;
        for (int32_t e = 0; e < h->n; e++) {
            if (h->pos[e] >= m || kp[h->pos[e]]) {
                memcpy((char *) f->k + (size_t) f->n * row, (const char *) h->k + (size_t) e * row, row);
                memcpy((char *) f->v + (size_t) f->n * row, (const char *) h->v + (size_t) e * row, row);
                f->pos[f->n++] = h->pos[e];
            }
        }
        free(h->k);
        free(h->v);
        free(h->pos);
        *h = *f;
    }
    free(fresh);
    st->kv_bytes   = bytes;
    st->compressed = 1;
    stats_free(st);
    return VLC_STATUS_OK;
}

vlc_status vlc_text_state_clone(const vlc_text_state * src, vlc_text_state ** out) {
    VLC_CHECK(src && out, VLC_STATUS_INVALID_ARG, "src or out is NULL");
    *out = NULL;
    const vlc_session_params prm = { src->n_ctx, src->n_batch, src->n_threads, (int32_t) src->type_kv };
    vlc_text_state * st = NULL;
    VLC_TRY(vlc_text_state_create(src->m, &prm, &st));
    vlc_status s = VLC_STATUS_OK;
    if (src->stats_on) {
        s = vlc_text_state_set_stats(st, &src->stats_prm);
    }
    // KV heads with src's capacities (an uncompressed src has n_ctx everywhere, as st)
    const vlc_hparams * hp  = &src->m->hp;
    const int64_t       nh  = (int64_t) hp->n_layer * hp->n_head_kv;
    const size_t        row = (size_t) hp->head_dim * vlc_type_size(src->type_kv);
    for (int64_t i = 0; i < nh && s == VLC_STATUS_OK; i++) {
        const vlc_kv_head * h = &src->kv[i];
        vlc_kv_head *       d = &st->kv[i];
        if (d->cap != h->cap) {
            vlc_kv_head f;
            if (!kv_head_alloc(st, &f, h->cap)) {
                s = VLC_ERR(VLC_STATUS_OOM, "cannot allocate %d entries for a copy of KV head %" PRId64, h->cap, i);
                break;
            }
            free(d->k);
            free(d->v);
            free(d->pos);
            *d = f;
        }
        memcpy(d->k, h->k, (size_t) h->n * row);
        memcpy(d->v, h->v, (size_t) h->n * row);
        memcpy(d->pos, h->pos, (size_t) h->n * sizeof(int32_t));
        d->n = h->n;
    }
    if (s != VLC_STATUS_OK) {
        vlc_text_state_free(st);
        return s;
    }
    st->kv_bytes   = src->kv_bytes;
    st->compressed = src->compressed;
    st->n_past     = src->n_past;
    st->has_logits = src->has_logits;
    memcpy(st->logits, src->logits, (size_t) hp->n_vocab * sizeof(float));
    for (int set = 0; set < VLC_STATS_N_SETS && src->stats_on; set++) {
        const vlc_stats_set * a = &src->stats[set];
        vlc_stats_set *       b = &st->stats[set];
        if (!a->on) {
            continue;
        }
        memcpy(b->colsum, a->colsum, (size_t) nh * (size_t) a->ld * sizeof(double));
        memcpy(b->count, a->count, (size_t) hp->n_layer * (size_t) hp->n_head * sizeof(int64_t));
        memcpy(b->total, a->total, (size_t) hp->n_layer * sizeof(int64_t));
        b->rows = a->rows;
    }
    *out = st;
    return VLC_STATUS_OK;
}
