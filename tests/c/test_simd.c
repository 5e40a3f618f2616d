// test_simd.c: the SIMD matmul (ops_simd.c) at every level this CPU has, against a
// double-precision reference and the reference kernel vlc_cpu_matmul, plus its
// bit-reproducibility across n_tok, row splits, strides and the work buffer.
// `test_simd bench [n_threads]` instead times 2048 x 2048 F16 weights at n_tok = 1 and 512.
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
                    const int prev = vlc_simd_set_level(VLC_SIMD_OFF);  // the reference, even once hooked
                    vlc_cpu_matmul(yr, w, type, x, n_in, n_out, n_tok, 0, work);
                    vlc_simd_set_level(prev);
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
    const int64_t n_ins[] = { 33, 257 };
    for (int ti = 0; ti < 3; ti++) {
        const uint32_t type = k_types[ti];
        for (int ii = 0; ii < 2; ii++) {
            const int64_t n_out = 45, n_in = n_ins[ii], n_tok = 37, ldx = n_in + 3, ldy = n_out + 5;
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
            const int64_t batches[] = { 1, 2, 3, 5, 6, 7 };
            for (int bi = 0; bi < 6; bi++) {
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
            const int64_t cuts[][4] = { { 0, 1, 2, 45 }, { 0, 5, 22, 45 }, { 0, 16, 32, 45 }, { 0, 13, 44, 45 } };
            for (int ci = 0; ci < 4; ci++) {
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
            vlc_simd_matmul_rows(y, ldy, w, type, x, ldx, n_in, n_tok, 3, 40, 1, work);
            int ok = 1;
            for (int64_t t = 0; t < n_tok; t++) {
                for (int64_t o = 0; o < ldy; o++) {
                    const float want = (o >= 3 && o < 40) ? y0[t * ldy + o] + full[t * ldy + o] : y0[t * ldy + o];
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
// benchmark (not run by ctest)

typedef struct bench_job {
    float *       y;
    const void *  w;
    const float * x;
    int64_t       n_in, n_out, n_tok;
    float *       work;
    int           simd;
} bench_job;

static void bench_task(void * ctx, int64_t task, int ith) {
    const bench_job * j  = ctx;
    const int64_t     r0 = task * VLC_MATMUL_ROWS;
    const int64_t     r1 = r0 + VLC_MATMUL_ROWS < j->n_out ? r0 + VLC_MATMUL_ROWS : j->n_out;
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

static int bench(int n_threads) {
    const int64_t n = 2048, max_tok = 512;
    float *       wf = malloc((size_t) (n * n) * sizeof(float));
    void *        w  = make_w(VLC_TYPE_F16, n, n, wf);
    float *       x  = malloc((size_t) (max_tok * n) * sizeof(float));
    float *       y  = malloc((size_t) (max_tok * n) * sizeof(float));
    float *       wk = malloc((size_t) n_threads * VLC_MATMUL_ROWS * (size_t) n * sizeof(float));
    for (int64_t i = 0; i < max_tok * n; i++) {
        x[i] = rng_unif();
    }
    vlc_pool * pool = NULL;
    if (vlc_pool_create(n_threads, &pool) != VLC_STATUS_OK) {
        fprintf(stderr, "pool creation failed\n");
        return 1;
    }
    printf("2048 x 2048 F16 weights, %d thread(s)\n", n_threads);
    const int64_t toks[2] = { 1, 512 };
    for (int ki = 0; ki < 2; ki++) {
        for (int level = VLC_SIMD_OFF; level <= VLC_SIMD_AVX512; level++) {
            if (!vlc_simd_supported(level)) {
                continue;
            }
            vlc_simd_set_level(level);
            bench_job j = { y, w, x, n, n, toks[ki], wk, level != VLC_SIMD_OFF };
            int       reps = 0;
            double    t0 = now_s(), t1 = t0;
            while (t1 - t0 < 1.0 || reps < 2) {
                vlc_pool_run(pool, bench_task, &j, (n + VLC_MATMUL_ROWS - 1) / VLC_MATMUL_ROWS);
                reps++;
                t1 = now_s();
            }
            const double per = (t1 - t0) / reps;
            printf("  n_tok %4lld  %-7s %9.3f ms  %7.2f GFLOP/s  %6.2f GB/s of weights\n", (long long) toks[ki],
                   level == VLC_SIMD_OFF ? "ref" : vlc_simd_level_name(level), per * 1e3,
                   2.0 * (double) (n * n) * (double) toks[ki] / per * 1e-9, (double) (n * n * 2) / per * 1e-9);
        }
    }
    vlc_pool_free(pool);
    free(wf), free(w), free(x), free(y), free(wk);
    return 0;
}

// ---------------------------------------------------------------------------

int main(int argc, char ** argv) {
    if (argc > 1 && strcmp(argv[1], "bench") == 0) {
        return bench(argc > 2 ? atoi(argv[2]) : 1);
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
    }
    if (g_fail) {
        printf("test_simd: %d failure(s)\n", g_fail);
        return 1;
    }
    printf("test_simd: ok\n");
    return 0;
}
