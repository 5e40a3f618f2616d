// ops_simd.c: run-time dispatched SIMD matmul over F32 / F16 / BF16 weight rows (see
// ops_simd.h): an AVX2+FMA+F16C path (8 lanes) and an AVX-512 path (16 lanes), each
// compiled with a target attribute (no global -march), chosen once by CPUID.
//
// Is: for prefill (from NT tokens on: 6 with AVX-512, 3 with AVX2) a packed,
// register-blocked GEMM. Blocks of up to 64 weight rows are converted once (F16 by
// vcvtph2ps, BF16 by a shift, both exact) into a 64-byte aligned per-thread buffer, laid
// out per k chunk and per 4-row group so that a tile reads one contiguous weight stream.
// Tiles of 4 rows x NT tokens keep their 4 * NT chains in registers (each weight vector
// feeds NT tokens, each activation vector 4 rows). k is cut in 1024-element chunks whose
// NT activation rows stay in L1 while every row group of the block passes over them; the
// chains are saved and resumed between chunks (exact). Below NT tokens (decode) rows are
// read in place and converted on the fly, 8 rows x 1 token per tile. Every output is the
// same L-lane FMA chain over k plus the same horizontal tree whatever the tile, chunk or
// buffer, so results never depend on the blocking. AVX2 with 3-127 tokens (batched decode)
// reads the rows in place in tiles of 3 rows x 4 tokens instead of packing (a2_few).
// Is not: quantized types, packing of weights at load time, threading (the caller splits
// rows; vlc_simd_task_rows suggests how many per task), AVX-512 BF16 dot products
// (vdpbf16ps adds products in pairs with its own rounding, which breaks the chain
// contract), or bit-compatible with the reference kernels (it uses FMA).
#include "ops_simd.h"

#include "ops_cpu.h"
#include "threads.h"
#include "vlcache.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define VLC_SIMD_X86 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define VLC_SIMD_X86 0
#endif

// ---------------------------------------------------------------------------
// level selection

static int g_level = -1;  // -1: not decided yet

#if VLC_SIMD_X86
// F16C from CPUID leaf 1 (ECX bit 29): clang before 16 knows no "f16c" for
// __builtin_cpu_supports and refuses to compile it.
static int cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif

int vlc_simd_supported(int level) {
    if (level == VLC_SIMD_OFF) {
        return 1;
    }
#if VLC_SIMD_X86
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
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

// Weight element kinds (constants, so that every loop is specialised).
enum { WT_F32 = 0, WT_F16 = 1, WT_BF16 = 2 };

#define INL static inline __attribute__((always_inline))
#define TGT_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TGT_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))

static inline size_t wt_size(int wt) {
    return wt == WT_F32 ? 4 : 2;
}

// ---------------------------------------------------------------------------
// prefill blocking, both levels (tuned on a 2-core AVX-512 Xeon: 48 KiB L1d, 2 MiB L2)

#ifndef VLC_SIMD_KC
#define VLC_SIMD_KC 1024  // k chunk, a multiple of 16: NT activation rows of it stay in L1
#endif
#ifndef VLC_SIMD_RB
#define VLC_SIMD_RB 64  // weight rows packed at once, at most (chain buffer: RB * NT vectors)
#endif
#ifndef VLC_SIMD_PACK_BYTES
#define VLC_SIMD_PACK_BYTES (1 << 20)  // packed rows kept within this (L2-resident)
#endif
enum { VLC_SIMD_MR = 4 };  // weight rows of a prefill tile (its tokens: NT of the level)

static inline int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

// a row of n elements in the packed layout (both levels): whole 16-float steps
static inline int64_t padded(int64_t n) {
    return (n + 15) / 16 * 16;
}

// rows packed at once for rows of n elements: within VLC_SIMD_PACK_BYTES, a multiple of
// the tile rows, at least one tile, at most VLC_SIMD_RB
static inline int64_t rb_max(int64_t n) {
    const int64_t rb = (int64_t) (VLC_SIMD_PACK_BYTES / sizeof(float)) / padded(n) / VLC_SIMD_MR * VLC_SIMD_MR;
    return rb < VLC_SIMD_MR ? VLC_SIMD_MR : rb > VLC_SIMD_RB ? VLC_SIMD_RB : rb;
}

// ---------------------------------------------------------------------------
// per-thread packing buffer: the thread's kept scratch (threads.h), at least
// VLC_SIMD_PACK_BYTES, so a thread allocates it once, whatever the shapes; NULL when it
// cannot be had (then decode tiles run).

static _Thread_local unsigned t_pack_turn = 0;  // alternates the token order (see prefill)

static float * pack_buffer(size_t n_floats) {
    const size_t least = VLC_SIMD_PACK_BYTES / sizeof(float);
    return vlc_thread_scratch(VLC_SCRATCH_SIMD_PACK, (n_floats > least ? n_floats : least) * sizeof(float));
}

// ---------------------------------------------------------------------------
// AVX2: 8 lanes. Prefill tiles 4 rows x 3 tokens (12 accumulators, 3 x vectors, 1 w
// vector: the 16 ymm registers); decode tiles 8 rows x 1 token (8 independent chains).

enum { A2_L = 8, A2_NT = 3, A2_MRD = 8 };

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

// decode: y[r] (+)= W[r, :] . x for r < MR, rows of w n elements apart, converted on the fly
INL TGT_AVX2 void a2_dtile(int MR, int wt, const void * w, int64_t n, const float * x, float * y, int accumulate) {
    const size_t es = wt_size(wt);
    __m256       acc[A2_MRD];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        acc[r] = _mm256_setzero_ps();
    }
    int64_t k = 0;
    for (; k + A2_L <= n; k += A2_L) {
        const __m256 xv = _mm256_loadu_ps(x + k);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            acc[r] = _mm256_fmadd_ps(a2_load_w((const char *) w + (size_t) (r * n) * es, k, wt), xv, acc[r]);
        }
    }
    if (k < n) {  // tail, zero-padded: the lanes and order of a longer row
        const __m256 xv = a2_load_w_tail(x, k, n, WT_F32);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            acc[r] = _mm256_fmadd_ps(a2_load_w_tail((const char *) w + (size_t) (r * n) * es, k, n, wt), xv, acc[r]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        const float d = a2_hsum(acc[r]);
        y[r]          = accumulate ? y[r] + d : d;
    }
}

// prefill: the chains of rows r < MR x tokens t < NT over one k chunk. wp: packed weights
// [nf + (tail > 0)][MR][8]; x: NT rows ldx apart, at the chunk; nf whole steps, then tail
// (< 8) elements. ab[r * A2_NT + t]: the chains between chunks (read unless init); fin:
// reduce and store y[t * ldy + r] instead.
INL TGT_AVX2 void a2_ptile(int MR, int NT, const float * wp, const float * x, int64_t ldx, int64_t nf, int64_t tail,
                           __m256 * ab, int init, int fin, float * y, int64_t ldy, int accumulate) {
    __m256 acc[VLC_SIMD_MR][A2_NT];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            acc[r][t] = init ? _mm256_setzero_ps() : ab[r * A2_NT + t];
        }
    }
    for (int64_t s = 0; s < nf; s++, wp += MR * A2_L) {
        __m256 xv[A2_NT];
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            xv[t] = _mm256_loadu_ps(x + t * ldx + s * A2_L);
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            const __m256 wv = _mm256_load_ps(wp + r * A2_L);
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
    }
    if (tail) {
        __m256 xv[A2_NT];
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            xv[t] = a2_load_w_tail(x + t * ldx, nf * A2_L, nf * A2_L + tail, WT_F32);
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            const __m256 wv = _mm256_load_ps(wp + r * A2_L);
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
                ab[r * A2_NT + t] = acc[r][t];
                continue;
            }
            const float d  = a2_hsum(acc[r][t]);
            float *     yo = y + t * ldy + r;
            *yo            = accumulate ? *yo + d : d;
        }
    }
}

// Rows x tokens of a few-token tile: 12 chains, 3 weight vectors, 1 activation vector.
// Measured on the 2-core EPYC (one thread, F16 [22528, 2048], 8 tokens): 3x4 12.0 ms;
// 4x3 17.7 (17 live vectors: spills); 2x6 17.9; 1x8 24 (8 chains: FMA latency-bound).
enum { A2_FMR = 3, A2_FNT = 4 };

// few tokens (A2_NT .. A2_FEW_MAX - 1: batched decode steps, short chunks): y[t * ldy + r] (+)= W[r, :] .
// x[t, :] for r < MR, t < NT, the weights read in place and converted on the fly, each
// weight vector feeding NT tokens and each activation vector MR rows (no packing: at a few
// tokens, converting a block into the packed buffer and re-reading it per token group cost
// more than it saved). The same chain per output as every other tile.
INL TGT_AVX2 void a2_ftile(int MR, int NT, int wt, const void * w, int64_t n, const float * x, int64_t ldx, float * y,
                           int64_t ldy, int accumulate) {
    const size_t es = wt_size(wt);
    __m256       acc[4][6];  // MR <= 4, NT <= 6 (only what the shape uses stays live)
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm256_setzero_ps();
        }
    }
    int64_t k = 0;
    for (; k + A2_L <= n; k += A2_L) {
        __m256 wv[4];
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            wv[r] = a2_load_w((const char *) w + (size_t) (r * n) * es, k, wt);
        }
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const __m256 xv = _mm256_loadu_ps(x + t * ldx + k);
#pragma GCC unroll 8
            for (int r = 0; r < MR; r++) {
                acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
            }
        }
    }
    if (k < n) {  // tail, zero-padded: the lanes and order of a longer row
        __m256 wv[4];
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            wv[r] = a2_load_w_tail((const char *) w + (size_t) (r * n) * es, k, n, wt);
        }
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const __m256 xv = a2_load_w_tail(x + t * ldx, k, n, WT_F32);
#pragma GCC unroll 8
            for (int r = 0; r < MR; r++) {
                acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const float d  = a2_hsum(acc[r][t]);
            float *     yo = y + t * ldy + r;
            *yo            = accumulate ? *yo + d : d;
        }
    }
}

// Below this many tokens (and from A2_NT on) AVX2 runs a2_few instead of packing. Measured
// on the 2-core AMD EPYC (one thread, F16 [5632, 2048]): 16 tokens 5.4 ms in place vs 8.4
// packed, 32: 9.6 vs 13.9, 64: 19.4 vs 24.5, 128: 46.0 vs 45.5.
enum { A2_FEW_MAX = 128 };

// Rows [r0, r1) x n_tok tokens in tiles of A2_FMR rows x A2_FNT tokens: for each row group
// (its weights L1 / L2 resident while its token groups pass), each token group.
INL TGT_AVX2 void a2_few(int wt, float * y, int64_t ldy, const void * w, const float * x, int64_t ldx, int64_t n,
                         int64_t n_tok, int64_t r0, int64_t r1, int accumulate) {
    const size_t es = wt_size(wt);
    for (int64_t o = r0; o < r1; o += A2_FMR) {
        const int    mr = (int) min64(A2_FMR, r1 - o);
        const void * wr = (const char *) w + (size_t) (o * n) * es;
        for (int64_t t0 = 0; t0 < n_tok; t0 += A2_FNT) {
            const int     nt = (int) min64(A2_FNT, n_tok - t0);
            const float * xt = x + t0 * ldx;
            float *       yo = y + t0 * ldy + o;
            switch (mr * 8 + nt) {  // constant shapes, so that every tile keeps its chains in registers
#define A2_FCASE(MR, NT) case (MR) * 8 + (NT): a2_ftile(MR, NT, wt, wr, n, xt, ldx, yo, ldy, accumulate); break;
                A2_FCASE(1, 1) A2_FCASE(1, 2) A2_FCASE(1, 3) A2_FCASE(1, 4)
                A2_FCASE(2, 1) A2_FCASE(2, 2) A2_FCASE(2, 3) A2_FCASE(2, 4)
                A2_FCASE(3, 1) A2_FCASE(3, 2) A2_FCASE(3, 3) A2_FCASE(3, 4)
#undef A2_FCASE
                default: break;
            }
        }
    }
}

// 8 weights (zero-padded past n) of row src from element k, as f32
INL TGT_AVX2 __m256 a2_pack_load(const void * src, int64_t k, int64_t n, int wt) {
    return k + A2_L <= n ? a2_load_w(src, k, wt) : a2_load_w_tail(src, k, n, wt);
}

// ---------------------------------------------------------------------------
// AVX-512: 16 lanes, masked tails. Prefill tiles 4 rows x 6 tokens (24 accumulators,
// 6 x vectors, 1 w vector of the 32 zmm registers); decode tiles 8 rows x 1 token.

enum { A5_L = 16, A5_NT = 6, A5_MRD = 8 };

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

static inline __mmask16 a5_mask(int64_t n) {  // the low n (< 16) lanes
    return (__mmask16) ((1u << n) - 1u);
}

// (l_i + l_{i+8}) for i < 8, then the AVX2 tree
INL TGT_AVX512 float a5_hsum(__m512 v) {
    const __m256 lo = _mm512_castps512_ps256(v);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return a2_hsum(_mm256_add_ps(lo, hi));
}

INL TGT_AVX512 void a5_dtile(int MR, int wt, const void * w, int64_t n, const float * x, float * y, int accumulate) {
    const size_t es = wt_size(wt);
    __m512       acc[A5_MRD];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        acc[r] = _mm512_setzero_ps();
    }
    int64_t k = 0;
    for (; k + A5_L <= n; k += A5_L) {
        const __m512 xv = _mm512_loadu_ps(x + k);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            acc[r] = _mm512_fmadd_ps(a5_load_w_full((const char *) w + (size_t) (r * n) * es, k, wt), xv, acc[r]);
        }
    }
    if (k < n) {
        const __mmask16 m  = a5_mask(n - k);
        const __m512    xv = _mm512_maskz_loadu_ps(m, x + k);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            acc[r] = _mm512_fmadd_ps(a5_load_w((const char *) w + (size_t) (r * n) * es, k, m, wt), xv, acc[r]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        const float d = a5_hsum(acc[r]);
        y[r]          = accumulate ? y[r] + d : d;
    }
}

INL TGT_AVX512 void a5_ptile(int MR, int NT, const float * wp, const float * x, int64_t ldx, int64_t nf, int64_t tail,
                             __m512 * ab, int init, int fin, float * y, int64_t ldy, int accumulate) {
    __m512 acc[VLC_SIMD_MR][A5_NT];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            acc[r][t] = init ? _mm512_setzero_ps() : ab[r * A5_NT + t];
        }
    }
    for (int64_t s = 0; s < nf; s++, wp += MR * A5_L) {
        __m512 xv[A5_NT];
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            xv[t] = _mm512_loadu_ps(x + t * ldx + s * A5_L);
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            const __m512 wv = _mm512_load_ps(wp + r * A5_L);
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
    }
    if (tail) {
        const __mmask16 m = a5_mask(tail);
        __m512          xv[A5_NT];
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            xv[t] = _mm512_maskz_loadu_ps(m, x + t * ldx + nf * A5_L);
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            const __m512 wv = _mm512_load_ps(wp + r * A5_L);
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
                ab[r * A5_NT + t] = acc[r][t];
                continue;
            }
            const float d  = a5_hsum(acc[r][t]);
            float *     yo = y + t * ldy + r;
            *yo            = accumulate ? *yo + d : d;
        }
    }
}

INL TGT_AVX512 __m512 a5_pack_load(const void * src, int64_t k, int64_t n, int wt) {
    return k + A5_L <= n ? a5_load_w_full(src, k, wt) : a5_load_w(src, k, a5_mask(n - k), wt);
}

// ---------------------------------------------------------------------------
// tile instances: one function per (rows, tokens) shape, so that each keeps its chains in
// registers; the drivers pick them from a table.

typedef void (*a2_ptile_fn)(const float *, const float *, int64_t, int64_t, int64_t, __m256 *, int, int, float *,
                            int64_t, int);
typedef void (*a5_ptile_fn)(const float *, const float *, int64_t, int64_t, int64_t, __m512 *, int, int, float *,
                            int64_t, int);

#define VLC_PTILE(PFX, TGT, VEC, MR, NT)                                                                             \
    static TGT void PFX##_ptile_##MR##x##NT(const float * wp, const float * x, int64_t ldx, int64_t nf,              \
                                            int64_t tail, VEC * ab, int init, int fin, float * y,                    \
                                            int64_t ldy, int accumulate) {                                           \
        PFX##_ptile(MR, NT, wp, x, ldx, nf, tail, ab, init, fin, y, ldy, accumulate);                                \
    }
#define VLC_PTILE_ROWS(PFX, TGT, VEC, MR)                                                                            \
    VLC_PTILE(PFX, TGT, VEC, MR, 1) VLC_PTILE(PFX, TGT, VEC, MR, 2) VLC_PTILE(PFX, TGT, VEC, MR, 3)
#define VLC_PTILE_ROWS6(PFX, TGT, VEC, MR)                                                                           \
    VLC_PTILE_ROWS(PFX, TGT, VEC, MR) VLC_PTILE(PFX, TGT, VEC, MR, 4) VLC_PTILE(PFX, TGT, VEC, MR, 5)                \
    VLC_PTILE(PFX, TGT, VEC, MR, 6)

VLC_PTILE_ROWS(a2, TGT_AVX2, __m256, 1)
VLC_PTILE_ROWS(a2, TGT_AVX2, __m256, 2)
VLC_PTILE_ROWS(a2, TGT_AVX2, __m256, 3)
VLC_PTILE_ROWS(a2, TGT_AVX2, __m256, 4)
VLC_PTILE_ROWS6(a5, TGT_AVX512, __m512, 1)
VLC_PTILE_ROWS6(a5, TGT_AVX512, __m512, 2)
VLC_PTILE_ROWS6(a5, TGT_AVX512, __m512, 3)
VLC_PTILE_ROWS6(a5, TGT_AVX512, __m512, 4)

// [rows - 1][tokens - 1]
static const a2_ptile_fn a2_ptiles[VLC_SIMD_MR][A2_NT] = {
    { a2_ptile_1x1, a2_ptile_1x2, a2_ptile_1x3 },
    { a2_ptile_2x1, a2_ptile_2x2, a2_ptile_2x3 },
    { a2_ptile_3x1, a2_ptile_3x2, a2_ptile_3x3 },
    { a2_ptile_4x1, a2_ptile_4x2, a2_ptile_4x3 },
};
static const a5_ptile_fn a5_ptiles[VLC_SIMD_MR][A5_NT] = {
    { a5_ptile_1x1, a5_ptile_1x2, a5_ptile_1x3, a5_ptile_1x4, a5_ptile_1x5, a5_ptile_1x6 },
    { a5_ptile_2x1, a5_ptile_2x2, a5_ptile_2x3, a5_ptile_2x4, a5_ptile_2x5, a5_ptile_2x6 },
    { a5_ptile_3x1, a5_ptile_3x2, a5_ptile_3x3, a5_ptile_3x4, a5_ptile_3x5, a5_ptile_3x6 },
    { a5_ptile_4x1, a5_ptile_4x2, a5_ptile_4x3, a5_ptile_4x4, a5_ptile_4x5, a5_ptile_4x6 },
};

// ---------------------------------------------------------------------------
// drivers: one per level (PFX, L lanes, NT tokens per tile), specialised per weight kind.
//
// Packed layout of rb rows (n elements each) at p: k chunk c (k0 = c * KC, kc = min(KC,
// n - k0), ks = ceil(kc / L) steps) at p + rb * k0; in it, row group g (rows 4g .. 4g + mr
// - 1, mr = min(4, rb - 4g)) at + 4g * ks * L, as [ks][mr][L], zero-padded past n. Size:
// rb * ceil(n / L) * L floats.

#define VLC_SIMD_DRIVER(PFX, TGT, VEC, L, NT, MRD)                                                                   \
    /* rows w [rb, n] of kind wt -> packed f32 at p */                                                               \
    INL TGT void PFX##_pack(int wt, float * p, const void * w, int64_t n, int64_t rb) {                              \
        const size_t es = wt_size(wt);                                                                               \
        for (int64_t r = 0; r < rb; r++) {                                                                           \
            const int64_t g = r / VLC_SIMD_MR, i = r % VLC_SIMD_MR;                                                  \
            const int64_t mr  = min64(VLC_SIMD_MR, rb - g * VLC_SIMD_MR);                                            \
            const void *  src = (const char *) w + (size_t) (r * n) * es;                                            \
            for (int64_t k0 = 0; k0 < n; k0 += VLC_SIMD_KC) {                                                        \
                const int64_t ks = (min64(VLC_SIMD_KC, n - k0) + L - 1) / L;                                         \
                float *       d  = p + rb * k0 + (g * VLC_SIMD_MR * ks + i) * L;                                     \
                for (int64_t s = 0; s < ks; s++) {                                                                   \
                    PFX##_store(d + s * mr * L, PFX##_pack_load(src, k0 + s * L, n, wt));                            \
                }                                                                                                    \
            }                                                                                                        \
        }                                                                                                            \
    }                                                                                                                \
                                                                                                                     \
    /* rows [r0, r1) x n_tok tokens: blocks of up to rbmax rows packed into p, then for each                         \
       group of NT tokens, each k chunk, each 4-row group: one tile */                                               \
    INL TGT void PFX##_prefill(int wt, float * y, int64_t ldy, const void * w, const float * x, int64_t ldx,         \
                               int64_t n, int64_t n_tok, int64_t r0, int64_t r1, int accumulate, float * p,          \
                               int64_t rbmax) {                                                                      \
        const size_t  es = wt_size(wt);                                                                              \
        const int64_t ng = (n_tok + NT - 1) / NT;                                                                    \
        VEC           ab[VLC_SIMD_RB * NT]; /* [row, token] chains between k chunks */                               \
        for (int64_t o0 = r0; o0 < r1; o0 += rbmax) {                                                                \
            const int64_t rb = min64(rbmax, r1 - o0);                                                                \
            PFX##_pack(wt, p, (const char *) w + (size_t) (o0 * n) * es, n, rb);                                     \
            /* token groups in alternating directions from one block to the next, so that the                        \
               activations read last (still in L2) are read first again */                                           \
            const int rev = (int) (t_pack_turn++ & 1u);                                                              \
            for (int64_t gi = 0; gi < ng; gi++) {                                                                    \
                const int64_t t0 = (rev ? ng - 1 - gi : gi) * NT;                                                    \
                const int64_t nt = min64(NT, n_tok - t0);                                                            \
                for (int64_t k0 = 0; k0 < n; k0 += VLC_SIMD_KC) {                                                    \
                    const int64_t kc = min64(VLC_SIMD_KC, n - k0);                                                   \
                    const int64_t nf = kc / L, tail = kc % L, ks = nf + (tail > 0);                                  \
                    const int     init = k0 == 0, fin = k0 + VLC_SIMD_KC >= n;                                       \
                    for (int64_t g = 0; g * VLC_SIMD_MR < rb; g++) {                                                 \
                        const int64_t mr = min64(VLC_SIMD_MR, rb - g * VLC_SIMD_MR);                                 \
                        PFX##_ptiles[mr - 1][nt - 1](p + rb * k0 + g * VLC_SIMD_MR * ks * L, x + t0 * ldx + k0, ldx, \
                                                     nf, tail, ab + g * VLC_SIMD_MR * NT, init, fin,                 \
                                                     y + t0 * ldy + o0 + g * VLC_SIMD_MR, ldy, accumulate);          \
                    }                                                                                                \
                }                                                                                                    \
            }                                                                                                        \
        }                                                                                                            \
    }                                                                                                                \
                                                                                                                     \
    INL TGT void PFX##_decode(int wt, float * y, int64_t ldy, const void * w, const float * x, int64_t ldx,          \
                              int64_t n, int64_t n_tok, int64_t r0, int64_t r1, int accumulate) {                    \
        const size_t es = wt_size(wt);                                                                               \
        for (int64_t o = r0; o < r1; o += MRD) {                                                                     \
            const void * wr = (const char *) w + (size_t) (o * n) * es;                                              \
            for (int64_t t = 0; t < n_tok; t++) {                                                                    \
                if (r1 - o >= MRD) {                                                                                 \
                    PFX##_dtile(MRD, wt, wr, n, x + t * ldx, y + t * ldy + o, accumulate);                           \
                } else {                                                                                             \
                    for (int64_t i = 0; o + i < r1; i++) {                                                           \
                        PFX##_dtile(1, wt, (const char *) wr + (size_t) (i * n) * es, n, x + t * ldx,                \
                                    y + t * ldy + o + i, accumulate);                                                \
                    }                                                                                                \
                }                                                                                                    \
            }                                                                                                        \
        }                                                                                                            \
    }                                                                                                                \
                                                                                                                     \
    INL TGT void PFX##_matmul(int wt, float * y, int64_t ldy, const void * w, const float * x, int64_t ldx,          \
                              int64_t n, int64_t n_tok, int64_t r0, int64_t r1, int accumulate) {                    \
        /* below NT tokens packing does not pay: decode tiles convert on the fly */                                  \
        if (n_tok >= NT && n > 0) {                                                                                  \
            /* blocks of at most rb_max(n) rows, of about equal size (multiples of 4) */                             \
            const int64_t nb = (r1 - r0 + rb_max(n) - 1) / rb_max(n);                                                \
            const int64_t rb = min64((r1 - r0 + nb - 1) / nb + VLC_SIMD_MR - 1, rb_max(n)) / VLC_SIMD_MR *           \
                               VLC_SIMD_MR;                                                                          \
            float * p = pack_buffer((size_t) (rb * padded(n)));                                                      \
            if (p) {                                                                                                 \
                PFX##_prefill(wt, y, ldy, w, x, ldx, n, n_tok, r0, r1, accumulate, p, rb);                           \
                return;                                                                                              \
            }                                                                                                        \
        }                                                                                                            \
        PFX##_decode(wt, y, ldy, w, x, ldx, n, n_tok, r0, r1, accumulate);                                           \
    }                                                                                                                \
                                                                                                                     \
    static TGT void PFX##_matmul_f32(float * y, int64_t ldy, const void * w, const float * x, int64_t ldx,           \
                                     int64_t n, int64_t n_tok, int64_t r0, int64_t r1, int accumulate) {             \
        PFX##_matmul(WT_F32, y, ldy, w, x, ldx, n, n_tok, r0, r1, accumulate);                                       \
    }                                                                                                                \
    static TGT void PFX##_matmul_f16(float * y, int64_t ldy, const void * w, const float * x, int64_t ldx,           \
                                     int64_t n, int64_t n_tok, int64_t r0, int64_t r1, int accumulate) {             \
        PFX##_matmul(WT_F16, y, ldy, w, x, ldx, n, n_tok, r0, r1, accumulate);                                       \
    }                                                                                                                \
    static TGT void PFX##_matmul_bf16(float * y, int64_t ldy, const void * w, const float * x, int64_t ldx,          \
                                      int64_t n, int64_t n_tok, int64_t r0, int64_t r1, int accumulate) {            \
        PFX##_matmul(WT_BF16, y, ldy, w, x, ldx, n, n_tok, r0, r1, accumulate);                                      \
    }

INL TGT_AVX2 void a2_store(float * d, __m256 v) {
    _mm256_store_ps(d, v);
}
INL TGT_AVX512 void a5_store(float * d, __m512 v) {
    _mm512_store_ps(d, v);
}

VLC_SIMD_DRIVER(a2, TGT_AVX2, __m256, A2_L, A2_NT, A2_MRD)
VLC_SIMD_DRIVER(a5, TGT_AVX512, __m512, A5_L, A5_NT, A5_MRD)

typedef void (*matmul_fn)(float *, int64_t, const void *, const float *, int64_t, int64_t, int64_t, int64_t,
                          int64_t, int);

static TGT_AVX2 void a2_few_f32(float * y, int64_t ldy, const void * w, const float * x, int64_t ldx, int64_t n,
                                int64_t n_tok, int64_t r0, int64_t r1, int accumulate) {
    a2_few(WT_F32, y, ldy, w, x, ldx, n, n_tok, r0, r1, accumulate);
}
static TGT_AVX2 void a2_few_f16(float * y, int64_t ldy, const void * w, const float * x, int64_t ldx, int64_t n,
                                int64_t n_tok, int64_t r0, int64_t r1, int accumulate) {
    a2_few(WT_F16, y, ldy, w, x, ldx, n, n_tok, r0, r1, accumulate);
}
static TGT_AVX2 void a2_few_bf16(float * y, int64_t ldy, const void * w, const float * x, int64_t ldx, int64_t n,
                                 int64_t n_tok, int64_t r0, int64_t r1, int accumulate) {
    a2_few(WT_BF16, y, ldy, w, x, ldx, n, n_tok, r0, r1, accumulate);
}

#endif  // VLC_SIMD_X86

// ---------------------------------------------------------------------------
// entry points

int64_t vlc_simd_task_rows(int64_t n_in, int64_t n_tok) {
#if VLC_SIMD_X86
    const int level = vlc_simd_level();
    if (level != VLC_SIMD_OFF && n_tok >= (level == VLC_SIMD_AVX512 ? A5_NT : A2_NT) && n_in > 0) {
        const int64_t rows = rb_max(n_in) / VLC_MATMUL_ROWS * VLC_MATMUL_ROWS;
        return rows > VLC_MATMUL_ROWS ? rows : VLC_MATMUL_ROWS;
    }
#else
    (void) n_in, (void) n_tok;
#endif
    return VLC_MATMUL_ROWS;
}

int vlc_simd_matmul_rows(float * y, int64_t ldy, const void * w, uint32_t type, const float * x,
                         int64_t ldx, int64_t n_in, int64_t n_tok, int64_t r0, int64_t r1,
                         int accumulate, float * work) {
    (void) work;  // packing uses the per-thread buffer above
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
    static const matmul_fn fns[3][3] = {
        { a2_matmul_f32, a2_matmul_f16, a2_matmul_bf16 },
        { a5_matmul_f32, a5_matmul_f16, a5_matmul_bf16 },
        { a2_few_f32, a2_few_f16, a2_few_bf16 },
    };
    const int few = level == VLC_SIMD_AVX2 && n_tok >= A2_NT && n_tok < A2_FEW_MAX;
    fns[few ? 2 : level == VLC_SIMD_AVX512][wt](y, ldy, w, x, ldx, n_in, n_tok, r0, r1, accumulate);
    return 1;
#else
    (void) y, (void) ldy, (void) w, (void) type, (void) x, (void) ldx, (void) n_in, (void) n_tok;
    (void) r0, (void) r1, (void) accumulate;
    return 0;
#endif
}
