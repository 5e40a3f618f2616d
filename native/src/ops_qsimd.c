// ops_qsimd.c: fast dot products of block-quantized weight rows with 8-bit activation rows
// (quant.h) and the quantized matmul built on them (ops_qsimd.h): an AVX2 path (8 lanes)
// and an AVX-512 + VNNI path (16 lanes), each compiled with a target attribute (no global
// -march) and chosen at run time from vlc_simd_level(); the reference (quant.c) otherwise.
//
// Is: for every weight type, exact int32 sums per unit (a 32-element block, or a 256-element
// super-block for the K-quants) combined in f32 in one fixed order per level (below).
//   Decode (vlc_qdot_get, and vlc_qmatmul_rows for few tokens): a row kernel that reads the
//   blocks as stored, with software prefetch of the weight stream; in vlc_qmatmul_rows the
//   activation rows of the legacy types are first laid out once (codes contiguous, code
//   sums, scales), which the same kernel reads with fewer instructions.
//   Prefill (vlc_qmatmul_rows, enough tokens): "token-lane" kernels. Weight rows are
//   unpacked once per call (pass) to int8 codes + scales; activations of 8 / 16 tokens are
//   interleaved so that one vector lane is one token; each 4-byte group of codes is
//   broadcast and dotted with all those tokens at once (vpdpbusd with the activations
//   biased by 128, or vpmaddubsw + vpmaddwd), 8 rows x 32 tokens per AVX-512 tile.
// Is not: threaded (the caller splits rows), a packer of weights at load time, or bit-equal
// to the reference (other f32 order, fused multiply-add); an AVX-512 CPU without VNNI runs
// the AVX2 kernels (vpmaddubsw would saturate on the operands the AVX-512 kernels use).
//
// The f32 combination, per output, at a level of L lanes (L = 8 for AVX2, 16 for AVX-512):
//   unit u (block / super-block) has exact integers A_u (and B_u for the K-quant mins);
//   acc[u % L] = fma((float) A_u, dw_u * dx_u, acc[u % L])                       (all types)
//   acc[u % L] = fma(m_u, s_u, acc[u % L])                                      (Q4_1, Q5_1)
//   acc[u % L] = fma(-(float) B_u, dmin_u * dx_u, acc[u % L])                   (Q4_K, Q5_K)
//   with units in increasing order in each lane, acc starting at +0; the result is the
//   fixed tree of ops_simd.c's horizontal sums (lanes i and i + L/2 first, and so on).
// dw, m, dmin are the f16 fields as f32, dx / s the activation block's f32 d / s. The decode
// kernel holds acc as one vector, the prefill kernel as L vectors over tokens; a unit that
// does not exist adds fma(0, 0, acc) == acc (acc is never -0). So an output's bits depend
// neither on r0 / r1 nor n_tok nor the path (decode / prefill) taken.
//
// The integers (as quant.c's reference): Q8_0 A = sum qw qx; Q4_0 / Q5_0 A = sum (q - 8 | 16) qx;
// Q4_1 / Q5_1 A = sum q qx; Q4_K / Q5_K A = sum_j sc_j sum_{32 j..} q qx, B = sum_j m_j
// (bsums[2j] + bsums[2j+1]); Q6_K A = sum_j sc_j sum_{16 j..} (q - 32) qx.
#include "ops_qsimd.h"

#include "ops_cpu.h"
#include "ops_simd.h"
#include "quant.h"
#include "threads.h"
#include "vlcache.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define VLC_QSIMD_X86 1
#include <immintrin.h>
#else
#define VLC_QSIMD_X86 0
#endif

// ---------------------------------------------------------------------------
// weight types: internal index and block layout (GGUF_LLAVA.md §4)

enum { TI_Q8_0 = 0, TI_Q4_0, TI_Q4_1, TI_Q5_0, TI_Q5_1, TI_Q4_K, TI_Q5_K, TI_Q6_K, TI_N };

static int type_index(uint32_t wtype) {
    switch (wtype) {
        case VLC_TYPE_Q8_0: return TI_Q8_0;
        case VLC_TYPE_Q4_0: return TI_Q4_0;
        case VLC_TYPE_Q4_1: return TI_Q4_1;
        case VLC_TYPE_Q5_0: return TI_Q5_0;
        case VLC_TYPE_Q5_1: return TI_Q5_1;
        case VLC_TYPE_Q4_K: return TI_Q4_K;
        case VLC_TYPE_Q5_K: return TI_Q5_K;
        case VLC_TYPE_Q6_K: return TI_Q6_K;
        default: return -1;
    }
}

static inline int ti_is_k(int T) {
    return T >= TI_Q4_K;
}

// Bytes of one token's decode activations laid out by vlc_qact_lay (legacy types, nb blocks):
// d[nb] s[nb] sum[nb] qs[nb * 32].
static size_t laid_token_bytes(int64_t nb) {
    return (size_t) nb * (VLC_QK + sizeof(int32_t) + 2 * sizeof(float));
}

// bytes per block
static inline int ti_bs(int T) {
    static const int bs[TI_N] = { 34, 18, 20, 22, 24, 144, 176, 210 };
    return bs[T];
}

// offset of qs (the low 4 bits, or all 8 for Q8_0) in a block
static inline int ti_qs(int T) {
    static const int o[TI_N] = { 2, 2, 4, 6, 8, 16, 48, 0 };
    return o[T];
}

// offset of qh (the 5th bits) in a Q5_0 / Q5_1 / Q5_K block
static inline int ti_qh(int T) {
    return T == TI_Q5_0 ? 2 : T == TI_Q5_1 ? 4 : 16;
}

static inline int ti_5bit(int T) {
    return T == TI_Q5_0 || T == TI_Q5_1 || T == TI_Q5_K;
}

// the types whose legacy blocks carry a min m (w = d q + m)
static inline int ti_min(int T) {
    return T == TI_Q4_1 || T == TI_Q5_1;
}

// the constant subtracted from the stored unsigned code (w = q - off)
static inline int ti_off(int T) {
    return T == TI_Q4_0 ? 8 : T == TI_Q5_0 ? 16 : T == TI_Q6_K ? 32 : 0;
}

// log2 of the offset of Q4_0 / Q5_0 (the shift that multiplies a code sum by it)
static inline int ti_off_shift(int T) {
    return ti_off(T) == 8 ? 3 : 4;
}

static inline uint32_t ld_u32(const void * p) {
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline uint16_t ld_u16(const void * p) {
    uint16_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

// ---------------------------------------------------------------------------
// reference wrappers (level off, non-x86 builds)

#define VLC_QREF(NAME, TYPE)                                                                                           \
    static float NAME(const void * w, const void * xq, int64_t n) {                                                    \
        return vlc_vec_dot_ref(TYPE, w, xq, n);                                                                        \
    }
VLC_QREF(ref_q8_0, VLC_TYPE_Q8_0)
VLC_QREF(ref_q4_0, VLC_TYPE_Q4_0)
VLC_QREF(ref_q4_1, VLC_TYPE_Q4_1)
VLC_QREF(ref_q5_0, VLC_TYPE_Q5_0)
VLC_QREF(ref_q5_1, VLC_TYPE_Q5_1)
VLC_QREF(ref_q4_k, VLC_TYPE_Q4_K)
VLC_QREF(ref_q5_k, VLC_TYPE_Q5_K)
VLC_QREF(ref_q6_k, VLC_TYPE_Q6_K)

static const vlc_qdot_fn g_ref_fns[TI_N] = { ref_q8_0, ref_q4_0, ref_q4_1, ref_q5_0,
                                             ref_q5_1, ref_q4_k, ref_q5_k, ref_q6_k };

// kernel sets
enum { KS_REF = 0, KS_AVX2 = 1, KS_AVX512 = 2 };

#if VLC_QSIMD_X86

#define INL static inline __attribute__((always_inline))
#define TGT2 __attribute__((target("avx2,fma,f16c")))
#define TGT5 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

static int cpu_has_vnni(void) {
    static int has = -1;
    int        v   = __atomic_load_n(&has, __ATOMIC_ACQUIRE);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512vnni") ? 1 : 0;
        __atomic_store_n(&has, v, __ATOMIC_RELEASE);
    }
    return v;
}

static int kernel_set(void) {
    const int level = vlc_simd_level();
    if (level == VLC_SIMD_AVX512) {
        return cpu_has_vnni() ? KS_AVX512 : KS_AVX2;
    }
    return level == VLC_SIMD_AVX2 ? KS_AVX2 : KS_REF;
}

// Software prefetch of the weight stream into L2, QPF bytes ahead of the block being read:
// rows come from 4 KiB pages (mmap), where the hardware prefetcher stops; this lifts a
// cold single-thread matvec from ~50 % to ~80 % of the sequential read rate (measured).
enum { QPF = 3072 };

// (addresses past the end of the row are fine: a prefetch never faults)
INL void pf_range(const uint8_t * p, int64_t off, int64_t bytes) {
    for (int64_t o = 0; o < bytes; o += 64) {
        _mm_prefetch((const char *) ((uintptr_t) p + (uintptr_t) (off + o)), _MM_HINT_T1);
    }
}

// ===========================================================================
// AVX2: 8 lanes
// ===========================================================================

// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), as ops_simd.c's a2_hsum
INL TGT2 float a2_hsumf(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s        = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s        = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

// lane i = the sum of the 8 lanes of v[i] (exact)
INL TGT2 __m256i a2_tree8(const __m256i * v) {
    const __m256i h01 = _mm256_hadd_epi32(v[0], v[1]);
    const __m256i h23 = _mm256_hadd_epi32(v[2], v[3]);
    const __m256i h45 = _mm256_hadd_epi32(v[4], v[5]);
    const __m256i h67 = _mm256_hadd_epi32(v[6], v[7]);
    const __m256i q0  = _mm256_hadd_epi32(h01, h23);  // [v0..v3 lanes 0-3 | v0..v3 lanes 4-7]
    const __m256i q1  = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20), _mm256_permute2x128_si256(q0, q1, 0x31));
}

// byte i = 0x10 where bit i of qh is set
INL TGT2 __m256i a2_bits16(uint32_t qh) {
    const __m256i shuf = _mm256_setr_epi64x(0, 0x0101010101010101LL, 0x0202020202020202LL, 0x0303030303030303LL);
    const __m256i bit  = _mm256_set1_epi64x((long long) 0x8040201008040201ULL);
    __m256i       v    = _mm256_shuffle_epi8(_mm256_set1_epi32((int) qh), shuf);
    v                  = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

// 8 int32 partial sums of one 32-element legacy block against the 32 codes at xs; with
// corr, the offset of Q4_0 / Q5_0 is taken off here (exact A = their sum), else the caller
// subtracts off * sum(codes) per block
INL TGT2 __m256i a2_blk(int T, int corr, const uint8_t * wb, const int8_t * xs) {
    const __m256i x    = _mm256_loadu_si256((const __m256i *) xs);
    const __m256i ones = _mm256_set1_epi16(1);
    if (T == TI_Q8_0) {
        const __m256i w = _mm256_loadu_si256((const __m256i *) (wb + 2));
        return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)), ones);
    }
    const __m128i q = _mm_loadu_si128((const __m128i *) (wb + ti_qs(T)));
    __m256i       u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
    if (ti_5bit(T)) {
        u = _mm256_or_si256(u, a2_bits16(ld_u32(wb + ti_qh(T))));
    }
    __m256i p = _mm256_maddubs_epi16(u, x);  // u <= 31: pairs <= 7874, no saturation
    if (corr && ti_off(T)) {
        p = _mm256_sub_epi16(p, _mm256_maddubs_epi16(_mm256_set1_epi8((char) ti_off(T)), x));
    }
    return _mm256_madd_epi16(p, ones);
}

// One activation row of a legacy type as the decode kernels read it: the q8a blocks as
// stored (blk; vlc_qdot_get), or laid out once per token by vlc_qmatmul_rows (qs: the codes
// contiguously, sum: each block's sum of codes, d / s: the block scales), which saves the
// per-block offset correction and the gathers. Same integers and f32 operations either way.
typedef struct {
    const vlc_block_q8a * blk;
    const int8_t *        qs;
    const int32_t *       sum;
    const float *         d;
    const float *         s;
} qs_xrow;

// row kernels over a laid-out activation row (legacy types only)
typedef float (*qdotx_fn)(const void * w, const qs_xrow * xr, int64_t n);

// Token t of a vlc_qact_lay buffer as the row kernels read it.
static inline qs_xrow laid_row(const void * laid, int64_t nb, int64_t t) {
    const float * d = (const float *) ((const uint8_t *) laid + laid_token_bytes(nb) * (size_t) t);
    const int32_t * sm = (const int32_t *) (d + 2 * nb);
    return (qs_xrow) { .blk = NULL, .qs = (const int8_t *) (sm + nb), .sum = sm, .d = d, .s = d + nb };
}

// The entry points of one level P (a2, a5) under target TGT, from its P##_dot_leg and
// P##_dot_k: P##_<type> (vlc_qdot_fn), P##x_<type> (legacy types over a laid-out row), and
// their tables g_P_fns / g_Px_fns indexed by TI_*.
#define VLC_QDOT_LEG(P, TGT, S, T)                                                                                     \
    static TGT float P##_##S(const void * w, const void * xq, int64_t n) {                                             \
        const qs_xrow xr = { .blk = xq };                                                                              \
        return P##_dot_leg(T, 0, w, &xr, n);                                                                           \
    }                                                                                                                  \
    static TGT float P##x_##S(const void * w, const qs_xrow * xr, int64_t n) {                                         \
        return P##_dot_leg(T, 1, w, xr, n);                                                                            \
    }
#define VLC_QDOT_K(P, TGT, S, T)                                                                                       \
    static TGT float P##_##S(const void * w, const void * xq, int64_t n) {                                             \
        return P##_dot_k(T, w, xq, n);                                                                                 \
    }
#define VLC_QDOT_LEVEL(P, TGT)                                                                                         \
    VLC_QDOT_LEG(P, TGT, q8_0, TI_Q8_0)                                                                                \
    VLC_QDOT_LEG(P, TGT, q4_0, TI_Q4_0)                                                                                \
    VLC_QDOT_LEG(P, TGT, q4_1, TI_Q4_1)                                                                                \
    VLC_QDOT_LEG(P, TGT, q5_0, TI_Q5_0)                                                                                \
    VLC_QDOT_LEG(P, TGT, q5_1, TI_Q5_1)                                                                                \
    VLC_QDOT_K(P, TGT, q4_k, TI_Q4_K)                                                                                  \
    VLC_QDOT_K(P, TGT, q5_k, TI_Q5_K)                                                                                  \
    VLC_QDOT_K(P, TGT, q6_k, TI_Q6_K)                                                                                  \
    static const qdotx_fn    g_##P##x_fns[TI_Q4_K] = { P##x_q8_0, P##x_q4_0, P##x_q4_1, P##x_q5_0, P##x_q5_1 };         \
    static const vlc_qdot_fn g_##P##_fns[TI_N]     = { P##_q8_0, P##_q4_0, P##_q4_1, P##_q5_0,                         \
                                                       P##_q5_1, P##_q4_k, P##_q5_k, P##_q6_k };

// n (<= 16) values from p, zeros after
static inline void copy_pad_f(float * dst, const float * p, int n, int len) {
    for (int i = 0; i < len; i++) {
        dst[i] = i < n ? p[i] : 0.0f;
    }
}
static inline void copy_pad_i(int32_t * dst, const int32_t * p, int n, int len) {
    for (int i = 0; i < len; i++) {
        dst[i] = i < n ? p[i] : 0;
    }
}

// one group of up to 8 legacy blocks (b0 .. b0 + m - 1) into acc
INL TGT2 __m256 a2_leg_group(int T, int XR, const uint8_t * wb, const qs_xrow * xr, int64_t b0, int m, __m256 acc) {
    const int64_t bs = ti_bs(T);
    __m256i       v[8];
    uint16_t      dh[8], mh[8];
    float         dx[8], sx[8];
    for (int i = 0; i < 8; i++) {
        if (i < m) {
            v[i]  = a2_blk(T, !XR, wb + i * bs, XR ? xr->qs + (b0 + i) * VLC_QK : xr->blk[b0 + i].qs);
            dh[i] = ld_u16(wb + i * bs);
            mh[i] = ti_min(T) ? ld_u16(wb + i * bs + 2) : 0;
            if (!XR) {
                dx[i] = xr->blk[b0 + i].d;
                sx[i] = xr->blk[b0 + i].s;
            }
        } else {
            v[i]  = _mm256_setzero_si256();
            dh[i] = mh[i] = 0;
            if (!XR) {
                dx[i] = sx[i] = 0.0f;
            }
        }
    }
    __m256i a = a2_tree8(v);
    __m256  xd, xs;
    if (XR) {
        int32_t sm[8];
        copy_pad_f(dx, xr->d + b0, m, 8);
        if (ti_min(T)) {
            copy_pad_f(sx, xr->s + b0, m, 8);
        }
        if (ti_off(T)) {
            copy_pad_i(sm, xr->sum + b0, m, 8);
            const __m256i xs = _mm256_loadu_si256((const __m256i *) sm);
            a                = _mm256_sub_epi32(a, _mm256_slli_epi32(xs, ti_off_shift(T)));
        }
    }
    xd             = _mm256_loadu_ps(dx);
    xs             = ti_min(T) ? _mm256_loadu_ps(sx) : _mm256_setzero_ps();
    const __m256 p = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) dh)), xd);
    acc            = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a), p, acc);
    if (ti_min(T)) {
        acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) mh)), xs, acc);
    }
    return acc;
}

INL TGT2 float a2_dot_leg(int T, int XR, const void * w, const qs_xrow * xr, int64_t n) {
    const int64_t   nb  = n / VLC_QK;
    const int64_t   bs  = ti_bs(T);
    const uint8_t * wb  = w;
    __m256          acc = _mm256_setzero_ps();
    int64_t         b0  = 0;
    for (; b0 + 8 <= nb; b0 += 8) {
        pf_range(wb + b0 * bs, QPF, 8 * bs);
        acc = a2_leg_group(T, XR, wb + b0 * bs, xr, b0, 8, acc);
    }
    if (b0 < nb) {
        acc = a2_leg_group(T, XR, wb + b0 * bs, xr, b0, (int) (nb - b0), acc);
    }
    return a2_hsumf(acc);
}

// Q4_K / Q5_K scales: sc (bytes 0..7) and m (bytes 0..7) from the 12 packed bytes
static inline void k4_unpack8(const uint8_t * s12, uint64_t * sc8, uint64_t * m8) {
    const uint32_t s0 = ld_u32(s12), s1 = ld_u32(s12 + 4), s2 = ld_u32(s12 + 8);
    const uint32_t sl = s0 & 0x3f3f3f3f, ml = s1 & 0x3f3f3f3f;
    const uint32_t sh = (s2 & 0x0f0f0f0f) | ((s0 >> 2) & 0x30303030);
    const uint32_t mh = ((s2 >> 4) & 0x0f0f0f0f) | ((s1 >> 2) & 0x30303030);
    *sc8              = (uint64_t) sl | (uint64_t) sh << 32;
    *m8               = (uint64_t) ml | (uint64_t) mh << 32;
}

// one K-quant super-block: int32 lanes that sum to A (*pa) and to B (*pb, zero for Q6_K)
INL TGT2 void a2_kblk(int T, const uint8_t * wb, const vlc_block_q8k * x, __m256i * pa, __m256i * pb) {
    const __m256i m4  = _mm256_set1_epi8(0x0F);
    __m256i       acc = _mm256_setzero_si256();
    const __m256i bs  = _mm256_loadu_si256((const __m256i *) x->bsums);
    if (T == TI_Q6_K) {
        const uint8_t * ql  = wb;
        const uint8_t * qh  = wb + 128;
        const __m256i   scv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) (wb + 192)));  // 16 x int16
        const __m256i   m3  = _mm256_set1_epi8(0x30);
        for (int h = 0; h < 2; h++) {
            // sc[8h .. 8h+7] in both 128-bit lanes
            const __m256i sch = h ? _mm256_permute2x128_si256(scv, scv, 0x11)
                                  : _mm256_permute2x128_si256(scv, scv, 0x00);
            const __m256i l0  = _mm256_loadu_si256((const __m256i *) (ql + 64 * h));
            const __m256i l1  = _mm256_loadu_si256((const __m256i *) (ql + 64 * h + 32));
            const __m256i hv  = _mm256_loadu_si256((const __m256i *) (qh + 32 * h));
            __m256i       q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hv, 4), m3));
            q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hv, 2), m3));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hv, m3));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(hv, 2), m3));
            for (int i = 0; i < 4; i++) {
                // elements 128 h + 32 i ..: sub-blocks 8 h + 2 i (low lane), 8 h + 2 i + 1 (high lane)
                const int     j0  = 2 * i;
                const __m256i pat = _mm256_setr_epi8(
                    2 * j0, 2 * j0 + 1, 2 * j0, 2 * j0 + 1, 2 * j0, 2 * j0 + 1, 2 * j0, 2 * j0 + 1, 2 * j0, 2 * j0 + 1,
                    2 * j0, 2 * j0 + 1, 2 * j0, 2 * j0 + 1, 2 * j0, 2 * j0 + 1, 2 * j0 + 2, 2 * j0 + 3, 2 * j0 + 2,
                    2 * j0 + 3, 2 * j0 + 2, 2 * j0 + 3, 2 * j0 + 2, 2 * j0 + 3, 2 * j0 + 2, 2 * j0 + 3, 2 * j0 + 2,
                    2 * j0 + 3, 2 * j0 + 2, 2 * j0 + 3, 2 * j0 + 2, 2 * j0 + 3);
                const __m256i xv = _mm256_loadu_si256((const __m256i *) (x->qs + 128 * h + 32 * i));
                const __m256i t  = _mm256_maddubs_epi16(q[i], xv);
                acc             = _mm256_add_epi32(acc, _mm256_madd_epi16(t, _mm256_shuffle_epi8(sch, pat)));
            }
        }
        const __m256i c = _mm256_madd_epi16(bs, scv);  // sum_j sc_j bsums_j (pairs)
        *pa             = _mm256_sub_epi32(acc, _mm256_slli_epi32(c, 5));
        *pb             = _mm256_setzero_si256();
        return;
    }
    uint64_t sc8, m8;
    k4_unpack8(wb + 4, &sc8, &m8);
    const __m256i   scb = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long) sc8)));
    const uint8_t * qs  = wb + ti_qs(T);
    __m256i         qh  = _mm256_setzero_si256();
    if (T == TI_Q5_K) {
        qh = _mm256_loadu_si256((const __m256i *) (wb + 16));
    }
    for (int c = 0; c < 4; c++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *) (qs + 32 * c));
        for (int hf = 0; hf < 2; hf++) {
            const int j = 2 * c + hf;
            __m256i   u = _mm256_and_si256(hf ? _mm256_srli_epi16(q, 4) : q, m4);
            if (T == TI_Q5_K) {
                const __m256i bit = _mm256_set1_epi8((char) (1 << j));
                u = _mm256_or_si256(u, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit),
                                                        _mm256_set1_epi8(0x10)));
            }
            const __m256i t = _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *) (x->qs + 32 * j)));
            const __m256i s = _mm256_shuffle_epi8(scb, _mm256_set1_epi16((short) ((2 * j + 1) << 8 | (2 * j))));
            acc             = _mm256_add_epi32(acc, _mm256_madd_epi16(t, s));
        }
    }
    const __m128i mv = _mm_cvtsi64_si128((long long) m8);
    const __m256i md = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mv, mv));  // m0 m0 m1 m1 ... m7 m7
    *pa              = acc;
    *pb              = _mm256_madd_epi16(bs, md);
}

// half-precision d (and dmin) of a K block
static inline uint16_t k_d(int T, const uint8_t * wb) {
    return ld_u16(wb + (T == TI_Q6_K ? 208 : 0));
}

// the f32 terms of super-blocks 0 .. m - 1 (m <= 8) into acc: a2_kblk's partial vectors of
// each block, then one tree, lane i = A_i (B_i)
INL TGT2 __m256 a2_k_group(int T, const uint8_t * wb, const vlc_block_q8k * x, int m, __m256 acc) {
    const int64_t bs = ti_bs(T);
    __m256i       va[8], vb[8];
    uint16_t      dh[8], mh[8];
    float         dx[8];
    for (int i = 0; i < 8; i++) {
        if (i < m) {
            const uint8_t * wi = wb + i * bs;
            pf_range(wi, QPF, bs);
            a2_kblk(T, wi, x + i, &va[i], &vb[i]);
            dh[i] = k_d(T, wi);
            mh[i] = T == TI_Q6_K ? 0 : ld_u16(wi + 2);
            dx[i] = x[i].d;
        } else {
            va[i] = vb[i] = _mm256_setzero_si256();
            dh[i] = mh[i] = 0;
            dx[i]         = 0.0f;
        }
    }
    const __m256 xd = _mm256_loadu_ps(dx);
    const __m256 p  = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) dh)), xd);
    acc             = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a2_tree8(va)), p, acc);
    if (T != TI_Q6_K) {
        const __m256 pm = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) mh)), xd);
        acc             = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(a2_tree8(vb)), pm, acc);
    }
    return acc;
}

INL TGT2 float a2_dot_k(int T, const void * w, const void * xq, int64_t n) {
    const int64_t         nb  = n / VLC_QK_K;
    const uint8_t *       wb  = w;
    const vlc_block_q8k * x   = xq;
    __m256                acc = _mm256_setzero_ps();
    int64_t               b0  = 0;
    for (; b0 + 8 <= nb; b0 += 8) {
        acc = a2_k_group(T, wb + b0 * ti_bs(T), x + b0, 8, acc);
    }
    if (b0 < nb) {
        acc = a2_k_group(T, wb + b0 * ti_bs(T), x + b0, (int) (nb - b0), acc);
    }
    return a2_hsumf(acc);
}

VLC_QDOT_LEVEL(a2, TGT2)

// ===========================================================================
// AVX-512 + VNNI: 16 lanes
// ===========================================================================

// (l_i + l_{i+8}) for i < 8, then the AVX2 tree
INL TGT5 float a5_hsumf(__m512 v) {
    const __m256 lo = _mm512_castps512_ps256(v);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return a2_hsumf(_mm256_add_ps(lo, hi));
}

// v[p]: lanes 0-7 partial sums of block 2p, lanes 8-15 of block 2p+1 -> lane i = block i
INL TGT5 __m512i a5_tree8(const __m512i * v) {
    __m512i u[4];
    for (int p = 0; p < 4; p++) {  // chunk c: [A B A B], A of v[2p], B of v[2p+1]
        u[p] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * p], v[2 * p + 1]),
                                _mm512_unpackhi_epi32(v[2 * p], v[2 * p + 1]));
    }
    // w0 chunk c lane j: chunk c of v[j] (block 2j + c/2); w1 the same for v[4 + j]
    const __m512i w0 = _mm512_add_epi32(_mm512_unpacklo_epi64(u[0], u[1]), _mm512_unpackhi_epi64(u[0], u[1]));
    const __m512i w1 = _mm512_add_epi32(_mm512_unpacklo_epi64(u[2], u[3]), _mm512_unpackhi_epi64(u[2], u[3]));
    // chunks: [blocks 0 2 4 6 | 1 3 5 7 | 8 10 12 14 | 9 11 13 15]
    const __m512i s = _mm512_add_epi32(_mm512_shuffle_i32x4(w0, w1, _MM_SHUFFLE(2, 0, 2, 0)),
                                       _mm512_shuffle_i32x4(w0, w1, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15), s);
}

// 16 int32 partials of blocks b (lanes 0-7, codes at x0) and b+1 (lanes 8-15, codes at x1;
// zero when x1 is NULL); corr as a2_blk
INL TGT5 __m512i a5_pair(int T, int corr, const uint8_t * wb, const int8_t * x0, const int8_t * x1) {
    const int64_t bs   = ti_bs(T);
    const int     two  = x1 != NULL;
    const __m256i xa   = _mm256_loadu_si256((const __m256i *) x0);
    const __m512i xv   = two ? _mm512_inserti64x4(_mm512_castsi256_si512(xa),
                                                  _mm256_loadu_si256((const __m256i *) x1), 1)
                             : _mm512_zextsi256_si512(xa);
    const __m512i zero = _mm512_setzero_si512();
    if (T == TI_Q8_0) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i *) (wb + 2));
        const __m512i wv = two ? _mm512_inserti64x4(_mm512_castsi256_si512(w0),
                                                    _mm256_loadu_si256((const __m256i *) (wb + bs + 2)), 1)
                               : _mm512_zextsi256_si512(w0);
        const __m512i xs = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(wv), zero, xv);  // x * sign(w)
        return _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(wv), xs);
    }
    const int     oq = ti_qs(T);
    const __m128i q0 = _mm_loadu_si128((const __m128i *) (wb + oq));
    const __m256i q  = two ? _mm256_inserti128_si256(_mm256_castsi128_si256(q0),
                                                     _mm_loadu_si128((const __m128i *) (wb + bs + oq)), 1)
                           : _mm256_zextsi128_si256(q0);
    // 128-bit chunks [q_b, q_b >> 4, q_b1, q_b1 >> 4] & 0x0F = elements 0..31 of b, then of b+1
    __m512i u = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), _mm512_castsi256_si512(q));
    u         = _mm512_srlv_epi64(u, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
    u         = _mm512_and_si512(u, _mm512_set1_epi8(0x0F));
    if (ti_5bit(T)) {
        uint64_t k = ld_u32(wb + ti_qh(T));
        if (two) {
            k |= (uint64_t) ld_u32(wb + bs + ti_qh(T)) << 32;
        }
        u = _mm512_mask_add_epi8(u, _cvtu64_mask64(k), u, _mm512_set1_epi8(16));
    }
    __m512i p = _mm512_dpbusd_epi32(zero, u, xv);
    if (corr && ti_off(T)) {
        p = _mm512_sub_epi32(p, _mm512_dpbusd_epi32(zero, _mm512_set1_epi8((char) ti_off(T)), xv));
    }
    return p;
}

INL TGT5 __m512 a5_leg_group(int T, int XR, const uint8_t * wb, const qs_xrow * xr, int64_t b0, int m, __m512 acc) {
    const int64_t bs = ti_bs(T);
    __m512i       v[8];
    uint16_t      dh[16], mh[16];
    float         dx[16], sx[16];
    for (int p = 0; p < 8; p++) {
        const int64_t b = b0 + 2 * p;
        if (2 * p < m) {
            const int8_t * x0 = XR ? xr->qs + b * VLC_QK : xr->blk[b].qs;
            const int8_t * x1 = 2 * p + 1 >= m ? NULL : XR ? x0 + VLC_QK : xr->blk[b + 1].qs;
            v[p]              = a5_pair(T, !XR, wb + 2 * p * bs, x0, x1);
        } else {
            v[p] = _mm512_setzero_si512();
        }
    }
    for (int i = 0; i < 16; i++) {
        dh[i] = i < m ? ld_u16(wb + i * bs) : 0;
        mh[i] = i < m && ti_min(T) ? ld_u16(wb + i * bs + 2) : 0;
        if (!XR) {
            dx[i] = i < m ? xr->blk[b0 + i].d : 0.0f;
            sx[i] = i < m && ti_min(T) ? xr->blk[b0 + i].s : 0.0f;
        }
    }
    __m512i         a = a5_tree8(v);
    __m512          xd, xs;
    const __mmask16 k = (__mmask16) (m == 16 ? 0xFFFF : (1u << m) - 1u);
    if (XR) {
        xd = _mm512_maskz_loadu_ps(k, xr->d + b0);
        xs = ti_min(T) ? _mm512_maskz_loadu_ps(k, xr->s + b0) : _mm512_setzero_ps();
        if (ti_off(T)) {
            const __m512i xs = _mm512_maskz_loadu_epi32(k, xr->sum + b0);
            a                = _mm512_sub_epi32(a, _mm512_slli_epi32(xs, ti_off_shift(T)));
        }
    } else {
        xd = _mm512_loadu_ps(dx);
        xs = _mm512_loadu_ps(sx);
    }
    const __m512 p = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) dh)), xd);
    acc            = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), p, acc);
    if (ti_min(T)) {
        acc = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) mh)), xs, acc);
    }
    return acc;
}

INL TGT5 float a5_dot_leg(int T, int XR, const void * w, const qs_xrow * xr, int64_t n) {
    const int64_t   nb  = n / VLC_QK;
    const int64_t   bs  = ti_bs(T);
    const uint8_t * wb  = w;
    __m512          acc = _mm512_setzero_ps();
    int64_t         b0  = 0;
    for (; b0 + 16 <= nb; b0 += 16) {
        pf_range(wb + b0 * bs, QPF, 16 * bs);
        acc = a5_leg_group(T, XR, wb + b0 * bs, xr, b0, 16, acc);
    }
    if (b0 < nb) {
        acc = a5_leg_group(T, XR, wb + b0 * bs, xr, b0, (int) (nb - b0), acc);
    }
    return a5_hsumf(acc);
}

// the sub-block of each int16 lane of a5_kblk's packs (before adding 8 h, 4 h)
static const int16_t k_q6_sub[32] = { 0, 0, 0, 0, 4, 4, 4, 4, 1, 1, 1, 1, 5, 5, 5, 5,
                                      2, 2, 2, 2, 6, 6, 6, 6, 3, 3, 3, 3, 7, 7, 7, 7 };
static const int16_t k_q4_sub[32] = { 0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2,
                                      1, 1, 1, 1, 3, 3, 3, 3, 1, 1, 1, 1, 3, 3, 3, 3 };

// One K-quant super-block: 16 int32 lanes that sum to A; *pb: 8 lanes that sum to B (Q4_K,
// Q5_K). vpdpbusd sums 4 code x activation products per lane (|.| <= 4 * 63 * 127 < 2^15),
// two such vectors pack to int16 without saturation, and one vpdpwssd applies the
// sub-block scales: a 512-bit multiply per 64 elements instead of two.
INL TGT5 __m512i a5_kblk(int T, const uint8_t * wb, const vlc_block_q8k * x, __m256i * pb) {
    const __m512i zero = _mm512_setzero_si512();
    const __m512i m4   = _mm512_set1_epi8(0x0F);
    __m512i       acc  = zero;
    if (T == TI_Q6_K) {
        const __m256i scv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) (wb + 192)));
        const __m512i sc  = _mm512_castsi256_si512(scv);
        // per half h, two vectors k of 64 codes (elements 128 h + 64 k ..); the bytes of the
        // 32-element quarters i = 2 k, 2 k + 1 come from ql (low / high nibbles) and qh as below
        for (int h = 0; h < 2; h++) {
            const __m512i l  = _mm512_loadu_si512((const void *) (wb + 64 * h));
            const __m512i hh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *) (wb + 128 + 32 * h)));
            __m512i       p[2];
            for (int k = 0; k < 2; k++) {
                // element 128 h + 32 i + e (i = 0..3, e < 32): low bits ql[64 h + 32 (i & 1) + e]
                // (>> 4 for i >= 2), high bits qh[32 h + e] >> 2 i
                const __m512i lo = k ? _mm512_and_si512(_mm512_srli_epi16(l, 4), m4) : _mm512_and_si512(l, m4);
                const __m512i hi = _mm512_and_si512(
                    _mm512_srlv_epi16(hh, _mm512_inserti64x4(_mm512_set1_epi16((short) (4 * k)),
                                                             _mm256_set1_epi16((short) (4 * k + 2)), 1)),
                    _mm512_set1_epi8(0x03));
                const __m512i q = _mm512_or_si512(lo, _mm512_slli_epi16(hi, 4));
                p[k]            = _mm512_dpbusd_epi32(zero, q, _mm512_loadu_si512((const void *) (x->qs + 128 * h + 64 * k)));
            }
            // int16 lane 8 j + i of the pack (128-bit chunk j): p[i / 4] lane 4 j + i % 4, which
            // is the 16-element sub-block 8 h + 4 (i / 4) + j
            const __m512i pk  = _mm512_packs_epi32(p[0], p[1]);
            const __m512i idx = _mm512_add_epi16(_mm512_loadu_si512((const void *) k_q6_sub),
                                                 _mm512_set1_epi16((short) (8 * h)));
            acc = _mm512_dpwssd_epi32(acc, pk, _mm512_permutexvar_epi16(idx, sc));
        }
        // codes are q + 32: A = sum - 32 sum_j sc_j bsums_j
        const __m256i bs = _mm256_loadu_si256((const __m256i *) x->bsums);
        const __m256i c  = _mm256_slli_epi32(_mm256_madd_epi16(bs, scv), 5);
        *pb              = _mm256_setzero_si256();
        return _mm512_sub_epi32(acc, _mm512_zextsi256_si512(c));
    }
    uint64_t sc8, m8;
    k4_unpack8(wb + 4, &sc8, &m8);
    const __m512i   sc = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long) sc8)));
    const uint8_t * qs = wb + ti_qs(T);
    const __m512i   sh = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
    __m512i         qh = zero;
    if (T == TI_Q5_K) {
        qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *) (wb + 16)));
    }
    for (int h = 0; h < 2; h++) {
        __m512i p[2];
        for (int k = 0; k < 2; k++) {
            // elements 64 c ..: bytes 0-31 low nibbles (sub-block 2 c), 32-63 high (2 c + 1)
            const int c = 2 * h + k;
            __m512i   u = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *) (qs + 32 * c)));
            u           = _mm512_and_si512(_mm512_srlv_epi64(u, sh), m4);
            if (T == TI_Q5_K) {
                const __m512i sel = _mm512_inserti64x4(_mm512_set1_epi8((char) (1 << (2 * c))),
                                                       _mm256_set1_epi8((char) (1 << (2 * c + 1))), 1);
                u = _mm512_mask_add_epi8(u, _mm512_test_epi8_mask(qh, sel), u, _mm512_set1_epi8(16));
            }
            p[k] = _mm512_dpbusd_epi32(zero, u, _mm512_loadu_si512((const void *) (x->qs + 64 * c)));
        }
        // int16 lane 8 j + i of the pack (128-bit chunk j): p[i / 4] lane 4 j + i % 4, which
        // is sub-block 4 h + 2 (i / 4) + (j >= 2)
        const __m512i idx = _mm512_add_epi16(_mm512_loadu_si512((const void *) k_q4_sub),
                                             _mm512_set1_epi16((short) (4 * h)));
        acc = _mm512_dpwssd_epi32(acc, _mm512_packs_epi32(p[0], p[1]), _mm512_permutexvar_epi16(idx, sc));
    }
    const __m128i mv = _mm_cvtsi64_si128((long long) m8);
    const __m256i md = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mv, mv));  // m0 m0 m1 m1 ... m7 m7
    *pb              = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *) x->bsums), md);
    return acc;
}

// lane i = i * s (byte offsets of a gather)
INL TGT5 __m512i a5_stride(int s) {
    return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                              _mm512_set1_epi32(s));
}

// the f32 terms of super-blocks 0 .. m - 1 (m <= 16) into acc: the blocks' partial vectors
// in pairs (lanes 0-7 block 2p, 8-15 block 2p + 1), then one tree, lane i = A_i (B_i)
INL TGT5 __m512 a5_k_group(int T, const uint8_t * wb, const vlc_block_q8k * x, int m, __m512 acc) {
    const int64_t bs = ti_bs(T);
    __m512i       va[8], vb[8];
    for (int p = 0; p < 8; p++) {
        if (2 * p >= m) {
            va[p] = vb[p] = _mm512_setzero_si512();
            continue;
        }
        const uint8_t * w0 = wb + 2 * p * bs;
        __m256i         b0, b1 = _mm256_setzero_si256();
        pf_range(w0, QPF, 2 * bs);
        const __m512i a0 = a5_kblk(T, w0, x + 2 * p, &b0);
        const __m512i a1 = 2 * p + 1 < m ? a5_kblk(T, w0 + bs, x + 2 * p + 1, &b1) : _mm512_setzero_si512();
        va[p] = _mm512_add_epi32(_mm512_shuffle_i64x2(a0, a1, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_i64x2(a0, a1, _MM_SHUFFLE(3, 2, 3, 2)));
        vb[p] = _mm512_inserti64x4(_mm512_castsi256_si512(b0), b1, 1);
    }
    // d (and dmin) of the m blocks with one 32-bit gather (Q6_K: bytes 206-209 of the block,
    // d in the high half), the activation scales with another; lanes >= m are 0
    const __mmask16 k  = (__mmask16) (m >= 16 ? 0xFFFF : (1u << m) - 1u);
    const __m512i   dd = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), k, a5_stride((int) bs),
                                                     wb + (T == TI_Q6_K ? 206 : 0), 1);
    const __m512    xd = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, a5_stride((int) sizeof(vlc_block_q8k)),
                                                  &x->d, 1);
    const __m512 p = _mm512_mul_ps(
        _mm512_cvtph_ps(_mm512_cvtepi32_epi16(T == TI_Q6_K ? _mm512_srli_epi32(dd, 16) : dd)), xd);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a5_tree8(va)), p, acc);
    if (T != TI_Q6_K) {
        const __m512 pm = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dd, 16))), xd);
        acc             = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(a5_tree8(vb)), pm, acc);
    }
    return acc;
}

INL TGT5 float a5_dot_k(int T, const void * w, const void * xq, int64_t n) {
    const int64_t         nb  = n / VLC_QK_K;
    const uint8_t *       wb  = w;
    const vlc_block_q8k * x   = xq;
    __m512                acc = _mm512_setzero_ps();
    int64_t               b0  = 0;
    for (; b0 + 16 <= nb; b0 += 16) {
        acc = a5_k_group(T, wb + b0 * ti_bs(T), x + b0, 16, acc);
    }
    if (b0 < nb) {
        acc = a5_k_group(T, wb + b0 * ti_bs(T), x + b0, (int) (nb - b0), acc);
    }
    return a5_hsumf(acc);
}

VLC_QDOT_LEVEL(a5, TGT5)

// ===========================================================================
// prefill: token-lane kernels
// ===========================================================================
//
// Weights (per call, per chunk of rows): each unit unpacked to int8 codes plus its scales.
// Activations (per call): G tokens (8 or 16, the lane count) interleaved per unit; the last
// group is padded with zero tokens (never stored). Per (row, unit) the kernel gets A for
// the G tokens in one vector, then updates that row's acc[u % L] vector (over tokens).

// legacy unit: q = w (AVX-512) or w + off (AVX2, unsigned), ncorr = -128 * sum(w)
typedef struct {
    int8_t  q[VLC_QK];
    int32_t ncorr;
    float   d, m;
    int32_t pad;
} qs_lunit;  // 48 B

// K unit: q = w (AVX-512; Q6_K: q - 32) or the unsigned code (AVX2); sc[j] per sub-block,
// scp[j] = (sc_j, sc_j) int16 pair, bp[p] = (m_p, m_p) (Q4_K, Q5_K) or (sc_2p, sc_2p+1) (Q6_K)
// int16 pair, ncorr = -128 * sum_j sc_j * sum(w in j)
typedef struct {
    int8_t   q[VLC_QK_K];
    int32_t  sc[16];
    uint32_t scp[16];
    uint32_t bp[8];
    int32_t  ncorr;
    float    d, dmin;
    int32_t  pad;
} qs_kunit;  // 432 B

static inline uint32_t pair16(int a, int b) {
    return (uint32_t) (uint16_t) (int16_t) a | (uint32_t) (uint16_t) (int16_t) b << 16;
}

// sums of the 8-byte groups of v (unsigned bytes): [s0 s1 s2 s3]
INL TGT2 void a2_sad4(__m256i v, int64_t * s) {
    const __m256i q = _mm256_sad_epu8(v, _mm256_setzero_si256());
    s[0]            = _mm256_extract_epi64(q, 0);
    s[1]            = _mm256_extract_epi64(q, 1);
    s[2]            = _mm256_extract_epi64(q, 2);
    s[3]            = _mm256_extract_epi64(q, 3);
}

// nb legacy blocks -> units: q = w + bias (w = code - off), ncorr = -128 * sum(w)
static TGT2 void unpack_leg(int T, const uint8_t * wb, int64_t nb, int bias, qs_lunit * out) {
    const int64_t bs  = ti_bs(T);
    const int     off = ti_off(T);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t * p = wb + b * bs;
        qs_lunit *      u = out + b;
        __m256i         c;  // unsigned codes (Q8_0: qs + 128)
        int             coff;
        if (T == TI_Q8_0) {
            c    = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *) (p + 2)), _mm256_set1_epi8((char) 0x80));
            coff = 128;
        } else {
            const __m128i q = _mm_loadu_si128((const __m128i *) (p + ti_qs(T)));
            c               = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
            if (ti_5bit(T)) {
                c = _mm256_or_si256(c, a2_bits16(ld_u32(p + ti_qh(T))));
            }
            coff = off;
        }
        int64_t s4[4];
        a2_sad4(c, s4);
        const int32_t sum = (int32_t) (s4[0] + s4[1] + s4[2] + s4[3]) - VLC_QK * coff;  // sum(w)
        _mm256_storeu_si256((__m256i *) u->q, _mm256_add_epi8(c, _mm256_set1_epi8((char) (bias - coff))));
        u->ncorr = -128 * sum;
        u->d     = _cvtsh_ss(ld_u16(p));
        u->m    = ti_min(T) ? _cvtsh_ss(ld_u16(p + 2)) : 0.0f;
        u->pad  = 0;
    }
}

// nb K super-blocks -> units (q = code - off + bias; Q4_K / Q5_K have off 0)
static TGT2 void unpack_k(int T, const uint8_t * wb, int64_t nb, int bias, qs_kunit * out) {
    const int64_t bs = ti_bs(T);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t * p = wb + b * bs;
        qs_kunit *      u = out + b;
        int             sc[16] = { 0 }, m[8] = { 0 };
        int32_t         corr   = 0;
        int64_t         s4[4];
        if (T == TI_Q6_K) {
            const __m256i m3  = _mm256_set1_epi8(0x30);
            const __m256i add = _mm256_set1_epi8((char) (bias - 32));
            for (int j = 0; j < 16; j++) {
                sc[j] = (int8_t) p[192 + j];
            }
            for (int h = 0; h < 2; h++) {
                const __m256i l0 = _mm256_loadu_si256((const __m256i *) (p + 64 * h));
                const __m256i l1 = _mm256_loadu_si256((const __m256i *) (p + 64 * h + 32));
                const __m256i hv = _mm256_loadu_si256((const __m256i *) (p + 128 + 32 * h));
                __m256i       q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hv, 4), m3));
                q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hv, 2), m3));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hv, m3));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_and_si256(_mm256_srli_epi16(hv, 2), m3));
                for (int i = 0; i < 4; i++) {  // elements 128 h + 32 i ..: sub-blocks 8 h + 2 i, + 1
                    _mm256_storeu_si256((__m256i *) (u->q + 128 * h + 32 * i), _mm256_add_epi8(q[i], add));
                    a2_sad4(q[i], s4);
                    const int j = 8 * h + 2 * i;
                    corr += sc[j] * ((int32_t) (s4[0] + s4[1]) - 16 * 32);
                    corr += sc[j + 1] * ((int32_t) (s4[2] + s4[3]) - 16 * 32);
                }
            }
            u->d    = _cvtsh_ss(ld_u16(p + 208));
            u->dmin = 0.0f;
        } else {
            uint64_t sc8, m8;
            k4_unpack8(p + 4, &sc8, &m8);
            for (int j = 0; j < 8; j++) {
                sc[j] = (int) ((sc8 >> (8 * j)) & 0xFF);
                m[j]  = (int) ((m8 >> (8 * j)) & 0xFF);
            }
            const uint8_t * qs = p + ti_qs(T);
            __m256i         qh = _mm256_setzero_si256();
            if (T == TI_Q5_K) {
                qh = _mm256_loadu_si256((const __m256i *) (p + 16));
            }
            for (int c = 0; c < 4; c++) {
                const __m256i q = _mm256_loadu_si256((const __m256i *) (qs + 32 * c));
                for (int hf = 0; hf < 2; hf++) {
                    const int j = 2 * c + hf;
                    __m256i   v = _mm256_and_si256(hf ? _mm256_srli_epi16(q, 4) : q, m4);
                    if (T == TI_Q5_K) {
                        const __m256i bit = _mm256_set1_epi8((char) (1 << j));
                        v = _mm256_or_si256(v, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit),
                                                                _mm256_set1_epi8(0x10)));
                    }
                    _mm256_storeu_si256((__m256i *) (u->q + 32 * j), _mm256_add_epi8(v, _mm256_set1_epi8((char) bias)));
                    a2_sad4(v, s4);
                    corr += sc[j] * (int32_t) (s4[0] + s4[1] + s4[2] + s4[3]);
                }
            }
            u->d    = _cvtsh_ss(ld_u16(p));
            u->dmin = _cvtsh_ss(ld_u16(p + 2));
        }
        for (int j = 0; j < 16; j++) {
            u->sc[j]  = sc[j];
            u->scp[j] = pair16(sc[j], sc[j]);
        }
        for (int q = 0; q < 8; q++) {
            u->bp[q] = T == TI_Q6_K ? pair16(sc[2 * q], sc[2 * q + 1]) : pair16(m[q], m[q]);
        }
        u->ncorr = -128 * corr;
        u->pad   = 0;
    }
}

// dwords of one (group, unit) activation record
static inline size_t rec_dwords(int K, int G) {
    return (size_t) (K ? 73 : 11) * (size_t) G;
}

// legacy record: x[8][G] (4 codes of a token per dword), dx[G], s[G], xsum[G] (sum of the codes,
// with_sum only: the AVX2 kernels of Q4_0 / Q5_0 use it)
static void repack_leg(const uint8_t * xq, size_t xrow, int nt, int G, int64_t nb, uint32_t xorv, int with_sum,
                       uint32_t * dst) {
    const size_t rd = rec_dwords(0, G);
    for (int64_t b = 0; b < nb; b++) {
        uint32_t * r  = dst + (size_t) b * rd;
        float *    dx = (float *) (r + 8 * G);
        float *    sx = dx + G;
        int32_t *  xs = (int32_t *) (sx + G);
        for (int t = 0; t < G; t++) {
            if (t < nt) {
                const vlc_block_q8a * x = (const vlc_block_q8a *) (xq + (size_t) t * xrow) + b;
                int32_t               s = 0;
                for (int k = 0; k < 8; k++) {
                    r[k * G + t] = ld_u32(x->qs + 4 * k) ^ xorv;
                }
                for (int j = 0; with_sum && j < VLC_QK; j++) {
                    s += x->qs[j];
                }
                dx[t] = x->d;
                sx[t] = x->s;
                xs[t] = s;
            } else {
                for (int k = 0; k < 8; k++) {
                    r[k * G + t] = xorv;
                }
                dx[t] = sx[t] = 0.0f;
                xs[t]         = 0;
            }
        }
    }
}

// K record: x[64][G], bp[8][G] (bsums pairs as int16 pairs), dx[G]
static void repack_k(const uint8_t * xq, size_t xrow, int nt, int G, int64_t nb, uint32_t xorv, uint32_t * dst) {
    const size_t rd = rec_dwords(1, G);
    for (int64_t b = 0; b < nb; b++) {
        uint32_t * r  = dst + (size_t) b * rd;
        uint32_t * bp = r + 64 * G;
        float *    dx = (float *) (bp + 8 * G);
        for (int t = 0; t < G; t++) {
            if (t < nt) {
                const vlc_block_q8k * x = (const vlc_block_q8k *) (xq + (size_t) t * xrow) + b;
                for (int k = 0; k < 64; k++) {
                    r[k * G + t] = ld_u32(x->qs + 4 * k) ^ xorv;
                }
                for (int q = 0; q < 8; q++) {
                    bp[q * G + t] = pair16(x->bsums[2 * q], x->bsums[2 * q + 1]);
                }
                dx[t] = x->d;
            } else {
                for (int k = 0; k < 64; k++) {
                    r[k * G + t] = xorv;
                }
                for (int q = 0; q < 8; q++) {
                    bp[q * G + t] = 0;
                }
                dx[t] = 0.0f;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// AVX2 token-lane kernels (G = 8): out[r * 8 + t] for MR rows

// row tiles: AVX2 4 rows (16 ymm registers), AVX-512 8 rows (8 independent vpdpbusd chains)
enum { A2_MR = 4, A5_MR = 8, PRE_MR = 8 };

// the dword at p in every lane
INL TGT2 __m256i a2_bcast32(const void * p) {
    return _mm256_set1_epi32((int) ld_u32(p));
}

// h_i = f_i + f_{i+4}, then (h0 + h2) + (h1 + h3): a2_hsumf lane-wise
INL TGT2 __m256 a2_tree8f(const __m256 * f) {
    const __m256 h0 = _mm256_add_ps(f[0], f[4]), h1 = _mm256_add_ps(f[1], f[5]);
    const __m256 h2 = _mm256_add_ps(f[2], f[6]), h3 = _mm256_add_ps(f[3], f[7]);
    return _mm256_add_ps(_mm256_add_ps(h0, h2), _mm256_add_ps(h1, h3));
}

INL TGT2 void a2_pre_leg(int T, int MR, const qs_lunit * u, int64_t nu, const uint32_t * X, float * out) {
    const size_t  rd   = rec_dwords(0, 8);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256        fa[A2_MR][8];
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 16
        for (int l = 0; l < 8; l++) {
            fa[r][l] = _mm256_setzero_ps();
        }
    }
    for (int64_t b = 0; b < nu; b++) {
        const uint32_t * rec = X + (size_t) b * rd;
        __m256i          xk[8];
#pragma GCC unroll 16
        for (int k = 0; k < 8; k++) {
            xk[k] = _mm256_load_si256((const __m256i *) (rec + 8 * k));
        }
        const __m256  dx   = _mm256_load_ps((const float *) (rec + 64));
        const __m256  sx   = ti_min(T) ? _mm256_load_ps((const float *) (rec + 72)) : _mm256_setzero_ps();
        const __m256i xsum = _mm256_load_si256((const __m256i *) (rec + 80));
        const __m256i xoff = ti_off(T) ? _mm256_slli_epi32(xsum, ti_off_shift(T)) : _mm256_setzero_si256();
        const int l = (int) (b & 7);
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            const qs_lunit * ur = u + r * nu + b;
            __m256i          acc;
            if (T == TI_Q8_0) {  // |w| * (x sign w): pairs <= 32512, one vpmaddwd per dword
                acc = _mm256_setzero_si256();
#pragma GCC unroll 16
                for (int k = 0; k < 8; k++) {
                    const __m256i wv = _mm256_set1_epi32((int) ld_u32(ur->q + 4 * k));
                    const __m256i p  = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xk[k], wv));
                    acc              = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
                }
            } else if (T == TI_Q4_0 || T == TI_Q4_1) {  // codes <= 15: 8 pairs sums <= 30480 in int16
                __m256i t = _mm256_setzero_si256();
#pragma GCC unroll 16
                for (int k = 0; k < 8; k++) {
                    t = _mm256_add_epi16(t, _mm256_maddubs_epi16(a2_bcast32(ur->q + 4 * k), xk[k]));
                }
                acc = _mm256_madd_epi16(t, ones);
            } else {  // codes <= 31: 4 at a time (<= 31496)
                __m256i t0 = _mm256_setzero_si256(), t1 = _mm256_setzero_si256();
#pragma GCC unroll 16
                for (int k = 0; k < 4; k++) {
                    t0 = _mm256_add_epi16(t0, _mm256_maddubs_epi16(a2_bcast32(ur->q + 4 * k), xk[k]));
                    t1 = _mm256_add_epi16(t1, _mm256_maddubs_epi16(a2_bcast32(ur->q + 4 * k + 16), xk[k + 4]));
                }
                acc = _mm256_add_epi32(_mm256_madd_epi16(t0, ones), _mm256_madd_epi16(t1, ones));
            }
            if (ti_off(T)) {
                acc = _mm256_sub_epi32(acc, xoff);
            }
            __m256 f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_mul_ps(_mm256_set1_ps(ur->d), dx), fa[r][l]);
            if (ti_min(T)) {
                f = _mm256_fmadd_ps(_mm256_set1_ps(ur->m), sx, f);
            }
            fa[r][l] = f;
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
        _mm256_storeu_ps(out + 8 * r, a2_tree8f(fa[r]));
    }
}

INL TGT2 void a2_pre_k(int T, int MR, const qs_kunit * u, int64_t nu, const uint32_t * X, float * out) {
    const size_t rd   = rec_dwords(1, 8);
    const int    nsub = T == TI_Q6_K ? 16 : 8, nk = 64 / nsub;
    __m256       fa[A2_MR][8];
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 16
        for (int l = 0; l < 8; l++) {
            fa[r][l] = _mm256_setzero_ps();
        }
    }
    for (int64_t b = 0; b < nu; b++) {
        const uint32_t * rec = X + (size_t) b * rd;
        __m256i          a[A2_MR];
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            a[r] = _mm256_setzero_si256();
        }
#pragma GCC unroll 16
        for (int j = 0; j < nsub; j++) {
            __m256i xk[8];
#pragma GCC unroll 16
            for (int k = 0; k < nk; k++) {
                xk[k] = _mm256_load_si256((const __m256i *) (rec + 8 * (j * nk + k)));
            }
#pragma GCC unroll 16
            for (int r = 0; r < MR; r++) {
                const qs_kunit * ur = u + r * nu + b;
                const int8_t *   q  = ur->q + 4 * j * nk;
                const __m256i    sc = _mm256_set1_epi32((int) ur->scp[j]);
                // int16 sums: Q4_K codes <= 15 (8 dwords), Q5_K <= 31 (4), Q6_K <= 63 (2)
                const int        per = T == TI_Q4_K ? 8 : T == TI_Q5_K ? 4 : 2;
#pragma GCC unroll 16
                for (int k0 = 0; k0 < nk; k0 += per) {
                    __m256i t = _mm256_setzero_si256();
#pragma GCC unroll 16
                    for (int k = k0; k < k0 + per; k++) {
                        t = _mm256_add_epi16(t, _mm256_maddubs_epi16(a2_bcast32(q + 4 * k), xk[k]));
                    }
                    a[r] = _mm256_add_epi32(a[r], _mm256_madd_epi16(t, sc));
                }
            }
        }
        __asm__ volatile("" ::: "memory");  // as in a5_pre_leg
        const __m256 dx = _mm256_load_ps((const float *) (rec + 8 * 72));
        const int    l  = (int) (b & 7);
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            const qs_kunit * ur = u + r * nu + b;
            __m256i          c  = _mm256_setzero_si256();
#pragma GCC unroll 16
            for (int q = 0; q < 8; q++) {
                c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_load_si256((const __m256i *) (rec + 8 * (64 + q))),
                                                          _mm256_set1_epi32((int) ur->bp[q])));
            }
            const __m256 p = _mm256_mul_ps(_mm256_set1_ps(ur->d), dx);
            __m256       f;
            if (T == TI_Q6_K) {
                f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(a[r], _mm256_slli_epi32(c, 5))), p, fa[r][l]);
            } else {
                f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[r]), p, fa[r][l]);
                f = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(c), _mm256_mul_ps(_mm256_set1_ps(ur->dmin), dx), f);
            }
            fa[r][l] = f;
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
        _mm256_storeu_ps(out + 8 * r, a2_tree8f(fa[r]));
    }
}

// ---------------------------------------------------------------------------
// AVX-512 token-lane kernels (G = 16), activations x + 128 (unsigned) against signed codes

// h_i = f_i + f_{i+8}, then the 8-lane tree: a5_hsumf lane-wise
INL TGT5 __m512 a5_tree16f(const __m512 * f) {
    __m512 h[8];
#pragma GCC unroll 16
    for (int i = 0; i < 8; i++) {
        h[i] = _mm512_add_ps(f[i], f[i + 8]);
    }
    const __m512 q0 = _mm512_add_ps(h[0], h[4]), q1 = _mm512_add_ps(h[1], h[5]);
    const __m512 q2 = _mm512_add_ps(h[2], h[6]), q3 = _mm512_add_ps(h[3], h[7]);
    return _mm512_add_ps(_mm512_add_ps(q0, q2), _mm512_add_ps(q1, q3));
}

// MR rows x NG token groups (16 tokens each, gs dwords apart): MR * NG independent
// vpdpbusd chains, each broadcast weight dword feeding NG of them
INL TGT5 void a5_pre_leg(int T, int MR, int NG, const qs_lunit * u, int64_t nu, const uint32_t * X, size_t gs,
                         float * out) {
    const size_t rd = rec_dwords(0, 16);
    __m512       fa[A5_MR][2][16];
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 16
        for (int g = 0; g < NG; g++) {
#pragma GCC unroll 16
            for (int l = 0; l < 16; l++) {
                fa[r][g][l] = _mm512_setzero_ps();
            }
        }
    }
    for (int64_t b = 0; b < nu; b++) {
        const uint32_t * rec = X + (size_t) b * rd;
        __m512i          acc[A5_MR][2];
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            const __m512i c = _mm512_set1_epi32(u[r * nu + b].ncorr);
#pragma GCC unroll 16
            for (int g = 0; g < NG; g++) {
                acc[r][g] = c;
            }
        }
#pragma GCC unroll 16
        for (int k = 0; k < 8; k++) {
            __m512i xk[2];
#pragma GCC unroll 16
            for (int g = 0; g < NG; g++) {
                xk[g] = _mm512_load_si512((const void *) (rec + g * gs + 16 * k));
            }
#pragma GCC unroll 16
            for (int r = 0; r < MR; r++) {
                const __m512i wv = _mm512_set1_epi32((int) ld_u32(u[r * nu + b].q + 4 * k));
#pragma GCC unroll 16
                for (int g = 0; g < NG; g++) {
                    acc[r][g] = _mm512_dpbusd_epi32(acc[r][g], xk[g], wv);
                }
            }
        }
        // keeps the compiler from loading fa[.][.][l] before the chains (register spills)
        __asm__ volatile("" ::: "memory");
        const int l = (int) (b & 15);
#pragma GCC unroll 16
        for (int g = 0; g < NG; g++) {
            const __m512 dx = _mm512_load_ps((const float *) (rec + g * gs + 128));
            const __m512 sx = ti_min(T) ? _mm512_load_ps((const float *) (rec + g * gs + 144)) : _mm512_setzero_ps();
#pragma GCC unroll 16
            for (int r = 0; r < MR; r++) {
                const qs_lunit * ur = u + r * nu + b;
                const __m512     p  = _mm512_mul_ps(_mm512_set1_ps(ur->d), dx);
                __m512           f  = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][g]), p, fa[r][g][l]);
                if (ti_min(T)) {
                    f = _mm512_fmadd_ps(_mm512_set1_ps(ur->m), sx, f);
                }
                fa[r][g][l] = f;
            }
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 16
        for (int g = 0; g < NG; g++) {
            _mm512_storeu_ps(out + 16 * (r * NG + g), a5_tree16f(fa[r][g]));
        }
    }
}

// as a5_pre_leg; per sub-block j, s = the exact sums of the j-th codes, a += sc_j * s
INL TGT5 void a5_pre_k(int T, int MR, int NG, const qs_kunit * u, int64_t nu, const uint32_t * X, size_t gs,
                       float * out) {
    const size_t rd   = rec_dwords(1, 16);
    const int    nsub = T == TI_Q6_K ? 16 : 8, nk = 64 / nsub;
    __m512       fa[A5_MR][2][16];
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 16
        for (int g = 0; g < NG; g++) {
#pragma GCC unroll 16
            for (int l = 0; l < 16; l++) {
                fa[r][g][l] = _mm512_setzero_ps();
            }
        }
    }
    for (int64_t b = 0; b < nu; b++) {
        const uint32_t * rec = X + (size_t) b * rd;
        __m512i          a[A5_MR][2];
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            const __m512i c = _mm512_set1_epi32(u[r * nu + b].ncorr);
#pragma GCC unroll 16
            for (int g = 0; g < NG; g++) {
                a[r][g] = c;
            }
        }
#pragma GCC unroll 16
        for (int j = 0; j < nsub; j++) {
            __m512i s[A5_MR][2];
#pragma GCC unroll 16
            for (int r = 0; r < MR; r++) {
#pragma GCC unroll 16
                for (int g = 0; g < NG; g++) {
                    s[r][g] = _mm512_setzero_si512();
                }
            }
#pragma GCC unroll 16
            for (int k = 0; k < nk; k++) {
                __m512i xk[2];
#pragma GCC unroll 16
                for (int g = 0; g < NG; g++) {
                    xk[g] = _mm512_load_si512((const void *) (rec + g * gs + 16 * (j * nk + k)));
                }
#pragma GCC unroll 16
                for (int r = 0; r < MR; r++) {
                    const __m512i wv = _mm512_set1_epi32((int) ld_u32(u[r * nu + b].q + 4 * (j * nk + k)));
#pragma GCC unroll 16
                    for (int g = 0; g < NG; g++) {
                        s[r][g] = _mm512_dpbusd_epi32(s[r][g], xk[g], wv);
                    }
                }
            }
#pragma GCC unroll 16
            for (int r = 0; r < MR; r++) {
                const __m512i sc = _mm512_set1_epi32(u[r * nu + b].sc[j]);
#pragma GCC unroll 16
                for (int g = 0; g < NG; g++) {
                    a[r][g] = _mm512_add_epi32(a[r][g], _mm512_mullo_epi32(s[r][g], sc));
                }
            }
        }
        __asm__ volatile("" ::: "memory");  // as in a5_pre_leg
        const int l = (int) (b & 15);
#pragma GCC unroll 16
        for (int g = 0; g < NG; g++) {
            const uint32_t * rg = rec + g * gs;
            const __m512     dx = _mm512_load_ps((const float *) (rg + 16 * 72));
#pragma GCC unroll 16
            for (int r = 0; r < MR; r++) {
                const qs_kunit * ur = u + r * nu + b;
                const __m512     p  = _mm512_mul_ps(_mm512_set1_ps(ur->d), dx);
                __m512           f  = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a[r][g]), p, fa[r][g][l]);
                if (T != TI_Q6_K) {
                    __m512i c = _mm512_setzero_si512();
#pragma GCC unroll 16
                    for (int q = 0; q < 8; q++) {
                        c = _mm512_dpwssd_epi32(c, _mm512_load_si512((const void *) (rg + 16 * (64 + q))),
                                                _mm512_set1_epi32((int) ur->bp[q]));
                    }
                    f = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(c), _mm512_mul_ps(_mm512_set1_ps(ur->dmin), dx), f);
                }
                fa[r][g][l] = f;
            }
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 16
        for (int g = 0; g < NG; g++) {
            _mm512_storeu_ps(out + 16 * (r * NG + g), a5_tree16f(fa[r][g]));
        }
    }
}

// mr rows (1 .. PRE_MR) of unpacked units u (nu per row) against ng (1 .. level's max) token
// groups X, gs dwords apart; out[r][g][t], (ng * G) floats per row
typedef void (*pre_fn)(int mr, int ng, const void * u, int64_t nu, const uint32_t * X, size_t gs, float * out);

#define VLC_PRE2(NAME, BODY, UNIT, T)                                                                                  \
    static TGT2 void NAME(int mr, int ng, const void * u, int64_t nu, const uint32_t * X, size_t gs, float * out) {   \
        (void) ng, (void) gs;                                                                                          \
        const UNIT * uu = u;                                                                                           \
        int          r  = 0;                                                                                           \
        for (; r + A2_MR <= mr; r += A2_MR) {                                                                          \
            BODY(T, A2_MR, uu + r * nu, nu, X, out + 8 * r);                                                           \
        }                                                                                                              \
        for (; r < mr; r++) {                                                                                          \
            BODY(T, 1, uu + r * nu, nu, X, out + 8 * r);                                                               \
        }                                                                                                              \
    }
#define VLC_PRE5(NAME, BODY, UNIT, T)                                                                                  \
    static TGT5 void NAME(int mr, int ng, const void * u, int64_t nu, const uint32_t * X, size_t gs, float * out) {   \
        const UNIT * uu = u;                                                                                           \
        int          r  = 0;                                                                                           \
        if (ng == 2) {                                                                                                 \
            for (; r + A5_MR <= mr; r += A5_MR) {                                                                      \
                BODY(T, A5_MR, 2, uu + r * nu, nu, X, gs, out + 32 * r);                                               \
            }                                                                                                          \
            for (; r + 2 <= mr; r += 2) {                                                                              \
                BODY(T, 2, 2, uu + r * nu, nu, X, gs, out + 32 * r);                                                   \
            }                                                                                                          \
            for (; r < mr; r++) {                                                                                      \
                BODY(T, 1, 2, uu + r * nu, nu, X, gs, out + 32 * r);                                                   \
            }                                                                                                          \
            return;                                                                                                    \
        }                                                                                                              \
        for (; r + A5_MR <= mr; r += A5_MR) {                                                                          \
            BODY(T, A5_MR, 1, uu + r * nu, nu, X, gs, out + 16 * r);                                                   \
        }                                                                                                              \
        for (; r < mr; r++) {                                                                                          \
            BODY(T, 1, 1, uu + r * nu, nu, X, gs, out + 16 * r);                                                       \
        }                                                                                                              \
    }
VLC_PRE2(a2p_q8_0, a2_pre_leg, qs_lunit, TI_Q8_0)
VLC_PRE2(a2p_q4_0, a2_pre_leg, qs_lunit, TI_Q4_0)
VLC_PRE2(a2p_q4_1, a2_pre_leg, qs_lunit, TI_Q4_1)
VLC_PRE2(a2p_q5_0, a2_pre_leg, qs_lunit, TI_Q5_0)
VLC_PRE2(a2p_q5_1, a2_pre_leg, qs_lunit, TI_Q5_1)
VLC_PRE2(a2p_q4_k, a2_pre_k, qs_kunit, TI_Q4_K)
VLC_PRE2(a2p_q5_k, a2_pre_k, qs_kunit, TI_Q5_K)
VLC_PRE2(a2p_q6_k, a2_pre_k, qs_kunit, TI_Q6_K)
VLC_PRE5(a5p_q8_0, a5_pre_leg, qs_lunit, TI_Q8_0)
VLC_PRE5(a5p_q4_0, a5_pre_leg, qs_lunit, TI_Q4_0)
VLC_PRE5(a5p_q4_1, a5_pre_leg, qs_lunit, TI_Q4_1)
VLC_PRE5(a5p_q5_0, a5_pre_leg, qs_lunit, TI_Q5_0)
VLC_PRE5(a5p_q5_1, a5_pre_leg, qs_lunit, TI_Q5_1)
VLC_PRE5(a5p_q4_k, a5_pre_k, qs_kunit, TI_Q4_K)
VLC_PRE5(a5p_q5_k, a5_pre_k, qs_kunit, TI_Q5_K)
VLC_PRE5(a5p_q6_k, a5_pre_k, qs_kunit, TI_Q6_K)

static const pre_fn g_pre_fns[2][TI_N] = {
    { a2p_q8_0, a2p_q4_0, a2p_q4_1, a2p_q5_0, a2p_q5_1, a2p_q4_k, a2p_q5_k, a2p_q6_k },
    { a5p_q8_0, a5p_q4_0, a5p_q4_1, a5p_q5_0, a5p_q5_1, a5p_q4_k, a5p_q5_k, a5p_q6_k },
};

// Tokens below which a (padded) token group costs more than the decode kernel per token
// (measured: a 16-token AVX-512 group costs about 5.5 decode tokens, an 8-token AVX2 group
// about 7.5); fewer tokens, and the tail of a call, run the decode kernel.
enum { A2_PRE_MIN = 8, A5_PRE_MIN = 6 };
// Unpacked weights per row chunk (bytes): about half of L2.
enum { PRE_CHUNK_BYTES = 512 * 1024 };

static size_t round64(size_t n) {
    return (n + 63) & ~(size_t) 63;
}

// One pass of the prefill path over n_tok tokens (ceil(n_tok / G) groups, the last padded),
// its interleaved activations and unpacked weights in the thread's kept scratch: 1 when
// done, 0 when that scratch cannot grow (nothing written).
static int qmm_prefill_pass(int ks, int T, float * y, int64_t ldy, const uint8_t * w, size_t wrow, const uint8_t * xq,
                            size_t xrow, int64_t n_in, int64_t n_tok, int64_t r0, int64_t r1, int accumulate) {
    const int     G  = ks == KS_AVX512 ? 16 : 8;
    const int     K  = ti_is_k(T);
    const int64_t ng = (n_tok + G - 1) / G;
    const int64_t nu = K ? n_in / VLC_QK_K : n_in / VLC_QK;
    const size_t  rd  = rec_dwords(K, G);
    const size_t  usz = K ? sizeof(qs_kunit) : sizeof(qs_lunit);
    int64_t       rc  = (int64_t) (PRE_CHUNK_BYTES / ((size_t) nu * usz));
    rc                = rc < PRE_MR ? PRE_MR : rc - rc % PRE_MR;
    if (rc > r1 - r0) {
        rc = r1 - r0;
    }
    // U: at least the most any row range unpacks (a chunk, or one tile of rows wider than
    // a chunk), so its size does not depend on the range and a thread allocates it rarely
    const size_t ub = (size_t) PRE_MR * (size_t) nu * usz;
    uint32_t *   X  = vlc_thread_scratch(VLC_SCRATCH_QMM_X, round64((size_t) ng * (size_t) nu * rd * sizeof(uint32_t)));
    void *       U  = vlc_thread_scratch(VLC_SCRATCH_QMM_U, round64(ub > PRE_CHUNK_BYTES ? ub : PRE_CHUNK_BYTES));
    if (!X || !U) {
        return 0;
    }
    const uint32_t xorv = ks == KS_AVX512 ? 0x80808080u : 0u;
    for (int64_t g = 0; g < ng; g++) {
        const int nt = (int) (n_tok - g * G < G ? n_tok - g * G : G);
        const uint8_t * xg = xq + (size_t) (g * G) * xrow;
        uint32_t *      dg = X + (size_t) g * (size_t) nu * rd;
        if (K) {
            repack_k(xg, xrow, nt, G, nu, xorv, dg);
        } else {
            repack_leg(xg, xrow, nt, G, nu, xorv, ks == KS_AVX2 && ti_off(T) != 0, dg);
        }
    }
    const int    bias = ks == KS_AVX2 ? ti_off(T) : 0;
    const pre_fn kern = g_pre_fns[ks == KS_AVX512][T];
    const int    ngm  = ks == KS_AVX512 ? 2 : 1;  // token groups per kernel call
    const size_t gs   = (size_t) nu * rd;          // dwords per token group
    float        out[PRE_MR * 32];
    for (int64_t o0 = r0; o0 < r1; o0 += rc) {
        const int64_t nr = r1 - o0 < rc ? r1 - o0 : rc;
        for (int64_t i = 0; i < nr; i++) {
            const uint8_t * wr = w + (size_t) (o0 + i) * wrow;
            if (K) {
                unpack_k(T, wr, nu, bias, (qs_kunit *) U + i * nu);
            } else {
                unpack_leg(T, wr, nu, bias, (qs_lunit *) U + i * nu);
            }
        }
        for (int64_t g0 = 0; g0 < ng; g0 += ngm) {
            const int        ngc = (int) (ng - g0 < ngm ? ng - g0 : ngm);
            const uint32_t * xg  = X + (size_t) g0 * gs;
            for (int64_t i0 = 0; i0 < nr; i0 += PRE_MR) {
                const int    mr = (int) (nr - i0 < PRE_MR ? nr - i0 : PRE_MR);
                const void * ui = (const char *) U + (size_t) i0 * (size_t) nu * usz;
                kern(mr, ngc, ui, nu, xg, gs, out);
                for (int g = 0; g < ngc; g++) {  // token by token: mr consecutive floats
                    const int64_t t0 = (g0 + g) * G;
                    const int     nt = (int) (n_tok - t0 < G ? n_tok - t0 : G);
                    for (int t = 0; t < nt; t++) {
                        float * yo = y + (t0 + t) * ldy + o0 + i0;
                        for (int r = 0; r < mr; r++) {
                            const float v = out[(r * ngc + g) * G + t];
                            yo[r]         = accumulate ? yo[r] + v : v;
                        }
                    }
                }
            }
        }
    }
    return 1;
}

// Tokens per prefill pass: bounds the interleaved activations (PASS * n_in * 1.4 bytes); a
// pass unpacks the weight rows again, which costs little next to PASS tokens of dots.
enum { PRE_PASS_TOKENS = 1024 };

// Runs the first n_done tokens (whole groups, and the last group padded when enough tokens
// are left for it) through the token-lane kernels; returns n_done, or fewer when an
// allocation fails (the caller runs the remaining tokens through the decode kernel).
static int64_t qmm_prefill(int ks, int T, float * y, int64_t ldy, const uint8_t * w, size_t wrow, const uint8_t * xq,
                           size_t xrow, int64_t n_in, int64_t n_tok, int64_t r0, int64_t r1, int accumulate) {
    const int     G    = ks == KS_AVX512 ? 16 : 8;
    const int64_t nu   = ti_is_k(T) ? n_in / VLC_QK_K : n_in / VLC_QK;
    const int64_t rest = n_tok % G;
    int64_t       n_done = n_tok - rest;
    if (rest >= (ks == KS_AVX512 ? A5_PRE_MIN : A2_PRE_MIN)) {
        n_done = n_tok;
    }
    if (n_done == 0 || nu == 0) {
        return 0;
    }
    for (int64_t p0 = 0; p0 < n_done; p0 += PRE_PASS_TOKENS) {
        const int64_t np = n_done - p0 < PRE_PASS_TOKENS ? n_done - p0 : PRE_PASS_TOKENS;
        if (!qmm_prefill_pass(ks, T, y + p0 * ldy, ldy, w, wrow, xq + (size_t) p0 * xrow, xrow, n_in, np, r0, r1,
                              accumulate)) {
            return p0;
        }
    }
    return n_done;
}

// The decode path of vlc_qmatmul_rows for legacy types: the row kernel per (row, token)
// over tokens t0 .. n_tok - 1 as vlc_qact_lay laid them out (once, by the caller).
static void qmm_decode_laid(int ks, int T, float * y, int64_t ldy, const uint8_t * w, size_t wrow, const uint8_t * laid,
                            int64_t n_in, int64_t t0, int64_t n_tok, int64_t r0, int64_t r1, int accumulate) {
    const int64_t  nb = n_in / VLC_QK;
    const qdotx_fn fx = ks == KS_AVX512 ? g_a5x_fns[T] : g_a2x_fns[T];
    for (int64_t o = r0; o < r1; o++) {
        const uint8_t * wr = w + (size_t) o * wrow;
        for (int64_t t = t0; t < n_tok; t++) {
            const qs_xrow xr = laid_row(laid, nb, t);
            const float   d  = fx(wr, &xr, n_in);
            float *       yo = y + t * ldy + o;
            *yo              = accumulate ? *yo + d : d;
        }
    }
}

#endif  // VLC_QSIMD_X86

// ---------------------------------------------------------------------------
// laid-out decode activations (legacy types)

size_t vlc_qact_laid_bytes(uint32_t wtype, int64_t n_in) {
    const int T = type_index(wtype);
    if (T < 0 || ti_is_k(T) || n_in <= 0 || n_in % VLC_QK) {
        return 0;
    }
    return laid_token_bytes(n_in / VLC_QK);
}

void vlc_qact_lay(uint32_t wtype, const void * xq, int64_t n_in, int64_t n_tok, void * laid) {
    const size_t  xrow = vlc_act_row_bytes(wtype, n_in);
    const int64_t nb   = n_in / VLC_QK;
    if (vlc_qact_laid_bytes(wtype, n_in) == 0 || xrow == 0) {
        return;
    }
    for (int64_t t = 0; t < n_tok; t++) {
        const vlc_block_q8a * x  = (const vlc_block_q8a *) ((const uint8_t *) xq + (size_t) t * xrow);
        float *               d  = (float *) ((uint8_t *) laid + laid_token_bytes(nb) * (size_t) t);
        float *               sx = d + nb;
        int32_t *             sm = (int32_t *) (sx + nb);
        int8_t *              qs = (int8_t *) (sm + nb);
        for (int64_t b = 0; b < nb; b++) {
            int32_t sum = 0;
            for (int j = 0; j < VLC_QK; j++) {
                sum += x[b].qs[j];
            }
            memcpy(qs + b * VLC_QK, x[b].qs, VLC_QK);
            d[b]  = x[b].d;
            sx[b] = x[b].s;
            sm[b] = sum;
        }
    }
}

// ---------------------------------------------------------------------------
// entry points

static vlc_qdot_fn qdot_for(int ks, int T) {
#if VLC_QSIMD_X86
    if (ks == KS_AVX512) {
        return g_a5_fns[T];
    }
    if (ks == KS_AVX2) {
        return g_a2_fns[T];
    }
#else
    (void) ks;
#endif
    return g_ref_fns[T];
}

vlc_qdot_fn vlc_qdot_get(uint32_t wtype) {
    const int T = type_index(wtype);
    if (T < 0) {
        return NULL;
    }
#if VLC_QSIMD_X86
    return qdot_for(kernel_set(), T);
#else
    return qdot_for(KS_REF, T);
#endif
}

void vlc_qmatmul_rows(float * y, int64_t ldy, const void * w, uint32_t wtype, const void * xq, int64_t n_in,
                      int64_t n_tok, int64_t r0, int64_t r1, int accumulate, const void * laid) {
    const int T = type_index(wtype);
    if (T < 0 || r1 <= r0 || n_tok <= 0 || n_in <= 0) {
        return;
    }
    const size_t    wrow = vlc_row_bytes(wtype, n_in);
    const size_t    xrow = vlc_act_row_bytes(wtype, n_in);
    if (wrow == 0 || xrow == 0) {  // n_in not a multiple of the block (the loader checks it)
        return;
    }
    const uint8_t * wb   = w;
    const uint8_t * xb   = xq;
#if VLC_QSIMD_X86
    const int ks = kernel_set();
#else
    const int ks = KS_REF;
#endif
    const vlc_qdot_fn fn = qdot_for(ks, T);
    int64_t           t0 = 0;
#if VLC_QSIMD_X86
    if (ks != KS_REF) {
        t0 = qmm_prefill(ks, T, y, ldy, wb, wrow, xb, xrow, n_in, n_tok, r0, r1, accumulate);
    }
#endif
    if (t0 >= n_tok) {
        return;
    }
#if VLC_QSIMD_X86
    if (ks != KS_REF && !ti_is_k(T) && laid) {
        qmm_decode_laid(ks, T, y, ldy, wb, wrow, laid, n_in, t0, n_tok, r0, r1, accumulate);
        return;
    }
#endif
    for (int64_t o = r0; o < r1; o++) {
        const uint8_t * wr = wb + (size_t) o * wrow;
        for (int64_t t = t0; t < n_tok; t++) {
            const float d  = fn(wr, xb + (size_t) t * xrow, n_in);
            float *     yo = y + t * ldy + o;
            *yo            = accumulate ? *yo + d : d;
        }
    }
}
