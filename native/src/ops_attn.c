// ops_attn.c: flash-style attention of a block of consecutive query rows against one KV
// head (F32 or F16 entries), and the attention statistics of a window of rows (see the
// attention section of ops_cpu.h): the portable reference kernels, and AVX2+FMA+F16C /
// AVX-512 kernels chosen at run time through vlc_simd_level() (ops_simd.h).
//
// Is: for every pass of up to VLC_ATTN_PASS query vectors (rows x G heads) the keys are
// visited in tiles of VLC_ATTN_TILE entries that start at multiples of the tile size; each
// tile is converted once per pass (the SIMD kernels transpose K to [D, TILE] so that the
// lanes run over keys, and keep V as f32 rows), then every query vector of the pass
// updates its own running max, sum and accumulator (online softmax). Per query vector
// the arithmetic is fixed and depends only on its own data and the keys it sees, never on
// the block, R, the pass or the register blocking:
//   score  s = (sequential FMA chain over d = 0 .. D-1 of q[d] * k[d], from 0) * scale
//   max    m' = max(m, max over the tile's visible keys)
//   alpha  = exp(m - m') when m' > m (the accumulator and sum are then multiplied by it)
//   p      = exp(s - m'), 0 for keys the row does not see
//   sum    l = l + T, T = the tile's 64 p summed as a fixed tree (slot i with i+32, then
//          i+16, i+8, i+4, i+2, i+1)
//   out    acc[d] = sequential FMA chain over the tile's visible keys of p * v[d]
// so AVX2 and AVX-512 give the same bits, a decode step the same bits as its prefill row.
// exp is one vector polynomial (attn_exp below, ~1 ulp) on both levels; the statistics
// kernel uses the same score chain and the same exp, so e = exp(s - max) <= 1 and the
// row's max gives exactly 1. The reference kernels (level off, other builds) keep the
// arithmetic of the first version: vlc_cpu_dot's order and libm's expf.
// Is not: threading (the caller splits rows and heads), masks other than causal, KV
// types other than F32 / F16 on the SIMD paths (others run the reference).
#include "ops_cpu.h"
#include "ops_simd.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ATTN_X86 1
#include <immintrin.h>
#else
#define ATTN_X86 0
#endif

// The kernels rely on every product and sum being rounded where the source says so: no
// contraction of a multiply and an add into one FMA behind our back (GCC contracts the
// mul / add intrinsics too under its default -ffp-contract=fast).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

enum { TILE = VLC_ATTN_TILE };

static inline size_t rnd16(size_t n) {
    return (n + 15) & ~(size_t) 15;
}

static inline int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

int32_t vlc_cpu_attn_pass_rows(int32_t G) {
    return G >= VLC_ATTN_PASS ? 1 : VLC_ATTN_PASS / G;
}

// Query vectors of one pass, at most.
static size_t pass_qvecs(int32_t G) {
    return (size_t) vlc_cpu_attn_pass_rows(G) * (size_t) G;
}

// SIMD layout (floats, each part 64-byte aligned when work is): Kt [D, TILE], V tile
// [TILE, Dp], acc [QP, Dp], scores / probabilities of one group [ATTN_NQ_MAX, TILE],
// max and sum [QP] each. The reference needs less: acc [QP, D], K and V tiles [TILE, D],
// scores [TILE], max and sum [QP].
enum { ATTN_NQ_MAX = 8 };

size_t vlc_cpu_attn_work_floats(int32_t G, int32_t D) {
    const size_t QP = pass_qvecs(G), Dp = rnd16((size_t) D);
    return 16 + rnd16((size_t) D * TILE) + TILE * Dp + QP * Dp + ATTN_NQ_MAX * TILE + 2 * rnd16(QP);
}

size_t vlc_cpu_attn_stats_work_floats(int32_t D) {
    return 16 + rnd16((size_t) D * TILE) + ATTN_NQ_MAX * TILE + TILE;
}

static inline float * align64(float * p) {
    return (float *) (((uintptr_t) p + 63) & ~(uintptr_t) 63);
}

// ---------------------------------------------------------------------------
// reference kernels (level off): vlc_cpu_dot scores, libm expf, sequential sums

static void attn_rows_ref(float * out, int64_t ldo, float * ml, int64_t ldml, const float * q, int64_t ldq,
                          int32_t R, int64_t n0, int causal, int32_t G, const void * k, const void * v,
                          uint32_t kv_type, int32_t D, float scale, float * work) {
    const size_t  es = vlc_type_size(kv_type);
    const int32_t PR = vlc_cpu_attn_pass_rows(G);
    for (int32_t p0 = 0; p0 < R; p0 += PR) {
        const int32_t p1 = R - p0 < PR ? R : p0 + PR;
        const int64_t QN = (int64_t) (p1 - p0) * G;
        float *       acc = work;                     // [QN, D]
        float *       kt  = acc + QN * D;             // [TILE, D] keys as f32
        float *       vt  = kt + (int64_t) TILE * D;  // [TILE, D] values as f32
        float *       s   = vt + (int64_t) TILE * D;  // [TILE] scores of one query vector
        float *       mx  = s + TILE;                 // [QN] running max
        float *       l   = mx + QN;                  // [QN] running sum of exp(s - max)
        for (int64_t i = 0; i < QN; i++) {
            mx[i] = -INFINITY;
            l[i]  = 0.0f;
        }
        memset(acc, 0, (size_t) (QN * D) * sizeof(float));
        const int64_t nlast = n0 + (causal ? p1 - 1 : 0);  // entries the pass's last row sees
        for (int64_t t0 = 0; t0 < nlast; t0 += TILE) {
            const int64_t nt = min64(TILE, nlast - t0);
            const float * kr;  // [nt, D]
            const float * vr;  // [nt, D]
            if (kv_type == VLC_TYPE_F32) {
                kr = (const float *) k + t0 * D;
                vr = (const float *) v + t0 * D;
            } else {
                vlc_cpu_to_f32(kt, (const char *) k + (size_t) (t0 * D) * es, kv_type, nt * D);
                vlc_cpu_to_f32(vt, (const char *) v + (size_t) (t0 * D) * es, kv_type, nt * D);
                kr = kt;
                vr = vt;
            }
            int32_t rf = p0;  // first row that sees entry t0
            if (causal && t0 - n0 + 1 > rf) {
                rf = (int32_t) (t0 - n0 + 1);
            }
            for (int32_t r = rf; r < p1; r++) {
                const int64_t nr = min64(nt, n0 + (causal ? r : 0) - t0);
                for (int32_t g = 0; g < G; g++) {
                    const int64_t qi   = (int64_t) (r - p0) * G + g;
                    const float * qg   = q + (int64_t) r * ldq + (int64_t) g * D;
                    float *       og   = acc + qi * D;
                    float         tmax = -INFINITY;
                    for (int64_t j = 0; j < nr; j++) {
                        s[j] = vlc_cpu_dot(qg, kr + j * D, D) * scale;
                        tmax = s[j] > tmax ? s[j] : tmax;
                    }
                    const float m_new = tmax > mx[qi] ? tmax : mx[qi];
                    if (mx[qi] != m_new) {
                        // rescale what was accumulated under the old max (nothing on the first tile)
                        const float alpha = mx[qi] == -INFINITY ? 0.0f : expf(mx[qi] - m_new);
                        for (int32_t d = 0; d < D; d++) {
                            og[d] *= alpha;
                        }
                        l[qi] *= alpha;
                        mx[qi] = m_new;
                    }
                    for (int64_t j = 0; j < nr; j++) {
                        const float   p  = expf(s[j] - m_new);
                        const float * vj = vr + j * D;
                        l[qi] += p;
                        for (int32_t d = 0; d < D; d++) {
                            og[d] += p * vj[d];
                        }
                    }
                }
            }
        }
        for (int32_t r = p0; r < p1; r++) {
            for (int32_t g = 0; g < G; g++) {
                const int64_t qi  = (int64_t) (r - p0) * G + g;
                const float   inv = 1.0f / l[qi];
                float *       og  = out + (int64_t) r * ldo + (int64_t) g * D;
                for (int32_t d = 0; d < D; d++) {
                    og[d] = acc[qi * D + d] * inv;
                }
                if (ml) {
                    ml[(int64_t) r * ldml + 2 * g]     = mx[qi];
                    ml[(int64_t) r * ldml + 2 * g + 1] = l[qi];
                }
            }
        }
    }
}

// Tile by tile over the key range, keys converted once per tile and shared by every row
// and head; for a fixed key the contributions arrive in row order, then head order, so
// the sums do not depend on how the caller splits the key range or rows into tasks
// (as long as each key range is one task and rows are visited in order).
static void attn_stats_ref(double * colsum, int64_t * count, const float * q, int64_t ldq, int32_t W, int64_t n0,
                           const float * ml, int64_t ldml, int32_t G, const void * k, uint32_t kv_type, int64_t j0,
                           int64_t j1, int32_t D, float scale, float p, float * work) {
    const size_t es = vlc_type_size(kv_type);
    float *      kt = work;                               // [TILE, D] keys as f32
    float *      e  = work + (size_t) TILE * (size_t) D;  // [TILE] exp(s - max) of one row and head
    // no row sees past n0 + W - 1 entries
    const int64_t jend = j1 < n0 + W - 1 ? j1 : n0 + W - 1;
    for (int64_t t0 = j0; t0 < jend; t0 += TILE) {
        const int64_t nt = min64(TILE, jend - t0);
        const float * kr;  // [nt, D]
        if (kv_type == VLC_TYPE_F32) {
            kr = (const float *) k + t0 * D;
        } else {
            vlc_cpu_to_f32(kt, (const char *) k + (size_t) (t0 * D) * es, kv_type, nt * D);
            kr = kt;
        }
        double * cs = colsum + (t0 - j0);
        // first row that sees key t0: n0 + r > t0
        int32_t r_first = t0 >= n0 ? (int32_t) (t0 - n0 + 1) : 0;
        for (int32_t r = r_first; r < W; r++) {
            const int64_t nr = min64(nt, n0 + r - t0);  // keys of this tile row r sees
            for (int32_t g = 0; g < G; g++) {
                const float * qg  = q + (int64_t) r * ldq + (int64_t) g * D;
                const float   mx  = ml[(int64_t) r * ldml + 2 * g];
                const float   inv = 1.0f / ml[(int64_t) r * ldml + 2 * g + 1];
                int64_t       c   = 0;
                for (int64_t j = 0; j < nr; j++) {
                    // the score exactly as the attention computes it, so e <= 1 and the max gives 1
                    e[j] = expf(vlc_cpu_dot(qg, kr + j * D, D) * scale - mx);
                    c += e[j] >= p;
                }
                for (int64_t j = 0; j < nr; j++) {
                    cs[j] += (double) (e[j] * inv);
                }
                count[g] += c;
            }
        }
    }
}

#if ATTN_X86

// ---------------------------------------------------------------------------
// SIMD building blocks. exp: x clamped to [-104, 100] (below -104 the result rounds to 0,
// above 88.7 it is inf anyway; NaN passes through), n = round(x log2 e),
// r = x - n ln2 in two FMAs (Cody-Waite, |r| <= ln2 / 2), e^r = 1 + r (1 + r P(r)) with
// P of degree 4 fitted (weighted least squares to minimax, relative error 3e-9 before
// f32 rounding), times 2^n as two exact power-of-two factors so that subnormal results
// are rounded once. Measured over every 61st float of [-104, 88] (test_attn samples them): 0.88
// ulp for normal results, 0.81 ulp of 2^-149 for subnormal ones; exp(0) == 1 exactly.

#define INL static inline __attribute__((always_inline))
#define TGT_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TGT_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))

#define ROUND_NEAREST (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define EXP_LO  -104.0f
#define EXP_HI  100.0f
#define LOG2E   0x1.715476p+0f
#define LN2_HI  0x1.62e430p-1f
#define LN2_LO  -0x1.05c610p-29f
#define EXP_C2  0x1.fffffcp-2f
#define EXP_C3  0x1.555492p-3f
#define EXP_C4  0x1.5558f2p-5f
#define EXP_C5  0x1.123a20p-7f
#define EXP_C6  0x1.6a23cep-10f

// ---- AVX2: 8 lanes

typedef __m256 a2_v;
enum { A2_L = 8 };

INL TGT_AVX2 __m256 a2_zero(void) { return _mm256_setzero_ps(); }
INL TGT_AVX2 __m256 a2_set1(float x) { return _mm256_set1_ps(x); }
INL TGT_AVX2 __m256 a2_load(const float * p) { return _mm256_loadu_ps(p); }
INL TGT_AVX2 void   a2_store(float * p, __m256 v) { _mm256_storeu_ps(p, v); }
INL TGT_AVX2 __m256 a2_fma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
INL TGT_AVX2 __m256 a2_mul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
INL TGT_AVX2 __m256 a2_add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
INL TGT_AVX2 __m256 a2_sub(__m256 a, __m256 b) { return _mm256_sub_ps(a, b); }
INL TGT_AVX2 __m256 a2_max(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
INL TGT_AVX2 float  a2_first(__m256 v) { return _mm256_cvtss_f32(v); }

INL TGT_AVX2 __m256 a2_exp(__m256 x) {
    x              = _mm256_min_ps(_mm256_set1_ps(EXP_HI), _mm256_max_ps(_mm256_set1_ps(EXP_LO), x));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)), ROUND_NEAREST);
    __m256       r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    r              = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    __m256 p       = _mm256_fmadd_ps(_mm256_set1_ps(EXP_C6), r, _mm256_set1_ps(EXP_C5));
    p              = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C4));
    p              = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C3));
    p              = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C2));
    p              = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p              = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1);
    const __m256i n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

// lanes >= nv (0 <= nv < 8) set to -inf
INL TGT_AVX2 __m256 a2_mask_inf(__m256 v, int nv) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(nv), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), v, _mm256_castsi256_ps(m));
}

// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)): pairs i, i+4, then i+2, then i+1
INL TGT_AVX2 float a2_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s        = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s        = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

INL TGT_AVX2 float a2_hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s        = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s        = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

// lanes < nv (1 .. 8) with v >= p
INL TGT_AVX2 int a2_count_ge(__m256 v, float p, int nv) {
    const int m = _mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_set1_ps(p), _CMP_GE_OQ));
    return __builtin_popcount((unsigned) m & ((1u << nv) - 1u));
}

// cs[i] += (double) w[i] for lanes i < nv (1 .. 8)
INL TGT_AVX2 void a2_acc_pd(double * cs, __m256 w, int nv) {
    if (nv >= 8) {
        _mm256_storeu_pd(cs, _mm256_add_pd(_mm256_loadu_pd(cs), _mm256_cvtps_pd(_mm256_castps256_ps128(w))));
        _mm256_storeu_pd(cs + 4, _mm256_add_pd(_mm256_loadu_pd(cs + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(w, 1))));
        return;
    }
    float b[8];
    _mm256_storeu_ps(b, w);
    for (int i = 0; i < nv; i++) {
        cs[i] += (double) b[i];
    }
}

// n (< 8) elements of a row (f16 or f32) at element i, zeros after
INL TGT_AVX2 __m256 a2_load_part(const void * src, int f16, int64_t i, int n) {
    if (f16) {
        uint16_t b[8] = { 0 };
        memcpy(b, (const uint16_t *) src + i, (size_t) n * sizeof(uint16_t));
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) b));
    }
    float b[8] = { 0 };
    memcpy(b, (const float *) src + i, (size_t) n * sizeof(float));
    return _mm256_loadu_ps(b);
}

INL TGT_AVX2 __m256 a2_load_row(const void * src, int f16, int64_t i) {
    if (f16) {
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) ((const uint16_t *) src + i)));
    }
    return _mm256_loadu_ps((const float *) src + i);
}

// r[c] <- column c of the 8 x 8 block r (rows in, columns out)
INL TGT_AVX2 void a2_transpose(__m256 * r) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// ---- AVX-512: 16 lanes

typedef __m512 a5_v;
enum { A5_L = 16 };

INL TGT_AVX512 __m512 a5_zero(void) { return _mm512_setzero_ps(); }
INL TGT_AVX512 __m512 a5_set1(float x) { return _mm512_set1_ps(x); }
INL TGT_AVX512 __m512 a5_load(const float * p) { return _mm512_loadu_ps(p); }
INL TGT_AVX512 void   a5_store(float * p, __m512 v) { _mm512_storeu_ps(p, v); }
INL TGT_AVX512 __m512 a5_fma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
INL TGT_AVX512 __m512 a5_mul(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
INL TGT_AVX512 __m512 a5_add(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
INL TGT_AVX512 __m512 a5_sub(__m512 a, __m512 b) { return _mm512_sub_ps(a, b); }
INL TGT_AVX512 __m512 a5_max(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
INL TGT_AVX512 float  a5_first(__m512 v) { return _mm512_cvtss_f32(v); }

INL TGT_AVX512 __m512 a5_exp(__m512 x) {
    x              = _mm512_min_ps(_mm512_set1_ps(EXP_HI), _mm512_max_ps(_mm512_set1_ps(EXP_LO), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)), ROUND_NEAREST);
    __m512       r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    r              = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    __m512 p       = _mm512_fmadd_ps(_mm512_set1_ps(EXP_C6), r, _mm512_set1_ps(EXP_C5));
    p              = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C4));
    p              = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C3));
    p              = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C2));
    p              = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p              = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512i ni = _mm512_cvtps_epi32(n);
    const __m512i n1 = _mm512_srai_epi32(ni, 1);
    const __m512i n2 = _mm512_sub_epi32(ni, n1);
    const __m512i bias = _mm512_set1_epi32(127);
    const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), 23));
    const __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, bias), 23));
    return _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
}

INL TGT_AVX512 __m512 a5_mask_inf(__m512 v, int nv) {
    return _mm512_mask_blend_ps((__mmask16) ((1u << nv) - 1u), _mm512_set1_ps(-INFINITY), v);
}

// pairs i, i+8, then the AVX2 tree: the same tree as a2 over two 8-lane halves
INL TGT_AVX512 float a5_hsum(__m512 v) {
    const __m256 lo = _mm512_castps512_ps256(v);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return a2_hsum(_mm256_add_ps(lo, hi));
}

INL TGT_AVX512 float a5_hmax(__m512 v) {
    const __m256 lo = _mm512_castps512_ps256(v);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return a2_hmax(_mm256_max_ps(lo, hi));
}

INL TGT_AVX512 int a5_count_ge(__m512 v, float p, int nv) {
    const __mmask16 valid = (__mmask16) (nv >= 16 ? 0xffffu : (1u << nv) - 1u);
    return __builtin_popcount((unsigned) _mm512_mask_cmp_ps_mask(valid, v, _mm512_set1_ps(p), _CMP_GE_OQ));
}

INL TGT_AVX512 void a5_acc_pd(double * cs, __m512 w, int nv) {
    const __m512d   lo = _mm512_cvtps_pd(_mm512_castps512_ps256(w));
    const __m512d   hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(w), 1)));
    if (nv >= 16) {
        _mm512_storeu_pd(cs, _mm512_add_pd(_mm512_loadu_pd(cs), lo));
        _mm512_storeu_pd(cs + 8, _mm512_add_pd(_mm512_loadu_pd(cs + 8), hi));
        return;
    }
    const __mmask8 mlo = (__mmask8) (nv >= 8 ? 0xffu : (1u << nv) - 1u);
    const __mmask8 mhi = (__mmask8) (nv > 8 ? (1u << (nv - 8)) - 1u : 0u);
    _mm512_mask_storeu_pd(cs, mlo, _mm512_add_pd(_mm512_maskz_loadu_pd(mlo, cs), lo));
    _mm512_mask_storeu_pd(cs + 8, mhi, _mm512_add_pd(_mm512_maskz_loadu_pd(mhi, cs + 8), hi));
}

INL TGT_AVX512 __m512 a5_load_part(const void * src, int f16, int64_t i, int n) {
    const __mmask16 m = (__mmask16) ((1u << n) - 1u);
    if (f16) {
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *) src + i));
    }
    return _mm512_maskz_loadu_ps(m, (const float *) src + i);
}

INL TGT_AVX512 __m512 a5_load_row(const void * src, int f16, int64_t i) {
    if (f16) {
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) ((const uint16_t *) src + i)));
    }
    return _mm512_loadu_ps((const float *) src + i);
}

// r[c] <- column c of the 16 x 16 block r: pairs, quads within 128-bit lanes, then lanes
INL TGT_AVX512 void a5_transpose(__m512 * r) {
    __m512 a[16], b[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        a[2 * i]     = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        const __m512d a0 = _mm512_castps_pd(a[4 * i]), a1 = _mm512_castps_pd(a[4 * i + 1]);
        const __m512d a2 = _mm512_castps_pd(a[4 * i + 2]), a3 = _mm512_castps_pd(a[4 * i + 3]);
        b[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));  // column 4k of rows 4i .. 4i+3
        b[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));  // column 4k+1
        b[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));  // column 4k+2
        b[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));  // column 4k+3
    }
#pragma GCC unroll 4
    for (int m = 0; m < 4; m++) {
        const __m512 e0 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0x88), e1 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0xdd);
        const __m512 f0 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0x88);
        const __m512 f1 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0xdd);
        r[m]      = _mm512_shuffle_f32x4(e0, f0, 0x88);
        r[4 + m]  = _mm512_shuffle_f32x4(e1, f1, 0x88);
        r[8 + m]  = _mm512_shuffle_f32x4(e0, f0, 0xdd);
        r[12 + m] = _mm512_shuffle_f32x4(e1, f1, 0xdd);
    }
}

// ---------------------------------------------------------------------------
// the kernels, once per level. PFX: a2 / a5; L lanes; NQ query vectors per group (QK
// register block NQ x KC vectors of keys); NV = TILE / L vectors per tile.
//   _ktile   K entries [t0, t0 + nt) -> kt [D, TILE] (f32, transposed, slots >= nt zero)
//   _qk      s [nq, TILE] = scores of nq query vectors against kt, times scale
//   _softmax one query vector's tile: running max / sum / accumulator rescale, s -> p
//   _pv      acc[i] += p[i] x V over the keys each of the nq query vectors sees
//   _rows    the attention of R rows (vlc_cpu_attn_rows); _stats the statistics

#define ATTN_KERNELS(PFX, TGT, VEC, L, NQ, KC)                                                                         \
    INL TGT void PFX##_ktile(float * kt, const void * k, int f16, int64_t t0, int64_t nt, int32_t D) {                 \
        const size_t es = f16 ? 2 : 4;                                                                                 \
        for (int64_t jb = 0; jb < TILE; jb += L) {                                                                     \
            if (jb >= nt) {                                                                                            \
                for (int32_t d = 0; d < D; d++) {                                                                      \
                    PFX##_store(kt + (int64_t) d * TILE + jb, PFX##_zero());                                           \
                }                                                                                                      \
                continue;                                                                                              \
            }                                                                                                          \
            for (int32_t d0 = 0; d0 < D; d0 += L) {                                                                    \
                const int nd = D - d0 < L ? D - d0 : L;                                                                \
                VEC       r[L];                                                                                        \
                _Pragma("GCC unroll 16") for (int i = 0; i < L; i++) {                                                 \
                    const void * row = (const char *) k + (size_t) ((t0 + jb + i) * D) * es;                           \
                    r[i] = jb + i >= nt ? PFX##_zero()                                                                 \
                           : nd == L    ? PFX##_load_row(row, f16, d0)                                                 \
                                        : PFX##_load_part(row, f16, d0, nd);                                           \
                }                                                                                                      \
                PFX##_transpose(r);                                                                                    \
                for (int c = 0; c < nd; c++) {                                                                         \
                    PFX##_store(kt + (int64_t) (d0 + c) * TILE + jb, r[c]);                                            \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }                                                                                                                  \
                                                                                                                       \
    /* nq query vectors qp[i] [D] against keys kt [D, TILE]: one FMA chain over d per score */                         \
    INL TGT void PFX##_qk_n(int nq, const float * const * qp, const float * kt, int32_t D, float scale, float * s) {   \
        const VEC sc = PFX##_set1(scale);                                                                              \
        for (int c = 0; c < TILE; c += KC * L) {                                                                       \
            VEC acc[NQ][KC];                                                                                           \
            _Pragma("GCC unroll 8") for (int i = 0; i < nq; i++) {                                                     \
                _Pragma("GCC unroll 8") for (int v = 0; v < KC; v++) {                                                 \
                    acc[i][v] = PFX##_zero();                                                                          \
                }                                                                                                      \
            }                                                                                                          \
            const float * kc = kt + c;                                                                                 \
            for (int32_t d = 0; d < D; d++) {                                                                          \
                VEC kv[KC];                                                                                            \
                _Pragma("GCC unroll 8") for (int v = 0; v < KC; v++) {                                                 \
                    kv[v] = PFX##_load(kc + (int64_t) d * TILE + v * L);                                               \
                }                                                                                                      \
                _Pragma("GCC unroll 8") for (int i = 0; i < nq; i++) {                                                 \
                    const VEC b = PFX##_set1(qp[i][d]);                                                                \
                    _Pragma("GCC unroll 8") for (int v = 0; v < KC; v++) {                                             \
                        acc[i][v] = PFX##_fma(b, kv[v], acc[i][v]);                                                    \
                    }                                                                                                  \
                }                                                                                                      \
            }                                                                                                          \
            _Pragma("GCC unroll 8") for (int i = 0; i < nq; i++) {                                                     \
                _Pragma("GCC unroll 8") for (int v = 0; v < KC; v++) {                                                 \
                    PFX##_store(s + i * TILE + c + v * L, PFX##_mul(acc[i][v], sc));                                   \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }                                                                                                                  \
                                                                                                                       \
    static TGT void PFX##_qk(int nq, const float * const * qp, const float * kt, int32_t D, float scale,               \
                             float * s) {                                                                              \
        switch (nq) {                                                                                                  \
            case NQ: PFX##_qk_n(NQ, qp, kt, D, scale, s); break;                                                       \
            case 1: PFX##_qk_n(1, qp, kt, D, scale, s); break;                                                         \
            case 2: PFX##_qk_n(2, qp, kt, D, scale, s); break;                                                         \
            default:                                                                                                   \
                for (int i = 0; i < nq; i++) {                                                                         \
                    PFX##_qk_n(1, qp + i, kt, D, scale, s + i * TILE);                                                 \
                }                                                                                                      \
        }                                                                                                              \
    }                                                                                                                  \
                                                                                                                       \
    /* one query vector, one tile: s [TILE] scores (nv keys seen) -> p; updates *mx, *l and                          \
       rescales acc [Dp] when the max grows */                                                                         \
    INL TGT void PFX##_softmax(float * s, int nv, float * mx, float * l, float * acc, int32_t Dp) {                    \
        VEC x[TILE / L];                                                                                               \
        VEC tm = PFX##_set1(-INFINITY);                                                                                \
        _Pragma("GCC unroll 8") for (int v = 0; v < TILE / L; v++) {                                                   \
            const int n = nv - v * L;                                                                                  \
            x[v]        = n >= L ? PFX##_load(s + v * L) : PFX##_mask_inf(PFX##_load(s + v * L), n < 0 ? 0 : n);       \
            tm          = PFX##_max(tm, x[v]);                                                                         \
        }                                                                                                              \
        const float m_old = *mx, tmax = PFX##_hmax(tm);                                                                \
        const float m_new = tmax > m_old ? tmax : m_old;                                                               \
        if (m_new > m_old) {                                                                                           \
            const float alpha = PFX##_first(PFX##_exp(PFX##_set1(m_old - m_new)));                                     \
            const VEC   av    = PFX##_set1(alpha);                                                                     \
            for (int32_t d = 0; d < Dp; d += L) {                                                                      \
                PFX##_store(acc + d, PFX##_mul(PFX##_load(acc + d), av));                                              \
            }                                                                                                          \
            *l  = *l * alpha;                                                                                          \
            *mx = m_new;                                                                                               \
        }                                                                                                              \
        const VEC mb = PFX##_set1(m_new);                                                                              \
        _Pragma("GCC unroll 8") for (int v = 0; v < TILE / L; v++) {                                                   \
            x[v] = PFX##_exp(PFX##_sub(x[v], mb));                                                                     \
            PFX##_store(s + v * L, x[v]);                                                                              \
        }                                                                                                              \
        /* the fixed tree: slot i with i + 32, i + 16, ... (vectors first, then lanes) */                              \
        _Pragma("GCC unroll 8") for (int h = TILE / L / 2; h >= 1; h /= 2) {                                           \
            _Pragma("GCC unroll 8") for (int v = 0; v < h; v++) {                                                      \
                x[v] = PFX##_add(x[v], x[v + h]);                                                                      \
            }                                                                                                          \
        }                                                                                                              \
        *l = *l + PFX##_hsum(x[0]);                                                                                    \
    }                                                                                                                  \
                                                                                                                       \
    /* acc[i] [Dp] += sum over j < nk of p[i * TILE + j] * vt[j * ldv ..], CV vectors of d */                          \
    INL TGT void PFX##_pv_n(int nq, int CV, float * const * acc, const float * p, int64_t nk, const float * vt,        \
                            int64_t ldv, int32_t d0) {                                                                 \
        VEC a[NQ][4];                                                                                                  \
        _Pragma("GCC unroll 8") for (int i = 0; i < nq; i++) {                                                         \
            _Pragma("GCC unroll 4") for (int c = 0; c < CV; c++) {                                                     \
                a[i][c] = PFX##_load(acc[i] + d0 + c * L);                                                             \
            }                                                                                                          \
        }                                                                                                              \
        for (int64_t j = 0; j < nk; j++) {                                                                             \
            VEC w[4];                                                                                                  \
            _Pragma("GCC unroll 4") for (int c = 0; c < CV; c++) {                                                     \
                w[c] = PFX##_load(vt + j * ldv + d0 + c * L);                                                          \
            }                                                                                                          \
            _Pragma("GCC unroll 8") for (int i = 0; i < nq; i++) {                                                     \
                const VEC b = PFX##_set1(p[i * TILE + j]);                                                             \
                _Pragma("GCC unroll 4") for (int c = 0; c < CV; c++) {                                                 \
                    a[i][c] = PFX##_fma(b, w[c], a[i][c]);                                                             \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
        _Pragma("GCC unroll 8") for (int i = 0; i < nq; i++) {                                                         \
            _Pragma("GCC unroll 4") for (int c = 0; c < CV; c++) {                                                     \
                PFX##_store(acc[i] + d0 + c * L, a[i][c]);                                                             \
            }                                                                                                          \
        }                                                                                                              \
    }                                                                                                                  \
                                                                                                                       \
    /* one query vector, cv (1 .. 4) vectors of d from d0 */                                                         \
    static TGT void PFX##_pv1(int cv, float * const * acc, const float * p, int64_t nk, const float * vt,              \
                              int64_t ldv, int32_t d0) {                                                               \
        switch (cv) {                                                                                                  \
            case 4: PFX##_pv_n(1, 4, acc, p, nk, vt, ldv, d0); break;                                                  \
            case 3: PFX##_pv_n(1, 3, acc, p, nk, vt, ldv, d0); break;                                                  \
            case 2: PFX##_pv_n(1, 2, acc, p, nk, vt, ldv, d0); break;                                                  \
            default: PFX##_pv_n(1, 1, acc, p, nk, vt, ldv, d0); break;                                                 \
        }                                                                                                              \
    }                                                                                                                  \
                                                                                                                       \
    /* nq (<= NQ) query vectors: query vector i sees nk[i] keys of the tile */                                        \
    static TGT void PFX##_pv(int nq, float * const * acc, const float * p, const int64_t * nk, const float * vt,       \
                             int64_t ldv, int32_t Dp) {                                                                \
        int64_t jc = nk[0];                                                                                            \
        for (int i = 1; i < nq; i++) {                                                                                 \
            jc = nk[i] < jc ? nk[i] : jc;                                                                              \
        }                                                                                                              \
        for (int32_t d0 = 0; d0 < Dp; d0 += 4 * L) {                                                                   \
            const int cv = (Dp - d0) / L >= 4 ? 4 : (Dp - d0) / L;                                                     \
            if (nq == NQ && cv == 4) {                                                                                 \
                PFX##_pv_n(NQ, 4, acc, p, jc, vt, ldv, d0);                                                            \
            } else {                                                                                                   \
                for (int i = 0; i < nq; i++) {                                                                         \
                    PFX##_pv1(cv, acc + i, p + i * TILE, jc, vt, ldv, d0);                                             \
                }                                                                                                      \
            }                                                                                                          \
            /* keys past the group's shortest row (the causal diagonal), one vector at a time:                         \
               the same chain, continued */                                                                            \
            for (int i = 0; i < nq; i++) {                                                                             \
                if (nk[i] > jc) {                                                                                      \
                    PFX##_pv1(cv, acc + i, p + i * TILE + jc, nk[i] - jc, vt + jc * ldv, ldv, d0);                     \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }                                                                                                                  \
                                                                                                                       \
    static TGT void PFX##_rows(float * out, int64_t ldo, float * ml, int64_t ldml, const float * q, int64_t ldq,       \
                               int32_t R, int64_t n0, int causal, int32_t G, const void * k, const void * v, int f16,  \
                               int32_t D, float scale, float * work) {                                                 \
        const size_t  es = f16 ? 2 : 4;                                                                                \
        const int32_t PR = vlc_cpu_attn_pass_rows(G);                                                                  \
        const int32_t Dp = (int32_t) rnd16((size_t) D);                                                                \
        /* f32 values are read in place when their rows are whole vectors */                                           \
        const int v_direct = !f16 && D % 16 == 0;                                                                      \
        float *       kt   = align64(work);                            /* [D, TILE] */                                 \
        float *       vt   = kt + rnd16((size_t) D * TILE);              /* [TILE, Dp] */                              \
        float *       acc  = vt + (size_t) TILE * Dp;                    /* [QP, Dp] */                                \
        float *       sp   = acc + pass_qvecs(G) * Dp;                   /* [NQ, TILE] */                              \
        float *       mx   = sp + ATTN_NQ_MAX * TILE;                    /* [QP] */                                    \
        float *       l    = mx + rnd16(pass_qvecs(G));                  /* [QP] */                                    \
        for (int32_t p0 = 0; p0 < R; p0 += PR) {                                                                       \
            const int32_t p1 = R - p0 < PR ? R : p0 + PR;                                                              \
            const int64_t QN = (int64_t) (p1 - p0) * G;                                                                \
            for (int64_t i = 0; i < QN; i++) {                                                                         \
                mx[i] = -INFINITY;                                                                                     \
                l[i]  = 0.0f;                                                                                          \
            }                                                                                                          \
            memset(acc, 0, (size_t) (QN * Dp) * sizeof(float));                                                        \
            const int64_t nlast = n0 + (causal ? p1 - 1 : 0);                                                          \
            for (int64_t t0 = 0; t0 < nlast; t0 += TILE) {                                                             \
                const int64_t nt = min64(TILE, nlast - t0);                                                            \
                PFX##_ktile(kt, k, f16, t0, nt, D);                                                                    \
                const float * vr  = (const float *) v + t0 * D;                                                        \
                int64_t       ldv = D;                                                                                 \
                if (!v_direct) {                                                                                       \
                    for (int64_t j = 0; j < nt; j++) {                                                                 \
                        const void * row = (const char *) v + (size_t) ((t0 + j) * D) * es;                            \
                        for (int32_t d0 = 0; d0 < Dp; d0 += L) {                                                       \
                            const int nd = D - d0 < L ? (D - d0 < 0 ? 0 : D - d0) : L;                                 \
                            PFX##_store(vt + j * Dp + d0, nd == L ? PFX##_load_row(row, f16, d0)                       \
                                                                  : nd == 0 ? PFX##_zero()                             \
                                                                            : PFX##_load_part(row, f16, d0, nd));      \
                        }                                                                                              \
                    }                                                                                                  \
                    vr  = vt;                                                                                          \
                    ldv = Dp;                                                                                          \
                }                                                                                                      \
                int32_t rf = p0; /* first row that sees entry t0 */                                                    \
                if (causal && t0 - n0 + 1 > rf) {                                                                      \
                    rf = (int32_t) (t0 - n0 + 1);                                                                      \
                }                                                                                                      \
                for (int64_t qi0 = (int64_t) (rf - p0) * G; qi0 < QN; qi0 += NQ) {                                     \
                    const int     nq = QN - qi0 < NQ ? (int) (QN - qi0) : NQ;                                          \
                    const float * qp[NQ] = { 0 };                                                                      \
                    float *       ap[NQ] = { 0 };                                                                      \
                    int64_t       nk[NQ] = { 0 };                                                                      \
                    for (int i = 0; i < nq; i++) {                                                                     \
                        const int64_t qi = qi0 + i, r = p0 + qi / G, g = qi % G;                                       \
                        qp[i]            = q + r * ldq + g * D;                                                        \
                        ap[i]            = acc + qi * Dp;                                                              \
                        nk[i]            = min64(nt, n0 + (causal ? r : 0) - t0);                                      \
                    }                                                                                                  \
                    PFX##_qk(nq, qp, kt, D, scale, sp);                                                                \
                    for (int i = 0; i < nq; i++) {                                                                     \
                        PFX##_softmax(sp + i * TILE, (int) nk[i], mx + qi0 + i, l + qi0 + i, ap[i], Dp);               \
                    }                                                                                                  \
                    PFX##_pv(nq, ap, sp, nk, vr, ldv, Dp);                                                             \
                }                                                                                                      \
            }                                                                                                          \
            for (int64_t qi = 0; qi < QN; qi++) {                                                                      \
                const int64_t r = p0 + qi / G, g = qi % G;                                                             \
                const float   inv = 1.0f / l[qi];                                                                      \
                float *       og  = out + r * ldo + g * D;                                                             \
                const float * ai  = acc + qi * Dp;                                                                     \
                for (int32_t d = 0; d < D; d++) {                                                                      \
                    og[d] = ai[d] * inv;                                                                               \
                }                                                                                                      \
                if (ml) {                                                                                              \
                    ml[r * ldml + 2 * g]     = mx[qi];                                                                 \
                    ml[r * ldml + 2 * g + 1] = l[qi];                                                                  \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }                                                                                                                  \
                                                                                                                       \
    static TGT void PFX##_stats(double * colsum, int64_t * count, const float * q, int64_t ldq, int32_t W,             \
                                int64_t n0, const float * ml, int64_t ldml, int32_t G, const void * k, int f16,        \
                                int64_t j0, int64_t j1, int32_t D, float scale, float p, float * work) {               \
        float *       kt   = align64(work);                 /* [D, TILE] */                                            \
        float *       sp   = kt + rnd16((size_t) D * TILE); /* [NQ, TILE] */                                           \
        const int64_t jend = j1 < n0 + W - 1 ? j1 : n0 + W - 1;                                                        \
        const int64_t QN   = (int64_t) W * G;                                                                          \
        for (int64_t t0 = j0; t0 < jend; t0 += TILE) {                                                                 \
            const int64_t nt = min64(TILE, jend - t0);                                                                 \
            PFX##_ktile(kt, (const char *) k + (size_t) (t0 * D) * (f16 ? 2 : 4), f16, 0, nt, D);                      \
            double *      cs = colsum + (t0 - j0);                                                                     \
            const int64_t rf = t0 >= n0 ? t0 - n0 + 1 : 0;                                                             \
            for (int64_t qi0 = rf * G; qi0 < QN; qi0 += NQ) {                                                          \
                const int     nq = QN - qi0 < NQ ? (int) (QN - qi0) : NQ;                                              \
                const float * qp[NQ];                                                                                  \
                for (int i = 0; i < nq; i++) {                                                                         \
                    qp[i] = q + ((qi0 + i) / G) * ldq + ((qi0 + i) % G) * D;                                           \
                }                                                                                                      \
                PFX##_qk(nq, qp, kt, D, scale, sp);                                                                    \
                /* query vectors in order (row, then head): one summation order per key */                             \
                for (int i = 0; i < nq; i++) {                                                                         \
                    const int64_t r = (qi0 + i) / G, g = (qi0 + i) % G;                                                \
                    const int64_t nk = min64(nt, n0 + r - t0);                                                         \
                    const VEC     mb = PFX##_set1(ml[r * ldml + 2 * g]);                                               \
                    const float   inv = 1.0f / ml[r * ldml + 2 * g + 1];                                               \
                    const VEC     ib = PFX##_set1(inv);                                                                \
                    int64_t       c  = 0;                                                                              \
                    for (int64_t j = 0; j < nk; j += L) {                                                              \
                        const int n = nk - j < L ? (int) (nk - j) : L;                                                 \
                        const VEC e = PFX##_exp(PFX##_sub(PFX##_load(sp + i * TILE + j), mb));                         \
                        c += PFX##_count_ge(e, p, n);                                                                  \
                        PFX##_acc_pd(cs + j, PFX##_mul(e, ib), n);                                                     \
                    }                                                                                                  \
                    count[g] += c;                                                                                     \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }

ATTN_KERNELS(a2, TGT_AVX2, __m256, A2_L, 3, 4)
ATTN_KERNELS(a5, TGT_AVX512, __m512, A5_L, 4, 4)

static TGT_AVX2 void a2_exp_n(float * y, const float * x, int64_t n) {
    for (int64_t i = 0; i < n; i += 8) {
        float b[8] = { 0 };
        memcpy(b, x + i, (size_t) min64(8, n - i) * sizeof(float));
        _mm256_storeu_ps(b, a2_exp(_mm256_loadu_ps(b)));
        memcpy(y + i, b, (size_t) min64(8, n - i) * sizeof(float));
    }
}

static TGT_AVX512 void a5_exp_n(float * y, const float * x, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        float b[16] = { 0 };
        memcpy(b, x + i, (size_t) min64(16, n - i) * sizeof(float));
        _mm512_storeu_ps(b, a5_exp(_mm512_loadu_ps(b)));
        memcpy(y + i, b, (size_t) min64(16, n - i) * sizeof(float));
    }
}

#endif  // ATTN_X86

// ---------------------------------------------------------------------------
// entry points

// The SIMD level to run for kv_type, or VLC_SIMD_OFF for the reference.
static int attn_level(uint32_t kv_type) {
#if ATTN_X86
    if (kv_type == VLC_TYPE_F32 || kv_type == VLC_TYPE_F16) {
        return vlc_simd_level();
    }
#endif
    (void) kv_type;
    return VLC_SIMD_OFF;
}

void vlc_cpu_attn_rows(float * out, int64_t ldo, float * ml, int64_t ldml, const float * q, int64_t ldq, int32_t R,
                       int64_t n0, int causal, int32_t G, const void * k, const void * v, uint32_t kv_type, int32_t D,
                       float scale, float * work) {
    if (R <= 0) {
        return;
    }
    switch (attn_level(kv_type)) {
#if ATTN_X86
        case VLC_SIMD_AVX512:
            a5_rows(out, ldo, ml, ldml, q, ldq, R, n0, causal, G, k, v, kv_type == VLC_TYPE_F16, D, scale, work);
            return;
        case VLC_SIMD_AVX2:
            a2_rows(out, ldo, ml, ldml, q, ldq, R, n0, causal, G, k, v, kv_type == VLC_TYPE_F16, D, scale, work);
            return;
#endif
        default:
            attn_rows_ref(out, ldo, ml, ldml, q, ldq, R, n0, causal, G, k, v, kv_type, D, scale, work);
    }
}

void vlc_cpu_attn(float * out, const float * q, int32_t G, const void * k, const void * v, uint32_t kv_type,
                  int64_t N, int32_t D, float scale, float * work) {
    vlc_cpu_attn_rows(out, 0, NULL, 0, q, 0, 1, N, 1, G, k, v, kv_type, D, scale, work);
}

void vlc_cpu_attn_ml(float * out, float * ml, const float * q, int32_t G, const void * k, const void * v,
                     uint32_t kv_type, int64_t N, int32_t D, float scale, float * work) {
    vlc_cpu_attn_rows(out, 0, ml, 0, q, 0, 1, N, 1, G, k, v, kv_type, D, scale, work);
}

void vlc_cpu_attn_stats(double * colsum, int64_t * count, const float * q, int64_t ldq, int32_t W, int64_t n0,
                        const float * ml, int64_t ldml, int32_t G, const void * k, uint32_t kv_type, int64_t j0,
                        int64_t j1, int32_t D, float scale, float p, float * work) {
    switch (attn_level(kv_type)) {
#if ATTN_X86
        case VLC_SIMD_AVX512:
            a5_stats(colsum, count, q, ldq, W, n0, ml, ldml, G, k, kv_type == VLC_TYPE_F16, j0, j1, D, scale, p, work);
            return;
        case VLC_SIMD_AVX2:
            a2_stats(colsum, count, q, ldq, W, n0, ml, ldml, G, k, kv_type == VLC_TYPE_F16, j0, j1, D, scale, p, work);
            return;
#endif
        default:
            attn_stats_ref(colsum, count, q, ldq, W, n0, ml, ldml, G, k, kv_type, j0, j1, D, scale, p, work);
    }
}

void vlc_cpu_attn_exp(float * y, const float * x, int64_t n) {
    switch (vlc_simd_level()) {
#if ATTN_X86
        case VLC_SIMD_AVX512: a5_exp_n(y, x, n); return;
        case VLC_SIMD_AVX2: a2_exp_n(y, x, n); return;
#endif
        default:
            for (int64_t i = 0; i < n; i++) {
                y[i] = expf(x[i]);
            }
    }
}
