// matmul.c: the one dispatch point of the CPU matmul: block-quantized weights go to the
// quantized kernels (ops_qsimd.c), float weights to the AVX2 / AVX-512 kernels (ops_simd.c)
// when the CPU has them, anything else to the reference (ops_cpu.c). Also the threaded
// matmul over a pool. The kernels never call each other upwards: types (quant.c) <-
// reference (ops_cpu.c, ops_attn.c's reference) <- SIMD (ops_simd.c, ops_qsimd.c) <- here.
#include "ops_cpu.h"
#include "ops_qsimd.h"
#include "ops_simd.h"
#include "quant.h"
#include "threads.h"

void vlc_cpu_matmul_rows(float * y, int64_t ldy, const void * w, uint32_t type, const float * x,
                         int64_t ldx, int64_t n_in, int64_t n_tok, int64_t r0, int64_t r1,
                         int accumulate, float * work) {
    if (vlc_act_kind(type)) {
        // block-quantized weights: each token's activations quantized into work (callers
        // with many rows quantize once and call vlc_qmatmul_rows themselves)
        for (int64_t t = 0; t < n_tok; t++) {
            vlc_quantize_act_row(type, x + t * ldx, work, n_in);
            vlc_qmatmul_rows(y + t * ldy, ldy, w, type, work, n_in, 1, r0, r1, accumulate, NULL);
        }
        return;
    }
    if (!vlc_simd_matmul_rows(y, ldy, w, type, x, ldx, n_in, n_tok, r0, r1, accumulate, work)) {
        vlc_ref_matmul_rows(y, ldy, w, type, x, ldx, n_in, n_tok, r0, r1, accumulate, work);
    }
}

void vlc_cpu_matmul(float * y, const void * w, uint32_t type, const float * x, int64_t n_in,
                    int64_t n_out, int64_t n_tok, int accumulate, float * work) {
    vlc_cpu_matmul_rows(y, n_out, w, type, x, n_in, n_in, n_tok, 0, n_out, accumulate, work);
}

typedef struct matmul_job {
    float *       y;
    const void *  w;
    uint32_t      type;
    const float * x;
    int64_t       n_in, n_out, n_tok;
    int           accumulate;
    float *       work;  // [n_threads, VLC_MATMUL_ROWS * n_in]
    char *        xq;    // block-quantized W: x quantized once ([n_tok] activation rows), or NULL
    size_t        xrow;  // bytes per activation row
    int64_t       rows;  // output rows per task
} matmul_job;

static void matmul_task(void * ctx, int64_t task, int ith) {
    const matmul_job * j  = ctx;
    const int64_t      r0 = task * j->rows;
    const int64_t      r1 = r0 + j->rows < j->n_out ? r0 + j->rows : j->n_out;
    if (j->xq) {
        vlc_qmatmul_rows(j->y, j->n_out, j->w, j->type, j->xq, j->n_in, j->n_tok, r0, r1, j->accumulate, NULL);
        return;
    }
    float * wk = j->work + (size_t) ith * VLC_MATMUL_ROWS * (size_t) j->n_in;
    vlc_cpu_matmul_rows(j->y, j->n_out, j->w, j->type, j->x, j->n_in, j->n_in, j->n_tok, r0, r1,
                        j->accumulate, wk);
}

static void quantize_task(void * ctx, int64_t t, int ith) {
    (void) ith;
    const matmul_job * j = ctx;
    vlc_quantize_act_row(j->type, j->x + t * j->n_in, j->xq + (size_t) t * j->xrow, j->n_in);
}

// Rows per task of a quantized matmul over many tokens: the token-lane kernels repack the
// activations in every task, so tasks are larger than VLC_MATMUL_ROWS.
enum { QMM_MT_ROWS = 64 };

void vlc_cpu_matmul_mt(vlc_pool * pool, float * y, const void * w, uint32_t type, const float * x,
                       int64_t n_in, int64_t n_out, int64_t n_tok, int accumulate, float * work, void * xq) {
    matmul_job j = { y, w, type, x, n_in, n_out, n_tok, accumulate, work, NULL, 0, VLC_MATMUL_ROWS };
    if (xq && vlc_act_kind(type)) {  // quantize each activation row once, not once per task
        j.xq   = xq;
        j.xrow = vlc_act_row_bytes(type, n_in);
        j.rows = QMM_MT_ROWS;
        vlc_pool_run(pool, quantize_task, &j, n_tok);
    }
    vlc_pool_run(pool, matmul_task, &j, (n_out + j.rows - 1) / j.rows);
}

