// backend_cpu.c: the CPU backend (backend.h): host memory, a thread pool, per-thread
// scratch, the quantized activation buffers, and how each op splits into tasks.
//
// Every op is one or a few pool runs of tasks that each own whole output rows (or one
// KV head, or one block of rows x one head), computed by the kernels of ops_cpu.h in a
// fixed order: the bits do not depend on the thread count or the split. The splits are
// tuned here and only here (decode matmuls, attention blocks, vision row blocks).
#include "backend.h"

#include "error.h"
#include "kvcache.h"
#include "model.h"
#include "ops_cpu.h"
#include "ops_qsimd.h"
#include "ops_simd.h"
#include "quant.h"
#include "stats.h"
#include "threads.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cpu_ctx {
    vlc_pool * pool;
    float *    work;         // [n_threads, work_stride] per-thread kernel scratch
    size_t     work_stride;  // floats
    size_t     work_cap;     // bytes
    void *     xq[3];        // [rows, act row bytes] matmul inputs quantized, per vlc_act_kind
    size_t     xq_cap[3];    // bytes
    void *     xlaid;        // decode rows of the Q8A kind laid out once (vlc_qact_lay)
    size_t     xlaid_cap;
} cpu_ctx;

static cpu_ctx * ctx_of(vlc_backend * be) {
    return be->ctx;
}

static size_t round16(size_t n) {
    return (n + 15) & ~(size_t) 15;
}

static size_t max_sz(size_t a, size_t b) {
    return a > b ? a : b;
}

// ---------------------------------------------------------------------------
// memory

static void * cpu_alloc(vlc_backend * be, size_t bytes) {
    (void) be;
    return aligned_alloc(64, bytes ? (bytes + 63) & ~(size_t) 63 : 64);
}

static void cpu_dealloc(vlc_backend * be, void * p) {
    (void) be;
    free(p);
}

static void cpu_copy(vlc_backend * be, void * dst, const void * src, size_t bytes) {
    (void) be;
    if (bytes) {
        memcpy(dst, src, bytes);
    }
}

static void cpu_gather_rows(vlc_backend * be, void * dst, const void * src, const int32_t * idx, int64_t n,
                            size_t row_bytes) {
    (void) be;
    for (int64_t i = 0; i < n; i++) {
        memcpy((char *) dst + (size_t) i * row_bytes, (const char *) src + (size_t) idx[i] * row_bytes, row_bytes);
    }
}

static void cpu_sync(vlc_backend * be) {
    (void) be;
}

// Fewer rows than this run a matmul as a decode step: activations quantized (and laid
// out) on the calling thread, a few long row ranges per thread.
enum { QMM_TASK_MIN_TOK = 16 };

static vlc_status grow(void ** p, size_t * cap, size_t bytes, const char * what) {
    if (bytes <= *cap) {
        return VLC_STATUS_OK;
    }
    void * q = aligned_alloc(64, (bytes + 63) & ~(size_t) 63);
    VLC_CHECK(q != NULL, VLC_STATUS_OOM, "cannot allocate %zu bytes of %s", bytes, what);
    free(*p);
    *p   = q;
    *cap = bytes;
    return VLC_STATUS_OK;
}

static vlc_status cpu_reserve(vlc_backend * be, const vlc_backend_need * nd) {
    cpu_ctx *     c      = ctx_of(be);
    const int64_t max_in = (nd->max_in + 255) / 256 * 256;  // a whole number of blocks of any type
    size_t        ws     = (size_t) VLC_MATMUL_ROWS * (size_t) max_in;
    ws = max_sz(ws, vlc_cpu_attn_work_floats(nd->G, nd->D));
    ws = max_sz(ws, vlc_cpu_attn_stats_work_floats(nd->D));
    ws = max_sz(ws, (size_t) nd->D);  // a RoPE table
    ws = round16(ws);
    if (ws > c->work_stride) {
        VLC_TRY(grow((void **) &c->work, &c->work_cap, ws * (size_t) be->n_threads * sizeof(float),
                     "per-thread scratch"));
        c->work_stride = ws;
    }
    for (int32_t i = 0; i < nd->n_types; i++) {
        const uint32_t t    = nd->types[i];
        const int      kind = vlc_act_kind(t);
        if (!kind) {
            continue;
        }
        VLC_TRY(grow(&c->xq[kind], &c->xq_cap[kind], (size_t) nd->max_rows * vlc_act_row_bytes(t, max_in),
                     "quantized activations"));
        if (kind == VLC_ACT_Q8A) {
            VLC_TRY(grow(&c->xlaid, &c->xlaid_cap, (size_t) QMM_TASK_MIN_TOK * vlc_qact_laid_bytes(t, max_in),
                         "decode activations"));
        }
    }
    return VLC_STATUS_OK;
}

static float * work_of(const cpu_ctx * c, int ith) {
    return c->work + (size_t) ith * c->work_stride;
}

// ---------------------------------------------------------------------------
// row ops

typedef struct rows_job {
    const cpu_ctx *     c;
    float *             y;
    const float *       x;
    const float *       w, * b;
    const int32_t *     ids;
    const vlc_weight *  table;
    int64_t             n, T;
    float               eps, base, scale;
    int32_t             H, Hkv, D;
    float *             k;
    int                 act;
} rows_job;

// Row blocks per task for the cheap row ops: enough rows that a task is not all overhead.
enum { ROWS_PER_TASK = 8 };

static int64_t blocks(int64_t T) {
    return (T + ROWS_PER_TASK - 1) / ROWS_PER_TASK;
}

#define FOR_ROWS(task, j)                                                                   \
    for (int64_t t = (task) * ROWS_PER_TASK, t1_ = t + ROWS_PER_TASK < (j)->T ? t + ROWS_PER_TASK : (j)->T; \
         t < t1_; t++)

static void embed_task(void * ctx, int64_t task, int ith) {
    const rows_job * j   = ctx;
    const size_t     row = vlc_row_bytes(j->table->type, j->n);
    FOR_ROWS(task, j) {
        vlc_cpu_to_f32(j->y + t * j->n, (const char *) j->table->data + (size_t) j->ids[t] * row, j->table->type, j->n);
    }
}

static void cpu_embed(vlc_backend * be, float * x, const vlc_weight * table, const int32_t * tokens, int64_t T) {
    rows_job j = { .y = x, .table = table, .ids = tokens, .n = table->ne[0], .T = T };
    vlc_pool_run(ctx_of(be)->pool, embed_task, &j, blocks(T));
}

static void rmsnorm_task(void * ctx, int64_t task, int ith) {
    const rows_job * j = ctx;
    FOR_ROWS(task, j) {
        vlc_cpu_rmsnorm(j->y + t * j->n, j->x + t * j->n, j->w, j->n, j->eps);
    }
}

static void cpu_rmsnorm(vlc_backend * be, float * y, const float * x, const float * w, int64_t T, int64_t C,
                        float eps) {
    rows_job j = { .y = y, .x = x, .w = w, .n = C, .T = T, .eps = eps };
    vlc_pool_run(ctx_of(be)->pool, rmsnorm_task, &j, blocks(T));
}

static void layernorm_task(void * ctx, int64_t task, int ith) {
    const rows_job * j = ctx;
    FOR_ROWS(task, j) {
        vlc_cpu_layernorm(j->y + t * j->n, j->x + t * j->n, j->w, j->b, j->n, j->eps);
    }
}

static void cpu_layernorm(vlc_backend * be, float * y, const float * x, const float * w, const float * b, int64_t T,
                          int64_t C, float eps) {
    rows_job j = { .y = y, .x = x, .w = w, .b = b, .n = C, .T = T, .eps = eps };
    vlc_pool_run(ctx_of(be)->pool, layernorm_task, &j, blocks(T));
}

static void add_task(void * ctx, int64_t task, int ith) {
    const rows_job * j = ctx;
    FOR_ROWS(task, j) {
        vlc_cpu_add(j->y + t * j->n, j->x + t * j->n, j->n);
    }
}

static void cpu_add(vlc_backend * be, float * y, const float * x, int64_t T, int64_t C) {
    rows_job j = { .y = y, .x = x, .n = C, .T = T };
    vlc_pool_run(ctx_of(be)->pool, add_task, &j, blocks(T));
}

static void swiglu_task(void * ctx, int64_t task, int ith) {
    const rows_job * j = ctx;
    FOR_ROWS(task, j) {
        vlc_cpu_swiglu(j->y + t * j->n, j->y + t * j->n, j->x + t * j->n, j->n);
    }
}

static void cpu_swiglu(vlc_backend * be, float * gate, const float * up, int64_t T, int64_t F) {
    rows_job j = { .y = gate, .x = up, .n = F, .T = T };
    vlc_pool_run(ctx_of(be)->pool, swiglu_task, &j, blocks(T));
}

static void bias_act_task(void * ctx, int64_t task, int ith) {
    const rows_job * j = ctx;
    FOR_ROWS(task, j) {
        float * y = j->y + t * j->n;
        if (j->b) {
            vlc_cpu_add(y, j->b, j->n);
        }
        switch (j->act) {
            case VLC_ACT_GELU_ERF:   vlc_cpu_gelu_erf(y, j->n); break;
            case VLC_ACT_GELU_TANH:  vlc_cpu_gelu_tanh(y, j->n); break;
            case VLC_ACT_QUICK_GELU: vlc_cpu_quick_gelu(y, j->n); break;
            default: break;
        }
    }
}

static void rope_task(void * ctx, int64_t task, int ith) {
    const rows_job * j  = ctx;
    float *          cs = work_of(j->c, ith);
    FOR_ROWS(task, j) {
        vlc_cpu_rope_table(cs, j->ids[t], j->D, j->base, j->scale);
        vlc_cpu_rope(j->y + t * j->H * j->D, j->H, j->D, cs);
        vlc_cpu_rope(j->k + t * j->Hkv * j->D, j->Hkv, j->D, cs);
    }
}

static void cpu_rope(vlc_backend * be, float * q, int32_t H, float * k, int32_t Hkv, const int32_t * pos, int64_t T,
                     int32_t D, float freq_base, float freq_scale) {
    rows_job j = { .c = ctx_of(be), .y = q, .k = k, .ids = pos, .T = T, .H = H, .Hkv = Hkv, .D = D,
                   .base = freq_base, .scale = freq_scale };
    vlc_pool_run(ctx_of(be)->pool, rope_task, &j, blocks(T));
}

// ---------------------------------------------------------------------------
// matmul

// Quantized prefill: rows per task, so that the activations a call interleaves for its
// token groups (ops_qsimd.c) are reused over many weight rows.
enum { QMM_TASK_ROWS = 128 };

// Decode matmuls: tasks per thread. Handing out 16-row tasks instead interleaved the
// threads' weight streams and left decode at the sum of compute and memory time (Q4_K_M
// tg128 on 2 threads: 34.7 tok/s with 16-row tasks, 48.2 with 1, 2 or 4 ranges per thread).
enum { DECODE_TASKS = 4 };

typedef struct mm_job {
    const cpu_ctx * c;
    const float *   x;  // [T, n_in]
    int64_t         n_in, T;
    int             n;
    vlc_mm          out[3];
    const void *    xq[3];     // block-quantized W: x quantized for it, else NULL
    const void *    laid[3];   // decode steps of legacy types: xq laid out, else NULL
    int64_t         first[4];  // first task of each output; first[n] = total
    int64_t         rows[3];   // output rows per task of each output
} mm_job;

static void mm_task(void * ctx, int64_t task, int ith) {
    const mm_job * j = ctx;
    int            k = 0;
    while (task >= j->first[k + 1]) {
        k++;
    }
    const vlc_mm * o     = &j->out[k];
    const int64_t  n_out = o->w->ne[1];
    const int64_t  r0    = (task - j->first[k]) * j->rows[k];
    const int64_t  r1    = r0 + j->rows[k] < n_out ? r0 + j->rows[k] : n_out;
    if (j->xq[k]) {
        vlc_qmatmul_rows(o->y, o->ldy, o->w->data, o->w->type, j->xq[k], j->n_in, j->T, r0, r1, o->accumulate,
                         j->laid[k]);
    } else {
        vlc_cpu_matmul_rows(o->y, o->ldy, o->w->data, o->w->type, j->x, j->n_in, j->n_in, j->T, r0, r1,
                            o->accumulate, work_of(j->c, ith));
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

static void cpu_matmul(vlc_backend * be, const float * x, int64_t n_in, int64_t T, int n, const vlc_mm * outs) {
    cpu_ctx * c   = ctx_of(be);
    mm_job    j   = { .c = c, .x = x, .n_in = n_in, .T = T, .n = n };
    int       done[3] = { 0, 0, 0 };  // activation kinds quantized for this job
    j.first[0] = 0;
    for (int k = 0; k < n; k++) {
        j.out[k]       = outs[k];
        const int kind = vlc_act_kind(outs[k].w->type);
        if (kind) {  // quantize x once per kind, shared by every output that reads it
            if (!done[kind]) {
                xq_job q = { x, n_in, outs[k].w->type, c->xq[kind], vlc_act_row_bytes(outs[k].w->type, n_in) };
                if (T < QMM_TASK_MIN_TOK) {  // decode: few rows, not worth waking the pool
                    for (int64_t t = 0; t < T; t++) {
                        xq_task(&q, t, 0);
                    }
                    if (kind == VLC_ACT_Q8A) {  // and laid out once for every row task
                        vlc_qact_lay(outs[k].w->type, q.xq, n_in, T, c->xlaid);
                    }
                } else {
                    vlc_pool_run(c->pool, xq_task, &q, T);
                }
                done[kind] = 1;
            }
            j.xq[k]   = c->xq[kind];
            j.laid[k] = kind == VLC_ACT_Q8A && T < QMM_TASK_MIN_TOK ? c->xlaid : NULL;
        }
        // Rows per task (the bits never depend on them). Few tokens (decode): the time is the
        // weight stream, so each thread gets a few long contiguous ranges that the hardware
        // and software prefetchers follow as one stream. Many tokens: float weights as many
        // rows as the SIMD GEMM reuses x over, while every thread still gets at least 4 tasks.
        const int64_t n_out = outs[k].w->ne[1];
        const int64_t n_th  = be->n_threads;
        int64_t       rows;
        if (T < QMM_TASK_MIN_TOK) {
            rows = (n_out + DECODE_TASKS * n_th - 1) / (DECODE_TASKS * n_th);
            rows = (rows + VLC_MATMUL_ROWS - 1) / VLC_MATMUL_ROWS * VLC_MATMUL_ROWS;
        } else {
            rows = kind ? QMM_TASK_ROWS : vlc_simd_task_rows(n_in, T);
            while (rows > VLC_MATMUL_ROWS && n_out < 4 * n_th * rows) {
                rows = rows / 2 > VLC_MATMUL_ROWS ? rows / 2 : VLC_MATMUL_ROWS;
            }
        }
        j.rows[k]      = rows;
        j.first[k + 1] = j.first[k] + (n_out + rows - 1) / rows;
    }
    vlc_pool_run(c->pool, mm_task, &j, j.first[n]);
    for (int k = 0; k < n; k++) {  // bias and activation (the vision tower's linears)
        if (outs[k].b || outs[k].act != VLC_ACT_NONE) {
            rows_job r = { .y = outs[k].y, .b = outs[k].b, .n = outs[k].w->ne[1], .T = T, .act = outs[k].act };
            vlc_pool_run(c->pool, bias_act_task, &r, blocks(T));
        }
    }
}

// ---------------------------------------------------------------------------
// decoder attention

typedef struct attn_job {
    const cpu_ctx *      c;
    const vlc_attn_seq * seqs;
    int32_t              n_seqs, il, H, arows;
    int64_t              nb;  // row blocks of the single sequence (n_seqs == 1)
    const float *        q, * k, * v;
    float *              out, * ml;
} attn_job;

static void kv_store_task(void * ctx, int64_t task, int ith) {
    const attn_job *     j   = ctx;
    const int32_t        Hkv = j->seqs[0].kv->n_head_kv;
    const vlc_attn_seq * s   = &j->seqs[task / Hkv];
    const vlc_kvcache *  kv  = s->kv;
    const int32_t        g   = (int32_t) (task % Hkv);
    const int64_t        KD = (int64_t) Hkv * kv->head_dim, o = (int64_t) g * kv->head_dim;
    vlc_kv_head *        h   = vlc_kv_at(kv, j->il, g);
    for (int32_t i = 0; i < s->n; i++) {
        const int64_t r = s->row + i;
        vlc_kv_put(kv, h, h->n + i, j->k + r * KD + o, j->v + r * KD + o, s->pos + i);
    }
}

static void cpu_kv_store(vlc_backend * be, const vlc_attn_seq * seqs, int32_t n_seqs, int32_t il, const float * k,
                         const float * v) {
    attn_job j = { .seqs = seqs, .n_seqs = n_seqs, .il = il, .k = k, .v = v };
    vlc_pool_run(ctx_of(be)->pool, kv_store_task, &j, (int64_t) n_seqs * seqs[0].kv->n_head_kv);
}

// Task = (block of rows, KV head g): the G query heads of each row attend causally to the
// head's entries from before the sequence's new rows plus the new ones up to their own.
// One sequence: blocks of arows rows, the longest rows first; several: one block per
// sequence. One kernel call per block, so each K / V tile is converted once per block; a
// row's bits do not depend on the block (ops_cpu.h), hence not on the thread count,
// n_batch or the chunking either.
static void attn_task(void * ctx, int64_t task, int ith) {
    const attn_job *     j   = ctx;
    const int32_t        Hkv = j->seqs[0].kv->n_head_kv, D = j->seqs[0].kv->head_dim, G = j->H / Hkv;
    const int64_t        g   = task % Hkv, HD = (int64_t) j->H * D;
    const vlc_attn_seq * s   = j->n_seqs == 1 ? &j->seqs[0] : &j->seqs[task / Hkv];
    const int64_t        b   = j->n_seqs == 1 ? j->nb - 1 - task / Hkv : 0;
    const int64_t        i0  = b * j->arows, i1 = j->n_seqs == 1 && i0 + j->arows < s->n ? i0 + j->arows : s->n;
    const vlc_kv_head *  h   = vlc_kv_at(s->kv, j->il, (int32_t) g);
    const int64_t        r0  = s->row + i0;
    float *              ml  = j->ml ? j->ml + (r0 * j->H + g * G) * 2 : NULL;  // [T, H, 2]
    vlc_cpu_attn_rows(j->out + r0 * HD + g * G * D, HD, ml, (int64_t) j->H * 2, j->q + r0 * HD + g * G * D, HD,
                      (int32_t) (i1 - i0), h->n + i0 + 1, 1, G, h->k, h->v, s->kv->type, D,
                      1.0f / sqrtf((float) D), work_of(j->c, ith));
}

static void cpu_attention(vlc_backend * be, float * out, const float * q, int32_t H, const vlc_attn_seq * seqs,
                          int32_t n_seqs, int32_t il, float * ml) {
    cpu_ctx *     c   = ctx_of(be);
    const int32_t Hkv = seqs[0].kv->n_head_kv;
    attn_job      j   = { .c = c, .seqs = seqs, .n_seqs = n_seqs, .il = il, .H = H, .q = q, .out = out, .ml = ml };
    int64_t       n_tasks = (int64_t) n_seqs * Hkv;
    if (n_seqs == 1) {
        // blocks of one kernel pass of rows, halved while there would be fewer than 4 tasks
        // per thread (any block size gives the same bits)
        const int32_t T = seqs[0].n;
        j.arows = vlc_cpu_attn_pass_rows(H / Hkv);
        while (j.arows > 1 && ((T + j.arows - 1) / j.arows) * Hkv < 4 * be->n_threads) {
            j.arows = (j.arows + 1) / 2;
        }
        j.nb    = (T + j.arows - 1) / j.arows;
        n_tasks = j.nb * Hkv;
    }
    vlc_pool_run(c->pool, attn_task, &j, n_tasks);
}

static void cpu_attn_stats(vlc_backend * be, vlc_stats * stats, const vlc_kvcache * kv, int32_t il, int32_t p0,
                           int32_t T, const float * q) {
    cpu_ctx * c = ctx_of(be);
    vlc_stats_gather(stats, kv, il, p0, T, q, c->pool, c->work, c->work_stride);
}

// ---------------------------------------------------------------------------
// ViT ops

typedef struct vit_job {
    const cpu_ctx * c;
    float *         x, * cols, * kh, * vh, * out;
    const float *   px, * conv, * cls, * pos, * bias, * q, * k, * v;
    int64_t         T, C, H, D, n_qblk;
    int32_t         S, P;
} vit_job;

static void patch_task(void * ctx, int64_t tile, int ith) {
    const vit_job * j  = ctx;
    const int64_t   np = j->S / j->P, K = 3 * (int64_t) j->P * j->P;
    vlc_cpu_patchify(j->cols + tile * np * np * K, j->px + tile * 3 * (int64_t) j->S * j->S, j->S, j->P);
}

static void embd_task(void * ctx, int64_t tile, int ith) {
    const vit_job * j = ctx;
    const int64_t   N = j->T - 1;
    float *         x = j->x + tile * j->T * j->C;
    for (int64_t c = 0; c < j->C; c++) {
        x[c] = j->cls[c] + j->pos[c];
    }
    for (int64_t p = 0; p < N; p++) {
        const float * src = j->conv + (tile * N + p) * j->C;
        float *       dst = x + (1 + p) * j->C;
        const float * ps  = j->pos + (1 + p) * j->C;
        for (int64_t c = 0; c < j->C; c++) {
            const float e = j->bias ? src[c] + j->bias[c] : src[c];
            dst[c]        = e + ps[c];
        }
    }
}

static void cpu_patch_embed(vlc_backend * be, float * x, const float * pixels, int64_t nt, int32_t S, int32_t P,
                            const vlc_weight * patch, const float * bias, const float * cls, const float * pos,
                            float * cols, float * conv) {
    cpu_ctx *     c = ctx_of(be);
    const int64_t N = (int64_t) (S / P) * (S / P), C = patch->ne[1];
    vit_job       j = { .c = c, .x = x, .cols = cols, .px = pixels, .conv = conv, .cls = cls, .pos = pos,
                        .bias = bias, .T = N + 1, .C = C, .S = S, .P = P };
    vlc_pool_run(c->pool, patch_task, &j, nt);
    const vlc_mm mm = { .y = conv, .ldy = C, .w = patch };
    cpu_matmul(be, cols, patch->ne[0], nt * N, 1, &mm);
    vlc_pool_run(c->pool, embd_task, &j, nt);
}

// Every (tile, head, block of queries) is one task; K and V are first laid out head-major
// so each head's keys are contiguous [T, D] for vlc_cpu_attn.
enum { VIT_QUERIES_PER_TASK = 16 };

static void heads_task(void * ctx, int64_t task, int ith) {
    const vit_job * j    = ctx;  // task = tile * H + h
    const int64_t   h    = task % j->H, tile = task / j->H, C = j->H * j->D;
    for (int64_t t = 0; t < j->T; t++) {
        const int64_t src = (tile * j->T + t) * C + h * j->D;
        const int64_t dst = (task * j->T + t) * j->D;
        memcpy(j->kh + dst, j->k + src, (size_t) j->D * sizeof(float));
        memcpy(j->vh + dst, j->v + src, (size_t) j->D * sizeof(float));
    }
}

static void vit_attn_task(void * ctx, int64_t task, int ith) {
    const vit_job * j    = ctx;
    const int64_t   qb   = task % j->n_qblk, h = (task / j->n_qblk) % j->H, tile = task / (j->n_qblk * j->H);
    const int64_t   C    = j->H * j->D;
    const float *   k    = j->kh + (tile * j->H + h) * j->T * j->D;
    const float *   v    = j->vh + (tile * j->H + h) * j->T * j->D;
    float *         wk   = work_of(j->c, ith);
    const float     scale = 1.0f / sqrtf((float) j->D);
    const int64_t   i0   = qb * VIT_QUERIES_PER_TASK;
    const int64_t   i1   = i0 + VIT_QUERIES_PER_TASK < j->T ? i0 + VIT_QUERIES_PER_TASK : j->T;
    for (int64_t i = i0; i < i1; i++) {
        const int64_t row = (tile * j->T + i) * C + h * j->D;
        vlc_cpu_attn(j->out + row, j->q + row, 1, k, v, VLC_TYPE_F32, j->T, (int32_t) j->D, scale, wk);
    }
}

static void cpu_vit_attention(vlc_backend * be, float * out, const float * q, const float * k, const float * v,
                              int64_t nt, int64_t T, int32_t H, int32_t D, float * kh, float * vh) {
    cpu_ctx * c = ctx_of(be);
    vit_job   j = { .c = c, .out = out, .q = q, .k = k, .v = v, .kh = kh, .vh = vh, .T = T, .H = H, .D = D,
                    .n_qblk = (T + VIT_QUERIES_PER_TASK - 1) / VIT_QUERIES_PER_TASK };
    vlc_pool_run(c->pool, heads_task, &j, nt * H);
    vlc_pool_run(c->pool, vit_attn_task, &j, nt * H * j.n_qblk);
}

// ---------------------------------------------------------------------------
// create / free

static void cpu_free(vlc_backend * be) {
    cpu_ctx * c = ctx_of(be);
    if (c) {
        vlc_pool_free(c->pool);
        free(c->work);
        for (int i = 0; i < 3; i++) {
            free(c->xq[i]);
        }
        free(c->xlaid);
        free(c);
    }
    free(be);
}

vlc_status vlc_backend_cpu_create(int32_t n_threads, vlc_backend ** out) {
    VLC_CHECK(out != NULL, VLC_STATUS_INVALID_ARG, "out is NULL");
    *out = NULL;
    VLC_CHECK(n_threads >= 1 && n_threads <= 1024, VLC_STATUS_INVALID_ARG, "n_threads = %d, expected 1 .. 1024",
              n_threads);
    vlc_backend * be = calloc(1, sizeof(*be));
    cpu_ctx *     c  = calloc(1, sizeof(*c));
    if (!be || !c) {
        free(be);
        free(c);
        return VLC_ERR(VLC_STATUS_OOM, "cannot allocate the CPU backend");
    }
    *be = (vlc_backend) {
        .name = "cpu", .n_threads = n_threads, .ctx = c, .free = cpu_free,
        .alloc = cpu_alloc, .dealloc = cpu_dealloc, .upload = cpu_copy, .download = cpu_copy, .copy = cpu_copy,
        .gather_rows = cpu_gather_rows, .sync = cpu_sync, .reserve = cpu_reserve,
        .embed = cpu_embed, .rmsnorm = cpu_rmsnorm, .layernorm = cpu_layernorm, .add = cpu_add,
        .swiglu = cpu_swiglu, .rope = cpu_rope, .matmul = cpu_matmul,
        .kv_store = cpu_kv_store, .attention = cpu_attention, .attn_stats = cpu_attn_stats,
        .patch_embed = cpu_patch_embed, .vit_attention = cpu_vit_attention,
    };
    vlc_status s = n_threads > 1 ? vlc_pool_create(n_threads, &c->pool) : VLC_STATUS_OK;
    if (s != VLC_STATUS_OK) {
        cpu_free(be);
        return s;
    }
    *out = be;
    return VLC_STATUS_OK;
}
