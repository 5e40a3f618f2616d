// text.c: the Llama decoder's session state and forward pass on the CPU.
//
// Is: the session's state (its KV cache, kvcache.h; its attention statistics, stats.h;
// one scratch slab sized at create from n_batch; the thread pool) and vlc_text_forward:
// embed -> L x (RMSNorm, Q/K/V, RoPE, causal GQA attention, Wo + residual, RMSNorm,
// SwiGLU MLP + residual) -> final RMSNorm -> logits of the rows asked for. Prefill runs
// in chunks of n_batch tokens; decode is the same path with n = 1.
// Also: batched decoding (one step for many states of one model).
// Is not: the kernels themselves (ops_cpu.c), argument checks of the public API (api.c),
// the KV store (kvcache.c), the statistics' bookkeeping (stats.c), the policies
// (kvpolicy.c). An uncompressed cache holds n_ctx entries per head from create on; a
// compacted head grows (1.5x, up to what the context can still take) when a forward
// pass needs more room, before anything runs.
// Letters: T = tokens of a chunk (<= B = n_batch), C = n_embd, H = n_head,
// Hkv = n_head_kv, G = H / Hkv, D = head_dim, F = n_ff, V = n_vocab, L = n_layer.
#include "model.h"

#include "error.h"
#include "kvcache.h"
#include "ops_cpu.h"
#include "ops_qsimd.h"
#include "ops_simd.h"
#include "quant.h"
#include "stats.h"
#include "threads.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

enum { VLC_MAX_CTX = 1 << 20 };

// ---------------------------------------------------------------------------
// state

struct vlc_text_state {
    const vlc_model * m;
    int32_t           n_ctx;
    int32_t           n_batch;     // B
    int32_t           n_threads;
    int32_t           n_past;      // tokens run so far = position of the next token
    vlc_kvcache       kv;          // [L, Hkv] heads, their lengths, positions and type
    vlc_stats         stats;       // off unless vlc_text_state_set_stats turned it on

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
};

static size_t round16(size_t n) {
    return (n + 15) & ~(size_t) 15;  // keep every sub-buffer 64-byte aligned
}

// Room for n more entries in every KV head, within what the context can still take.
static vlc_status kv_reserve(vlc_text_state * st, int32_t n) {
    return vlc_kv_reserve(&st->kv, n, st->n_ctx - st->n_past);
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

    vlc_status s = vlc_kv_init(&st->kv, hp->n_layer, hp->n_head_kv, hp->head_dim, (uint32_t) prm.type_kv, n_ctx);
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
    vlc_stats_free(&st->stats);
    vlc_kv_free(&st->kv);
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
    vlc_kv_clear(&st->kv);
    vlc_stats_free(&st->stats);
    st->n_past     = 0;
    st->has_logits = 0;
}

int32_t vlc_text_state_n_past(const vlc_text_state * st) { return st ? st->n_past : 0; }
int32_t vlc_text_state_n_ctx(const vlc_text_state * st) { return st ? st->n_ctx : 0; }
uint64_t vlc_text_state_kv_bytes(const vlc_text_state * st) { return st ? st->kv.bytes : 0; }
const vlc_kvcache * vlc_text_state_kv(const vlc_text_state * st) { return &st->kv; }
const vlc_stats * vlc_text_state_stats(const vlc_text_state * st) { return &st->stats; }

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
    int32_t          ml_lo;   // chunk rows [ml_lo, ml_hi) keep their softmax (max, sum) in stats.ml
    int32_t          ml_hi;
    int32_t          arows;   // rows per attention task (a block of consecutive chunk rows)
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
    const int64_t          KD = (int64_t) st->kv.n_head_kv * st->kv.head_dim, o = g * st->kv.head_dim;
    vlc_kv_head *          h  = vlc_kv_at(&st->kv, c->il, (int32_t) g);
    for (int32_t i = 0; i < c->T; i++) {
        vlc_kv_put(&st->kv, h, h->n + i, st->k + i * KD + o, st->v + i * KD + o, c->p0 + i);
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
    const vlc_kv_head *    h  = vlc_kv_at(&st->kv, c->il, (int32_t) g);
    const float            scale = 1.0f / sqrtf((float) hp->head_dim);
    float *                ml = NULL;  // [T, H, 2]: kept for every row when a statistics set is on
    if (c->ml_lo < c->ml_hi) {
        ml = st->stats.ml + (i0 * hp->n_head + g * G) * 2;
    }
    vlc_cpu_attn_rows(st->att + i0 * HD + g * G * D, HD, ml, (int64_t) hp->n_head * 2, st->q + i0 * HD + g * G * D, HD,
                      (int32_t) (i1 - i0), h->n + i0 + 1, 1, G, h->k, h->v, st->kv.type, hp->head_dim, scale,
                      st->work + (size_t) ith * st->work_stride);
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
    vlc_stats_chunk_rows(&st->stats, c.p0, T, &c.ml_lo, &c.ml_hi);

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
            vlc_stats_gather(&st->stats, &st->kv, il, c.p0, T, st->q, st->pool, st->work, st->work_stride);
        }
        vlc_kv_advance(&st->kv, il, T);

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
    vlc_kv_head *            h  = vlc_kv_at(&si->kv, b->il, (int32_t) g);
    vlc_kv_put(&si->kv, h, h->n, st->k + i * KD + g * D, st->v + i * KD + g * D, si->n_past);
    vlc_cpu_attn_rows(st->att + i * HD + g * G * D, HD, NULL, 0, st->q + i * HD + g * G * D, HD, 1, h->n + 1, 1, G,
                      h->k, h->v, si->kv.type, hp->head_dim, 1.0f / sqrtf((float) hp->head_dim),
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
            vlc_kv_advance(&sts[i]->kv, il, 1);
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
        VLC_CHECK(!vlc_stats_covers(&si->stats, si->n_past), VLC_STATUS_INVALID_ARG,
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
// attention statistics, KV compaction and copies (model.h)

vlc_status vlc_text_state_set_stats(vlc_text_state * st, const vlc_attn_stats_params * p) {
    VLC_CHECK(st != NULL, VLC_STATUS_INVALID_ARG, "state is NULL");
    if (!p) {
        vlc_stats_free(&st->stats);
        return VLC_STATUS_OK;
    }
    VLC_TRY(vlc_stats_check(p, st->n_past, st->n_ctx, st->kv.compressed));
    const vlc_hparams * hp = &st->m->hp;
    return vlc_stats_enable(&st->stats, p, st->n_ctx, st->n_batch, hp->n_layer, hp->n_head, hp->n_head_kv);
}

vlc_status vlc_text_state_compact(vlc_text_state * st, const uint8_t * keep, int32_t m, int32_t room) {
    VLC_CHECK(st && keep, VLC_STATUS_INVALID_ARG, "state or keep is NULL");
    VLC_CHECK(m >= 1 && m <= st->n_past, VLC_STATUS_INVALID_ARG, "m = %d, expected 1 .. n_past = %d", m, st->n_past);
    VLC_CHECK(room >= 0, VLC_STATUS_INVALID_ARG, "room = %d, expected >= 0", room);
    VLC_TRY(vlc_kv_compact(&st->kv, keep, m, room));
    vlc_stats_free(&st->stats);
    return VLC_STATUS_OK;
}

vlc_status vlc_text_state_clone(const vlc_text_state * src, vlc_text_state ** out) {
    VLC_CHECK(src && out, VLC_STATUS_INVALID_ARG, "src or out is NULL");
    *out = NULL;
    const vlc_session_params prm = { src->n_ctx, src->n_batch, src->n_threads, (int32_t) src->kv.type };
    vlc_text_state * st = NULL;
    VLC_TRY(vlc_text_state_create(src->m, &prm, &st));
    const vlc_hparams * hp = &src->m->hp;
    vlc_status          s  = VLC_STATUS_OK;
    if (src->stats.on) {
        s = vlc_stats_enable(&st->stats, &src->stats.prm, st->n_ctx, st->n_batch, hp->n_layer, hp->n_head,
                             hp->n_head_kv);
    }
    if (s == VLC_STATUS_OK) {
        s = vlc_kv_copy(&st->kv, &src->kv);
    }
    if (s != VLC_STATUS_OK) {
        vlc_text_state_free(st);
        return s;
    }
    vlc_stats_copy(&st->stats, &src->stats);
    st->n_past     = src->n_past;
    st->has_logits = src->has_logits;
    memcpy(st->logits, src->logits, (size_t) hp->n_vocab * sizeof(float));
    *out = st;
    return VLC_STATUS_OK;
}
