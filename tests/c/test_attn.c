// test_attn.c: the attention kernels of ops_attn.c (vlc_cpu_attn_rows / _ml and
// vlc_cpu_attn_stats) at every SIMD level this CPU has (vlc_simd_set_level), against
// explicit softmax rows computed here in double, and their bit-identity properties.
//
// Checked, per level (off / avx2 / avx512), F32 and F16 KV, G 1 / 4 / 8, D 64 / 128 / 80,
// N 1 / 63 / 64 / 65 / 1000 / 4097, blocks of R = 1 .. 37 rows ending at row N:
// - accuracy of the first and last row of the block vs double. Tolerance per case:
//   4 eps (Smax + sqrt(N) + 1), eps = 2^-24, Smax = max_j scale sum_d |q_d k_jd|: a score
//   is a D-term f32 FMA chain (typical error ~ eps Smax: sqrt(D) roundings of partial sums
//   ~ Smax / sqrt(D)), the output moves by at most 2x a score error since |v| <= 1; the
//   numerator and normaliser are N-term f32 sums (~ sqrt(N) eps relative), exp is within
//   1 ulp; x2 safety for these random-walk estimates (measured: <= 0.2 of it). Peaky
//   cases (q x 30) move the running max many times.
// - bits: every row of a block equals the same row run alone (R = 1, a decode step),
//   and a block split at another row gives the same bits; AVX2 and AVX-512 agree bit for
//   bit (same arithmetic per query vector, ops_attn.c).
// - exp: max error in ulps over [-104, 88] (every 251st float bit pattern), exp(0) == 1,
//   exp(-inf) == 0, NaN stays NaN.
// - statistics per level vs explicit matrices (per-key sums within 1e-5 relative, counts
//   within the band of entries whose log-ratio lies within 1e-5 of log p, as
//   test_attn_stats.c), AVX2 == AVX-512 bits, and the max reproduces exactly: with p = 1
//   every row and head counts at least its max, with p = nextafter(1, 2) none counts.
// VLC_ATTN_BENCH=1 also times prefill and decode attention (not part of ctest).
#include "ops_cpu.h"
#include "ops_simd.h"
#include "threads.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define VLC_TEST_SEED 0x6a09e667f3bcc909ull
#include "vlc_test.h"

static int g_levels[3], g_n_levels = 0;

// random values in [-1, 1) as kv_type into dst, and the f32 values the kernel sees in f
static void make_kv(void * dst, float * f, uint32_t kv_type, int64_t n) {
    const size_t es = vlc_type_size(kv_type);
    for (int64_t i = 0; i < n; i++) {
        float x = rng_unif();
        vlc_cpu_from_f32((char *) dst + (size_t) i * es, &x, kv_type, 1);
        vlc_cpu_to_f32(f + i, (const char *) dst + (size_t) i * es, kv_type, 1);
    }
}

// ---------------------------------------------------------------------------
// exp

static void test_exp(void) {
    // every 251st bit pattern of [-104, 88]: negatives from -0 down, positives from +0 up
    const uint32_t lim_neg = 0xc2d00000u;  // -104
    const uint32_t lim_pos = 0x42b00000u;  // 88
    const int64_t  n_neg   = (lim_neg - 0x80000000u) / 251 + 1, n_pos = lim_pos / 251 + 1;
    const int64_t  n       = n_neg + n_pos + 3;
    float *        x       = malloc(sizeof(float) * (size_t) n);
    float *        y       = malloc(sizeof(float) * (size_t) n);
    int64_t        m       = 0;
    for (uint32_t u = 0x80000000u; u <= lim_neg && m < n; u += 251) {
        memcpy(&x[m++], &u, 4);
    }
    for (uint32_t u = 0; u <= lim_pos && m < n; u += 251) {
        memcpy(&x[m++], &u, 4);
    }
    x[m++] = 0.0f;
    x[m++] = -INFINITY;
    x[m++] = NAN;
    for (int li = 0; li < g_n_levels; li++) {
        vlc_simd_set_level(g_levels[li]);
        vlc_cpu_attn_exp(y, x, m);
        double worst = 0.0, worst_sub = 0.0, worst_x = 0.0;
        for (int64_t i = 0; i < m - 3; i++) {
            const double ref = exp((double) x[i]);
            if (ref >= 0x1p-126) {
                int          e;
                const double fr  = frexp(ref, &e);  // ref = fr 2^e, fr in [0.5, 1): ulp = 2^(e - 24)
                const double ulp = ldexp(1.0, e - 24);
                const double err = fabs((double) y[i] - ref) / ulp;
                (void) fr;
                if (err > worst) {
                    worst   = err;
                    worst_x = x[i];
                }
            } else {
                const double err = fabs((double) y[i] - ref) / 0x1p-149;  // subnormal ulps
                worst_sub        = err > worst_sub ? err : worst_sub;
            }
        }
        CHECK(worst <= 1.0, "%s: exp error %.3f ulp at x = %.9g", vlc_simd_level_name(g_levels[li]), worst, worst_x);
        CHECK(worst_sub <= 1.0, "%s: exp error %.3f subnormal ulps", vlc_simd_level_name(g_levels[li]), worst_sub);
        CHECK(y[m - 3] == 1.0f, "%s: exp(0) = %.9g", vlc_simd_level_name(g_levels[li]), y[m - 3]);
        CHECK(y[m - 2] == 0.0f, "%s: exp(-inf) = %.9g", vlc_simd_level_name(g_levels[li]), y[m - 2]);
        CHECK(isnan(y[m - 1]), "%s: exp(NaN) = %.9g", vlc_simd_level_name(g_levels[li]), y[m - 1]);
        printf("  exp %-6s max error %.3f ulp (at x = %.7g), subnormal results %.3f ulp, %lld points\n",
               vlc_simd_level_name(g_levels[li]), worst, worst_x, worst_sub, (long long) m);
    }
    free(x);
    free(y);
}

// ---------------------------------------------------------------------------
// attention vs double, bit identity

static double g_worst_ratio = 0.0;

// out_g of query q [D] (head g of one row) against the first n entries, in double
static void ref_row(double * o, const float * qg, const float * kf, const float * vf, int64_t n, int32_t D, float scale,
                    double * s, double * smax_abs) {
    double mx = -INFINITY, sum = 0.0, sa = 0.0;
    for (int64_t j = 0; j < n; j++) {
        double d = 0.0, a = 0.0;
        for (int32_t t = 0; t < D; t++) {
            d += (double) qg[t] * kf[j * D + t];
            a += fabs((double) qg[t] * kf[j * D + t]);
        }
        s[j] = d * scale;
        mx   = s[j] > mx ? s[j] : mx;
        sa   = a * scale > sa ? a * scale : sa;
    }
    for (int64_t j = 0; j < n; j++) {
        s[j] = exp(s[j] - mx);
        sum += s[j];
    }
    for (int32_t t = 0; t < D; t++) {
        o[t] = 0.0;
    }
    for (int64_t j = 0; j < n; j++) {
        for (int32_t t = 0; t < D; t++) {
            o[t] += s[j] / sum * vf[j * D + t];
        }
    }
    *smax_abs = sa;
}

typedef struct acase {
    uint32_t kv;
    int32_t  G, D;
    int64_t  N;
    int32_t  R;
    float    qs;
} acase;

static void test_attn_case(const acase * c) {
    const int32_t G = c->G, D = c->D, R = c->R;
    const int64_t N = c->N, n0 = N - R + 1, GD = (int64_t) G * D;
    const float   scale = 1.0f / sqrtf((float) D);
    const size_t  es    = vlc_type_size(c->kv);
    float *       q     = malloc(sizeof(float) * (size_t) (R * GD));
    void *        k     = malloc(es * (size_t) (N * D));
    void *        v     = malloc(es * (size_t) (N * D));
    float *       kf    = malloc(sizeof(float) * (size_t) (N * D));
    float *       vf    = malloc(sizeof(float) * (size_t) (N * D));
    float *       out[3], * ml[3];
    float *       o1  = malloc(sizeof(float) * (size_t) GD);
    float *       m1  = malloc(sizeof(float) * (size_t) G * 2);
    float *       o2  = malloc(sizeof(float) * (size_t) (R * GD));
    float *       m2  = malloc(sizeof(float) * (size_t) R * G * 2);
    float *       wk  = malloc(sizeof(float) * vlc_cpu_attn_work_floats(G, D));
    double *      s   = malloc(sizeof(double) * (size_t) N);
    double *      ref = malloc(sizeof(double) * (size_t) D);
    for (int64_t i = 0; i < R * GD; i++) {
        q[i] = rng_unif() * c->qs;
    }
    make_kv(k, kf, c->kv, N * D);
    make_kv(v, vf, c->kv, N * D);
    char name[160];
    snprintf(name, sizeof(name), "%s G%d D%d N%lld R%d q x%g", c->kv == VLC_TYPE_F16 ? "f16" : "f32", G, D,
             (long long) N, R, c->qs);

    for (int li = 0; li < g_n_levels; li++) {
        const char * lv = vlc_simd_level_name(g_levels[li]);
        vlc_simd_set_level(g_levels[li]);
        out[li] = malloc(sizeof(float) * (size_t) (R * GD));
        ml[li]  = malloc(sizeof(float) * (size_t) R * G * 2);
        vlc_cpu_attn_rows(out[li], GD, ml[li], 2 * G, q, GD, R, n0, 1, G, k, v, c->kv, D, scale, wk);

        // every row alone (a decode step) gives the same bits
        int same = 1;
        for (int32_t r = 0; r < R; r++) {
            vlc_cpu_attn_ml(o1, m1, q + r * GD, G, k, v, c->kv, n0 + r, D, scale, wk);
            same &= memcmp(o1, out[li] + r * GD, sizeof(float) * (size_t) GD) == 0 &&
                    memcmp(m1, ml[li] + (int64_t) r * G * 2, sizeof(float) * (size_t) G * 2) == 0;
        }
        CHECK(same, "%s %s: a row of the block differs from the row run alone", lv, name);
        // the block split at another row: same bits
        const int32_t a = R / 3;
        vlc_cpu_attn_rows(o2, GD, m2, 2 * G, q, GD, a, n0, 1, G, k, v, c->kv, D, scale, wk);
        vlc_cpu_attn_rows(o2 + a * GD, GD, m2 + (int64_t) a * G * 2, 2 * G, q + a * GD, GD, R - a, n0 + a, 1, G, k, v,
                          c->kv, D, scale, wk);
        CHECK(memcmp(o2, out[li], sizeof(float) * (size_t) (R * GD)) == 0 &&
                  memcmp(m2, ml[li], sizeof(float) * (size_t) R * G * 2) == 0,
              "%s %s: block split at row %d differs", lv, name, a);

        // first and last row vs double
        const int32_t rows[2] = { 0, R - 1 };
        for (int ri = 0; ri < (R > 1 ? 2 : 1); ri++) {
            const int32_t r = rows[ri];
            for (int32_t g = 0; g < G; g++) {
                double smax;
                ref_row(ref, q + r * GD + (int64_t) g * D, kf, vf, n0 + r, D, scale, s, &smax);
                const double eps = 0x1p-24;
                const double tol = 4.0 * eps * (smax + sqrt((double) (n0 + r)) + 1.0);
                double       worst = 0.0;
                for (int32_t t = 0; t < D; t++) {
                    const double err = fabs((double) out[li][r * GD + (int64_t) g * D + t] - ref[t]);
                    worst            = err > worst ? err : worst;
                }
                CHECK(worst <= tol, "%s %s: row %d head %d: error %.3g > tolerance %.3g", lv, name, r, g, worst, tol);
                g_worst_ratio = worst / tol > g_worst_ratio ? worst / tol : g_worst_ratio;
            }
        }
    }
    // AVX2 and AVX-512: the same arithmetic per query vector
    for (int li = 0; li + 1 < g_n_levels; li++) {
        if (g_levels[li] == VLC_SIMD_AVX2 && g_levels[li + 1] == VLC_SIMD_AVX512) {
            CHECK(memcmp(out[li], out[li + 1], sizeof(float) * (size_t) (R * GD)) == 0 &&
                      memcmp(ml[li], ml[li + 1], sizeof(float) * (size_t) R * G * 2) == 0,
                  "%s: avx2 and avx512 differ", name);
        }
    }
    for (int li = 0; li < g_n_levels; li++) {
        free(out[li]);
        free(ml[li]);
    }
    free(q); free(k); free(v); free(kf); free(vf); free(o1); free(m1); free(o2); free(m2); free(wk); free(s); free(ref);
}

static void test_attn(void) {
    const uint32_t kvs[] = { VLC_TYPE_F32, VLC_TYPE_F16 };
    const int32_t  Gs[] = { 1, 4, 8 }, Ds[] = { 64, 128, 80 };
    const int64_t  Ns[] = { 1, 63, 64, 65, 1000, 4097 };
    int            ci = 0;
    for (int ik = 0; ik < 2; ik++) {
        for (int ig = 0; ig < 3; ig++) {
            for (int id = 0; id < 3; id++) {
                for (int in = 0; in < 6; in++, ci++) {
                    acase c = { kvs[ik], Gs[ig], Ds[id], Ns[in], 0, ci % 3 == 2 ? 30.0f : 1.0f };
                    // R cycles through 1 .. 37 (fewer on the longest rows, to keep the double reference short)
                    int32_t R = 1 + (int32_t) ((ci * 7) % 37);
                    if (c.N >= 1000 && R > 9) {
                        R = 9 + R % 5;
                    }
                    c.R = (int64_t) R > c.N ? (int32_t) c.N : R;
                    test_attn_case(&c);
                }
            }
        }
    }
    // long blocks: several passes (G = 1: 256 rows per pass) and every row's own tile edges
    const acase more[] = {
        { VLC_TYPE_F16, 1, 64, 700, 600, 1.0f },
        { VLC_TYPE_F32, 4, 64, 300, 150, 30.0f },
        { VLC_TYPE_F16, 8, 80, 130, 77, 1.0f },
    };
    for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++) {
        test_attn_case(&more[i]);
    }
    printf("  attention: %d cases x %d levels, worst error / tolerance %.3f\n", ci + 3, g_n_levels, g_worst_ratio);
}

// ---------------------------------------------------------------------------
// statistics per level

static void test_stats(uint32_t kv) {
    const int32_t G = 4, D = 64, m = 150, w0 = 100, W = m - w0;
    const int64_t GD = (int64_t) G * D;
    const float   scale = 1.0f / sqrtf((float) D), p = 0.01f;
    const size_t  es = vlc_type_size(kv);
    float *       q  = malloc(sizeof(float) * (size_t) (m * GD));
    void *        k  = malloc(es * (size_t) m * D);
    void *        v  = malloc(es * (size_t) m * D);
    float *       kf = malloc(sizeof(float) * (size_t) m * D);
    float *       vf = malloc(sizeof(float) * (size_t) m * D);
    float *       out = malloc(sizeof(float) * (size_t) (m * GD));
    float *       ml  = malloc(sizeof(float) * (size_t) m * G * 2);
    float *       wk  = malloc(sizeof(float) * vlc_cpu_attn_work_floats(G, D));
    float *       swk = malloc(sizeof(float) * vlc_cpu_attn_stats_work_floats(D));
    double *      cs[3];
    double *      ref = calloc((size_t) m, sizeof(double));
    double *      s   = malloc(sizeof(double) * (size_t) m);
    for (int64_t i = 0; i < m * GD; i++) {
        q[i] = 6.0f * rng_unif();  // scores with a standard deviation near 2
    }
    make_kv(k, kf, kv, (int64_t) m * D);
    make_kv(v, vf, kv, (int64_t) m * D);

    // explicit softmax rows [w0, m) in double: per-key sums and the count band per head
    const double lp = log((double) p);
    int64_t      lo[4] = { 0 }, hi[4] = { 0 };
    for (int32_t i = w0; i < m; i++) {
        for (int32_t g = 0; g < G; g++) {
            double mx = -INFINITY, sum = 0.0;
            for (int32_t j = 0; j <= i; j++) {
                double d = 0.0;
                for (int32_t t = 0; t < D; t++) {
                    d += (double) q[i * GD + g * D + t] * kf[j * D + t];
                }
                s[j] = d * scale;
                mx   = s[j] > mx ? s[j] : mx;
            }
            for (int32_t j = 0; j <= i; j++) {
                sum += exp(s[j] - mx);
            }
            for (int32_t j = 0; j <= i; j++) {
                ref[j] += exp(s[j] - mx) / sum;
                lo[g] += (s[j] - mx) - lp > 1e-5;
                hi[g] += (s[j] - mx) - lp >= -1e-5;
            }
        }
    }
    for (int li = 0; li < g_n_levels; li++) {
        const char * lv = vlc_simd_level_name(g_levels[li]);
        vlc_simd_set_level(g_levels[li]);
        // every row's (max, sum) from one block over the whole prompt
        vlc_cpu_attn_rows(out, GD, ml, 2 * G, q, GD, m, 1, 1, G, k, v, kv, D, scale, wk);
        cs[li]         = calloc((size_t) m, sizeof(double));
        int64_t cnt[4] = { 0 }, c1[4] = { 0 }, c2[4] = { 0 };
        // rows in two calls, keys in blocks of 100 (not a multiple of the tile)
        const int32_t parts[3] = { w0, w0 + 19, m };
        for (int pi = 0; pi < 2; pi++) {
            const int32_t a = parts[pi], b = parts[pi + 1];
            for (int64_t j0 = 0; j0 < m; j0 += 100) {
                const int64_t j1 = j0 + 100 < m ? j0 + 100 : m;
                vlc_cpu_attn_stats(cs[li] + j0, cnt, q + a * GD, GD, b - a, a + 1, ml + (int64_t) a * G * 2, 2 * G, G,
                                   k, kv, j0, j1, D, scale, p, swk);
                double dummy[150] = { 0 };
                vlc_cpu_attn_stats(dummy, c1, q + a * GD, GD, b - a, a + 1, ml + (int64_t) a * G * 2, 2 * G, G, k, kv,
                                   j0, j1, D, scale, 1.0f, swk);
                vlc_cpu_attn_stats(dummy, c2, q + a * GD, GD, b - a, a + 1, ml + (int64_t) a * G * 2, 2 * G, G, k, kv,
                                   j0, j1, D, scale, nextafterf(1.0f, 2.0f), swk);
            }
        }
        double worst = 0.0;
        for (int32_t j = 0; j < m; j++) {
            const double err = fabs(cs[li][j] - ref[j]);
            CHECK(err <= 1e-5 * ref[j] + 1e-300, "%s %s: key %d: sum %.12g, expected %.12g", lv,
                  kv == VLC_TYPE_F16 ? "f16" : "f32", j, cs[li][j], ref[j]);
            worst = err / ref[j] > worst ? err / ref[j] : worst;
        }
        for (int32_t g = 0; g < G; g++) {
            CHECK(cnt[g] >= lo[g] && cnt[g] <= hi[g], "%s: head %d counts %lld, expected %lld .. %lld", lv, g,
                  (long long) cnt[g], (long long) lo[g], (long long) hi[g]);
            CHECK(lo[g] > 0 && hi[g] - lo[g] <= 2, "head %d: band %lld .. %lld (inputs too flat or peaky)", g,
                  (long long) lo[g], (long long) hi[g]);
            CHECK(c1[g] >= W, "%s: head %d: %lld weights equal the row max over %d rows (the max must give exactly 1)",
                  lv, g, (long long) c1[g], W);
            CHECK(c2[g] == 0, "%s: head %d: %lld weights above the row max", lv, g, (long long) c2[g]);
        }
        printf("  stats %-6s %s: worst relative error of the per-key sums %.2e\n", lv,
               kv == VLC_TYPE_F16 ? "f16" : "f32", worst);
    }
    for (int li = 0; li + 1 < g_n_levels; li++) {
        if (g_levels[li] == VLC_SIMD_AVX2 && g_levels[li + 1] == VLC_SIMD_AVX512) {
            CHECK(memcmp(cs[li], cs[li + 1], sizeof(double) * (size_t) m) == 0, "stats: avx2 and avx512 differ");
        }
    }
    for (int li = 0; li < g_n_levels; li++) {
        free(cs[li]);
    }
    free(q); free(k); free(v); free(kf); free(vf); free(out); free(ml); free(wk); free(swk); free(ref); free(s);
}

// ---------------------------------------------------------------------------
// benchmark (VLC_ATTN_BENCH=1): H = 32, Hkv = 4, D = 64, F16 KV, as the 0.84B model

typedef struct bench_job {
    const float * q;     // [T, H, D]
    float *       out;   // [T, H, D]
    float *       ml;    // [T, H, 2]
    const void *  k, * v;  // [Hkv, N, D] f16
    int64_t       T, N, n0;  // rows, entries per head, entries row 0 sees
    int32_t       H, Hkv, D, rows;  // rows per task
    float *       work;
    size_t        stride;
    double *      colsum;  // [Hkv, T]
} bench_job;

static void bench_task(void * ctx, int64_t task, int ith) {
    const bench_job * j  = ctx;
    const int64_t     nb = (j->T + j->rows - 1) / j->rows;
    const int64_t     b = nb - 1 - task / j->Hkv, g = task % j->Hkv;  // longest rows first
    const int32_t     G = j->H / j->Hkv;
    const int64_t     HD = (int64_t) j->H * j->D, i0 = b * j->rows;
    const int64_t     R = j->T - i0 < j->rows ? j->T - i0 : j->rows;
    const size_t      off = (size_t) g * (size_t) j->N * (size_t) j->D * 2;
    vlc_cpu_attn_rows(j->out + i0 * HD + (int64_t) g * G * j->D, HD, j->ml + (i0 * j->H + g * G) * 2, 2 * j->H,
                      j->q + i0 * HD + (int64_t) g * G * j->D, HD,
                      (int32_t) R, j->n0 + i0, 1, G, (const char *) j->k + off, (const char *) j->v + off, VLC_TYPE_F16,
                      j->D, 1.0f / sqrtf((float) j->D), j->work + (size_t) ith * j->stride);
}

// statistics of every row (H2O) in tasks of (KV head, block of 256 keys), as text.c
static void bench_stats_task(void * ctx, int64_t task, int ith) {
    const bench_job * j  = ctx;
    const int64_t     nb = (j->T + 255) / 256, g = task / nb, b = task % nb;
    const int32_t     G  = j->H / j->Hkv;
    const size_t      off = (size_t) g * (size_t) j->N * (size_t) j->D * 2;
    int64_t           cnt[64] = { 0 };
    vlc_cpu_attn_stats(j->colsum + g * j->T + b * 256, cnt, j->q + g * G * j->D, (int64_t) j->H * j->D,
                       (int32_t) j->T, 1,
                       j->ml + g * G * 2, 2 * j->H, G, (const char *) j->k + off, VLC_TYPE_F16, b * 256,
                       b * 256 + 256 < j->T ? b * 256 + 256 : j->T, j->D, 1.0f / sqrtf((float) j->D), 0.01f,
                       j->work + (size_t) ith * j->stride);
}

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// best seconds of reps runs
static double bench_run(vlc_pool * pool, bench_job * j, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t0 = wall();
        vlc_pool_run(pool, bench_task, j, ((j->T + j->rows - 1) / j->rows) * j->Hkv);
        const double dt = wall() - t0;
        best            = dt < best ? dt : best;
    }
    return best;
}

static void bench(void) {
    const int32_t H = 32, Hkv = 4, D = 64, G = H / Hkv;
    const int64_t Nmax = 16384, T = 4096;
    uint16_t *    k = malloc(sizeof(uint16_t) * (size_t) (Hkv * Nmax * D));
    uint16_t *    v = malloc(sizeof(uint16_t) * (size_t) (Hkv * Nmax * D));
    float *       q = malloc(sizeof(float) * (size_t) (T * H * D));
    float *       out = malloc(sizeof(float) * (size_t) (T * H * D));
    float *       ml  = malloc(sizeof(float) * (size_t) (T * H * 2));
    double *      cs  = calloc((size_t) (Hkv * T), sizeof(double));
    for (int64_t i = 0; i < Hkv * Nmax * D; i++) {
        k[i] = vlc_f32_to_f16(rng_unif());
        v[i] = vlc_f32_to_f16(rng_unif());
    }
    for (int64_t i = 0; i < T * H * D; i++) {
        q[i] = rng_unif() * 3.0f;
    }
    const size_t stride = (vlc_cpu_attn_work_floats(G, D) + 15) & ~(size_t) 15;
    float *      work   = malloc(sizeof(float) * stride * 2);
    const int    best   = vlc_simd_level();
    struct {
        int         level, rows;
        const char * name;
    } modes[] = {
        { VLC_SIMD_OFF, 1, "before: reference, 1 row per task" },
        { VLC_SIMD_AVX2, 0, "avx2, blocks of rows" },
        { VLC_SIMD_AVX512, 0, "avx512, blocks of rows" },
    };
    printf("bench: H=%d Hkv=%d D=%d f16 KV\n", H, Hkv, D);
    for (int nthr = 1; nthr <= 2; nthr++) {
        vlc_pool * pool = NULL;
        vlc_pool_create(nthr, &pool);
        for (size_t mi = 0; mi < sizeof(modes) / sizeof(modes[0]); mi++) {
            if (!vlc_simd_supported(modes[mi].level)) {
                continue;
            }
            vlc_simd_set_level(modes[mi].level);
            const int32_t rows = modes[mi].rows ? modes[mi].rows : vlc_cpu_attn_pass_rows(G);
            // prefill: rows 0 .. T-1, row i sees i + 1 entries (causal)
            bench_job    j = { q, out, ml, k, v, T, Nmax, 1, H, Hkv, D, rows, work, stride, cs };
            const double tp = bench_run(pool, &j, modes[mi].level == VLC_SIMD_OFF ? 1 : 2);
            const double fl = 4.0 * D * H * ((double) T * (T + 1) / 2);  // QK^T and PV over the causal pairs
            printf("  %d thr %-36s prefill %lld x %lld causal: %7.3f s  %6.1f GFLOP/s\n", nthr, modes[mi].name,
                   (long long) T, (long long) T, tp, fl / tp * 1e-9);
            {
                const double t0 = wall();
                vlc_pool_run(pool, bench_stats_task, &j, Hkv * ((T + 255) / 256));
                const double ts = wall() - t0;
                printf("  %d thr %-36s statistics of all %lld rows: %7.3f s  %6.1f GFLOP/s (QK^T only)\n", nthr,
                       modes[mi].name, (long long) T, ts, fl / 2 / ts * 1e-9);
            }
            for (int64_t N = 8192; N <= Nmax; N *= 2) {
                bench_job    d  = { q, out, ml, k, v, 1, Nmax, N, H, Hkv, D, 1, work, stride, cs };
                const double td = bench_run(pool, &d, 10);
                printf("  %d thr %-36s decode N = %5lld: %7.3f ms per layer (%5.1f GFLOP/s)\n", nthr, modes[mi].name,
                       (long long) N, td * 1e3, 4.0 * D * H * N / td * 1e-9);
            }
        }
        vlc_pool_free(pool);
    }
    vlc_simd_set_level(best);
    free(k); free(v); free(q); free(out); free(ml); free(cs); free(work);
}

int main(void) {
    const int best = vlc_simd_level();
    for (int l = VLC_SIMD_OFF; l <= VLC_SIMD_AVX512; l++) {
        if (vlc_simd_supported(l)) {
            g_levels[g_n_levels++] = l;
        }
    }
    printf("levels:");
    for (int i = 0; i < g_n_levels; i++) {
        printf(" %s", vlc_simd_level_name(g_levels[i]));
    }
    printf("\n");
    test_exp();
    test_attn();
    test_stats(VLC_TYPE_F32);
    test_stats(VLC_TYPE_F16);
    vlc_simd_set_level(best);
    if (getenv("VLC_ATTN_BENCH")) {
        bench();
    }
    if (g_fail) {
        fprintf(stderr, "test_attn: %d failures\n", g_fail);
        return 1;
    }
    printf("test_attn: all passed\n");
    return 0;
}
