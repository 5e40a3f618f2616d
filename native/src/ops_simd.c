// ops_simd.c: run-time dispatched SIMD matmul over F32 / F16 / BF16 weight rows (see
// ops_simd.h): an AVX2+FMA+F16C path (8 lanes) and an AVX-512 path (16 lanes), each
// compiled with a target attribute (no global -march), chosen once by CPUID.
//
// Is: register-blocked dot-product tiles (MR weight rows x NT tokens of accumulators); for
// prefill, each 16-row block converted (or copied) once into the caller's work buffer in
// k chunks that stay in L1, the chains saved and resumed between chunks (exact); for
// decode, weights converted on the fly. Every output is the same L-lane FMA chain over k plus
// the same horizontal tree whatever the tile, so results never depend on the blocking.
// Is not: quantized types, packing of weights at load time, threading (the caller splits
// rows), or bit-compatible with the reference kernels (it uses FMA).
#include "ops_simd.h"

#include "ops_cpu.h"
#include "vlcache.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define VLC_SIMD_X86 1
#include <immintrin.h>
#else
#define VLC_SIMD_X86 0
#endif

// ---------------------------------------------------------------------------
// level selection

static int g_level = -1;  // -1: not decided yet

int vlc_simd_supported(int level) {
    if (level == VLC_SIMD_OFF) {
        return 1;
    }
#if VLC_SIMD_X86
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                     __builtin_cpu_supports("f16c");
    if (level == VLC_SIMD_AVX2) {
        return avx2;
    }
    if (level == VLC_SIMD_AVX512) {
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    }
#endif
    return 0;
}

static int lower_to_supported(int level) {
    if (level > VLC_SIMD_AVX512) {
        level = VLC_SIMD_AVX512;
    }
    while (level > VLC_SIMD_OFF && !vlc_simd_supported(level)) {
        level--;
    }
    return level < VLC_SIMD_OFF ? VLC_SIMD_OFF : level;
}

int vlc_simd_level(void) {
    int level = __atomic_load_n(&g_level, __ATOMIC_ACQUIRE);
    if (level >= 0) {
        return level;
    }
    level           = VLC_SIMD_AVX512;  // best available unless VLC_SIMD says otherwise
    const char * en = getenv("VLC_SIMD");
    if (en && strcmp(en, "off") == 0) {
        level = VLC_SIMD_OFF;
    } else if (en && strcmp(en, "avx2") == 0) {
        level = VLC_SIMD_AVX2;
    }
    level = lower_to_supported(level);
    // every thread computes the same value, so a race here is harmless
    __atomic_store_n(&g_level, level, __ATOMIC_RELEASE);
    return level;
}

int vlc_simd_set_level(int level) {
    const int prev = vlc_simd_level();
    __atomic_store_n(&g_level, lower_to_supported(level), __ATOMIC_RELEASE);
    return prev;
}

const char * vlc_simd_level_name(int level) {
    switch (level) {
        case VLC_SIMD_OFF: return "off";
        case VLC_SIMD_AVX2: return "avx2";
        case VLC_SIMD_AVX512: return "avx512";
        default: return "?";
    }
}

#if VLC_SIMD_X86

// Weight element kinds of a tile (constants, so that every tile is specialised).
enum { WT_F32 = 0, WT_F16 = 1, WT_BF16 = 2 };

#define INL static inline __attribute__((always_inline))
#define TGT_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TGT_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))

static inline size_t wt_size(int wt) {
    return wt == WT_F32 ? 4 : 2;
}

// ---------------------------------------------------------------------------
// AVX2: 8 lanes. Prefill tiles 4 rows x 3 tokens (12 accumulators, 3 x vectors, 1 w
// vector: the 16 ymm registers); decode tiles 8 rows x 1 token (8 independent chains).

enum { A2_MRP = 4, A2_NTP = 3, A2_MRD = 8 };

// 8 weights from element i of row w, converted to f32
INL TGT_AVX2 __m256 a2_load_w(const void * w, int64_t i, int wt) {
    if (wt == WT_F32) {
        return _mm256_loadu_ps((const float *) w + i);
    }
    const __m128i h = _mm_loadu_si128((const __m128i *) ((const uint16_t *) w + i));
    if (wt == WT_F16) {
        return _mm256_cvtph_ps(h);
    }
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// elements i .. n-1 (fewer than 8) of row w, zeros after
INL TGT_AVX2 __m256 a2_load_w_tail(const void * w, int64_t i, int64_t n, int wt) {
    if (wt == WT_F32) {
        float b[8] = { 0 };
        memcpy(b, (const float *) w + i, (size_t) (n - i) * sizeof(float));
        return _mm256_loadu_ps(b);
    }
    uint16_t b[8] = { 0 };
    memcpy(b, (const uint16_t *) w + i, (size_t) (n - i) * sizeof(uint16_t));
    return a2_load_w(b, 0, wt);
}

// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))
INL TGT_AVX2 float a2_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s        = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s        = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

// y[t * ldy + r] (+)= W[r, :] . x[t * ldx + :] for r < MR, t < NT; W rows ws elements apart.
INL TGT_AVX2 void a2_tile(int MR, int NT, int wt, const void * w, int64_t ws, int64_t wk0, const float * x, int64_t ldx,
                          int64_t k0, int64_t k1, int64_t n, __m256 * ab, int64_t lda, int init, int fin, float * y,
                          int64_t ldy, int accumulate) {
    const size_t es = wt_size(wt);
    const char * wr[A2_MRD];  // row pointers
    __m256       acc[A2_MRD][A2_NTP];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        wr[r] = (const char *) w + (size_t) (r * ws) * es;
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            acc[r][t] = init ? _mm256_setzero_ps() : ab[r * lda + t];
        }
    }
    const int64_t ke = k1 < n ? k1 : n;
    int64_t       k  = k0;
    for (; k + 8 <= ke; k += 8) {
        __m256 xv[A2_NTP];
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            xv[t] = _mm256_loadu_ps(x + t * ldx + k);
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            const __m256 wv = a2_load_w(wr[r], k - wk0, wt);
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
    }
    if (k < ke) {  // tail (last chunk only), zero-padded: the lanes and order of a longer row
        __m256 xv[A2_NTP];
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            xv[t] = a2_load_w_tail(x + t * ldx, k, n, WT_F32);
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            const __m256 wv = a2_load_w_tail(wr[r], k - wk0, n - wk0, wt);
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            if (!fin) {
                ab[r * lda + t] = acc[r][t];
                continue;
            }
            const float d  = a2_hsum(acc[r][t]);
            float *     yo = y + t * ldy + r;
            *yo            = accumulate ? *yo + d : d;
        }
    }
}

// dst[n] (f32) <- src[n] of kind wt (F16 / BF16), exactly
INL TGT_AVX2 void a2_convert(float * dst, const void * src, int64_t n, int wt) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(dst + i, a2_load_w(src, i, wt));
    }
    if (i < n) {
        float b[8];
        _mm256_storeu_ps(b, a2_load_w_tail(src, i, n, wt));
        memcpy(dst + i, b, (size_t) (n - i) * sizeof(float));
    }
}

// ---------------------------------------------------------------------------
// AVX-512: 16 lanes, masked tails. Prefill tiles 4 rows x 6 tokens (24 accumulators,
// 6 x vectors, 1 w vector of the 32 zmm registers); decode tiles 8 rows x 1 token.

enum { A5_MRP = 4, A5_NTP = 6, A5_MRD = 8 };

// weights i .. i+15 of row w (lanes outside m read as zero, not touched in memory)
INL TGT_AVX512 __m512 a5_load_w(const void * w, int64_t i, __mmask16 m, int wt) {
    if (wt == WT_F32) {
        return _mm512_maskz_loadu_ps(m, (const float *) w + i);
    }
    const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *) w + i);
    if (wt == WT_F16) {
        return _mm512_cvtph_ps(h);
    }
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INL TGT_AVX512 __m512 a5_load_w_full(const void * w, int64_t i, int wt) {
    if (wt == WT_F32) {
        return _mm512_loadu_ps((const float *) w + i);
    }
    const __m256i h = _mm256_loadu_si256((const __m256i *) ((const uint16_t *) w + i));
    if (wt == WT_F16) {
        return _mm512_cvtph_ps(h);
    }
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// (l_i + l_{i+8}) for i < 8, then the AVX2 tree
INL TGT_AVX512 float a5_hsum(__m512 v) {
    const __m256 lo = _mm512_castps512_ps256(v);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return a2_hsum(_mm256_add_ps(lo, hi));
}

INL TGT_AVX512 void a5_tile(int MR, int NT, int wt, const void * w, int64_t ws, int64_t wk0, const float * x,
                            int64_t ldx,
                            int64_t k0, int64_t k1, int64_t n, __m512 * ab, int64_t lda, int init, int fin, float * y,
                            int64_t ldy, int accumulate) {
    const size_t es = wt_size(wt);
    const char * wr[A5_MRD];
    __m512       acc[A5_MRD][A5_NTP];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        wr[r] = (const char *) w + (size_t) (r * ws) * es;
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            acc[r][t] = init ? _mm512_setzero_ps() : ab[r * lda + t];
        }
    }
    const int64_t ke = k1 < n ? k1 : n;
    int64_t       k  = k0;
    for (; k + 16 <= ke; k += 16) {
        __m512 xv[A5_NTP];
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            xv[t] = _mm512_loadu_ps(x + t * ldx + k);
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            const __m512 wv = a5_load_w_full(wr[r], k - wk0, wt);
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
    }
    if (k < ke) {
        const __mmask16 m = (__mmask16) ((1u << (n - k)) - 1u);
        __m512          xv[A5_NTP];
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            xv[t] = _mm512_maskz_loadu_ps(m, x + t * ldx + k);
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            const __m512 wv = a5_load_w(wr[r], k - wk0, m, wt);
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            if (!fin) {
                ab[r * lda + t] = acc[r][t];
                continue;
            }
            const float d  = a5_hsum(acc[r][t]);
            float *     yo = y + t * ldy + r;
            *yo            = accumulate ? *yo + d : d;
        }
    }
}

INL TGT_AVX512 void a5_convert(float * dst, const void * src, int64_t n, int wt) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(dst + i, a5_load_w_full(src, i, wt));
    }
    if (i < n) {
        const __mmask16 m = (__mmask16) ((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(dst + i, m, a5_load_w(src, i, m, wt));
    }
}

// ---------------------------------------------------------------------------
// k chunk of the prefill tiles: 16 weight rows and NTP tokens of it stay in L1 (a multiple
// of 16, so chunks end on whole vectors; the chains are saved and resumed exactly).
enum { VLC_SIMD_KC = 256 };

// drivers: one per level, specialised per weight kind. Decode (n_tok < NTP): MRD-row
// tiles per token, converting on the fly. Prefill: per VLC_MATMUL_ROWS-row block, rows
// converted once into work (when given), then MRP x NTP tiles over every token; the
// edges use 1-row and 1-token tiles, which compute the same chains.

#define VLC_SIMD_DRIVER(PFX, TGT, VEC, MRP, NTP, MRD)                                                                  \
    /* nr rows of W against n_tok tokens. packed: w is f32 in k chunks, chunk k0 at                                    \
       w + nr * k0 as [nr, kc] (kc = min(KC, n - k0)); else nr rows of n elements. */                                  \
    INL TGT void PFX##_block(int wt, int packed, float * y, int64_t ldy, const void * w, const float * x,              \
                             int64_t ldx, int64_t n, int64_t n_tok, int64_t nr, int accumulate) {                      \
        const size_t es = wt_size(wt);                                                                                 \
        VEC          ab[VLC_MATMUL_ROWS * NTP]; /* [row, token] chains between k chunks */                             \
        for (int64_t t0 = 0; t0 < n_tok; t0 += NTP) {                                                                  \
            const int64_t nt = n_tok - t0 < NTP ? n_tok - t0 : NTP;                                                    \
            for (int64_t k0 = 0; k0 == 0 || k0 < n; k0 += VLC_SIMD_KC) {                                               \
                const int64_t k1   = k0 + VLC_SIMD_KC;                                                                 \
                const int     init = k0 == 0, fin = k1 >= n;                                                           \
                const int64_t ws   = packed ? (n - k0 < VLC_SIMD_KC ? n - k0 : VLC_SIMD_KC) : n;                       \
                const int64_t wk0  = packed ? k0 : 0;                                                                  \
                const char *  wc   = (const char *) w + (packed ? (size_t) (nr * k0) * es : 0);                        \
                for (int64_t r = 0; r < nr; r += MRP) {                                                                \
                    const int64_t mr = nr - r < MRP ? nr - r : MRP;                                                    \
                    const void *  wr = wc + (size_t) (r * ws) * es;                                                    \
                    const float * xt = x + t0 * ldx;                                                                   \
                    float *       yt = y + t0 * ldy + r;                                                               \
                    VEC *         ar = ab + r * NTP;                                                                   \
                    if (mr == MRP && nt == NTP) {                                                                      \
                        PFX##_tile(MRP, NTP, wt, wr, ws, wk0, xt, ldx, k0, k1, n, ar, NTP, init, fin, yt, ldy,         \
                                   accumulate);                                                                        \
                    } else if (mr == MRP) {                                                                            \
                        for (int64_t t = 0; t < nt; t++) {                                                             \
                            PFX##_tile(MRP, 1, wt, wr, ws, wk0, xt + t * ldx, ldx, k0, k1, n, ar + t, NTP, init,       \
                                       fin, yt + t * ldy, ldy, accumulate);                                            \
                        }                                                                                              \
                    } else {                                                                                           \
                        for (int64_t i = 0; i < mr; i++) {                                                             \
                            const void * wi = (const char *) wr + (size_t) (i * ws) * es;                              \
                            if (nt == NTP) {                                                                           \
                                PFX##_tile(1, NTP, wt, wi, ws, wk0, xt, ldx, k0, k1, n, ar + i * NTP, NTP, init,       \
                                           fin, yt + i, ldy, accumulate);                                              \
                            } else {                                                                                   \
                                for (int64_t t = 0; t < nt; t++) {                                                     \
                                    PFX##_tile(1, 1, wt, wi, ws, wk0, xt + t * ldx, ldx, k0, k1, n,                    \
                                               ar + i * NTP + t, NTP, init, fin, yt + t * ldy + i, ldy, accumulate);   \
                                }                                                                                      \
                            }                                                                                          \
                        }                                                                                              \
                    }                                                                                                  \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }                                                                                                                  \
                                                                                                                       \
    INL TGT void PFX##_decode(int wt, float * y, int64_t ldy, const void * w, const float * x, int64_t ldx,            \
                              int64_t n, int64_t n_tok, int64_t r0, int64_t r1, int accumulate) {                      \
        const size_t es = wt_size(wt);                                                                                 \
        for (int64_t o = r0; o < r1; o += MRD) {                                                                       \
            const void * wr = (const char *) w + (size_t) (o * n) * es;                                                \
            for (int64_t t = 0; t < n_tok; t++) {                                                                      \
                if (r1 - o >= MRD) {                                                                                   \
                    PFX##_tile(MRD, 1, wt, wr, n, 0, x + t * ldx, ldx, 0, n, n, NULL, 0, 1, 1, y + t * ldy + o, ldy,   \
                               accumulate);                                                                            \
                } else {                                                                                               \
                    for (int64_t i = 0; o + i < r1; i++) {                                                             \
                        const void * wi = (const char *) wr + (size_t) (i * n) * es;                                   \
                        PFX##_tile(1, 1, wt, wi, n, 0, x + t * ldx, ldx, 0, n, n, NULL, 0, 1, 1,                       \
                                   y + t * ldy + o + i, ldy, accumulate);                                              \
                    }                                                                                                  \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }                                                                                                                  \
                                                                                                                       \
    INL TGT void PFX##_matmul(int wt, float * y, int64_t ldy, const void * w, const float * x, int64_t ldx,            \
                              int64_t n, int64_t n_tok, int64_t r0, int64_t r1, int accumulate, float * work) {        \
        if (n_tok < NTP) {                                                                                             \
            PFX##_decode(wt, y, ldy, w, x, ldx, n, n_tok, r0, r1, accumulate);                                         \
            return;                                                                                                    \
        }                                                                                                              \
        const size_t es = wt_size(wt);                                                                                 \
        for (int64_t o0 = r0; o0 < r1; o0 += VLC_MATMUL_ROWS) {                                                        \
            const int64_t nr = r1 - o0 < VLC_MATMUL_ROWS ? r1 - o0 : VLC_MATMUL_ROWS;                                  \
            const void *  wb = (const char *) w + (size_t) (o0 * n) * es;                                              \
            if (work) {                                                                                                \
                /* f32 copy in k chunks (see _block): a 16-row chunk is contiguous, so it                              \
                   stays in L1 without the set conflicts of rows n floats apart */                                     \
                for (int64_t k0 = 0; k0 < n; k0 += VLC_SIMD_KC) {                                                      \
                    const int64_t kc = n - k0 < VLC_SIMD_KC ? n - k0 : VLC_SIMD_KC;                                    \
                    for (int64_t i = 0; i < nr; i++) {                                                                 \
                        PFX##_convert(work + nr * k0 + i * kc, (const char *) wb + (size_t) (i * n + k0) * es, kc,     \
                                      wt);                                                                             \
                    }                                                                                                  \
                }                                                                                                      \
                PFX##_block(WT_F32, 1, y + o0, ldy, work, x, ldx, n, n_tok, nr, accumulate);                           \
            } else if (wt == WT_F32) {                                                                                 \
                PFX##_block(WT_F32, 0, y + o0, ldy, wb, x, ldx, n, n_tok, nr, accumulate);                             \
            } else {                                                                                                   \
                PFX##_block(wt, 0, y + o0, ldy, wb, x, ldx, n, n_tok, nr, accumulate);                                 \
            }                                                                                                          \
        }                                                                                                              \
    }                                                                                                                  \
                                                                                                                       \
    static TGT void PFX##_matmul_f32(float * y, int64_t ldy, const void * w, const float * x, int64_t ldx,             \
                                     int64_t n, int64_t n_tok, int64_t r0, int64_t r1, int accumulate,                 \
                                     float * work) {                                                                   \
        PFX##_matmul(WT_F32, y, ldy, w, x, ldx, n, n_tok, r0, r1, accumulate, work);                                   \
    }                                                                                                                  \
    static TGT void PFX##_matmul_f16(float * y, int64_t ldy, const void * w, const float * x, int64_t ldx,             \
                                     int64_t n, int64_t n_tok, int64_t r0, int64_t r1, int accumulate,                 \
                                     float * work) {                                                                   \
        PFX##_matmul(WT_F16, y, ldy, w, x, ldx, n, n_tok, r0, r1, accumulate, work);                                   \
    }                                                                                                                  \
    static TGT void PFX##_matmul_bf16(float * y, int64_t ldy, const void * w, const float * x, int64_t ldx,            \
                                      int64_t n, int64_t n_tok, int64_t r0, int64_t r1, int accumulate,                \
                                      float * work) {                                                                  \
        PFX##_matmul(WT_BF16, y, ldy, w, x, ldx, n, n_tok, r0, r1, accumulate, work);                                  \
    }

VLC_SIMD_DRIVER(a2, TGT_AVX2, __m256, A2_MRP, A2_NTP, A2_MRD)
VLC_SIMD_DRIVER(a5, TGT_AVX512, __m512, A5_MRP, A5_NTP, A5_MRD)

typedef void (*matmul_fn)(float *, int64_t, const void *, const float *, int64_t, int64_t, int64_t, int64_t,
                          int64_t, int, float *);

#endif  // VLC_SIMD_X86

// ---------------------------------------------------------------------------
// entry point

int vlc_simd_matmul_rows(float * y, int64_t ldy, const void * w, uint32_t type, const float * x,
                         int64_t ldx, int64_t n_in, int64_t n_tok, int64_t r0, int64_t r1,
                         int accumulate, float * work) {
#if VLC_SIMD_X86
    const int level = vlc_simd_level();
    if (level == VLC_SIMD_OFF) {
        return 0;
    }
    const int wt = type == VLC_TYPE_F32 ? WT_F32 : type == VLC_TYPE_F16 ? WT_F16 : type == VLC_TYPE_BF16 ? WT_BF16 : -1;
    if (wt < 0) {
        return 0;
    }
    if (r1 <= r0 || n_tok <= 0) {
        return 1;
    }
    static const matmul_fn fns[2][3] = {
        { a2_matmul_f32, a2_matmul_f16, a2_matmul_bf16 },
        { a5_matmul_f32, a5_matmul_f16, a5_matmul_bf16 },
    };
    fns[level == VLC_SIMD_AVX512][wt](y, ldy, w, x, ldx, n_in, n_tok, r0, r1, accumulate, work);
    return 1;
#else
    (void) y, (void) ldy, (void) w, (void) type, (void) x, (void) ldx, (void) n_in, (void) n_tok;
    (void) r0, (void) r1, (void) accumulate, (void) work;
    return 0;
#endif
}
