// ops_cpu.c: reference CPU kernels (see ops_cpu.h): f16 / bf16 conversion, dot product,
// RMSNorm, softmax, SwiGLU, RoPE, matmul over F32 / F16 / BF16 weight rows, and the vision
// ops. The attention kernels (reference and SIMD) live in ops_attn.c.
//
// Is: portable C11 with loops gcc -O3 can vectorize (fixed 8-wide partial sums); every
// output element is computed in one fixed order, so threading never changes a bit.
// Is not: SIMD intrinsics, quantized types or anything that allocates (callers pass work
// buffers). Letters as in ops_cpu.h.
#include "ops_cpu.h"
#include "ops_qsimd.h"
#include "ops_simd.h"
#include "quant.h"

#include <math.h>
#include <string.h>

// ---------------------------------------------------------------------------
// element conversion

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

// Branch-free (masks instead of branches) so that the row loops below vectorize. Normal
// halves rebias the exponent (+112); infinities and NaNs keep all-ones exponents; a
// subnormal half m * 2^-24 is built as (2^-14 + m * 2^-24) - 2^-14, exact in f32.
static inline float f16_to_f32_inline(uint16_t h16) {
    const uint32_t h      = h16;
    const uint32_t sign   = (h & 0x8000u) << 16;
    const uint32_t em     = (h & 0x7fffu) << 13;  // exponent and mantissa at their f32 places
    const uint32_t normal = em + (112u << 23);
    const uint32_t infnan = em | 0x7f800000u;
    const uint32_t sub    = f32_bits(bits_f32(em + (113u << 23)) - 0x1p-14f);
    const uint32_t m_inf  = 0u - (uint32_t) (em >= 0x0f800000u);
    const uint32_t m_sub  = 0u - (uint32_t) (em < 0x00800000u);
    uint32_t       r      = (infnan & m_inf) | (normal & ~m_inf);
    r                     = (sub & m_sub) | (r & ~m_sub);
    return bits_f32(r | sign);
}

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
// vector ops

// The dot products below share one summation order: element i goes to partial sum i % 8,
// and the sums are combined as in DOT_COMBINE, so a fused F16 / BF16 dot gives the same
// bits as converting the row first and calling vlc_cpu_dot.
#define DOT_COMBINE(s) ((((s)[0] + (s)[4]) + ((s)[1] + (s)[5])) + (((s)[2] + (s)[6]) + ((s)[3] + (s)[7])))

float vlc_cpu_dot(const float * a, const float * b, int64_t n) {
    float   s[8] = { 0 };
    int64_t i    = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; k++) {
            s[k] += a[i + k] * b[i + k];
        }
    }
    for (int k = 0; i < n && k < 8; i++, k++) {
        s[k] += a[i] * b[i];
    }
    return DOT_COMBINE(s);
}

static float dot_f16(const uint16_t * a, const float * b, int64_t n) {
    float   s[8] = { 0 };
    int64_t i    = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; k++) {
            s[k] += f16_to_f32_inline(a[i + k]) * b[i + k];
        }
    }
    for (int k = 0; i < n && k < 8; i++, k++) {
        s[k] += f16_to_f32_inline(a[i]) * b[i];
    }
    return DOT_COMBINE(s);
}

static float dot_bf16(const uint16_t * a, const float * b, int64_t n) {
    float   s[8] = { 0 };
    int64_t i    = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; k++) {
            s[k] += bits_f32((uint32_t) a[i + k] << 16) * b[i + k];
        }
    }
    for (int k = 0; i < n && k < 8; i++, k++) {
        s[k] += bits_f32((uint32_t) a[i] << 16) * b[i];
    }
    return DOT_COMBINE(s);
}

void vlc_cpu_rmsnorm(float * out, const float * x, const float * w, int64_t n, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) {
        ss += (double) x[i] * (double) x[i];
    }
    // sum of squares in double; then as Hugging Face: w * (x * rsqrt(mean(x^2) + eps)) in f32
    const float var = (float) (ss / (double) n);
    const float r   = (float) (1.0 / sqrt((double) (var + eps)));
    for (int64_t i = 0; i < n; i++) {
        out[i] = w[i] * (x[i] * r);
    }
}

void vlc_cpu_softmax(float * x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        mx = x[i] > mx ? x[i] : mx;
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    const float inv = (float) (1.0 / sum);
    for (int64_t i = 0; i < n; i++) {
        x[i] *= inv;
    }
}

void vlc_cpu_swiglu(float * out, const float * gate, const float * up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// ---------------------------------------------------------------------------
// RoPE

void vlc_cpu_rope_table(float * cs, int32_t pos, int32_t D, float freq_base, float freq_scale) {
    for (int32_t j = 0; j < D / 2; j++) {
        // as transformers' default rope init: 1 / base ** (arange(0, D, 2) / D), in f32
        const float expo = (float) (2 * j) / (float) D;
        float       inv  = 1.0f / (float) pow((double) freq_base, (double) expo);
        if (freq_scale != 1.0f) {
            inv *= freq_scale;  // linear scaling divides the frequencies by the factor
        }
        const float theta = (float) pos * inv;
        cs[2 * j + 0]     = (float) cos((double) theta);
        cs[2 * j + 1]     = (float) sin((double) theta);
    }
}

void vlc_cpu_rope(float * x, int32_t n_head, int32_t D, const float * cs) {
    for (int32_t h = 0; h < n_head; h++) {
        float * xh = x + (int64_t) h * D;
        for (int32_t j = 0; j < D / 2; j++) {
            const float x0 = xh[2 * j], x1 = xh[2 * j + 1];
            const float c = cs[2 * j], s = cs[2 * j + 1];
            xh[2 * j]     = x0 * c - x1 * s;
            xh[2 * j + 1] = x0 * s + x1 * c;
        }
    }
}

// ---------------------------------------------------------------------------
// matmul

void vlc_cpu_matmul_rows(float * y, int64_t ldy, const void * w, uint32_t type, const float * x,
                         int64_t ldx, int64_t n_in, int64_t n_tok, int64_t r0, int64_t r1,
                         int accumulate, float * work) {
    if (vlc_act_kind(type)) {
        // block-quantized weights: each token's activations quantized into work, then the
        // quantized kernels (callers with many rows quantize once: vlc_qmatmul_rows)
        for (int64_t t = 0; t < n_tok; t++) {
            vlc_quantize_act_row(type, x + t * ldx, work, n_in);
            vlc_qmatmul_rows(y + t * ldy, ldy, w, type, work, n_in, 1, r0, r1, accumulate, NULL);
        }
        return;
    }
    if (vlc_simd_matmul_rows(y, ldy, w, type, x, ldx, n_in, n_tok, r0, r1, accumulate, work)) {
        return;  // AVX2 / AVX-512 kernels (ops_simd.c) when the CPU has them
    }
    const size_t es = vlc_type_size(type);
    if (type != VLC_TYPE_F32 && n_tok < VLC_MATMUL_FUSED_MAX_TOK) {
        // few tokens: convert on the fly inside the dot (same bits, no pass through work)
        for (int64_t o = r0; o < r1; o++) {
            const uint16_t * wr = (const uint16_t *) ((const char *) w + (size_t) (o * n_in) * es);
            for (int64_t t = 0; t < n_tok; t++) {
                const float d = type == VLC_TYPE_F16 ? dot_f16(wr, x + t * ldx, n_in) : dot_bf16(wr, x + t * ldx, n_in);
                float *     yo = y + t * ldy + o;
                *yo            = accumulate ? *yo + d : d;
            }
        }
        return;
    }
    for (int64_t o0 = r0; o0 < r1; o0 += VLC_MATMUL_ROWS) {
        const int64_t nr = r1 - o0 < VLC_MATMUL_ROWS ? r1 - o0 : VLC_MATMUL_ROWS;
        const float * wr;  // [nr, n_in]
        if (type == VLC_TYPE_F32) {
            wr = (const float *) w + o0 * n_in;
        } else {
            vlc_cpu_to_f32(work, (const char *) w + (size_t) (o0 * n_in) * es, type, nr * n_in);
            wr = work;
        }
        for (int64_t t = 0; t < n_tok; t++) {
            const float * xt = x + t * ldx;
            float *       yt = y + t * ldy + o0;
            for (int64_t r = 0; r < nr; r++) {
                const float d = vlc_cpu_dot(wr + r * n_in, xt, n_in);
                yt[r]         = accumulate ? yt[r] + d : d;
            }
        }
    }
}

void vlc_cpu_matmul(float * y, const void * w, uint32_t type, const float * x, int64_t n_in,
                    int64_t n_out, int64_t n_tok, int accumulate, float * work) {
    vlc_cpu_matmul_rows(y, n_out, w, type, x, n_in, n_in, n_tok, 0, n_out, accumulate, work);
}

typedef struct matmul_job {
    float *       y;
    const void *  w;
    uint32_t      type;
    const float * x;
    int64_t       n_in, n_out, n_tok;
    int           accumulate;
    float *       work;  // [n_threads, VLC_MATMUL_ROWS * n_in]
    char *        xq;    // block-quantized W: x quantized once ([n_tok] activation rows), or NULL
    size_t        xrow;  // bytes per activation row
    int64_t       rows;  // output rows per task
} matmul_job;

static void matmul_task(void * ctx, int64_t task, int ith) {
    const matmul_job * j  = ctx;
    const int64_t      r0 = task * j->rows;
    const int64_t      r1 = r0 + j->rows < j->n_out ? r0 + j->rows : j->n_out;
    if (j->xq) {
        vlc_qmatmul_rows(j->y, j->n_out, j->w, j->type, j->xq, j->n_in, j->n_tok, r0, r1, j->accumulate, NULL);
        return;
    }
    float * wk = j->work + (size_t) ith * VLC_MATMUL_ROWS * (size_t) j->n_in;
    vlc_cpu_matmul_rows(j->y, j->n_out, j->w, j->type, j->x, j->n_in, j->n_in, j->n_tok, r0, r1,
                        j->accumulate, wk);
}

static void quantize_task(void * ctx, int64_t t, int ith) {
    (void) ith;
    const matmul_job * j = ctx;
    vlc_quantize_act_row(j->type, j->x + t * j->n_in, j->xq + (size_t) t * j->xrow, j->n_in);
}

// Rows per task of a quantized matmul over many tokens: the token-lane kernels repack the
// activations in every task, so tasks are larger than VLC_MATMUL_ROWS.
enum { QMM_MT_ROWS = 64 };

void vlc_cpu_matmul_mt(vlc_pool * pool, float * y, const void * w, uint32_t type, const float * x,
                       int64_t n_in, int64_t n_out, int64_t n_tok, int accumulate, float * work, void * xq) {
    matmul_job j = { y, w, type, x, n_in, n_out, n_tok, accumulate, work, NULL, 0, VLC_MATMUL_ROWS };
    if (xq && vlc_act_kind(type)) {  // quantize each activation row once, not once per task
        j.xq   = xq;
        j.xrow = vlc_act_row_bytes(type, n_in);
        j.rows = QMM_MT_ROWS;
        vlc_pool_run(pool, quantize_task, &j, n_tok);
    }
    vlc_pool_run(pool, matmul_task, &j, (n_out + j.rows - 1) / j.rows);
}

// ---------------------------------------------------------------------------
// attention: ops_attn.c (reference and SIMD kernels together)

// ---------------------------------------------------------------------------
// ---- vision ops

void vlc_cpu_layernorm(float * out, const float * x, const float * w, const float * b, int64_t n, float eps) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        s += (double) x[i];
    }
    const double mean = s / (double) n;
    double       ss   = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double) x[i] - mean;
        ss += d * d;
    }
    const float m = (float) mean;
    const float r = (float) (1.0 / sqrt(ss / (double) n + (double) eps));
    for (int64_t i = 0; i < n; i++) {
        float y = (x[i] - m) * r;
        if (w) {
            y *= w[i];
        }
        if (b) {
            y += b[i];
        }
        out[i] = y;
    }
}

void vlc_cpu_add(float * x, const float * b, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        x[i] += b[i];
    }
}

void vlc_cpu_gelu_erf(float * x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
    }
}

void vlc_cpu_gelu_tanh(float * x, int64_t n) {
    const float k = 0.79788456080286536f;  // sqrt(2 / pi)
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
}

void vlc_cpu_quick_gelu(float * x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
    }
}

void vlc_cpu_patchify(float * out, const float * img, int32_t S, int32_t P) {
    const int32_t np = S / P;  // patches per side
    const int64_t K  = 3 * (int64_t) P * P;
    for (int32_t py = 0; py < np; py++) {
        for (int32_t px = 0; px < np; px++) {
            float * row = out + ((int64_t) py * np + px) * K;
            for (int32_t ch = 0; ch < 3; ch++) {
                for (int32_t ky = 0; ky < P; ky++) {
                    const float * src = img + ((int64_t) ch * S + (int64_t) py * P + ky) * S + (int64_t) px * P;
                    memcpy(row + ((int64_t) ch * P + ky) * P, src, (size_t) P * sizeof(float));
                }
            }
        }
    }
}
