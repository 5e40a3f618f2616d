// test_qdot.c: the quantized dot kernels and matmul of ops_qsimd.c, for every weight type at
// every SIMD level this CPU has (off, avx2, avx512), against an exact double-precision dot
// of the same integer codes (decoded here from the GGUF layouts, independently of the
// kernels) and against the reference vlc_vec_dot_ref; and vlc_qmatmul_rows bit-identical
// to the level's vlc_qdot_get kernel per (row, token) whatever r0 / r1, n_tok, ldy and
// accumulate (so decode and prefill give the same bits).
// VLC_QDOT_BENCH=1 instead prints a single-thread micro benchmark (not a test).
//
// Tolerance. Let mag = sum_i (|a_i| + |b_i|) |x_i| with w_i = a_i + b_i (a: the scale part
// d * sc * q, b: the min part, 0 for symmetric types) and x_i = dx * qx_i, all exact in
// double. Both kernels sum exact int32 products per unit (32-block or 256-super-block) and
// turn each unit into f32 terms with at most 4 roundings (dw * dx, the int -> f32
// conversion when |A| > 2^24, the fma / multiply, the min term's own two); the sum of those
// terms is then a chain: the reference adds the nu units one after the other (nu
// roundings), a SIMD level keeps L = 8 / 16 lane chains of ceil(nu / L) fmas plus a
// log2(L) tree. The classic bound for such sums gives
//   |ref - exact|    <= (nu + 8) * 2^-24 * mag
//   |kernel - exact| <= (ceil(nu / L) + 10) * 2^-24 * mag
// and |kernel - ref| <= the sum of both. These are worst cases (the errors seen are far
// smaller) but they are tight enough that a wrong code, scale, min or block (an error of
// order mag / nu or more) cannot pass: the largest bound here (nu = 344) is 2.1e-5 * mag,
// while one wrong 32-element block of 11008 moves the result by ~1e-4 * mag or more.
#include "ops_cpu.h"
#include "ops_qsimd.h"
#include "ops_simd.h"
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define VLC_TEST_SEED 0x6a09e667f3bcc908ull
#include "vlc_test.h"

static const uint32_t k_types[8] = { VLC_TYPE_Q8_0, VLC_TYPE_Q4_0, VLC_TYPE_Q4_1, VLC_TYPE_Q5_0,
                                     VLC_TYPE_Q5_1, VLC_TYPE_Q4_K, VLC_TYPE_Q5_K, VLC_TYPE_Q6_K };

static const char * tname(uint32_t t) {
    return vlc_type_traits_of(t)->name;
}

static int64_t blck(uint32_t t) {
    return vlc_type_traits_of(t)->blck;
}

static size_t bbytes(uint32_t t) {
    return vlc_type_traits_of(t)->bytes;
}

static uint16_t rd16(const uint8_t * p) {
    return (uint16_t) (p[0] | p[1] << 8);
}

static void wr16(uint8_t * p, uint16_t v) {
    p[0] = (uint8_t) v;
    p[1] = (uint8_t) (v >> 8);
}

// ---------------------------------------------------------------------------
// exact decoding (double): a[i] scale part, b[i] min part of element i of one block

static void decode_block(uint32_t t, const uint8_t * p, double * a, double * b) {
    if (t == VLC_TYPE_Q8_0) {
        const double d = vlc_f16_to_f32(rd16(p));
        for (int i = 0; i < 32; i++) {
            a[i] = d * (int8_t) p[2 + i];
            b[i] = 0.0;
        }
        return;
    }
    if (t == VLC_TYPE_Q4_0 || t == VLC_TYPE_Q4_1 || t == VLC_TYPE_Q5_0 || t == VLC_TYPE_Q5_1) {
        const int       has_m = t == VLC_TYPE_Q4_1 || t == VLC_TYPE_Q5_1;
        const int       five  = t == VLC_TYPE_Q5_0 || t == VLC_TYPE_Q5_1;
        const double    d     = vlc_f16_to_f32(rd16(p));
        const double    m     = has_m ? vlc_f16_to_f32(rd16(p + 2)) : 0.0;
        const uint8_t * qh    = p + (has_m ? 4 : 2);
        const uint8_t * qs    = p + (has_m ? 4 : 2) + (five ? 4 : 0);
        const uint32_t  h     = five ? (uint32_t) qh[0] | (uint32_t) qh[1] << 8 | (uint32_t) qh[2] << 16 |
                                      (uint32_t) qh[3] << 24
                                     : 0;
        const int       off   = has_m ? 0 : five ? 16 : 8;
        for (int j = 0; j < 16; j++) {
            const int q0 = (qs[j] & 15) + (int) ((h >> j) & 1) * 16;
            const int q1 = (qs[j] >> 4) + (int) ((h >> (j + 16)) & 1) * 16;
            a[j]         = d * (q0 - off);
            a[j + 16]    = d * (q1 - off);
            b[j] = b[j + 16] = m;
        }
        return;
    }
    if (t == VLC_TYPE_Q6_K) {
        const double d = vlc_f16_to_f32(rd16(p + 208));
        for (int half = 0; half < 2; half++) {
            const uint8_t * ql = p + 64 * half;
            const uint8_t * qh = p + 128 + 32 * half;
            for (int l = 0; l < 32; l++) {
                const int q[4] = { (ql[l] & 15) | ((qh[l] & 3) << 4),
                                   (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4),
                                   (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                                   (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4) };
                for (int k = 0; k < 4; k++) {
                    const int e = 128 * half + 32 * k + l;
                    a[e]        = d * (int8_t) p[192 + e / 16] * (q[k] - 32);
                    b[e]        = 0.0;
                }
            }
        }
        return;
    }
    // Q4_K / Q5_K
    const double    d    = vlc_f16_to_f32(rd16(p));
    const double    dmin = vlc_f16_to_f32(rd16(p + 2));
    const uint8_t * s    = p + 4;
    const uint8_t * qh   = p + 16;
    const uint8_t * qs   = p + (t == VLC_TYPE_Q5_K ? 48 : 16);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        if (j < 4) {
            sc = s[j] & 63;
            m  = s[j + 4] & 63;
        } else {
            sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
            m  = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
        for (int l = 0; l < 32; l++) {
            int q = (qs[32 * (j / 2) + l] >> (4 * (j & 1))) & 15;
            if (t == VLC_TYPE_Q5_K) {
                q += ((qh[l] >> j) & 1) * 16;
            }
            a[32 * j + l] = d * sc * q;
            b[32 * j + l] = -dmin * m;
        }
    }
}

// exact dot and mag of one row (n elements) with activations xq
static void exact_dot(uint32_t t, const void * w, const void * xq, int64_t n, double * pdot, double * pmag) {
    const int64_t bk = blck(t), nb = n / bk;
    double        a[256], b[256], dot = 0.0, mag = 0.0;
    for (int64_t i = 0; i < nb; i++) {
        decode_block(t, (const uint8_t *) w + (size_t) i * bbytes(t), a, b);
        for (int64_t j = 0; j < bk; j++) {
            double x;
            if (bk == 32) {
                const vlc_block_q8a * xb = (const vlc_block_q8a *) xq + i;
                x                        = (double) xb->d * xb->qs[j];
            } else {
                const vlc_block_q8k * xb = (const vlc_block_q8k *) xq + i;
                x                        = (double) xb->d * xb->qs[j];
            }
            dot += (a[j] + b[j]) * x;
            mag += (fabs(a[j]) + fabs(b[j])) * fabs(x);
        }
    }
    *pdot = dot;
    *pmag = mag;
}

// ---------------------------------------------------------------------------
// data

// n random floats in [-1, 1); with outliers, about 1 in 64 scaled by up to 100
static void rand_floats(float * x, int64_t n, int outliers) {
    for (int64_t i = 0; i < n; i++) {
        x[i] = rng_unif();
        if (outliers && (rng_u64() & 63) == 0) {
            x[i] *= 1.0f + 99.0f * fabsf(rng_unif());
        }
    }
}

// a small f16 scale: +-[2^-12, 2^-6] (some negative)
static uint16_t small_half(void) {
    const float v = ldexpf(1.0f + fabsf(rng_unif()), -6 - (int) (rng_u64() % 7));
    return vlc_f32_to_f16((rng_u64() & 3) == 0 ? -v : v);
}

// a row of n elements of type t: quantized random floats (raw == 0) or random block bytes
// with small f16 scale fields (raw == 1)
static void * make_row(uint32_t t, int64_t n, int raw, int outliers) {
    const size_t rb = vlc_row_bytes(t, n);
    uint8_t *    w  = malloc(rb);
    if (!raw) {
        float * f = malloc((size_t) n * sizeof(float));
        rand_floats(f, n, outliers);
        CHECK(vlc_quantize_row(t, f, w, n) == rb, "%s quantize_row size", tname(t));
        free(f);
        return w;
    }
    for (size_t i = 0; i < rb; i++) {
        w[i] = (uint8_t) rng_u64();
    }
    for (int64_t b = 0; b < n / blck(t); b++) {
        uint8_t * p = w + (size_t) b * bbytes(t);
        if (t == VLC_TYPE_Q6_K) {
            wr16(p + 208, small_half());
        } else {
            wr16(p, small_half());
            if (t == VLC_TYPE_Q4_1 || t == VLC_TYPE_Q5_1 || t == VLC_TYPE_Q4_K || t == VLC_TYPE_Q5_K) {
                wr16(p + 2, small_half());
            }
        }
    }
    return w;
}

static void * make_act(uint32_t t, int64_t n, int outliers) {
    float * f  = malloc((size_t) n * sizeof(float));
    void *  xq = malloc(vlc_act_row_bytes(t, n));
    rand_floats(f, n, outliers);
    if (outliers && n >= 64) {
        for (int64_t i = 0; i < 32; i++) {  // one all-zero activation block (d = 0)
            f[i] = 0.0f;
        }
    }
    vlc_quantize_act_row(t, f, xq, n);
    free(f);
    return xq;
}

// ---------------------------------------------------------------------------
// accuracy

static double g_worst_k = 0.0, g_worst_r = 0.0;  // largest |err| / (bound) seen

static void test_dot(int level) {
    const int     L        = level == VLC_SIMD_AVX512 ? 16 : level == VLC_SIMD_AVX2 ? 8 : 1;
    const int64_t ublk[]   = { 1, 2, 3, 5, 8, 9, 16, 17, 33 };
    int           n_checks = 0;
    for (int ti = 0; ti < 8; ti++) {
        const uint32_t    t  = k_types[ti];
        const vlc_qdot_fn fn = vlc_qdot_get(t);
        CHECK(fn != NULL, "%s: no kernel", tname(t));
        if (!fn) {
            continue;
        }
        int64_t sizes[11];
        int     ns = 0;
        for (size_t i = 0; i < sizeof(ublk) / sizeof(ublk[0]); i++) {
            sizes[ns++] = ublk[i] * blck(t);
        }
        sizes[ns++] = 4096;
        sizes[ns++] = 11008;
        for (int si = 0; si < ns; si++) {
            const int64_t n = sizes[si];
            for (int variant = 0; variant < 4; variant++) {
                const int raw = variant & 1, outliers = variant >> 1;
                void *    w   = make_row(t, n, raw, outliers);
                void *    xq  = make_act(t, n, outliers);
                double    ex, mag;
                exact_dot(t, w, xq, n, &ex, &mag);
                const float   got = fn(w, xq, n);
                const float   ref = vlc_vec_dot_ref(t, w, xq, n);
                const int64_t nu  = n / blck(t);
                const double  u   = 0x1p-24;
                const double  bk  = ((double) ((nu + L - 1) / L) + 10.0) * u * mag;
                const double  br  = ((double) nu + 8.0) * u * mag;
                const double  ek = fabs((double) got - ex), er = fabs((double) ref - ex);
                CHECK(isfinite(got) && ek <= bk, "%s %s n=%lld raw=%d out=%d: kernel %.9g exact %.9g (err %.3g > %.3g)",
                      vlc_simd_level_name(level), tname(t), (long long) n, raw, outliers, got, ex, ek, bk);
                CHECK(er <= br, "%s n=%lld: reference %.9g exact %.9g (err %.3g > %.3g)", tname(t), (long long) n, ref,
                      ex, er, br);
                CHECK(fabs((double) got - (double) ref) <= bk + br, "%s %s n=%lld: kernel %.9g reference %.9g",
                      vlc_simd_level_name(level), tname(t), (long long) n, got, ref);
                if (mag > 0.0) {
                    g_worst_k = fmax(g_worst_k, ek / bk);
                    g_worst_r = fmax(g_worst_r, er / br);
                }
                n_checks++;
                free(w);
                free(xq);
            }
        }
    }
    printf("  dot: %d rows checked\n", n_checks);
}

// ---------------------------------------------------------------------------
// matmul: bit-identical to the row kernel, whatever the split

// W [n_out, n_in] of t against max_tok tokens: every n_tok of toks, every row span, ldy >
// n_out, accumulate 0 / 1, each output compared bit for bit with the row kernel's
static int check_matmul(int level, uint32_t t, int64_t n_in, int64_t n_out, const int64_t * toks, int n_toks,
                        const int64_t (*spans)[2], int n_spans) {
    const vlc_qdot_fn fn      = vlc_qdot_get(t);
    const size_t      rb      = vlc_row_bytes(t, n_in), xb = vlc_act_row_bytes(t, n_in);
    int64_t           max_tok = 0;
    int               n_calls = 0;
    for (int i = 0; i < n_toks; i++) {
        max_tok = toks[i] > max_tok ? toks[i] : max_tok;
    }
    uint8_t * w = malloc(rb * (size_t) n_out);
    for (int64_t o = 0; o < n_out; o++) {
        void * r = make_row(t, n_in, (int) (o & 1), o == 4);
        memcpy(w + (size_t) o * rb, r, rb);
        free(r);
    }
    uint8_t * xq = malloc(xb * (size_t) max_tok);
    for (int64_t k = 0; k < max_tok; k++) {
        void * a = make_act(t, n_in, k == 2);
        memcpy(xq + (size_t) k * xb, a, xb);
        free(a);
    }
    const size_t lb   = vlc_qact_laid_bytes(t, n_in);  // legacy types: the laid-out decode rows too
    uint8_t *    laid = lb ? malloc(lb * (size_t) max_tok) : NULL;
    if (laid) {
        vlc_qact_lay(t, xq, n_in, max_tok, laid);
    }
    float * dots = malloc((size_t) (n_out * max_tok) * sizeof(float));  // every (row, token), row kernel
    for (int64_t k = 0; k < max_tok; k++) {
        for (int64_t o = 0; o < n_out; o++) {
            dots[k * n_out + o] = fn(w + (size_t) o * rb, xq + (size_t) k * xb, n_in);
        }
    }
    for (int ki = 0; ki < n_toks; ki++) {
        const int64_t n_tok = toks[ki];
        const int64_t ldy   = n_out + 3;
        float *       y     = malloc((size_t) (n_tok * ldy) * sizeof(float));
        float *       y0    = malloc((size_t) (n_tok * ldy) * sizeof(float));
        for (int sp = 0; sp < n_spans; sp++) {
            const int64_t r0 = spans[sp][0], r1 = spans[sp][1];
            for (int acc = 0; acc < 2; acc++) {
                const void * lx = (sp + acc) & 1 ? laid : NULL;  // half the calls with laid-out rows
                for (int64_t i = 0; i < n_tok * ldy; i++) {
                    y0[i] = rng_unif();
                }
                memcpy(y, y0, (size_t) (n_tok * ldy) * sizeof(float));
                vlc_qmatmul_rows(y, ldy, w, t, xq, n_in, n_tok, r0, r1, acc, lx);
                n_calls++;
                int bad = 0;
                for (int64_t k = 0; k < n_tok && !bad; k++) {
                    for (int64_t o = 0; o < ldy; o++) {
                        float want = y0[k * ldy + o];
                        if (o >= r0 && o < r1) {
                            const float d = dots[k * n_out + o];
                            want          = acc ? want + d : d;
                        }
                        if (memcmp(&want, &y[k * ldy + o], sizeof(float)) != 0) {
                            CHECK(0,
                                  "%s %s n_in=%lld n_tok=%lld rows [%lld,%lld) acc=%d: y[%lld,%lld] = %.9g, "
                                  "row kernel %.9g",
                                  vlc_simd_level_name(level), tname(t), (long long) n_in, (long long) n_tok,
                                  (long long) r0, (long long) r1, acc, (long long) k, (long long) o,
                                  y[k * ldy + o], want);
                            bad = 1;
                            break;
                        }
                    }
                }
            }
        }
        free(y);
        free(y0);
    }
    free(dots);
    free(laid);
    free(w);
    free(xq);
    return n_calls;
}

static void test_matmul(int level) {
    // n_tok 1..9: decode and one padded group; 16 / 17 / 21: a full group (+ decode tail);
    // 27, 33, 40: two groups (the second padded), + decode tail, three groups
    static const int64_t toks[]      = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 21, 27, 33, 40 };
    static const int64_t spans[][2]  = { { 0, 13 }, { 3, 10 }, { 5, 6 }, { 1, 12 }, { 12, 13 } };
    static const int64_t btoks[]     = { 3, 21 };
    static const int64_t bspans[][2] = { { 0, 37 }, { 5, 36 } };
    static const int64_t ltoks[]     = { 1030, 2100 };
    static const int64_t lspans[][2] = { { 0, 5 }, { 1, 4 } };
    int                  n_calls     = 0;
    for (int ti = 0; ti < 8; ti++) {
        const uint32_t t      = k_types[ti];
        const int64_t  ins[3] = { blck(t), 3 * blck(t), 17 * blck(t) };
        for (int ii = 0; ii < 3; ii++) {
            n_calls += check_matmul(level, t, ins[ii], 13, toks, (int) (sizeof(toks) / sizeof(toks[0])), spans,
                                    (int) (sizeof(spans) / sizeof(spans[0])));
        }
        // n_in 11008 and 37 rows: more than one chunk of unpacked rows in the prefill path
        n_calls += check_matmul(level, t, 11008, 37, btoks, 2, bspans, 2);
        // over 1024 tokens: more than one prefill pass
        n_calls += check_matmul(level, t, blck(t), 5, ltoks, 2, lspans, 2);
    }
    printf("  matmul: %d calls compared bit for bit with the row kernel\n", n_calls);
}

// ---------------------------------------------------------------------------
// micro benchmark (VLC_QDOT_BENCH=1): single thread

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

static uint64_t g_sink = 0;

static void bench_bandwidth(void) {
    const size_t n   = (size_t) 1 << 30;  // 1 GiB, over the L3 of most machines
    uint8_t *    a   = malloc(n);
    uint8_t *    b   = malloc(n);
    memset(a, 1, n);
    memset(b, 2, n);
    double best_c = 1e9, best_r = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s();
        memcpy(b, a, n);
        best_c    = fmin(best_c, now_s() - t0);
        t0        = now_s();
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        const uint64_t * p = (const uint64_t *) a;
        for (size_t i = 0; i < n / 8; i += 4) {
            s0 += p[i];
            s1 += p[i + 1];
            s2 += p[i + 2];
            s3 += p[i + 3];
        }
        g_sink += s0 + s1 + s2 + s3;
        best_r = fmin(best_r, now_s() - t0);
    }
    printf("memory (1 GiB buffers, 1 thread): memcpy %.1f GB/s copied, sequential read %.1f GB/s\n",
           (double) n / best_c * 1e-9, (double) n / best_r * 1e-9);
    free(a);
    free(b);
}

static int bench(void) {
    const int64_t n = 4096, n_pre = 512;
    bench_bandwidth();
    printf("decode: 4096 x 4096 matvec (1 token), GB/s of weight bytes; hot = one matrix (cache-resident),\n"
           "        cold = a new matrix each call out of 1 GiB of copies.\n"
           "prefill: 512 tokens, GFLOP/s = 2 n_in n_out n_tok / s\n");
    printf("%-5s %-7s %10s %10s %12s\n", "type", "level", "hot GB/s", "cold GB/s", "pre GFLOP/s");
    float * f = malloc((size_t) n * n_pre * sizeof(float));
    rand_floats(f, n * n_pre, 0);
    for (int ti = 0; ti < 8; ti++) {
        const uint32_t t      = k_types[ti];
        const size_t   rb     = vlc_row_bytes(t, n), mb = rb * (size_t) n;
        const size_t   copies = ((size_t) 1 << 30) / mb + 1;
        uint8_t *      w      = malloc(mb * copies);
        {
            void * r = make_row(t, n * n, 1, 0);
            for (size_t c = 0; c < copies; c++) {
                memcpy(w + c * mb, r, mb);
            }
            free(r);
        }
        const size_t xb = vlc_act_row_bytes(t, n);
        uint8_t *    xq = malloc(xb * (size_t) n_pre);
        for (int64_t k = 0; k < n_pre; k++) {
            vlc_quantize_act_row(t, f + k * n, xq + (size_t) k * xb, n);
        }
        float * y    = malloc((size_t) (n * n_pre) * sizeof(float));
        void *  laid = vlc_qact_laid_bytes(t, n) ? malloc(vlc_qact_laid_bytes(t, n)) : NULL;  // as decode runs
        if (laid) {
            vlc_qact_lay(t, xq, n, 1, laid);
        }
        for (int level = VLC_SIMD_OFF; level <= VLC_SIMD_AVX512; level++) {
            if (!vlc_simd_supported(level)) {
                continue;
            }
            vlc_simd_set_level(level);
            // hot: the best of 20 calls on one matrix
            double best = 1e9, t0, el;
            vlc_qmatmul_rows(y, n, w, t, xq, n, 1, 0, n, 0, laid);
            for (int rep = 0; rep < 20; rep++) {
                t0   = now_s();
                vlc_qmatmul_rows(y, n, w, t, xq, n, 1, 0, n, 0, laid);
                best = fmin(best, now_s() - t0);
            }
            const double hot = (double) mb / best * 1e-9;
            // cold: one pass over all the copies, each matrix once
            t0 = now_s();
            for (size_t c = 0; c < copies; c++) {
                vlc_qmatmul_rows(y, n, w + c * mb, t, xq, n, 1, 0, n, 0, laid);
            }
            el                = now_s() - t0;
            const double cold = (double) mb * (double) copies / el * 1e-9;
            double       pre  = 0.0;
            if (level != VLC_SIMD_OFF) {  // the best of 2 calls
                best = 1e9;
                for (int rep = 0; rep < 2; rep++) {
                    t0   = now_s();
                    vlc_qmatmul_rows(y, n, w, t, xq, n, n_pre, 0, n, 0, NULL);
                    best = fmin(best, now_s() - t0);
                }
                pre = 2.0 * (double) n * (double) n * (double) n_pre / best * 1e-9;
            }
            printf("%-5s %-7s %10.2f %10.2f %12.1f\n", tname(t), vlc_simd_level_name(level), hot, cold, pre);
            fflush(stdout);
        }
        free(y);
        free(laid);
        free(xq);
        free(w);
    }
    free(f);
    return 0;
}

int main(void) {
    const char * be = getenv("VLC_QDOT_BENCH");
    if (be && strcmp(be, "1") == 0) {
        return bench();
    }
    CHECK(vlc_qdot_get(VLC_TYPE_F32) == NULL && vlc_qdot_get(VLC_TYPE_F16) == NULL, "float types have no qdot kernel");
    {
        float y = 5.0f;
        vlc_qmatmul_rows(&y, 1, &y, VLC_TYPE_F32, &y, 32, 1, 0, 1, 0, NULL);
        CHECK(y == 5.0f, "a float weight type must leave y alone");
    }
    for (int level = VLC_SIMD_OFF; level <= VLC_SIMD_AVX512; level++) {
        if (!vlc_simd_supported(level)) {
            printf("level %s: not supported by this CPU, skipped\n", vlc_simd_level_name(level));
            continue;
        }
        vlc_simd_set_level(level);
        CHECK(vlc_simd_level() == level, "level %s not applied", vlc_simd_level_name(level));
        printf("level %s\n", vlc_simd_level_name(level));
        test_dot(level);
        test_matmul(level);
    }
    printf("worst error / bound: kernels %.3g, reference %.3g\n", g_worst_k, g_worst_r);
    if (g_fail) {
        printf("test_qdot: %d failure(s)\n", g_fail);
        return 1;
    }
    printf("test_qdot: ok\n");
    return 0;
}
