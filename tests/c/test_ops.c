// test_ops.c: the reference CPU kernels (ops_cpu.c) and the thread pool (threads.c)
// against independent double-precision references written here.
//
// Tolerances: f16/bf16 conversion is exact (bit equality). f32 kernels that sum n terms
// are held to |err| <= n * 2^-23 * sum|terms| (a standard bound for f32 accumulation,
// loose by design but still ~1e-6 relative for the shapes used), attention to 1e-5 of
// max|v|, RoPE to the error the f32 angle (as Hugging Face computes it) implies.
#include "ops_cpu.h"
#include "quant.h"
#include "threads.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vlc_test.h"

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// value of a half from its fields, in double
static double half_value(uint16_t h) {
    int    s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0) {
        v = ldexp((double) m, -24);
    } else if (e == 31) {
        v = m ? NAN : INFINITY;
    } else {
        v = ldexp(1.0 + m / 1024.0, e - 15);
    }
    return s ? -v : v;
}

// nearest half by value, ties to the even encoding; overflow past 65520 to infinity
static uint16_t half_nearest(float f) {
    if (isnan(f)) {
        return 0x7e00;
    }
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double   a    = fabs((double) f);
    if (a >= 65520.0) {
        return sign | 0x7c00;
    }
    int lo = 0, hi = 0x7bff;  // positive finite halves are increasing in their encoding
    while (lo < hi) {          // largest encoding with value <= a
        int mid = (lo + hi + 1) / 2;
        if (half_value((uint16_t) mid) <= a) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if (lo == 0x7bff) {
        return sign | 0x7bff;  // [65504, 65520): nearer to 65504 than to 65536
    }
    double d0 = a - half_value((uint16_t) lo), d1 = half_value((uint16_t) (lo + 1)) - a;
    int    r  = d0 < d1 ? lo : d1 < d0 ? lo + 1 : ((lo & 1) ? lo + 1 : lo);
    return (uint16_t) (sign | r);
}

// ---------------------------------------------------------------------------
// conversion

static void test_f16(void) {
    // every half: decodes to its exact value and encodes back to itself
    for (uint32_t h = 0; h < 65536; h++) {
        float  f   = vlc_f16_to_f32((uint16_t) h);
        double ref = half_value((uint16_t) h);
        if (isnan(ref)) {
            CHECK(isnan(f), "half 0x%04x -> %g, expected NaN", h, f);
            uint16_t back = vlc_f32_to_f16(f);
            CHECK((back & 0x7c00) == 0x7c00 && (back & 0x3ff) != 0 && (back & 0x8000) == (h & 0x8000),
                  "NaN 0x%04x -> 0x%04x", h, back);
            continue;
        }
        CHECK((double) f == ref && !signbit(f) == !signbit(ref), "half 0x%04x -> %.9g, expected %.9g", h, f, ref);
        uint16_t back = vlc_f32_to_f16(f);
        CHECK(back == h, "round trip of 0x%04x gives 0x%04x", h, back);
    }
    // tricky floats, including every midpoint between neighbouring halves and its neighbours
    const float tricky[] = { 0.0f, -0.0f, 65504.0f, 65519.996f, 65520.0f, 65536.0f, 1e10f, INFINITY, -INFINITY,
                             0x1p-24f, 0x1p-25f, 0x1.000002p-25f, 0x1.8p-25f, 0x1.8p-24f, 0x1p-26f, 0x1p-14f,
                             0x1.ff8p-15f, 0x1.ffcp-15f, 1.0f, 1.0009765625f, 1.00048828125f, 1.00146484375f,
                             -2.5f, 0x1p-149f, 3.14159265f, -65504.0f, -65520.0f };
    for (size_t i = 0; i < sizeof(tricky) / sizeof(tricky[0]); i++) {
        uint16_t got = vlc_f32_to_f16(tricky[i]), ref = half_nearest(tricky[i]);
        CHECK(got == ref, "f32 %a -> 0x%04x, expected 0x%04x", tricky[i], got, ref);
    }
    for (uint32_t h = 0; h < 0x7bff; h++) {
        double mid = 0.5 * (half_value((uint16_t) h) + half_value((uint16_t) (h + 1)));
        float  fm  = (float) mid;  // exact: a midpoint of halves needs at most 12 bits
        CHECK((double) fm == mid, "midpoint of 0x%04x not exact in f32", h);
        const float cand[] = { fm, nextafterf(fm, 0.0f), nextafterf(fm, INFINITY), -fm };
        for (int c = 0; c < 4; c++) {
            uint16_t got = vlc_f32_to_f16(cand[c]), ref = half_nearest(cand[c]);
            CHECK(got == ref, "f32 %a -> 0x%04x, expected 0x%04x", cand[c], got, ref);
        }
    }
    // random floats around the half range
    for (int i = 0; i < 200000; i++) {
        uint32_t e = 95 + (uint32_t) (rng_u64() % 55);  // 2^-32 .. 2^22
        uint32_t u = (uint32_t) (rng_u64() & 0x807fffffu) | (e << 23);
        float    f = bits_f32(u);
        uint16_t got = vlc_f32_to_f16(f), ref = half_nearest(f);
        CHECK(got == ref, "f32 %a -> 0x%04x, expected 0x%04x", f, got, ref);
    }
    // NaN in f32 stays NaN in half
    CHECK(isnan(vlc_f16_to_f32(vlc_f32_to_f16(NAN))), "NaN lost");
    CHECK(isnan(vlc_f16_to_f32(vlc_f32_to_f16(bits_f32(0x7f800001u)))), "signalling NaN lost");
}

static void test_bf16(void) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = vlc_bf16_to_f32((uint16_t) h);
        CHECK(f32_bits(f) == h << 16, "bf16 0x%04x", h);
        if (!isnan(f)) {
            CHECK(vlc_f32_to_bf16(f) == h, "bf16 round trip 0x%04x", h);
        }
    }
    // ties to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7
    CHECK(vlc_f32_to_bf16(1.00390625f) == 0x3f80, "tie down to even");
    CHECK(vlc_f32_to_bf16(1.01171875f) == 0x3f82, "tie up to even");
    CHECK(vlc_f32_to_bf16(nextafterf(1.00390625f, 2.0f)) == 0x3f81, "above tie rounds up");
    CHECK(vlc_f32_to_bf16(bits_f32(0x7f7fffffu)) == 0x7f80, "max float rounds to inf");
    CHECK(isnan(vlc_bf16_to_f32(vlc_f32_to_bf16(bits_f32(0x7f800001u)))), "bf16 NaN lost");
}

// ---------------------------------------------------------------------------
// vector ops

static void test_vector_ops(void) {
    enum { N = 203 };
    float x[N], w[N], out[N], g[N], u[N];
    for (int i = 0; i < N; i++) {
        x[i] = rng_unif() * 3.0f;
        w[i] = rng_unif();
        g[i] = rng_unif() * 8.0f;
        u[i] = rng_unif();
    }
    // rmsnorm
    double ss = 0;
    for (int i = 0; i < N; i++) {
        ss += (double) x[i] * x[i];
    }
    const double r = 1.0 / sqrt(ss / N + 1e-5);
    vlc_cpu_rmsnorm(out, x, w, N, 1e-5f);
    for (int i = 0; i < N; i++) {
        double ref = x[i] * r * w[i];
        CHECK(fabs(out[i] - ref) <= 1e-6 * fabs(ref) + 1e-12, "rmsnorm[%d] %.9g vs %.9g", i, out[i], ref);
    }
    // softmax
    memcpy(out, g, sizeof(g));
    vlc_cpu_softmax(out, N);
    double mx = -1e300, sum = 0;
    for (int i = 0; i < N; i++) {
        mx = g[i] > mx ? g[i] : mx;
    }
    for (int i = 0; i < N; i++) {
        sum += exp(g[i] - mx);
    }
    for (int i = 0; i < N; i++) {
        double ref = exp(g[i] - mx) / sum;
        CHECK(fabs(out[i] - ref) <= 1e-6 * ref + 1e-12, "softmax[%d] %.9g vs %.9g", i, out[i], ref);
    }
    // swiglu
    vlc_cpu_swiglu(out, g, u, N);
    for (int i = 0; i < N; i++) {
        double ref = g[i] / (1.0 + exp(-(double) g[i])) * u[i];
        CHECK(fabs(out[i] - ref) <= 1e-6 * fabs(ref) + 1e-12, "swiglu[%d] %.9g vs %.9g", i, out[i], ref);
    }
    // dot: odd lengths around the 8-wide unroll
    for (int n = 0; n <= 19; n++) {
        double ref = 0, mag = 0;
        for (int i = 0; i < n; i++) {
            ref += (double) x[i] * w[i];
            mag += fabs((double) x[i] * w[i]);
        }
        float d = vlc_cpu_dot(x, w, n);
        CHECK(fabs(d - ref) <= n * 0x1p-23 * mag + 1e-30, "dot n=%d %.9g vs %.9g", n, d, ref);
    }
}

// ---------------------------------------------------------------------------
// RoPE

static void test_rope(void) {
    const int32_t D = 64;
    const int32_t poss[] = { 0, 1, 7, 100, 4095, 100000 };
    const float   bases[] = { 10000.0f, 500000.0f };
    const float   scales[] = { 1.0f, 0.25f };
    float         cs[64], x[2 * 64], y[2 * 64];
    for (int i = 0; i < 2 * D; i++) {
        x[i] = rng_unif();
    }
    for (size_t ip = 0; ip < sizeof(poss) / sizeof(poss[0]); ip++) {
        for (int ib = 0; ib < 2; ib++) {
            for (int is = 0; is < 2; is++) {
                vlc_cpu_rope_table(cs, poss[ip], D, bases[ib], scales[is]);
                memcpy(y, x, sizeof(x));
                vlc_cpu_rope(y, 2, D, cs);
                for (int h = 0; h < 2; h++) {
                    for (int j = 0; j < D / 2; j++) {
                        double theta = poss[ip] * (double) scales[is] * pow(bases[ib], -2.0 * j / D);
                        double x0 = x[h * D + 2 * j], x1 = x[h * D + 2 * j + 1];
                        double r0 = x0 * cos(theta) - x1 * sin(theta);
                        double r1 = x0 * sin(theta) + x1 * cos(theta);
                        // f32 frequency and angle: |dtheta| <= ~3 ulp of theta
                        double tol = (1e-6 + 3.0 * 0x1p-24 * theta) * (fabs(x0) + fabs(x1));
                        CHECK(fabs(y[h * D + 2 * j] - r0) <= tol && fabs(y[h * D + 2 * j + 1] - r1) <= tol,
                              "rope pos %d base %g scale %g head %d pair %d: (%.9g, %.9g) vs (%.9g, %.9g)",
                              poss[ip], bases[ib], scales[is], h, j, y[h * D + 2 * j], y[h * D + 2 * j + 1], r0, r1);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// matmul

static void make_weights(void * w, uint32_t type, float * wf, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v = rng_unif();
        if (type == VLC_TYPE_F16) {
            ((uint16_t *) w)[i] = vlc_f32_to_f16(v);
            wf[i]                = vlc_f16_to_f32(((uint16_t *) w)[i]);
        } else if (type == VLC_TYPE_BF16) {
            ((uint16_t *) w)[i] = vlc_f32_to_bf16(v);
            wf[i]                = vlc_bf16_to_f32(((uint16_t *) w)[i]);
        } else {
            ((float *) w)[i] = v;
            wf[i]            = v;
        }
    }
}

static void test_matmul(void) {
    const int64_t  shapes[][3] = { { 1, 1, 1 }, { 1, 13, 3 }, { 13, 1, 2 }, { 7, 13, 5 }, { 13, 7, 1 },
                                   { 33, 70, 4 }, { 16, 8, 1 }, { 17, 129, 3 } }; // n_out, n_in, n_tok
    const uint32_t types[] = { VLC_TYPE_F32, VLC_TYPE_F16, VLC_TYPE_BF16 };
    for (size_t is = 0; is < sizeof(shapes) / sizeof(shapes[0]); is++) {
        const int64_t n_out = shapes[is][0], n_in = shapes[is][1], n_tok = shapes[is][2];
        for (int it = 0; it < 3; it++) {
            const uint32_t type = types[it];
            void *  w    = malloc((size_t) (n_out * n_in) * 4);
            float * wf   = malloc((size_t) (n_out * n_in) * 4);
            float * x    = malloc((size_t) (n_tok * n_in) * 4);
            float * y    = malloc((size_t) (n_tok * n_out) * 4);
            float * y0   = malloc((size_t) (n_tok * n_out) * 4);
            float * work = malloc((size_t) (VLC_MATMUL_ROWS * n_in) * 4);
            make_weights(w, type, wf, n_out * n_in);
            for (int64_t i = 0; i < n_tok * n_in; i++) {
                x[i] = rng_unif();
            }
            for (int64_t i = 0; i < n_tok * n_out; i++) {
                y0[i] = rng_unif();
            }
            for (int acc = 0; acc < 4; acc++) {  // 0, 1: the dispatching matmul; 2, 3: the reference
                memcpy(y, y0, (size_t) (n_tok * n_out) * 4);
                if (acc < 2) {
                    vlc_cpu_matmul(y, w, type, x, n_in, n_out, n_tok, acc, work);
                } else {
                    vlc_ref_matmul_rows(y, n_out, w, type, x, n_in, n_in, n_tok, 0, n_out, acc - 2, work);
                }
                for (int64_t t = 0; t < n_tok; t++) {
                    for (int64_t o = 0; o < n_out; o++) {
                        double ref = acc % 2 ? y0[t * n_out + o] : 0.0, mag = fabs(ref);
                        for (int64_t i = 0; i < n_in; i++) {
                            ref += (double) wf[o * n_in + i] * x[t * n_in + i];
                            mag += fabs((double) wf[o * n_in + i] * x[t * n_in + i]);
                        }
                        double got = y[t * n_out + o];
                        CHECK(fabs(got - ref) <= (n_in + 1) * 0x1p-23 * mag + 1e-30,
                              "%s matmul type %u [%lld x %lld] x %lld acc %d: y[%lld, %lld] = %.9g, expected %.9g",
                              acc < 2 ? "cpu" : "reference", type, (long long) n_out, (long long) n_in,
                              (long long) n_tok, acc % 2, (long long) t,
                              (long long) o, got, ref);
                    }
                }
            }
            free(w);
            free(wf);
            free(x);
            free(y);
            free(y0);
            free(work);
        }
    }
}

// vlc_cpu_matmul_mt over a pool of nt threads, reps times, gives the bits y1 of the
// single-threaded matmul (xq: NULL, or room to quantize the activations once for all tasks).
static void check_threaded(const void * w, uint32_t type, const float * x, int64_t n_in, int64_t n_out,
                           int64_t n_tok, const float * y1, float * yn, float * work, void * xq, int32_t nt,
                           int reps) {
    vlc_pool * pool = NULL;
    CHECK(vlc_pool_create(nt, &pool) == VLC_STATUS_OK, "pool %d", nt);
    for (int rep = 0; rep < reps; rep++) {
        memset(yn, 0xff, (size_t) (n_tok * n_out) * 4);
        vlc_cpu_matmul_mt(pool, yn, w, type, x, n_in, n_out, n_tok, 0, work, xq);
        CHECK(memcmp(y1, yn, (size_t) (n_tok * n_out) * 4) == 0,
              "threaded matmul (type %u, %d threads, xq %s) differs from single-threaded", type, nt,
              xq ? "given" : "NULL");
    }
    vlc_pool_free(pool);
}

static void test_matmul_threads(void) {
    const int64_t n_out = 100, n_in = 37, n_tok = 5;  // 100 rows: 7 tasks, the last one short
    const uint32_t types[] = { VLC_TYPE_F32, VLC_TYPE_F16, VLC_TYPE_BF16 };
    for (int it = 0; it < 3; it++) {
        void *  w    = malloc((size_t) (n_out * n_in) * 4);
        float * wf   = malloc((size_t) (n_out * n_in) * 4);
        float * x    = malloc((size_t) (n_tok * n_in) * 4);
        float * y1   = malloc((size_t) (n_tok * n_out) * 4);
        float * yn   = malloc((size_t) (n_tok * n_out) * 4);
        float * work = malloc((size_t) (8 * VLC_MATMUL_ROWS * n_in) * 4);
        make_weights(w, types[it], wf, n_out * n_in);
        for (int64_t i = 0; i < n_tok * n_in; i++) {
            x[i] = rng_unif();
        }
        vlc_cpu_matmul(y1, w, types[it], x, n_in, n_out, n_tok, 0, work);
        // one token at a time (the fused-conversion path for F16 / BF16) gives the same bits
        for (int64_t t = 0; t < n_tok; t++) {
            vlc_cpu_matmul(yn, w, types[it], x + t * n_in, n_in, n_out, 1, 0, work);
            CHECK(memcmp(yn, y1 + t * n_out, (size_t) n_out * 4) == 0,
                  "type %u: token %lld alone differs from the same token in a batch", types[it], (long long) t);
        }
        for (int32_t nt = 1; nt <= 8; nt++) {
            check_threaded(w, types[it], x, n_in, n_out, n_tok, y1, yn, work, NULL, nt, 20);
        }
        free(w);
        free(wf);
        free(x);
        free(y1);
        free(yn);
        free(work);
    }
}

// Block-quantized weights over the pool: the activations quantized once for all tasks (xq
// given) or in every task (NULL) give the bits of the single-threaded matmul, 1-8 threads.
static void test_qmatmul_threads(void) {
    const int64_t  n_out = 150, n_in = 512, n_tok = 37;  // 150 rows: 3 tasks of 64, the last short
    const uint32_t types[] = { VLC_TYPE_Q8_0, VLC_TYPE_Q4_0, VLC_TYPE_Q4_K };
    for (int it = 0; it < 3; it++) {
        const size_t rb   = vlc_row_bytes(types[it], n_in);
        uint8_t *    w    = malloc(rb * (size_t) n_out);
        float *      wf   = malloc((size_t) n_in * 4);
        float *      x    = malloc((size_t) (n_tok * n_in) * 4);
        float *      y1   = malloc((size_t) (n_tok * n_out) * 4);
        float *      yn   = malloc((size_t) (n_tok * n_out) * 4);
        float *      work = malloc((size_t) (8 * VLC_MATMUL_ROWS * n_in) * 4);
        void *       xq   = malloc(vlc_act_row_bytes(types[it], n_in) * (size_t) n_tok);
        for (int64_t o = 0; o < n_out; o++) {
            for (int64_t i = 0; i < n_in; i++) {
                wf[i] = rng_unif();
            }
            vlc_quantize_row(types[it], wf, w + (size_t) o * rb, n_in);
        }
        for (int64_t i = 0; i < n_tok * n_in; i++) {
            x[i] = rng_unif();
        }
        vlc_cpu_matmul(y1, w, types[it], x, n_in, n_out, n_tok, 0, work);
        for (int32_t nt = 1; nt <= 8; nt *= 2) {
            check_threaded(w, types[it], x, n_in, n_out, n_tok, y1, yn, work, NULL, nt, 1);
            check_threaded(w, types[it], x, n_in, n_out, n_tok, y1, yn, work, xq, nt, 1);
        }
        free(w);
        free(wf);
        free(x);
        free(y1);
        free(yn);
        free(work);
        free(xq);
    }
}

// ---------------------------------------------------------------------------
// attention

static void test_attn(void) {
    const int64_t  Ns[] = { 1, 2, 5, 63, 64, 65, 130, 257 };
    const int32_t  Gs[] = { 1, 4 };
    const int32_t  Ds[] = { 8, 48, 64 };
    const float    qscale[] = { 1.0f, 30.0f };  // 30: peaky softmax, the running max moves a lot
    const uint32_t kv_types[] = { VLC_TYPE_F32, VLC_TYPE_F16 };
    for (size_t in = 0; in < sizeof(Ns) / sizeof(Ns[0]); in++) {
        for (int ig = 0; ig < 2; ig++) {
            for (int id = 0; id < 3; id++) {
                for (int iq = 0; iq < 2; iq++) {
                    for (int ik = 0; ik < 2; ik++) {
                        const int64_t  N = Ns[in];
                        const int32_t  G = Gs[ig], D = Ds[id];
                        const uint32_t kt = kv_types[ik];
                        float * q   = malloc((size_t) G * D * 4);
                        float * out = malloc((size_t) G * D * 4);
                        void *  k   = malloc((size_t) (N * D) * 4);
                        void *  v   = malloc((size_t) (N * D) * 4);
                        float * kf  = malloc((size_t) (N * D) * 4);
                        float * vf  = malloc((size_t) (N * D) * 4);
                        double * p  = malloc((size_t) N * sizeof(double));
                        float * work = malloc(vlc_cpu_attn_work_floats(G, D) * 4);
                        for (int32_t i = 0; i < G * D; i++) {
                            q[i] = rng_unif() * qscale[iq];
                        }
                        make_weights(k, kt, kf, N * D);
                        make_weights(v, kt, vf, N * D);
                        const float scale = 1.0f / sqrtf((float) D);
                        vlc_cpu_attn(out, q, G, k, v, kt, N, D, scale, work);
                        for (int32_t g = 0; g < G; g++) {
                            double mx = -1e300, sum = 0;
                            for (int64_t j = 0; j < N; j++) {
                                double s = 0;
                                for (int32_t d = 0; d < D; d++) {
                                    s += (double) q[g * D + d] * kf[j * D + d];
                                }
                                p[j] = s * scale;
                                mx   = p[j] > mx ? p[j] : mx;
                            }
                            for (int64_t j = 0; j < N; j++) {
                                p[j] = exp(p[j] - mx);
                                sum += p[j];
                            }
                            for (int32_t d = 0; d < D; d++) {
                                double ref = 0;
                                for (int64_t j = 0; j < N; j++) {
                                    ref += p[j] / sum * vf[j * D + d];
                                }
                                CHECK(fabs(out[g * D + d] - ref) <= 1e-5,
                                      "attn N=%lld G=%d D=%d qscale %g kv type %u: out[%d, %d] = %.9g, expected %.9g",
                                      (long long) N, G, D, qscale[iq], kt, g, d, out[g * D + d], ref);
                            }
                        }
                        free(q);
                        free(out);
                        free(k);
                        free(v);
                        free(kf);
                        free(vf);
                        free(p);
                        free(work);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// thread pool

typedef struct count_ctx {
    atomic_int * hits;
    atomic_int   bad_ith;
    int32_t      n_threads;
} count_ctx;

static void count_task(void * ctx, int64_t t, int ith) {
    count_ctx * c = ctx;
    atomic_fetch_add(&c->hits[t], 1);
    if (ith < 0 || ith >= c->n_threads) {
        atomic_fetch_add(&c->bad_ith, 1);
    }
}

static void test_pool(void) {
    const int64_t ns[] = { 0, 1, 2, 3, 17, 1000 };
    for (int32_t nt = 1; nt <= 5; nt++) {
        vlc_pool * pool = NULL;
        CHECK(vlc_pool_create(nt, &pool) == VLC_STATUS_OK, "pool create %d", nt);
        CHECK(vlc_pool_n_threads(pool) == nt, "n_threads %d", vlc_pool_n_threads(pool));
        for (int rep = 0; rep < 50; rep++) {
            for (size_t in = 0; in < sizeof(ns) / sizeof(ns[0]); in++) {
                atomic_int hits[1000];
                for (int i = 0; i < 1000; i++) {
                    atomic_init(&hits[i], 0);
                }
                count_ctx c = { hits, 0, nt };
                vlc_pool_run(pool, count_task, &c, ns[in]);
                for (int64_t i = 0; i < ns[in]; i++) {
                    CHECK(atomic_load(&hits[i]) == 1, "task %lld of %lld ran %d times (%d threads)",
                          (long long) i, (long long) ns[in], atomic_load(&hits[i]), nt);
                }
                CHECK(atomic_load(&c.bad_ith) == 0, "ith out of range");
            }
        }
        vlc_pool_free(pool);
    }
    vlc_pool * pool = NULL;
    CHECK(vlc_pool_create(0, &pool) == VLC_STATUS_INVALID_ARG && pool == NULL, "0 threads must be refused");
    CHECK(vlc_n_cpus() >= 1, "vlc_n_cpus() = %d", vlc_n_cpus());
}

int main(void) {
    test_f16();
    test_bf16();
    test_vector_ops();
    test_rope();
    test_matmul();
    test_matmul_threads();
    test_qmatmul_threads();
    test_attn();
    test_pool();
    if (g_fail) {
        fprintf(stderr, "test_ops: %d failures\n", g_fail);
        return 1;
    }
    printf("test_ops: all passed\n");
    return 0;
}
