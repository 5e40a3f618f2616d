// test_hotpath.c: what the hot paths must not do, counted by wrapping the allocator and
// the activation quantizer at link time (-Wl,--wrap: CMakeLists.txt builds this test only
// with GNU-style linkers). Every call the library objects make to malloc, calloc,
// realloc, aligned_alloc or vlc_quantize_act_row goes through a counter here first.
// - a decode step (Q8_0, Q4_0: the laid-out decode kernels; Q4_K; F32) allocates nothing
//   once the session exists, nor does a batched step of 8 or 12 sessions (the token-lane
//   kernels) once a step of that size has run;
// - a multi-threaded quantized matmul over many rows (the vision tower's) quantizes each
//   activation row once, not once per task of output rows;
// - an image encode like an earlier one (tiles, threads) creates no thread pool and
//   allocates nothing: the tower keeps both (vlc_pool_create is wrapped too).
#include "model.h"
#include "ops_cpu.h"
#include "quant.h"
#include "threads.h"

#include <stdatomic.h>
#include <stdio.h>

#define VLC_TEST_SEED 0x2c6f0d1e93a4b857ull
#include "vlc_test.h"
#include "vlc_tiny.h"
#include "vlc_tiny_vision.h"

static atomic_long g_allocs, g_quantized, g_pools;

void * __real_malloc(size_t n);
void * __real_calloc(size_t k, size_t n);
void * __real_realloc(void * p, size_t n);
void * __real_aligned_alloc(size_t a, size_t n);
void   __real_vlc_quantize_act_row(uint32_t wtype, const float * x, void * dst, int64_t n);
vlc_status __real_vlc_pool_create(int32_t n_threads, vlc_pool ** out);

void * __wrap_malloc(size_t n) {
    atomic_fetch_add(&g_allocs, 1);
    return __real_malloc(n);
}

void * __wrap_calloc(size_t k, size_t n) {
    atomic_fetch_add(&g_allocs, 1);
    return __real_calloc(k, n);
}

void * __wrap_realloc(void * p, size_t n) {
    atomic_fetch_add(&g_allocs, 1);
    return __real_realloc(p, n);
}

void * __wrap_aligned_alloc(size_t a, size_t n) {
    atomic_fetch_add(&g_allocs, 1);
    return __real_aligned_alloc(a, n);
}

void __wrap_vlc_quantize_act_row(uint32_t wtype, const float * x, void * dst, int64_t n) {
    atomic_fetch_add(&g_quantized, 1);
    __real_vlc_quantize_act_row(wtype, x, dst, n);
}

vlc_status __wrap_vlc_pool_create(int32_t n_threads, vlc_pool ** out) {
    atomic_fetch_add(&g_pools, 1);
    return __real_vlc_pool_create(n_threads, out);
}

enum { TV = 64, TC = 256, TL = 2, TH = 4, THKV = 2, TF = 512, TN = 20, TN_CTX = 64 };

static void decode_allocates_nothing(uint32_t type) {
    tiny t;
    tiny_init(&t, TV, TC, TL, TH, THKV, TF);
    if (type != VLC_TYPE_F32) {
        tiny_quantize(&t, type);
    }
    int32_t toks[TN + 16];
    for (int i = 0; i < TN + 16; i++) {
        toks[i] = (int32_t) (rng_u64() % TV);
    }
    for (int32_t threads = 1; threads <= 2; threads++) {
        vlc_text_state * st = state_new(&t.model, TN_CTX, 16, threads);
        CHECK(vlc_text_forward(st, toks, NULL, TN, NULL, 0) == VLC_STATUS_OK, "prefill");
        CHECK(vlc_text_forward(st, toks + TN, NULL, 1, NULL, 0) == VLC_STATUS_OK, "first decode");
        const long before = atomic_load(&g_allocs);
        for (int i = 1; i < 8; i++) {
            CHECK(vlc_text_forward(st, toks + TN + i, NULL, 1, NULL, 0) == VLC_STATUS_OK, "decode %d", i);
        }
        const long n = atomic_load(&g_allocs) - before;
        CHECK(n == 0, "%s, %d threads: 7 decode steps allocated %ld times", vlc_type_traits_of(type)->name, threads, n);
        vlc_text_state_free(st);
    }
    for (int32_t nbatch = 8; nbatch <= 12; nbatch += 4) {
        vlc_text_state * sts[12];
        for (int i = 0; i < nbatch; i++) {
            sts[i] = state_new(&t.model, TN_CTX, 16, 1);  // one thread: every kernel has run after a step
            CHECK(vlc_text_forward(sts[i], toks, NULL, TN - i, NULL, 0) == VLC_STATUS_OK, "prefill %d", i);
        }
        float * lg = malloc(sizeof(float) * (size_t) (12 * TV));
        CHECK(vlc_text_forward_batch(sts, toks + TN, nbatch, lg) == VLC_STATUS_OK, "first batch step");
        const long before = atomic_load(&g_allocs);
        for (int i = 1; i < 6; i++) {
            CHECK(vlc_text_forward_batch(sts, toks + i, nbatch, lg) == VLC_STATUS_OK, "batch step %d", i);
        }
        const long n = atomic_load(&g_allocs) - before;
        CHECK(n == 0, "%s: 5 batched steps of %d sessions allocated %ld times", vlc_type_traits_of(type)->name,
              nbatch, n);
        free(lg);
        for (int i = 0; i < nbatch; i++) {
            vlc_text_state_free(sts[i]);
        }
    }
    tiny_free(&t);
}

static void vision_matmul_quantizes_once(void) {
    const int64_t n_out = 256, n_in = 128, n_tok = 50;  // 4 tasks of 64 rows
    const size_t  rb    = vlc_row_bytes(VLC_TYPE_Q8_0, n_in);
    uint8_t *     w     = malloc(rb * (size_t) n_out);
    float *       x     = malloc(sizeof(float) * (size_t) (n_tok * n_in));
    float *       y1    = malloc(sizeof(float) * (size_t) (n_tok * n_out));
    float *       y2    = malloc(sizeof(float) * (size_t) (n_tok * n_out));
    float *       work  = malloc(sizeof(float) * (size_t) (2 * VLC_MATMUL_ROWS * n_in));
    void *        xq    = malloc(vlc_act_row_bytes(VLC_TYPE_Q8_0, n_in) * (size_t) n_tok);
    float         row[128];
    for (int64_t o = 0; o < n_out; o++) {
        for (int64_t i = 0; i < n_in; i++) {
            row[i] = rng_unif();
        }
        vlc_quantize_row(VLC_TYPE_Q8_0, row, w + (size_t) o * rb, n_in);
    }
    for (int64_t i = 0; i < n_tok * n_in; i++) {
        x[i] = rng_unif();
    }
    vlc_pool * pool = NULL;
    CHECK(vlc_pool_create(2, &pool) == VLC_STATUS_OK, "pool");
    vlc_cpu_matmul(y1, w, VLC_TYPE_Q8_0, x, n_in, n_out, n_tok, 0, work);
    const long before = atomic_load(&g_quantized);
    vlc_cpu_matmul_mt(pool, y2, w, VLC_TYPE_Q8_0, x, n_in, n_out, n_tok, 0, work, xq);
    const long n = atomic_load(&g_quantized) - before;
    CHECK(n == n_tok, "a %lld-row quantized matmul over the pool quantized %ld activation rows", (long long) n_tok, n);
    CHECK(memcmp(y1, y2, sizeof(float) * (size_t) (n_tok * n_out)) == 0, "threaded result differs");
    vlc_pool_free(pool);
    free(w);
    free(x);
    free(y1);
    free(y2);
    free(work);
    free(xq);
}

// Encodes of the tiny tower: (tiles, threads) of each call and the pools / allocations it
// may make. Calls 2, 4 and 6 repeat an earlier size; 3 changes the threads, 5 the tiles.
static void vision_encode_keeps_its_scratch(void) {
    tower t;
    tower_init(&t);
    const opts   o    = default_opts();
    wbuf         file = write_tower(&t, &o);
    vlc_gguf *   g    = NULL;
    vlc_vision * v    = NULL;
    CHECK(load(&file, E, &g, &v) == VLC_STATUS_OK, "load the tiny tower: %s", vlc_last_error());
    enum { MAX_TILES = 3 };
    static float img[MAX_TILES * 3 * S * S], out[MAX_TILES * T * E], first[MAX_TILES * T * E];
    fill(img, MAX_TILES * 3 * S * S, 1.5f, 0.0f);
    const struct { int32_t tiles, threads; int pools_ok, allocs_ok; } calls[] = {
        { 2, 2, 1, 1 }, { 2, 2, 0, 0 }, { 2, 3, 1, 1 }, { 2, 3, 0, 0 }, { 3, 3, 0, 1 }, { 1, 3, 0, 0 },
    };
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]) && v; i++) {
        const long a0 = atomic_load(&g_allocs), p0 = atomic_load(&g_pools);
        CHECK(vlc_vision_encode_tiles(v, img, calls[i].tiles, calls[i].threads, out) == VLC_STATUS_OK, "encode %zu", i);
        const long na = atomic_load(&g_allocs) - a0, np = atomic_load(&g_pools) - p0;
        CHECK(calls[i].pools_ok || np == 0, "encode %zu (%d tiles, %d threads) created %ld thread pools", i,
              calls[i].tiles, calls[i].threads, np);
        CHECK(calls[i].allocs_ok || na == 0, "encode %zu (%d tiles, %d threads) allocated %ld times", i,
              calls[i].tiles, calls[i].threads, na);
        if (i == 0) {
            memcpy(first, out, sizeof(float) * 2 * T * E);
        } else if (calls[i].tiles == 2) {  // kept scratch, other pools: the same bits
            CHECK(memcmp(first, out, sizeof(float) * 2 * T * E) == 0, "encode %zu differs from the first", i);
        }
    }
    vlc_vision_free(v);
    vlc_gguf_close(g);
    free(file.p);
}

int main(void) {
    const uint32_t types[] = { VLC_TYPE_Q8_0, VLC_TYPE_Q4_0, VLC_TYPE_Q4_K, VLC_TYPE_F32 };
    for (int i = 0; i < 4; i++) {
        decode_allocates_nothing(types[i]);
    }
    vision_matmul_quantizes_once();
    vision_encode_keeps_its_scratch();
    if (g_fail) {
        fprintf(stderr, "test_hotpath: %d failure(s)\n", g_fail);
        return 1;
    }
    printf("test_hotpath: ok\n");
    return 0;
}
