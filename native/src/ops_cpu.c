// ops_cpu.c: reference CPU kernels (see ops_cpu.h): dot product, RMSNorm, softmax, SwiGLU,
// RoPE, the reference matmul, and the vision ops. Element conversion and the quantized
// types are below it (quant.c); the dispatching matmul is above it (matmul.c); the
// attention kernels (reference and SIMD) live in ops_attn.c.
//
// Is: portable C11 with loops gcc -O3 can vectorize (fixed 8-wide partial sums); every
// output element is computed in one fixed order, so threading never changes a bit.
// Is not: SIMD intrinsics, a dispatch to faster kernels (the reference is the oracle and
// calls nothing faster), or anything that allocates (callers pass work buffers). Letters as in ops_cpu.h.
#include "ops_cpu.h"

#include "half.h"
#include "quant.h"

#include <math.h>
#include <string.h>

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

void vlc_ref_matmul_rows(float * y, int64_t ldy, const void * w, uint32_t type, const float * x,
                         int64_t ldx, int64_t n_in, int64_t n_tok, int64_t r0, int64_t r1,
                         int accumulate, float * work) {
    if (vlc_act_kind(type)) {
        // block-quantized weights: each token's activations quantized into work, then one
        // reference dot (quant.c) per output
        const size_t rb = vlc_row_bytes(type, n_in);
        for (int64_t t = 0; t < n_tok; t++) {
            vlc_quantize_act_row(type, x + t * ldx, work, n_in);
            for (int64_t o = r0; o < r1; o++) {
                const float d = vlc_vec_dot_ref(type, (const char *) w + (size_t) o * rb, work, n_in);
                float *     yo = y + t * ldy + o;
                *yo            = accumulate ? *yo + d : d;
            }
        }
        return;
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
