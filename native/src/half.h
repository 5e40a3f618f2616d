// half.h: bit casts and the branch-free f16 -> f32 conversion, inline for the kernels'
// inner loops (quant.c, ops_cpu.c). The exported conversions are in quant.h.
#pragma once

#include <stdint.h>
#include <string.h>

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
