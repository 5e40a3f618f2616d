// quant.h: llama.cpp's block-quantized weight types (shared/docs/GGUF_LLAVA.md §4): block
// layouts, the reference (portable C) dequantizers, quantizers and dot products, and the
// 8-bit activation blocks the dot products read.
//
// A row of n elements of a quantized type is n / blck blocks (n % blck == 0 is checked at
// load). Weights are dotted with activations quantized per row to 8-bit blocks of the
// same width: VLC_TYPE_Q8_0-style blocks for the 32-element types, Q8_K-style blocks for
// the 256-element K-quants (vlc_act_type says which). Our activation blocks keep their
// scale in f32 (llama.cpp rounds it to f16), so they are not llama.cpp's Q8_0 / Q8_1 bits.
//
// Reference = the oracle and the fallback; the SIMD kernels (ops_qsimd.c) must give the
// same result up to f32 summation order (their tests state the bound).
#pragma once

#include "vlcache.h"

#include <stddef.h>
#include <stdint.h>

enum { VLC_QK = 32, VLC_QK_K = 256, VLC_K_SCALE_SIZE = 12 };

typedef uint16_t vlc_half;  // IEEE binary16 bits

// ---- weight blocks (byte-exact GGUF layouts)
typedef struct { vlc_half d; int8_t qs[VLC_QK]; } vlc_block_q8_0;                               // 34 B
typedef struct { vlc_half d; uint8_t qs[VLC_QK / 2]; } vlc_block_q4_0;                           // 18 B
typedef struct { vlc_half d; vlc_half m; uint8_t qs[VLC_QK / 2]; } vlc_block_q4_1;               // 20 B
typedef struct { vlc_half d; uint8_t qh[4]; uint8_t qs[VLC_QK / 2]; } vlc_block_q5_0;            // 22 B
typedef struct { vlc_half d; vlc_half m; uint8_t qh[4]; uint8_t qs[VLC_QK / 2]; } vlc_block_q5_1; // 24 B
typedef struct {
    vlc_half d, dmin;
    uint8_t  scales[VLC_K_SCALE_SIZE];
    uint8_t  qs[VLC_QK_K / 2];
} vlc_block_q4_K;                                                                                // 144 B
typedef struct {
    vlc_half d, dmin;
    uint8_t  scales[VLC_K_SCALE_SIZE];
    uint8_t  qh[VLC_QK_K / 8];
    uint8_t  qs[VLC_QK_K / 2];
} vlc_block_q5_K;                                                                                // 176 B
typedef struct {
    uint8_t  ql[VLC_QK_K / 2];
    uint8_t  qh[VLC_QK_K / 4];
    int8_t   scales[VLC_QK_K / 16];
    vlc_half d;
} vlc_block_q6_K;                                                                                // 210 B

// ---- activation blocks (ours)
// 32 elements: x[i] ~= d * qs[i]; s = d * sum(qs) (the min term of Q4_1 / Q5_1).
typedef struct { float d; float s; int8_t qs[VLC_QK]; } vlc_block_q8a;                            // 40 B
// 256 elements: x[i] ~= d * qs[i]; bsums[j] = sum of qs[16 j .. 16 j + 15].
typedef struct { float d; int8_t qs[VLC_QK_K]; int16_t bsums[VLC_QK_K / 16]; } vlc_block_q8k;    // 292 B

// ---- traits
typedef struct vlc_type_traits {
    const char * name;      // "Q4_K", "F16", ...
    int32_t      blck;      // elements per block (1 for F32 / F16 / BF16)
    size_t       bytes;     // bytes per block
    int          act;       // the activation blocks its dot products read (VLC_ACT_*); 0: a float type
    void  (*to_f32)(const void * src, float * dst, int64_t n);     // reference dequantizer, n elements
    void  (*from_f32)(const float * src, void * dst, int64_t n);   // reference quantizer / rounding
    float (*dot_ref)(const void * w, const void * xq, int64_t n);  // reference dot; NULL for floats
} vlc_type_traits;

// NULL for a type we do not run.
const vlc_type_traits * vlc_type_traits_of(uint32_t type);
// Bytes of a row of n elements (n a multiple of blck); 0 for an unknown type.
size_t vlc_row_bytes(uint32_t type, int64_t n);

// ---- element conversion (exact: subnormals, infinities and NaNs included; f32 -> f16 / bf16
// rounds to nearest, ties to even, and overflows to infinity)

float    vlc_f16_to_f32(uint16_t h);
uint16_t vlc_f32_to_f16(float f);
float    vlc_bf16_to_f32(uint16_t h);
uint16_t vlc_f32_to_bf16(float f);

// Bytes of one element of a VLC_TYPE_F32 / F16 / BF16 array; 0 for any other type.
size_t vlc_type_size(uint32_t type);

// dst[n] (f32) <- src[n] of type (F32 / F16 / BF16, or a block type of quant.h with n a
// multiple of its block).
void vlc_cpu_to_f32(float * dst, const void * src, uint32_t type, int64_t n);
// dst[n] of type (F32 / F16 / BF16) <- src[n] (f32).
void vlc_cpu_from_f32(void * dst, const float * src, uint32_t type, int64_t n);

// ---- reference conversions (any supported type, float ones included)
// dst [n] = the values of src (n a multiple of blck).
void   vlc_dequantize_row(uint32_t type, const void * src, float * dst, int64_t n);
// dst = src [n] in type; returns the bytes written (vlc_row_bytes). Legacy types follow
// llama.cpp's reference rules (quantize_row_*_ref: bit-identical to gguf-py's quants.py);
// K-quants search their scales / mins per sub-block (documented in quant.c).
size_t vlc_quantize_row(uint32_t type, const float * src, void * dst, int64_t n);

// ---- activations
// The activation block type the dot products of weight type wtype read: the ids below
// (not GGUF types), or 0 for float weight types.
enum { VLC_ACT_Q8A = 1, VLC_ACT_Q8K = 2 };
int    vlc_act_kind(uint32_t wtype);
// Bytes of one activation row of n elements for wtype (0 for float weight types).
size_t vlc_act_row_bytes(uint32_t wtype, int64_t n);
// x [n] -> dst (one activation row for wtype): round-to-nearest with d = amax / 127.
void   vlc_quantize_act_row(uint32_t wtype, const float * x, void * dst, int64_t n);

// ---- reference dot product: one weight row of wtype . one activation row, n elements.
float  vlc_vec_dot_ref(uint32_t wtype, const void * w, const void * xq, int64_t n);
