// quant.c: the reference (portable C) side of llama.cpp's block-quantized weight types
// (quant.h, layouts in shared/docs/GGUF_LLAVA.md §4): type traits; dequantizers that give
// the bits of gguf-py's quants.py; quantizers (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 by llama.cpp's
// reference rules, byte-identical to gguf-py's quantize; Q4_K, Q5_K, Q6_K by our own scale
// search, described at "K-quant quantizers"); the 8-bit activation quantizer; the reference
// dot products (the oracle of ops_qsimd.c); and the public vlc_type_* / vlc_quantize /
// vlc_dequantize verbs of vlcache.h.
//
// Is not: fast (no SIMD here; ops_qsimd.c has the kernels), threaded (callers split rows),
// importance-weighted (no imatrix), or Q2_K / Q3_K / IQ* (we do not run those types).
//
// The internal functions the Python tests call through cffi (vlc_act_kind,
// vlc_act_row_bytes, vlc_quantize_act_row, vlc_vec_dot_ref) are exported from the shared
// library (VLC_QUANT_TESTABLE) although they are not in vlcache.h; nothing else uses that.
#include "quant.h"

#include "error.h"
#include "half.h"

#include <math.h>
#include <string.h>

// Bit-exactness with gguf-py needs every product rounded before the following add: no
// fused multiply-add contraction in this file, whatever -march the build uses.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#if defined(__GNUC__) || defined(__clang__)
#define VLC_QUANT_TESTABLE __attribute__((visibility("default")))
#else
#define VLC_QUANT_TESTABLE
#endif

_Static_assert(sizeof(vlc_half) == 2, "vlc_half");
_Static_assert(sizeof(vlc_block_q8_0) == 34, "block_q8_0 is 34 bytes");
_Static_assert(sizeof(vlc_block_q4_0) == 18, "block_q4_0 is 18 bytes");
_Static_assert(sizeof(vlc_block_q4_1) == 20, "block_q4_1 is 20 bytes");
_Static_assert(sizeof(vlc_block_q5_0) == 22, "block_q5_0 is 22 bytes");
_Static_assert(sizeof(vlc_block_q5_1) == 24, "block_q5_1 is 24 bytes");
_Static_assert(sizeof(vlc_block_q4_K) == 144, "block_q4_K is 144 bytes");
_Static_assert(sizeof(vlc_block_q5_K) == 176, "block_q5_K is 176 bytes");
_Static_assert(sizeof(vlc_block_q6_K) == 210, "block_q6_K is 210 bytes");
_Static_assert(sizeof(vlc_block_q8a) == 40, "block_q8a is 40 bytes");
_Static_assert(sizeof(vlc_block_q8k) == 292, "block_q8k is 292 bytes");

// ---------------------------------------------------------------------------
// element conversion

float vlc_f16_to_f32(uint16_t h) {
    return f16_to_f32_inline(h);
}

uint16_t vlc_f32_to_f16(float f) {
    const uint32_t x_s  = f32_bits(f);
    const uint16_t sign = (uint16_t) ((x_s >> 16) & 0x8000u);
    const uint32_t x    = x_s & 0x7fffffffu;
    if (x >= 0x7f800000u) {
        // inf stays inf; NaN stays a (quiet) NaN keeping the top payload bits
        return (uint16_t) (sign | 0x7c00u | (x > 0x7f800000u ? 0x200u | ((x >> 13) & 0x3ffu) : 0u));
    }
    if (x >= 0x477ff000u) {
        return (uint16_t) (sign | 0x7c00u);  // >= 65520 rounds past 65504 to infinity
    }
    if (x < 0x38800000u) {
        // below 2^-14: a subnormal half (units of 2^-24) or zero
        if (x < 0x33000000u) {
            return sign;  // below 2^-25: rounds to zero
        }
        const uint32_t e     = x >> 23;                      // 102 .. 112
        const uint32_t m     = (x & 0x7fffffu) | 0x800000u;  // with the implicit bit
        const uint32_t shift = 126u - e;                     // 14 .. 24
        uint32_t       q     = m >> shift;
        const uint32_t rem   = m & ((1u << shift) - 1u);
        const uint32_t half  = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) {
            q++;  // may carry into the smallest normal (0x400), which is the right encoding
        }
        return (uint16_t) (sign | q);
    }
    const uint32_t rem = x & 0x1fffu;
    uint32_t       h   = ((x >> 23) - 112u) << 10 | ((x >> 13) & 0x3ffu);
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) {
        h++;  // a carry into the exponent is correct; overflow was excluded above
    }
    return (uint16_t) (sign | h);
}

float vlc_bf16_to_f32(uint16_t h) {
    return bits_f32((uint32_t) h << 16);
}

uint16_t vlc_f32_to_bf16(float f) {
    const uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t) ((x >> 16) | 0x40u);  // NaN: keep it a quiet NaN
    }
    return (uint16_t) ((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

size_t vlc_type_size(uint32_t type) {
    switch (type) {
        case VLC_TYPE_F32:  return 4;
        case VLC_TYPE_F16:  return 2;
        case VLC_TYPE_BF16: return 2;
        default:            return 0;
    }
}

void vlc_cpu_to_f32(float * dst, const void * src, uint32_t type, int64_t n) {
    if (type == VLC_TYPE_F32) {
        memcpy(dst, src, (size_t) n * sizeof(float));
    } else if (type == VLC_TYPE_F16) {
        const uint16_t * s = src;
        for (int64_t i = 0; i < n; i++) {
            dst[i] = f16_to_f32_inline(s[i]);
        }
    } else if (type == VLC_TYPE_BF16) {
        const uint16_t * s = src;
        uint32_t *       d = (uint32_t *) (void *) dst;
        for (int64_t i = 0; i < n; i++) {
            d[i] = (uint32_t) s[i] << 16;
        }
    } else {
        vlc_dequantize_row(type, src, dst, n);  // block types: n is a multiple of the block
    }
}

void vlc_cpu_from_f32(void * dst, const float * src, uint32_t type, int64_t n) {
    if (type == VLC_TYPE_F32) {
        memcpy(dst, src, (size_t) n * sizeof(float));
    } else if (type == VLC_TYPE_F16) {
        uint16_t * d = dst;
        for (int64_t i = 0; i < n; i++) {
            d[i] = vlc_f32_to_f16(src[i]);
        }
    } else if (type == VLC_TYPE_BF16) {
        uint16_t * d = dst;
        for (int64_t i = 0; i < n; i++) {
            d[i] = vlc_f32_to_bf16(src[i]);
        }
    }
}

// ---------------------------------------------------------------------------
// small helpers

static inline float h2f(vlc_half h) {
    return vlc_f16_to_f32(h);
}

static inline vlc_half f2h(float f) {
    return vlc_f32_to_f16(f);  // round to nearest, ties to even (numpy's astype(float16))
}

// Round to nearest, ties to even, for |v| <= 2^22 (the caller clamps first): adding and
// removing 1.5 * 2^23 leaves an f32 with no fraction bits. Same result as nearbyintf in
// the default rounding mode, without a libm call.
static inline int round_even(float v) {
    const float magic = 12582912.0f;  // 1.5 * 2^23
    return (int) ((v + magic) - magic);
}

// v clamped to [lo, hi] (NaN -> lo), then rounded to nearest even.
static inline int round_clamp(float v, int lo, int hi) {
    if (!(v > (float) lo)) {
        return lo;
    }
    if (v >= (float) hi) {
        return hi;
    }
    return round_even(v);
}

// Truncation toward zero after the legacy quantizers' "+ 8.5f" style offset, clamped to
// [0, hi]. Inside the range it is C's (int) conversion, as in quantize_row_*_ref and
// numpy's trunc().astype(uint8).clip(0, hi); out-of-range values and NaN (bad input) clamp.
static inline int trunc_clamp(float v, int hi) {
    if (!(v > 0.0f)) {
        return 0;
    }
    if (v >= (float) hi) {
        return hi;
    }
    return (int) v;
}

// roundf (halves away from zero) clamped to int8, for Q8_0 (|v| <= 127 for finite input).
static inline int8_t roundf_i8(float v) {
    if (!(v > -128.0f)) {
        return v != v ? 0 : -128;
    }
    if (v >= 127.0f) {
        return 127;
    }
    return (int8_t) roundf(v);
}

static inline uint32_t load_qh32(const uint8_t qh[4]) {
    return (uint32_t) qh[0] | (uint32_t) qh[1] << 8 | (uint32_t) qh[2] << 16 | (uint32_t) qh[3] << 24;
}

static inline void store_qh32(uint8_t qh[4], uint32_t v) {
    qh[0] = (uint8_t) v;
    qh[1] = (uint8_t) (v >> 8);
    qh[2] = (uint8_t) (v >> 16);
    qh[3] = (uint8_t) (v >> 24);
}

// Q4_K / Q5_K: 8 six-bit scales and 8 six-bit mins packed in 12 bytes.
//   bytes 0..3:  scale j (j < 4) in bits 0..5, bits 4..5 of scale j+4 in bits 6..7
//   bytes 4..7:  min j   (j < 4) in bits 0..5, bits 4..5 of min j+4   in bits 6..7
//   bytes 8..11: bits 0..3 of scale j+4 in bits 0..3, bits 0..3 of min j+4 in bits 4..7
static inline void k4_get(const uint8_t * q, int j, int * sc, int * m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m  = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m  = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void k4_put(uint8_t * q, const int sc[8], const int m[8]) {
    for (int j = 0; j < 4; j++) {
        q[j]     = (uint8_t) ((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        q[j + 4] = (uint8_t) ((m[j] & 63) | ((m[j + 4] >> 4) << 6));
        q[j + 8] = (uint8_t) ((sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4));
    }
}

// ---------------------------------------------------------------------------
// dequantizers (GGUF_LLAVA.md §4; every product and sum rounded to f32 in the order
// gguf-py's numpy code rounds it: y = d * q, y = (d * q) + m, y = (d * sc) * q - dmin * m)

static void dequant_q8_0(const vlc_block_q8_0 * b, float * y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += VLC_QK) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < VLC_QK; j++) {
            y[j] = d * (float) b[i].qs[j];
        }
    }
}

static void dequant_q4_0(const vlc_block_q4_0 * b, float * y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += VLC_QK) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < VLC_QK / 2; j++) {
            y[j]              = d * (float) ((b[i].qs[j] & 0x0F) - 8);
            y[j + VLC_QK / 2] = d * (float) ((b[i].qs[j] >> 4) - 8);
        }
    }
}

static void dequant_q4_1(const vlc_block_q4_1 * b, float * y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += VLC_QK) {
        const float d = h2f(b[i].d), m = h2f(b[i].m);
        for (int j = 0; j < VLC_QK / 2; j++) {
            y[j]              = d * (float) (b[i].qs[j] & 0x0F) + m;
            y[j + VLC_QK / 2] = d * (float) (b[i].qs[j] >> 4) + m;
        }
    }
}

static void dequant_q5_0(const vlc_block_q5_0 * b, float * y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += VLC_QK) {
        const float    d  = h2f(b[i].d);
        const uint32_t qh = load_qh32(b[i].qh);
        for (int j = 0; j < VLC_QK / 2; j++) {
            const int q0 = (b[i].qs[j] & 0x0F) | (int) (((qh >> j) & 1u) << 4);
            const int q1 = (b[i].qs[j] >> 4) | (int) (((qh >> (j + 16)) & 1u) << 4);
            y[j]              = d * (float) (q0 - 16);
            y[j + VLC_QK / 2] = d * (float) (q1 - 16);
        }
    }
}

static void dequant_q5_1(const vlc_block_q5_1 * b, float * y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += VLC_QK) {
        const float    d = h2f(b[i].d), m = h2f(b[i].m);
        const uint32_t qh = load_qh32(b[i].qh);
        for (int j = 0; j < VLC_QK / 2; j++) {
            const int q0 = (b[i].qs[j] & 0x0F) | (int) (((qh >> j) & 1u) << 4);
            const int q1 = (b[i].qs[j] >> 4) | (int) (((qh >> (j + 16)) & 1u) << 4);
            y[j]              = d * (float) q0 + m;
            y[j + VLC_QK / 2] = d * (float) q1 + m;
        }
    }
}

// Q4_K / Q5_K element e of a super-block: sub-block j = e / 32; nibble from qs[32 * (e / 64)
// + e % 32] (low for even j, high for odd j); Q5_K's fifth bit is bit j of qh[e % 32].
static void dequant_q4_K(const vlc_block_q4_K * b, float * y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += VLC_QK_K) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            k4_get(b[i].scales, j, &sc, &m);
            const float     d1 = d * (float) sc, m1 = dmin * (float) m;
            const uint8_t * q  = b[i].qs + 32 * (j / 2);
            const int       sh = (j & 1) * 4;
            for (int l = 0; l < 32; l++) {
                y[32 * j + l] = d1 * (float) ((q[l] >> sh) & 0x0F) - m1;
            }
        }
    }
}

static void dequant_q5_K(const vlc_block_q5_K * b, float * y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += VLC_QK_K) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            k4_get(b[i].scales, j, &sc, &m);
            const float     d1 = d * (float) sc, m1 = dmin * (float) m;
            const uint8_t * q  = b[i].qs + 32 * (j / 2);
            const int       sh = (j & 1) * 4;
            for (int l = 0; l < 32; l++) {
                const int v   = ((q[l] >> sh) & 0x0F) | (((b[i].qh[l] >> j) & 1) << 4);
                y[32 * j + l] = d1 * (float) v - m1;
            }
        }
    }
}

// Q6_K element e (0..255): h = e / 128, r = e % 128, l = r % 32, part = r / 32 (0..3):
//   low 4 bits: ql[64 h + l + 32 (part & 1)], low nibble for part < 2, high for part >= 2
//   high 2 bits: bits 2 part .. 2 part + 1 of qh[32 h + l];  q = that 6-bit value - 32
//   scale: scales[e / 16]
static inline int q6_get(const vlc_block_q6_K * b, int e) {
    const int h = e / 128, r = e % 128, l = r % 32, part = r / 32;
    const int lo = (b->ql[64 * h + l + 32 * (part & 1)] >> (part >= 2 ? 4 : 0)) & 0x0F;
    const int hi = (b->qh[32 * h + l] >> (2 * part)) & 3;
    return (lo | (hi << 4)) - 32;
}

static void dequant_q6_K(const vlc_block_q6_K * b, float * y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += VLC_QK_K) {
        const float d = h2f(b[i].d);
        for (int e = 0; e < VLC_QK_K; e++) {
            const float ds = d * (float) b[i].scales[e / 16];
            y[e]           = ds * (float) q6_get(&b[i], e);
        }
    }
}

// ---------------------------------------------------------------------------
// legacy quantizers: llama.cpp's quantize_row_*_ref rules, in f32, rounded as gguf-py
// rounds them (so the bytes equal gguf.quants.quantize):
//   Q8_0: d = amax / 127, q = roundf(x * (1 / d))                 (d == 0: q = 0)
//   Q4_0: d = max / -8 (max = the first element of largest |x|), q = trunc(x / d' + 8.5) <= 15
//   Q5_0: d = max / -16, q = trunc(x * (1 / d) + 16.5) <= 31
//   Q4_1: d = (max - min) / 15, m = min, q = trunc((x - min) * (1 / d) + 0.5) <= 15
//   Q5_1: d = (max - min) / 31, m = min, q = trunc((x - min) * (1 / d) + 0.5) <= 31
// d (and m) are stored as f16 but the q are computed with the f32 d, as the reference does.

static void quant_q8_0(const float * x, vlc_block_q8_0 * b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += VLC_QK) {
        float amax = 0.0f;
        for (int j = 0; j < VLC_QK; j++) {
            amax = fmaxf(amax, fabsf(x[j]));
        }
        const float d  = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d         = f2h(d);
        for (int j = 0; j < VLC_QK; j++) {
            b[i].qs[j] = roundf_i8(x[j] * id);
        }
    }
}

// The signed value of the first element of largest magnitude (numpy's argmax of |x|).
static float signed_absmax(const float * x, int n) {
    float amax = -1.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max  = x[j];
        }
    }
    return max;
}

static void quant_q4_0(const float * x, vlc_block_q4_0 * b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += VLC_QK) {
        const float d  = signed_absmax(x, VLC_QK) / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d         = f2h(d);
        for (int j = 0; j < VLC_QK / 2; j++) {
            const int q0 = trunc_clamp(x[j] * id + 8.5f, 15);
            const int q1 = trunc_clamp(x[j + VLC_QK / 2] * id + 8.5f, 15);
            b[i].qs[j]   = (uint8_t) (q0 | (q1 << 4));
        }
    }
}

static void quant_q5_0(const float * x, vlc_block_q5_0 * b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += VLC_QK) {
        const float d  = signed_absmax(x, VLC_QK) / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d         = f2h(d);
        uint32_t qh    = 0;
        for (int j = 0; j < VLC_QK / 2; j++) {
            const int q0 = trunc_clamp(x[j] * id + 16.5f, 31);
            const int q1 = trunc_clamp(x[j + VLC_QK / 2] * id + 16.5f, 31);
            b[i].qs[j]   = (uint8_t) ((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= (uint32_t) (q0 >> 4) << j;
            qh |= (uint32_t) (q1 >> 4) << (j + VLC_QK / 2);
        }
        store_qh32(b[i].qh, qh);
    }
}

static void minmax(const float * x, int n, float * pmin, float * pmax) {
    float mn = x[0], mx = x[0];
    for (int j = 1; j < n; j++) {
        if (x[j] < mn) {
            mn = x[j];
        }
        if (x[j] > mx) {
            mx = x[j];
        }
    }
    *pmin = mn;
    *pmax = mx;
}

static void quant_q4_1(const float * x, vlc_block_q4_1 * b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += VLC_QK) {
        float mn, mx;
        minmax(x, VLC_QK, &mn, &mx);
        const float d  = (mx - mn) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d         = f2h(d);
        b[i].m         = f2h(mn);
        for (int j = 0; j < VLC_QK / 2; j++) {
            const int q0 = trunc_clamp((x[j] - mn) * id + 0.5f, 15);
            const int q1 = trunc_clamp((x[j + VLC_QK / 2] - mn) * id + 0.5f, 15);
            b[i].qs[j]   = (uint8_t) (q0 | (q1 << 4));
        }
    }
}

static void quant_q5_1(const float * x, vlc_block_q5_1 * b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += VLC_QK) {
        float mn, mx;
        minmax(x, VLC_QK, &mn, &mx);
        const float d  = (mx - mn) / 31.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d         = f2h(d);
        b[i].m         = f2h(mn);
        uint32_t qh    = 0;
        for (int j = 0; j < VLC_QK / 2; j++) {
            const int q0 = trunc_clamp((x[j] - mn) * id + 0.5f, 31);
            const int q1 = trunc_clamp((x[j + VLC_QK / 2] - mn) * id + 0.5f, 31);
            b[i].qs[j]   = (uint8_t) ((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= (uint32_t) (q0 >> 4) << j;
            qh |= (uint32_t) (q1 >> 4) << (j + VLC_QK / 2);
        }
        store_qh32(b[i].qh, qh);
    }
}

// ---------------------------------------------------------------------------
// K-quant quantizers (ours; any valid bytes load, so only the error matters). Per
// super-block of 256:
//
// Q4_K / Q5_K (nmax = 15 / 31; x ~= s * q - m with q in 0..nmax, s >= 0, m >= 0):
//  1. Each sub-block of 32 gets a float (s, m) from a small search: lo = min(min x, 0),
//     hi = max x; for 21 inverse steps iscale = (nmax + t) / (hi - lo), t = -1.0, -0.9, ..,
//     +1.0, q = round((x - lo) * iscale) clamped, then (s, -m) is the least-squares line
//     of x on q (m forced >= 0: then s = sum(q x) / sum(q q) with m = 0); the (s, m) of
//     least squared error wins, then two rounds of "requantize with (s, m), refit" keep
//     any improvement.
//  2. d = max s / 63 and dmin = max m / 63, rounded to f16 (up, where nearest went down,
//     so no code exceeds 63; at most 65504); the 6-bit codes are round(s / d),
//     round(m / dmin) with the f16 values.
//  3. Each sub-block tries its two codes +-1 (9 pairs) with the values requantized to the
//     nearest q under the final scales d * sc, dmin * mc (f32, as the dequantizer forms
//     them) and keeps the pair of least squared error.
//
// Q6_K (x ~= s * q, q in -32..31, signed 8-bit sub-block scales, 16 sub-blocks of 16):
//  1. Per sub-block, with v = the element of largest |x|: for 21 steps t = -1.0 .. +1.0 try
//     iscale = -(32 + t) / v (v lands near -32, the side with 32 levels) and
//     iscale = (31 + t) / v; q = round(x * iscale) clamped, s = sum(q x) / sum(q q); least
//     squared error wins; two "requantize, refit" rounds.
//  2. d = max |s| / 127 in f16 (rounded as in step 2 above); codes round(s / d) in
//     -128..127.
//  3. Each sub-block tries its code +-1 with the values requantized under d * sc.
// Rounding is to nearest (ties to even) throughout; error sums are in double.

#define K_STEPS 10  // t = -K_STEPS/10 .. +K_STEPS/10 in steps of 0.1

// Squared error of x ~= s * q - m (q given).
static double affine_err(const float * x, const int * q, int n, float s, float m) {
    double e = 0.0;
    for (int i = 0; i < n; i++) {
        const double r = (double) s * q[i] - m - x[i];
        e += r * r;
    }
    return e;
}

// Least-squares (s, m) for fixed q, with m >= 0 and s > 0; *perr = its squared error
// (from the sums). Returns 0 if degenerate.
static int affine_fit(const float * x, const int * q, int n, float * ps, float * pm, double * perr) {
    double sq = 0, sqq = 0, sx = 0, sqx = 0, sxx = 0;
    for (int i = 0; i < n; i++) {
        sq += q[i];
        sqq += (double) q[i] * q[i];
        sx += x[i];
        sqx += (double) q[i] * x[i];
        sxx += (double) x[i] * x[i];
    }
    if (sqq <= 0) {
        return 0;
    }
    const double det = n * sqq - sq * sq;
    double       s = 0, b = 1;  // x ~= s q + b, b = -m
    if (det > 0) {
        s = (n * sqx - sq * sx) / det;
        b = (sqq * sx - sq * sqx) / det;
    }
    if (!(det > 0) || b > 0) {
        b = 0;
        s = sqx / sqq;
    }
    if (!(s > 0)) {
        return 0;
    }
    *ps   = (float) s;
    *pm   = (float) -b;
    *perr = s * s * sqq + 2 * s * b * sq + n * b * b - 2 * s * sqx - 2 * b * sx + sxx;
    return 1;
}

// Step 1 for Q4_K / Q5_K: (s, m) of one sub-block of n.
static void affine_search(const float * x, int n, int nmax, float * ps, float * pm) {
    float lo, hi;
    minmax(x, n, &lo, &hi);
    if (lo > 0.0f) {
        lo = 0.0f;
    }
    *ps = 0.0f;
    *pm = lo < 0.0f ? -lo : 0.0f;  // all values equal (and <= 0), or bad input
    if (!(hi > lo) || !isfinite(hi - lo)) {
        return;
    }
    int    q[VLC_QK];
    float  best_s = (hi - lo) / (float) nmax, best_m = -lo;
    for (int i = 0; i < n; i++) {
        q[i] = round_clamp((x[i] - lo) / best_s, 0, nmax);
    }
    double best = affine_err(x, q, n, best_s, best_m);
    for (int t = -K_STEPS; t <= K_STEPS; t++) {
        const float iscale = ((float) nmax + 0.1f * (float) t) / (hi - lo);
        for (int i = 0; i < n; i++) {
            q[i] = round_clamp((x[i] - lo) * iscale, 0, nmax);
        }
        float  s, m;
        double e;
        if (affine_fit(x, q, n, &s, &m, &e)) {
            if (e < best) {
                best   = e;
                best_s = s;
                best_m = m;
            }
        }
    }
    for (int it = 0; it < 2; it++) {
        const float id = 1.0f / best_s;
        for (int i = 0; i < n; i++) {
            q[i] = round_clamp((x[i] + best_m) * id, 0, nmax);
        }
        float  s, m;
        double e;
        if (!affine_fit(x, q, n, &s, &m, &e)) {
            break;
        }
        if (!(e < best)) {
            break;
        }
        best   = e;
        best_s = s;
        best_m = m;
    }
    *ps = best_s;
    *pm = best_m;
}

// f16 of a non-negative super-block scale v = max / cmax, kept finite and rounded up
// when nearest rounding went down, so that the largest sub-block scale still gets a code
// <= cmax (matters where the f16 is coarse: subnormal scales of tiny weights).
static vlc_half k_scale_half(float v) {
    if (!(v < 65504.0f)) {
        return f2h(65504.0f);
    }
    vlc_half h = f2h(v);
    if (h2f(h) < v) {
        h++;  // next f16 up (v > 0 here, and below the largest finite half)
    }
    return h;
}

// Values of one sub-block under final scales: q = nearest in 0..nmax of (x + m1) / d1;
// returns the squared error of d1 * q - m1 (the dequantizer's f32 arithmetic).
static double affine_final(const float * x, int n, int nmax, float d1, float m1, int * q) {
    double e = 0.0;
    const float id = d1 > 0.0f ? 1.0f / d1 : 0.0f;
    for (int i = 0; i < n; i++) {
        q[i]           = d1 > 0.0f ? round_clamp((x[i] + m1) * id, 0, nmax) : 0;
        const double r = (double) (d1 * (float) q[i] - m1) - x[i];
        e += r * r;
    }
    return e;
}

// Q4_K / Q5_K: one super-block -> d, dmin, packed scales, q[256] in 0..nmax.
static void quant_k_affine(const float * x, int nmax, vlc_half * pd, vlc_half * pdmin, uint8_t scales[12],
                           uint8_t q[VLC_QK_K]) {
    float s[8], m[8], smax = 0.0f, mmax = 0.0f;
    for (int j = 0; j < 8; j++) {
        affine_search(x + 32 * j, 32, nmax, &s[j], &m[j]);
        smax = fmaxf(smax, s[j]);
        mmax = fmaxf(mmax, m[j]);
    }
    *pd            = k_scale_half(smax / 63.0f);
    *pdmin         = k_scale_half(mmax / 63.0f);
    const float d  = h2f(*pd), dmin = h2f(*pdmin);
    int         sc[8], mc[8];
    for (int j = 0; j < 8; j++) {
        // the rounded codes first, so that they win ties
        const int sc0 = d > 0.0f ? round_clamp(s[j] / d, 0, 63) : 0;
        const int mc0 = dmin > 0.0f ? round_clamp(m[j] / dmin, 0, 63) : 0;
        int       qt[32], qbest[32];
        double    best = affine_final(x + 32 * j, 32, nmax, d * (float) sc0, dmin * (float) mc0, qbest);
        sc[j] = sc0, mc[j] = mc0;
        for (int a = sc0 - 1; a <= sc0 + 1; a++) {
            for (int b = mc0 - 1; b <= mc0 + 1; b++) {
                if (a < 0 || a > 63 || b < 0 || b > 63 || (a == sc0 && b == mc0)) {
                    continue;
                }
                const double e = affine_final(x + 32 * j, 32, nmax, d * (float) a, dmin * (float) b, qt);
                if (e < best) {
                    best  = e;
                    sc[j] = a;
                    mc[j] = b;
                    memcpy(qbest, qt, sizeof(qt));
                }
            }
        }
        for (int l = 0; l < 32; l++) {
            q[32 * j + l] = (uint8_t) qbest[l];
        }
    }
    k4_put(scales, sc, mc);
}

static void quant_q4_K(const float * x, vlc_block_q4_K * b, int64_t nb) {
    uint8_t q[VLC_QK_K];
    for (int64_t i = 0; i < nb; i++, x += VLC_QK_K) {
        quant_k_affine(x, 15, &b[i].d, &b[i].dmin, b[i].scales, q);
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                b[i].qs[32 * c + l] = (uint8_t) (q[64 * c + l] | (q[64 * c + 32 + l] << 4));
            }
        }
    }
}

static void quant_q5_K(const float * x, vlc_block_q5_K * b, int64_t nb) {
    uint8_t q[VLC_QK_K];
    for (int64_t i = 0; i < nb; i++, x += VLC_QK_K) {
        quant_k_affine(x, 31, &b[i].d, &b[i].dmin, b[i].scales, q);
        memset(b[i].qh, 0, sizeof(b[i].qh));
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
                b[i].qs[32 * c + l] = (uint8_t) ((lo & 0x0F) | ((hi & 0x0F) << 4));
                b[i].qh[l] |= (uint8_t) (((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
            }
        }
    }
}

// Least-squares s of x ~= s * q for fixed q (0 when all q are 0); returns the squared
// error (from the sums).
static double sym_fit(const float * x, const int * q, int n, float * ps) {
    double sqq = 0, sqx = 0, sxx = 0;
    for (int i = 0; i < n; i++) {
        sqq += (double) q[i] * q[i];
        sqx += (double) q[i] * x[i];
        sxx += (double) x[i] * x[i];
    }
    *ps = sqq > 0 ? (float) (sqx / sqq) : 0.0f;
    return sqq > 0 ? sxx - sqx * sqx / sqq : sxx;
}

// Step 1 for Q6_K: s of one sub-block of n (q in -32..31).
static float sym_search(const float * x, int n) {
    const float v = signed_absmax(x, n);
    if (v == 0.0f || !isfinite(v)) {
        return 0.0f;
    }
    int    q[16];
    float  best_s = 0.0f;
    double best   = INFINITY;
    for (int side = 0; side < 2; side++) {
        for (int t = -K_STEPS; t <= K_STEPS; t++) {
            const float iscale = side == 0 ? -(32.0f + 0.1f * (float) t) / v : (31.0f + 0.1f * (float) t) / v;
            for (int i = 0; i < n; i++) {
                q[i] = round_clamp(x[i] * iscale, -32, 31);
            }
            float        s;
            const double e = sym_fit(x, q, n, &s);
            if (s != 0.0f && e < best) {
                best   = e;
                best_s = s;
            }
        }
    }
    for (int it = 0; it < 2 && best_s != 0.0f; it++) {
        const float id = 1.0f / best_s;
        for (int i = 0; i < n; i++) {
            q[i] = round_clamp(x[i] * id, -32, 31);
        }
        float        s;
        const double e = sym_fit(x, q, n, &s);
        if (s == 0.0f || !(e < best)) {
            break;
        }
        best   = e;
        best_s = s;
    }
    return best_s;
}

// Values of one Q6_K sub-block under the final scale d1: q = nearest in -32..31 of x / d1.
static double sym_final(const float * x, int n, float d1, int * q) {
    double      e  = 0.0;
    const float id = d1 != 0.0f ? 1.0f / d1 : 0.0f;
    for (int i = 0; i < n; i++) {
        q[i]           = d1 != 0.0f ? round_clamp(x[i] * id, -32, 31) : 0;
        const double r = (double) (d1 * (float) q[i]) - x[i];
        e += r * r;
    }
    return e;
}

static void quant_q6_K(const float * x, vlc_block_q6_K * b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += VLC_QK_K) {
        float s[16], amax = 0.0f;
        for (int j = 0; j < 16; j++) {
            s[j] = sym_search(x + 16 * j, 16);
            amax = fmaxf(amax, fabsf(s[j]));
        }
        b[i].d        = k_scale_half(amax / 127.0f);
        const float d = h2f(b[i].d);
        int         q[VLC_QK_K];
        for (int j = 0; j < 16; j++) {
            const int c0 = d > 0.0f ? round_clamp(s[j] / d, -128, 127) : 0;
            int       qt[16];
            double    best = sym_final(x + 16 * j, 16, d * (float) c0, q + 16 * j);  // the rounded code wins ties
            b[i].scales[j] = (int8_t) c0;
            for (int c = c0 - 1; c <= c0 + 1; c += 2) {
                if (c < -128 || c > 127) {
                    continue;
                }
                const double e = sym_final(x + 16 * j, 16, d * (float) c, qt);
                if (e < best) {
                    best           = e;
                    b[i].scales[j] = (int8_t) c;
                    memcpy(q + 16 * j, qt, sizeof(qt));
                }
            }
        }
        // pack: element e -> ql / qh positions of q6_get
        memset(b[i].ql, 0, sizeof(b[i].ql));
        memset(b[i].qh, 0, sizeof(b[i].qh));
        for (int e = 0; e < VLC_QK_K; e++) {
            const int u = q[e] + 32;  // 0..63
            const int h = e / 128, r = e % 128, l = r % 32, part = r / 32;
            b[i].ql[64 * h + l + 32 * (part & 1)] |= (uint8_t) ((u & 0x0F) << (part >= 2 ? 4 : 0));
            b[i].qh[32 * h + l] |= (uint8_t) ((u >> 4) << (2 * part));
        }
    }
}

// ---------------------------------------------------------------------------
// activations: per block of 32 (Q8A) or 256 (Q8K), d = amax / 127 (0 when amax == 0),
// qs = round-to-nearest-even of x / d (the division, not a multiply by 1 / d; equal to
// nearbyintf in the default rounding mode), clamped to -127..127 (only NaN / inf input
// can reach the clamp). Q8A: s = d * (float) sum(qs). Q8K: bsums[j] = sum qs[16 j ..].

VLC_QUANT_TESTABLE size_t vlc_act_row_bytes(uint32_t wtype, int64_t n) {
    if (n < 0) {
        return 0;
    }
    switch (vlc_act_kind(wtype)) {
        case VLC_ACT_Q8A: return (size_t) (n / VLC_QK) * sizeof(vlc_block_q8a);
        case VLC_ACT_Q8K: return (size_t) (n / VLC_QK_K) * sizeof(vlc_block_q8k);
        default: return 0;
    }
}

// One block of w values: d and qs; returns sum(qs).
static int act_block(const float * x, int w, float * pd, int8_t * qs) {
    float amax = 0.0f;
    for (int j = 0; j < w; j++) {
        amax = fmaxf(amax, fabsf(x[j]));
    }
    const float d = amax / 127.0f;
    int         sum = 0;
    for (int j = 0; j < w; j++) {
        qs[j] = (int8_t) (d != 0.0f ? round_clamp(x[j] / d, -127, 127) : 0);
        sum += qs[j];
    }
    *pd = d;
    return sum;
}

VLC_QUANT_TESTABLE void vlc_quantize_act_row(uint32_t wtype, const float * x, void * dst, int64_t n) {
    const int kind = vlc_act_kind(wtype);
    if (kind == VLC_ACT_Q8A) {
        vlc_block_q8a * y = dst;
        for (int64_t i = 0; i < n / VLC_QK; i++, x += VLC_QK) {
            const int sum = act_block(x, VLC_QK, &y[i].d, y[i].qs);
            y[i].s        = y[i].d * (float) sum;
        }
    } else if (kind == VLC_ACT_Q8K) {
        vlc_block_q8k * y = dst;
        for (int64_t i = 0; i < n / VLC_QK_K; i++, x += VLC_QK_K) {
            act_block(x, VLC_QK_K, &y[i].d, y[i].qs);
            for (int j = 0; j < VLC_QK_K / 16; j++) {
                int s = 0;
                for (int l = 0; l < 16; l++) {
                    s += y[i].qs[16 * j + l];
                }
                y[i].bsums[j] = (int16_t) s;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// reference dot products: one weight row . one activation row. Per block an exact int32
// sum of products, then one f32 update of a single accumulator sumf (starting at 0.0f),
// blocks in order. dw, mw, d, dmin = the weight's f16 fields as f32; dx, sx = the
// activation block's d and s. Each line below is evaluated left to right, every
// operation rounded to f32 (no FMA):
//   Q8_0:       isum = sum_j qw[j] * qx[j] (qw int8)
//               sumf += (dw * dx) * (float) isum
//   Q4_0, Q5_0: isum = sum_j (qw[j] - 8 | - 16) * qx[j]
//               sumf += (dw * dx) * (float) isum
//   Q4_1, Q5_1: isum = sum_j qw[j] * qx[j] (qw unsigned, 0..15 | 0..31)
//               sumf += (dw * dx) * (float) isum + mw * sx
//   Q4_K, Q5_K: sumi = sum_{j<8} sc_j * (sum_{l<32} q[32 j + l] * qx[32 j + l])
//               summ = sum_{j<8} m_j * (bsums[2 j] + bsums[2 j + 1])
//               sumf += (d * dx) * (float) sumi - (dmin * dx) * (float) summ
//   Q6_K:       sumi = sum_{j<16} sc_j * (sum_{l<16} q[16 j + l] * qx[16 j + l]) (q in -32..31)
//               sumf += (d * dx) * (float) sumi
// (sc_j, m_j are the 6-bit codes of k4_get; Q6_K's sc_j the int8 scales.) All integer
// sums fit int32 (largest: Q5_K sumi <= 8 * 63 * 32 * 31 * 127 < 2^26).

static float dot_q8_0(const vlc_block_q8_0 * w, const vlc_block_q8a * x, int64_t nb) {
    float sumf = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int32_t isum = 0;
        for (int j = 0; j < VLC_QK; j++) {
            isum += (int32_t) w[i].qs[j] * x[i].qs[j];
        }
        sumf += (h2f(w[i].d) * x[i].d) * (float) isum;
    }
    return sumf;
}

static float dot_q4_0(const vlc_block_q4_0 * w, const vlc_block_q8a * x, int64_t nb) {
    float sumf = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int32_t isum = 0;
        for (int j = 0; j < VLC_QK / 2; j++) {
            isum += ((w[i].qs[j] & 0x0F) - 8) * x[i].qs[j];
            isum += ((w[i].qs[j] >> 4) - 8) * x[i].qs[j + VLC_QK / 2];
        }
        sumf += (h2f(w[i].d) * x[i].d) * (float) isum;
    }
    return sumf;
}

static float dot_q4_1(const vlc_block_q4_1 * w, const vlc_block_q8a * x, int64_t nb) {
    float sumf = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int32_t isum = 0;
        for (int j = 0; j < VLC_QK / 2; j++) {
            isum += (w[i].qs[j] & 0x0F) * x[i].qs[j];
            isum += (w[i].qs[j] >> 4) * x[i].qs[j + VLC_QK / 2];
        }
        sumf += (h2f(w[i].d) * x[i].d) * (float) isum + h2f(w[i].m) * x[i].s;
    }
    return sumf;
}

static float dot_q5_0(const vlc_block_q5_0 * w, const vlc_block_q8a * x, int64_t nb) {
    float sumf = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const uint32_t qh   = load_qh32(w[i].qh);
        int32_t        isum = 0;
        for (int j = 0; j < VLC_QK / 2; j++) {
            const int q0 = (w[i].qs[j] & 0x0F) | (int) (((qh >> j) & 1u) << 4);
            const int q1 = (w[i].qs[j] >> 4) | (int) (((qh >> (j + 16)) & 1u) << 4);
            isum += (q0 - 16) * x[i].qs[j];
            isum += (q1 - 16) * x[i].qs[j + VLC_QK / 2];
        }
        sumf += (h2f(w[i].d) * x[i].d) * (float) isum;
    }
    return sumf;
}

static float dot_q5_1(const vlc_block_q5_1 * w, const vlc_block_q8a * x, int64_t nb) {
    float sumf = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const uint32_t qh   = load_qh32(w[i].qh);
        int32_t        isum = 0;
        for (int j = 0; j < VLC_QK / 2; j++) {
            const int q0 = (w[i].qs[j] & 0x0F) | (int) (((qh >> j) & 1u) << 4);
            const int q1 = (w[i].qs[j] >> 4) | (int) (((qh >> (j + 16)) & 1u) << 4);
            isum += q0 * x[i].qs[j];
            isum += q1 * x[i].qs[j + VLC_QK / 2];
        }
        sumf += (h2f(w[i].d) * x[i].d) * (float) isum + h2f(w[i].m) * x[i].s;
    }
    return sumf;
}

// Q4_K (hbit = 0) and Q5_K share the layout of qs / scales; qh is NULL for Q4_K.
static void k_affine_sums(const uint8_t * scales, const uint8_t * qs, const uint8_t * qh, const vlc_block_q8k * x,
                          int32_t * psumi, int32_t * psumm) {
    int32_t sumi = 0, summ = 0;
    for (int j = 0; j < 8; j++) {
        int sc, m;
        k4_get(scales, j, &sc, &m);
        const uint8_t * q    = qs + 32 * (j / 2);
        const int       sh   = (j & 1) * 4;
        int32_t         isum = 0;
        for (int l = 0; l < 32; l++) {
            int v = (q[l] >> sh) & 0x0F;
            if (qh) {
                v |= ((qh[l] >> j) & 1) << 4;
            }
            isum += v * x->qs[32 * j + l];
        }
        sumi += sc * isum;
        summ += m * (x->bsums[2 * j] + x->bsums[2 * j + 1]);
    }
    *psumi = sumi;
    *psumm = summ;
}

static float dot_q4_K(const vlc_block_q4_K * w, const vlc_block_q8k * x, int64_t nb) {
    float sumf = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int32_t sumi, summ;
        k_affine_sums(w[i].scales, w[i].qs, NULL, &x[i], &sumi, &summ);
        sumf += (h2f(w[i].d) * x[i].d) * (float) sumi - (h2f(w[i].dmin) * x[i].d) * (float) summ;
    }
    return sumf;
}

static float dot_q5_K(const vlc_block_q5_K * w, const vlc_block_q8k * x, int64_t nb) {
    float sumf = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int32_t sumi, summ;
        k_affine_sums(w[i].scales, w[i].qs, w[i].qh, &x[i], &sumi, &summ);
        sumf += (h2f(w[i].d) * x[i].d) * (float) sumi - (h2f(w[i].dmin) * x[i].d) * (float) summ;
    }
    return sumf;
}

static float dot_q6_K(const vlc_block_q6_K * w, const vlc_block_q8k * x, int64_t nb) {
    float sumf = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int32_t sumi = 0;
        for (int j = 0; j < 16; j++) {
            int32_t isum = 0;
            for (int l = 0; l < 16; l++) {
                isum += q6_get(&w[i], 16 * j + l) * x[i].qs[16 * j + l];
            }
            sumi += w[i].scales[j] * isum;
        }
        sumf += (h2f(w[i].d) * x[i].d) * (float) sumi;
    }
    return sumf;
}

// ---------------------------------------------------------------------------
// the type table: one row per type we run (name, block, bytes, activation kind, and the
// reference dequantizer, quantizer and dot product); every per-type question reads it

#define BLOCK_FNS(T, BLK)                                                                   \
    static void deq_##T(const void * s, float * y, int64_t n) { dequant_##T(s, y, n / BLK); } \
    static void qnt_##T(const float * x, void * d, int64_t n) { quant_##T(x, d, n / BLK); }   \
    static float dot_ref_##T(const void * w, const void * x, int64_t n) { return dot_##T(w, x, n / BLK); }
BLOCK_FNS(q8_0, VLC_QK)
BLOCK_FNS(q4_0, VLC_QK)
BLOCK_FNS(q4_1, VLC_QK)
BLOCK_FNS(q5_0, VLC_QK)
BLOCK_FNS(q5_1, VLC_QK)
BLOCK_FNS(q4_K, VLC_QK_K)
BLOCK_FNS(q5_K, VLC_QK_K)
BLOCK_FNS(q6_K, VLC_QK_K)
#undef BLOCK_FNS

#define FLOAT_FNS(T, TYPE)                                                                     \
    static void deq_##T(const void * s, float * y, int64_t n) { vlc_cpu_to_f32(y, s, TYPE, n); } \
    static void qnt_##T(const float * x, void * d, int64_t n) { vlc_cpu_from_f32(d, x, TYPE, n); }
FLOAT_FNS(f32, VLC_TYPE_F32)
FLOAT_FNS(f16, VLC_TYPE_F16)
FLOAT_FNS(bf16, VLC_TYPE_BF16)
#undef FLOAT_FNS

#define VLC_N_TRAITS (VLC_TYPE_BF16 + 1)

#define FLOAT_ROW(NAME, T, BYTES) { NAME, 1, BYTES, 0, deq_##T, qnt_##T, NULL }
#define BLOCK_ROW(NAME, T, BLK, ACT) { NAME, BLK, sizeof(vlc_block_##T), ACT, deq_##T, qnt_##T, dot_ref_##T }
static const vlc_type_traits g_traits[VLC_N_TRAITS] = {
    [VLC_TYPE_F32]  = FLOAT_ROW("F32", f32, 4),
    [VLC_TYPE_F16]  = FLOAT_ROW("F16", f16, 2),
    [VLC_TYPE_BF16] = FLOAT_ROW("BF16", bf16, 2),
    [VLC_TYPE_Q4_0] = BLOCK_ROW("Q4_0", q4_0, VLC_QK, VLC_ACT_Q8A),
    [VLC_TYPE_Q4_1] = BLOCK_ROW("Q4_1", q4_1, VLC_QK, VLC_ACT_Q8A),
    [VLC_TYPE_Q5_0] = BLOCK_ROW("Q5_0", q5_0, VLC_QK, VLC_ACT_Q8A),
    [VLC_TYPE_Q5_1] = BLOCK_ROW("Q5_1", q5_1, VLC_QK, VLC_ACT_Q8A),
    [VLC_TYPE_Q8_0] = BLOCK_ROW("Q8_0", q8_0, VLC_QK, VLC_ACT_Q8A),
    [VLC_TYPE_Q4_K] = BLOCK_ROW("Q4_K", q4_K, VLC_QK_K, VLC_ACT_Q8K),
    [VLC_TYPE_Q5_K] = BLOCK_ROW("Q5_K", q5_K, VLC_QK_K, VLC_ACT_Q8K),
    [VLC_TYPE_Q6_K] = BLOCK_ROW("Q6_K", q6_K, VLC_QK_K, VLC_ACT_Q8K),
};
#undef FLOAT_ROW
#undef BLOCK_ROW

const vlc_type_traits * vlc_type_traits_of(uint32_t type) {
    return type < VLC_N_TRAITS && g_traits[type].name ? &g_traits[type] : NULL;
}

size_t vlc_row_bytes(uint32_t type, int64_t n) {
    const vlc_type_traits * tt = vlc_type_traits_of(type);
    if (!tt || n < 0 || n % tt->blck != 0) {
        return 0;
    }
    return (size_t) (n / tt->blck) * tt->bytes;
}

void vlc_dequantize_row(uint32_t type, const void * src, float * dst, int64_t n) {
    const vlc_type_traits * tt = vlc_type_traits_of(type);
    if (tt && n > 0) {
        tt->to_f32(src, dst, n);
    }
}

size_t vlc_quantize_row(uint32_t type, const float * src, void * dst, int64_t n) {
    const size_t bytes = vlc_row_bytes(type, n);
    if (bytes == 0) {
        return 0;
    }
    vlc_type_traits_of(type)->from_f32(src, dst, n);
    return bytes;
}

VLC_QUANT_TESTABLE int vlc_act_kind(uint32_t wtype) {
    const vlc_type_traits * tt = vlc_type_traits_of(wtype);
    return tt ? tt->act : 0;
}

VLC_QUANT_TESTABLE float vlc_vec_dot_ref(uint32_t wtype, const void * w, const void * xq, int64_t n) {
    const vlc_type_traits * tt = vlc_type_traits_of(wtype);
    return tt && tt->dot_ref ? tt->dot_ref(w, xq, n) : NAN;  // NAN: not a block-quantized type
}

// ---------------------------------------------------------------------------
// public verbs (vlcache.h)

#define VLC_RUN_TYPES "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K"

const char * vlc_type_name(int32_t type) {
    const vlc_type_traits * tt = type >= 0 ? vlc_type_traits_of((uint32_t) type) : NULL;
    return tt ? tt->name : NULL;
}

int32_t vlc_type_block_size(int32_t type) {
    const vlc_type_traits * tt = type >= 0 ? vlc_type_traits_of((uint32_t) type) : NULL;
    return tt ? tt->blck : 0;
}

size_t vlc_type_row_bytes(int32_t type, int64_t n) {
    return type >= 0 ? vlc_row_bytes((uint32_t) type, n) : 0;
}

// Shared checks of vlc_quantize / vlc_dequantize: the type, n, and the two pointers.
static vlc_status check_args(const char * func, int32_t type, int64_t n, const void * src, const void * dst,
                             const vlc_type_traits ** out) {
    const vlc_type_traits * tt = type >= 0 ? vlc_type_traits_of((uint32_t) type) : NULL;
    if (!tt) {
        return vlc_error_set(VLC_STATUS_UNSUPPORTED, func, "type %d is not a type we run (" VLC_RUN_TYPES ")",
                             (int) type);
    }
    if (!src || !dst) {
        return vlc_error_set(VLC_STATUS_INVALID_ARG, func, "%s is NULL", !src ? "src" : "dst");
    }
    if (n < 0 || n % tt->blck != 0) {
        return vlc_error_set(VLC_STATUS_INVALID_ARG, func, "n = %lld is not a whole number of %s blocks of %d",
                             (long long) n, tt->name, (int) tt->blck);
    }
    *out = tt;
    return VLC_STATUS_OK;
}

vlc_status vlc_quantize(int32_t type, const float * src, int64_t n, void * dst, size_t cap) {
    const vlc_type_traits * tt = NULL;
    VLC_TRY(check_args(__func__, type, n, src, dst, &tt));
    const size_t need = vlc_row_bytes((uint32_t) type, n);
    VLC_CHECK(cap >= need, VLC_STATUS_INVALID_ARG, "cap = %zu bytes, but %lld elements of %s need %zu", cap,
              (long long) n, tt->name, need);
    if (n > 0) {
        vlc_quantize_row((uint32_t) type, src, dst, n);
    }
    return VLC_STATUS_OK;
}

vlc_status vlc_dequantize(int32_t type, const void * src, int64_t n, float * dst) {
    const vlc_type_traits * tt = NULL;
    VLC_TRY(check_args(__func__, type, n, src, dst, &tt));
    if (n > 0) {
        vlc_dequantize_row((uint32_t) type, src, dst, n);
    }
    return VLC_STATUS_OK;
}
