// test_simd.c: the SIMD matmul (ops_simd.c) at every level this CPU has, against a
// double-precision reference and the reference kernel vlc_cpu_matmul, against a scalar
// emulation of its bit contract (exact), plus its bit-reproducibility across n_tok, row
// splits, strides and the work buffer.
// `test_simd bench` or VLC_SIMD_BENCH=1 instead times x [512, 2048] against F16 weights
// [5632, 2048] (and the transposed FFN shape) on 1 and 2 threads (see bench below).
//
// Tolerance: |got - exact| <= 1e-5 * sum_k |w_k x_k| (the exact dot in double). Why: an
// L-lane FMA chain of ceil(n / L) steps and a log2(L)-level tree has a worst-case error of
// (n / L + log2 L + 1) * 2^-24 * sum|w x|, about 2.3e-6 for the largest n here (257 at
// L = 8); the reference kernel (8 partial sums) has the same bound, so the two differ by at
// most ~4.6e-6 of the magnitude. 1e-5 leaves room without hiding a wrong element or order
// (a missing or duplicated term shows up at ~1e-2 relative). Bitwise properties are exact.
#include "ops_cpu.h"
#include "ops_simd.h"
#include "threads.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define VLC_TEST_SEED 0x243f6a8885a308d3ull
#include "vlc_test.h"

static const uint32_t k_types[3] = { VLC_TYPE_F32, VLC_TYPE_F16, VLC_TYPE_BF16 };

static const char * type_name(uint32_t type) {
    return type == VLC_TYPE_F32 ? "f32" : type == VLC_TYPE_F16 ? "f16" : "bf16";
}

// W [n_out, n_in] of type with random values (also returned as f32 in wf, exactly)
static void * make_w(uint32_t type, int64_t n_out, int64_t n_in, float * wf) {
    const size_t es = vlc_type_size(type);
    void *       w  = malloc((size_t) (n_out * n_in) * es + 1);
    for (int64_t i = 0; i < n_out * n_in; i++) {
        wf[i] = rng_unif();
    }
    vlc_cpu_from_f32(w, wf, type, n_out * n_in);
    vlc_cpu_to_f32(wf, w, type, n_out * n_in);  // the values the kernels actually see
    return w;
}

static int same_bits(const float * a, const float * b, int64_t n) {
    return memcmp(a, b, (size_t) n * sizeof(float)) == 0;
}

// ---------------------------------------------------------------------------
// accuracy on odd shapes

static void test_accuracy(int level) {
    const int64_t outs[] = { 1, 3, 17, 37 };
    const int64_t ins[]  = { 1, 7, 8, 9, 15, 16, 17, 31, 33, 257 };
    const int64_t toks[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 64 };
    int64_t       n_checked = 0;
    for (int ti = 0; ti < 3; ti++) {
        const uint32_t type = k_types[ti];
        for (size_t oi = 0; oi < sizeof(outs) / sizeof(outs[0]); oi++) {
            for (size_t ii = 0; ii < sizeof(ins) / sizeof(ins[0]); ii++) {
                const int64_t n_out = outs[oi], n_in = ins[ii];
                float *       wf    = malloc((size_t) (n_out * n_in) * sizeof(float));
                void *        w     = make_w(type, n_out, n_in, wf);
                float *       work  = malloc((size_t) VLC_MATMUL_ROWS * (size_t) n_in * sizeof(float));
                for (size_t ki = 0; ki < sizeof(toks) / sizeof(toks[0]); ki++) {
                    const int64_t n_tok = toks[ki];
                    float *       x     = malloc((size_t) (n_tok * n_in) * sizeof(float));
                    float *       y     = malloc((size_t) (n_tok * n_out) * sizeof(float));
                    float *       yr    = malloc((size_t) (n_tok * n_out) * sizeof(float));
                    for (int64_t i = 0; i < n_tok * n_in; i++) {
                        x[i] = rng_unif();
                    }
                    int done = vlc_simd_matmul_rows(y, n_out, w, type, x, n_in, n_in, n_tok, 0, n_out, 0, work);
                    CHECK(done == 1, "%s level %s did not run", type_name(type), vlc_simd_level_name(level));
                    vlc_ref_matmul_rows(yr, n_out, w, type, x, n_in, n_in, n_tok, 0, n_out, 0, work);
                    for (int64_t t = 0; t < n_tok; t++) {
                        for (int64_t o = 0; o < n_out; o++) {
                            double ex = 0.0, mag = 0.0;
                            for (int64_t k = 0; k < n_in; k++) {
                                const double p = (double) wf[o * n_in + k] * (double) x[t * n_in + k];
                                ex += p;
                                mag += fabs(p);
                            }
                            const double got = y[t * n_out + o], ref = yr[t * n_out + o];
                            CHECK(fabs(got - ex) <= 1e-5 * mag,
                                  "%s %s out %lld in %lld tok %lld [%lld,%lld]: %.9g vs exact %.9g (mag %g)",
                                  vlc_simd_level_name(level), type_name(type), (long long) n_out, (long long) n_in,
                                  (long long) n_tok, (long long) t, (long long) o, got, ex, mag);
                            CHECK(fabs(got - ref) <= 1e-5 * mag,
                                  "%s %s out %lld in %lld tok %lld: %.9g vs reference %.9g",
                                  vlc_simd_level_name(level), type_name(type), (long long) n_out, (long long) n_in,
                                  (long long) n_tok, got, ref);
                            n_checked++;
                        }
                    }
                    free(x), free(y), free(yr);
                }
                free(w), free(wf), free(work);
            }
        }
    }
    printf("  accuracy: %lld outputs checked\n", (long long) n_checked);
}

// ---------------------------------------------------------------------------
// bitwise reproducibility: n_tok, row splits, strides, work buffer, accumulate

static void test_bits(int level) {
    const int64_t shapes[3][2] = { { 45, 33 }, { 45, 257 }, { 150, 1041 } };  // { n_out, n_in }: blocks, k chunks
    for (int ti = 0; ti < 3; ti++) {
        const uint32_t type = k_types[ti];
        for (int ii = 0; ii < 3; ii++) {
            const int64_t n_out = shapes[ii][0], n_in = shapes[ii][1], n_tok = 131, ldx = n_in + 3, ldy = n_out + 5;
            float *       wf    = malloc((size_t) (n_out * n_in) * sizeof(float));
            void *        w     = make_w(type, n_out, n_in, wf);
            float *       work  = malloc((size_t) VLC_MATMUL_ROWS * (size_t) n_in * sizeof(float));
            float *       x     = malloc((size_t) (n_tok * ldx) * sizeof(float));
            float *       full  = malloc((size_t) (n_tok * ldy) * sizeof(float));
            float *       y     = malloc((size_t) (n_tok * ldy) * sizeof(float));
            for (int64_t i = 0; i < n_tok * ldx; i++) {
                x[i] = rng_unif();
            }
            memset(full, 0, (size_t) (n_tok * ldy) * sizeof(float));
            vlc_simd_matmul_rows(full, ldy, w, type, x, ldx, n_in, n_tok, 0, n_out, 0, work);

            // every token alone (decode), and small batches, give the bits of the big call
            // decode, AVX2's in-place few-token tiles (3-127 tokens), packed blocks (AVX-512 from 6, AVX2 from 128)
            const int64_t batches[] = { 1, 2, 3, 5, 6, 7, 12, 13, 16, 127, 128 };
            for (int bi = 0; bi < 11; bi++) {
                const int64_t b = batches[bi];
                memset(y, 0, (size_t) (n_tok * ldy) * sizeof(float));
                for (int64_t t0 = 0; t0 < n_tok; t0 += b) {
                    const int64_t nb = n_tok - t0 < b ? n_tok - t0 : b;
                    vlc_simd_matmul_rows(y + t0 * ldy, ldy, w, type, x + t0 * ldx, ldx, n_in, nb, 0, n_out, 0,
                                         bi % 2 ? NULL : work);
                }
                CHECK(same_bits(y, full, n_tok * ldy), "%s %s n_in %lld: batches of %lld differ from n_tok %lld",
                      vlc_simd_level_name(level), type_name(type), (long long) n_in, (long long) b, (long long) n_tok);
            }
            // row splits (as threads would make them), with and without work
            const int64_t cuts[][4] = { { 0, 1, 2, n_out },  { 0, 5, 22, n_out },         { 0, 16, 32, n_out },
                                        { 0, 13, 44, n_out }, { 0, 3, n_out - 1, n_out }, { 0, 33, 34, n_out } };
            for (int ci = 0; ci < 6; ci++) {
                memset(y, 0, (size_t) (n_tok * ldy) * sizeof(float));
                for (int s = 0; s < 3; s++) {
                    vlc_simd_matmul_rows(y, ldy, w, type, x, ldx, n_in, n_tok, cuts[ci][s], cuts[ci][s + 1], 0,
                                         ci % 2 ? NULL : work);
                }
                CHECK(same_bits(y, full, n_tok * ldy), "%s %s n_in %lld: row split %d differs",
                      vlc_simd_level_name(level), type_name(type), (long long) n_in, ci);
            }
            // accumulate: y0 + d, rounded once, and nothing outside the rows written
            for (int64_t i = 0; i < n_tok * ldy; i++) {
                y[i] = rng_unif();
            }
            float * y0 = malloc((size_t) (n_tok * ldy) * sizeof(float));
            memcpy(y0, y, (size_t) (n_tok * ldy) * sizeof(float));
            vlc_simd_matmul_rows(y, ldy, w, type, x, ldx, n_in, n_tok, 3, n_out - 5, 1, work);
            int ok = 1;
            for (int64_t t = 0; t < n_tok; t++) {
                for (int64_t o = 0; o < ldy; o++) {
                    const float want =
                        (o >= 3 && o < n_out - 5) ? y0[t * ldy + o] + full[t * ldy + o] : y0[t * ldy + o];
                    ok &= memcmp(&want, &y[t * ldy + o], sizeof(float)) == 0;
                }
            }
            CHECK(ok, "%s %s n_in %lld: accumulate or untouched rows wrong", vlc_simd_level_name(level),
                  type_name(type), (long long) n_in);
            free(y0), free(w), free(wf), free(work), free(x), free(full), free(y);
        }
    }
}

// ---------------------------------------------------------------------------
// the bit contract (ops_simd.h), emulated in scalar code: lane l of an L-lane chain takes
// k = l, l + L, ... in increasing order with one fused multiply-add each (fmaf, exact),
// the tail zero-padded; then (L = 16) lane i + lane i + 8, then
// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)). Every blocking must give these bits.

static float contract_dot(const float * w, const float * x, int64_t n, int L) {
    float acc[16];
    for (int l = 0; l < L; l++) {
        acc[l] = 0.0f;
    }
    for (int64_t k0 = 0; k0 < n; k0 += L) {
        for (int l = 0; l < L; l++) {
            const int64_t k = k0 + l;
            acc[l]          = fmaf(k < n ? w[k] : 0.0f, k < n ? x[k] : 0.0f, acc[l]);
        }
    }
    if (L == 16) {
        for (int l = 0; l < 8; l++) {
            acc[l] = acc[l] + acc[l + 8];
        }
    }
    const float s0 = acc[0] + acc[4], s1 = acc[1] + acc[5], s2 = acc[2] + acc[6], s3 = acc[3] + acc[7];
    return (s0 + s2) + (s1 + s3);
}

// n_tok 1..13 (decode tiles, partial and whole token groups) and 37, k tails around the
// vector width and the 1024-element k chunk, row counts across the 4-row tiles and the
// 64-row packed blocks, odd r0 / r1 (rows outside untouched), strides, accumulate.
static void test_contract(int level) {
    const int     L      = level == VLC_SIMD_AVX512 ? 16 : 8;
    const int64_t ins[]  = { 0, 1, 7, 15, 16, 17, 33, 1023, 1024, 1025, 2063 };
    const int64_t outs[] = { 1, 6, 19, 150 };
    int64_t       n_checked = 0, n_bad = 0;
    for (int ti = 0; ti < 3; ti++) {
        const uint32_t type = k_types[ti];
        for (size_t ii = 0; ii < sizeof(ins) / sizeof(ins[0]); ii++) {
            for (size_t oi = 0; oi < sizeof(outs) / sizeof(outs[0]); oi++) {
                const int64_t n_in = ins[ii], n_out = outs[oi];
                if (n_in > 64 && n_out == 19) {
                    continue;  // keeps the run short; 150 covers the long rows
                }
                float * wf = malloc((size_t) (n_out * n_in + 1) * sizeof(float));
                void *  w  = make_w(type, n_out, n_in, wf);
                for (int64_t n_tok = 1; n_tok <= 14; n_tok++) {
                    const int64_t T = n_tok == 14 ? 37 : n_tok;
                    if (n_in > 64 && n_out == 150 && T != 1 && T != 6 && T != 7 && T != 37) {
                        continue;
                    }
                    const int64_t ldx = n_in + (T % 3), ldy = n_out + 1 + (T % 2);
                    const int64_t r0 = n_out > 2 ? 1 + T % 2 : 0, r1 = n_out > 4 ? n_out - 1 : n_out;
                    const int     acc = (int) (T % 2);
                    float *       x   = malloc((size_t) (T * ldx + 1) * sizeof(float));
                    float *       y   = malloc((size_t) (T * ldy) * sizeof(float));
                    float *       y0  = malloc((size_t) (T * ldy) * sizeof(float));
                    for (int64_t i = 0; i < T * ldx; i++) {
                        x[i] = rng_unif();
                    }
                    for (int64_t i = 0; i < T * ldy; i++) {
                        y0[i] = rng_unif();
                    }
                    memcpy(y, y0, (size_t) (T * ldy) * sizeof(float));
                    vlc_simd_matmul_rows(y, ldy, w, type, x, ldx, n_in, T, r0, r1, acc, NULL);
                    for (int64_t t = 0; t < T; t++) {
                        for (int64_t o = 0; o < ldy; o++) {
                            float want = y0[t * ldy + o];
                            if (o >= r0 && o < r1) {
                                const float d = contract_dot(wf + o * n_in, x + t * ldx, n_in, L);
                                want          = acc ? want + d : d;
                            }
                            const int same = memcmp(&want, &y[t * ldy + o], sizeof(float)) == 0;
                            CHECK(same, "%s %s in %lld out %lld tok %lld [%lld, %lld]: %.9g, contract %.9g",
                                  vlc_simd_level_name(level), type_name(type), (long long) n_in, (long long) n_out,
                                  (long long) T, (long long) t, (long long) o, y[t * ldy + o], want);
                            n_bad += !same;
                            n_checked++;
                        }
                    }
                    free(x), free(y), free(y0);
                }
                free(w), free(wf);
            }
        }
    }
    printf("  contract: %lld outputs checked bit for bit, %lld differ\n", (long long) n_checked, (long long) n_bad);
}

// ---------------------------------------------------------------------------
// task rows: a multiple of VLC_MATMUL_ROWS, 16 for decode, more for prefill

static void test_task_rows(int level) {
    const int64_t ins[] = { 1, 64, 2048, 5632, 1 << 20 };
    for (int ii = 0; ii < 5; ii++) {
        for (int64_t n_tok = 1; n_tok <= 512; n_tok *= 8) {
            const int64_t r = vlc_simd_task_rows(ins[ii], n_tok);
            CHECK(r >= VLC_MATMUL_ROWS && r % VLC_MATMUL_ROWS == 0 && r <= 1024,
                  "%s: task rows %lld for n_in %lld, n_tok %lld", vlc_simd_level_name(level), (long long) r,
                  (long long) ins[ii], (long long) n_tok);
        }
    }
    CHECK(vlc_simd_task_rows(2048, 1) == VLC_MATMUL_ROWS, "decode tasks must stay %d rows", VLC_MATMUL_ROWS);
    CHECK(vlc_simd_task_rows(2048, 512) > VLC_MATMUL_ROWS, "%s: prefill tasks of 2048-wide rows not widened",
          vlc_simd_level_name(level));
}

// ---------------------------------------------------------------------------
// benchmark (not run by ctest): the FFN shapes of a 2048-wide Llama (x [512, 2048] against
// F16 W [5632, 2048], and x [512, 5632] against W [2048, 5632]) plus a decode step, at each
// level, on 1 and 2 threads of the pool, in tasks of VLC_MATMUL_ROWS rows (how callers
// split today) and of vlc_simd_task_rows rows. Best time of ~1 s of repeats per line.

typedef struct bench_job {
    float *       y;
    const void *  w;
    const float * x;
    int64_t       n_in, n_out, n_tok, rows;
    float *       work;
    int           simd;
} bench_job;

static void bench_task(void * ctx, int64_t task, int ith) {
    const bench_job * j  = ctx;
    const int64_t     r0 = task * j->rows;
    const int64_t     r1 = r0 + j->rows < j->n_out ? r0 + j->rows : j->n_out;
    float *           wk = j->work + (size_t) ith * VLC_MATMUL_ROWS * (size_t) j->n_in;
    if (!j->simd || !vlc_simd_matmul_rows(j->y, j->n_out, j->w, VLC_TYPE_F16, j->x, j->n_in, j->n_in, j->n_tok,
                                          r0, r1, 0, wk)) {
        vlc_cpu_matmul_rows(j->y, j->n_out, j->w, VLC_TYPE_F16, j->x, j->n_in, j->n_in, j->n_tok, r0, r1, 0, wk);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

// best seconds per run of j over the pool
static double bench_time(vlc_pool * pool, bench_job * j, double budget_s) {
    const int64_t n_tasks = (j->n_out + j->rows - 1) / j->rows;
    double        best = 1e30, t_start = now_s();
    for (int reps = 0; reps < 2 || now_s() - t_start < budget_s; reps++) {
        const double t0 = now_s();
        vlc_pool_run(pool, bench_task, j, n_tasks);
        const double dt = now_s() - t0;
        best            = dt < best ? dt : best;
    }
    return best;
}

static int bench(void) {
    const int64_t max_in = 5632, max_out = 5632, max_tok = 512;
    float *       wf = malloc((size_t) (max_in * max_out) * sizeof(float));
    void *        w  = make_w(VLC_TYPE_F16, max_out, max_in, wf);
    float *       x  = aligned_alloc(64, (size_t) (max_tok * max_in) * sizeof(float));
    float *       y  = aligned_alloc(64, (size_t) (max_tok * max_out) * sizeof(float));
    float *       wk = aligned_alloc(64, (size_t) 2 * VLC_MATMUL_ROWS * (size_t) max_in * sizeof(float));
    if (!x || !y || !wk) {
        fprintf(stderr, "bench: out of memory\n");
        return 1;
    }
    for (int64_t i = 0; i < max_tok * max_in; i++) {
        x[i] = rng_unif();
    }
    const int64_t shapes[2][2] = { { 2048, 5632 }, { 5632, 2048 } };  // { n_in, n_out }
    for (int n_threads = 1; n_threads <= 2; n_threads++) {
        vlc_pool * pool = NULL;
        if (vlc_pool_create(n_threads, &pool) != VLC_STATUS_OK) {
            fprintf(stderr, "pool creation failed\n");
            return 1;
        }
        for (int si = 0; si < 2; si++) {
            const int64_t n_in = shapes[si][0], n_out = shapes[si][1];
            printf("F16 W [%lld, %lld], %d thread(s)\n", (long long) n_out, (long long) n_in, n_threads);
            for (int level = VLC_SIMD_OFF; level <= VLC_SIMD_AVX512; level++) {
                if (!vlc_simd_supported(level)) {
                    continue;
                }
                vlc_simd_set_level(level);
                const int64_t toks[2] = { 1, max_tok };
                for (int ki = 0; ki < 2; ki++) {
                    const int64_t n_tok = toks[ki];
                    if (level == VLC_SIMD_OFF && n_tok > 1) {
                        continue;  // the reference prefill is an order of magnitude slower
                    }
                    const int64_t task_rows = vlc_simd_task_rows(n_in, n_tok);
                    for (int wide = 0; wide <= (task_rows > VLC_MATMUL_ROWS); wide++) {
                        bench_job j = { y, w, x, n_in, n_out, n_tok, wide ? task_rows : VLC_MATMUL_ROWS, wk,
                                        level != VLC_SIMD_OFF };
                        const double per = bench_time(pool, &j, 1.0);
                        printf("  n_tok %4lld  %-6s tasks of %3lld rows %9.3f ms  %7.2f GFLOP/s\n", (long long) n_tok,
                               level == VLC_SIMD_OFF ? "ref" : vlc_simd_level_name(level), (long long) j.rows,
                               per * 1e3, 2.0 * (double) (n_in * n_out) * (double) n_tok / per * 1e-9);
                    }
                }
            }
        }
        vlc_pool_free(pool);
    }
    free(wf), free(w), free(x), free(y), free(wk);
    return 0;
}

// ---------------------------------------------------------------------------

int main(int argc, char ** argv) {
    const char * bench_env = getenv("VLC_SIMD_BENCH");
    if ((argc > 1 && strcmp(argv[1], "bench") == 0) || (bench_env && strcmp(bench_env, "1") == 0)) {
        return bench();
    }
    printf("simd: active level %s\n", vlc_simd_level_name(vlc_simd_level()));

    // off: no path, nothing written
    vlc_simd_set_level(VLC_SIMD_OFF);
    float       y1 = 42.0f;
    const float w1 = 1.0f, x1 = 2.0f;
    CHECK(vlc_simd_matmul_rows(&y1, 1, &w1, VLC_TYPE_F32, &x1, 1, 1, 1, 0, 1, 0, NULL) == 0 && y1 == 42.0f,
          "level off must decline");
    CHECK(vlc_simd_level() == VLC_SIMD_OFF, "set_level(off) not applied");

    for (int level = VLC_SIMD_AVX2; level <= VLC_SIMD_AVX512; level++) {
        if (!vlc_simd_supported(level)) {
            printf("level %s: not supported by this CPU, skipped\n", vlc_simd_level_name(level));
            vlc_simd_set_level(level);
            CHECK(vlc_simd_level() < level, "unsupported level %s was set", vlc_simd_level_name(level));
            continue;
        }
        vlc_simd_set_level(level);
        CHECK(vlc_simd_level() == level, "level %s not applied", vlc_simd_level_name(level));
        printf("level %s\n", vlc_simd_level_name(level));
        // an unsupported weight type declines
        float yq = 7.0f;
        CHECK(vlc_simd_matmul_rows(&yq, 1, &w1, 8 /* Q8_0 */, &x1, 1, 1, 1, 0, 1, 0, NULL) == 0 && yq == 7.0f,
              "unknown type must decline");
        test_accuracy(level);
        test_bits(level);
        test_contract(level);
        test_task_rows(level);
    }
    if (g_fail) {
        printf("test_simd: %d failure(s)\n", g_fail);
        return 1;
    }
    printf("test_simd: ok\n");
    return 0;
}
