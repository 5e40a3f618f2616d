// gguf_bytes.h: a growable little-endian byte buffer for C tests that write GGUF files
// by hand (test_gguf, test_tokenizer). Out of memory ends the test program (exit 2).
#pragma once

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct wbuf {
    uint8_t * p;
    size_t    n, cap;
    uint64_t  n_kv;  // metadata records written, for writers that count them
} wbuf;

static inline void w_bytes(wbuf * b, const void * src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p   = realloc(b->p, b->cap);
        if (!b->p) { fprintf(stderr, "test: out of memory\n"); exit(2); }
    }
    if (n) { memcpy(b->p + b->n, src, n); }
    b->n += n;
}
static inline void w_u8(wbuf * b, uint8_t v)   { w_bytes(b, &v, 1); }
static inline void w_u16(wbuf * b, uint16_t v) { w_bytes(b, &v, 2); }
static inline void w_u32(wbuf * b, uint32_t v) { w_bytes(b, &v, 4); }
static inline void w_u64(wbuf * b, uint64_t v) { w_bytes(b, &v, 8); }
static inline void w_f32(wbuf * b, float v)    { w_bytes(b, &v, 4); }
static inline void w_f64(wbuf * b, double v)   { w_bytes(b, &v, 8); }
static inline void w_strn(wbuf * b, const char * s, size_t n) { w_u64(b, n); w_bytes(b, s, n); }
static inline void w_str(wbuf * b, const char * s) { w_strn(b, s, strlen(s)); }
static inline void w_pad(wbuf * b, size_t align) { while (b->n % align) { w_u8(b, 0); } }
