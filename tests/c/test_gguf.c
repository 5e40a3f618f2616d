// test_gguf.c: tests of the GGUF reader (native/src/gguf.c).
//
// Builds GGUF files in memory with a small writer of its own, parses them with
// vlc_gguf_open_buffer / vlc_gguf_open and checks values, tensors and every error path:
// each truncation of a valid file, wrong magic / version, out-of-range tensors, absurd
// counts and lengths, type errors, duplicates; then flips random bytes (fixed seed) and
// requires that parsing never crashes. Meant to run under -fsanitize=address,undefined,
// where any out-of-bounds read or over-large allocation aborts the test.
//
// Usage: test_gguf            run the tests (exit 0 = pass)
//        test_gguf FILE.gguf  print the metadata and tensor table of FILE (manual checks)
#include "error.h"
#include "gguf.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_failures = 0;

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: '%s')\n", __FILE__, __LINE__, \
                    #cond, vlc_last_error());                                                  \
            g_failures++;                                                                      \
        }                                                                                      \
    } while (0)

// ---------------------------------------------------------------------------------------
// A minimal GGUF writer

#include "gguf_bytes.h"

// A file under construction: metadata, tensor infos and data are kept apart and joined by
// gf_finish, which fills the counts in the header.
typedef struct gfile {
    uint32_t version;
    size_t   align;   // used to place tensor data; write general.alignment yourself if not 32
    uint64_t n_kv, n_tensors;
    wbuf     kv, info, data;
} gfile;

static gfile gf_new(size_t align) { return (gfile) { .version = 3, .align = align }; }

// Key and value type; the caller writes the value into gf->kv.
static wbuf * gf_key(gfile * gf, const char * key, uint32_t type) {
    gf->n_kv++;
    w_str(&gf->kv, key);
    w_u32(&gf->kv, type);
    return &gf->kv;
}

static void gf_tensor_info(gfile * gf, const char * name, uint32_t n_dims, const uint64_t * ne,
                           uint32_t type, uint64_t offset) {
    gf->n_tensors++;
    w_str(&gf->info, name);
    w_u32(&gf->info, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) { w_u64(&gf->info, ne[d]); }
    w_u32(&gf->info, type);
    w_u64(&gf->info, offset);
}

// Tensor info plus data, placed at the next aligned offset of the data section.
static void gf_tensor(gfile * gf, const char * name, uint32_t n_dims, const uint64_t * ne, uint32_t type,
                      const void * data, size_t nbytes) {
    w_pad(&gf->data, gf->align);
    gf_tensor_info(gf, name, n_dims, ne, type, gf->data.n);
    w_bytes(&gf->data, data, nbytes);
}

// Joins everything; no padding after the last tensor, so every proper prefix is invalid.
static wbuf gf_finish(gfile * gf) {
    wbuf out = { 0 };
    w_bytes(&out, "GGUF", 4);
    w_u32(&out, gf->version);
    w_u64(&out, gf->n_tensors);
    w_u64(&out, gf->n_kv);
    w_bytes(&out, gf->kv.p, gf->kv.n);
    w_bytes(&out, gf->info.p, gf->info.n);
    if (gf->data.n) {
        w_pad(&out, gf->align);
        w_bytes(&out, gf->data.p, gf->data.n);
    }
    free(gf->kv.p);
    free(gf->info.p);
    free(gf->data.p);
    return out;
}

// ---------------------------------------------------------------------------------------
// The valid file: every metadata type, arrays of every element type, three tensors.

static const float    k_f32_data[6] = { 1.0f, -2.0f, 0.5f, 3.25f, -0.125f, 1e-3f };   // ne = [3, 2]
static const uint16_t k_f16_data[4] = { 0x3c00, 0xc000, 0x3800, 0x0000 };           // 1, -2, 0.5, 0
static uint8_t        g_q8_data[2 * 34];                                             // ne = [32, 2]: 2 blocks

static wbuf build_valid(void) {
    gfile gf = gf_new(64);
    w_str(gf_key(&gf, "general.architecture", VLC_GGUF_STRING), "llama");
    w_u32(gf_key(&gf, "general.alignment", VLC_GGUF_UINT32), 64);
    w_u8(gf_key(&gf, "v.u8", VLC_GGUF_UINT8), 250);
    w_u8(gf_key(&gf, "v.i8", VLC_GGUF_INT8), (uint8_t) -7);
    w_u16(gf_key(&gf, "v.u16", VLC_GGUF_UINT16), 65000);
    w_u16(gf_key(&gf, "v.i16", VLC_GGUF_INT16), (uint16_t) -32000);
    w_u32(gf_key(&gf, "v.u32", VLC_GGUF_UINT32), 4000000000u);
    w_u32(gf_key(&gf, "v.i32", VLC_GGUF_INT32), (uint32_t) -2000000000);
    w_f32(gf_key(&gf, "v.f32", VLC_GGUF_FLOAT32), 0.25f);
    w_u8(gf_key(&gf, "v.bool1", VLC_GGUF_BOOL), 1);
    w_u8(gf_key(&gf, "v.bool0", VLC_GGUF_BOOL), 0);
    w_u64(gf_key(&gf, "v.u64big", VLC_GGUF_UINT64), 0x8000000000000005ull);
    w_u64(gf_key(&gf, "v.u64", VLC_GGUF_UINT64), 123);
    w_u64(gf_key(&gf, "v.i64", VLC_GGUF_INT64), (uint64_t) -1099511627776ll);
    w_f64(gf_key(&gf, "v.f64", VLC_GGUF_FLOAT64), -2.5e-300);
    w_str(gf_key(&gf, "v.str", VLC_GGUF_STRING), "h\xc3\xa9llo w\xc3\xb6rld");
    w_str(gf_key(&gf, "v.str.empty", VLC_GGUF_STRING), "");

    wbuf * b;
    b = gf_key(&gf, "a.u8", VLC_GGUF_ARRAY);   w_u32(b, VLC_GGUF_UINT8);   w_u64(b, 2); w_u8(b, 1); w_u8(b, 255);
    b = gf_key(&gf, "a.i8", VLC_GGUF_ARRAY);   w_u32(b, VLC_GGUF_INT8);    w_u64(b, 2); w_u8(b, 0x80); w_u8(b, 127);
    b = gf_key(&gf, "a.u16", VLC_GGUF_ARRAY);  w_u32(b, VLC_GGUF_UINT16);  w_u64(b, 1); w_u16(b, 65535);
    b = gf_key(&gf, "a.i16", VLC_GGUF_ARRAY);  w_u32(b, VLC_GGUF_INT16);   w_u64(b, 1); w_u16(b, (uint16_t) -300);
    b = gf_key(&gf, "a.u32", VLC_GGUF_ARRAY);  w_u32(b, VLC_GGUF_UINT32);  w_u64(b, 1); w_u32(b, 0xFFFFFFFFu);
    b = gf_key(&gf, "a.i32", VLC_GGUF_ARRAY);  w_u32(b, VLC_GGUF_INT32);   w_u64(b, 3);
    w_u32(b, 1); w_u32(b, (uint32_t) -2); w_u32(b, 3);
    b = gf_key(&gf, "a.u64", VLC_GGUF_ARRAY);  w_u32(b, VLC_GGUF_UINT64);  w_u64(b, 2); w_u64(b, 7); w_u64(b, UINT64_MAX);
    b = gf_key(&gf, "a.i64", VLC_GGUF_ARRAY);  w_u32(b, VLC_GGUF_INT64);   w_u64(b, 1); w_u64(b, (uint64_t) INT64_MIN);
    b = gf_key(&gf, "a.f32", VLC_GGUF_ARRAY);  w_u32(b, VLC_GGUF_FLOAT32); w_u64(b, 3);
    w_f32(b, 0.5f); w_f32(b, -1.75f); w_f32(b, 3e38f);
    b = gf_key(&gf, "a.f64", VLC_GGUF_ARRAY);  w_u32(b, VLC_GGUF_FLOAT64); w_u64(b, 2); w_f64(b, 1e300); w_f64(b, -0.1);
    b = gf_key(&gf, "a.bool", VLC_GGUF_ARRAY); w_u32(b, VLC_GGUF_BOOL);    w_u64(b, 3); w_u8(b, 1); w_u8(b, 0); w_u8(b, 1);
    b = gf_key(&gf, "a.str", VLC_GGUF_ARRAY);  w_u32(b, VLC_GGUF_STRING);  w_u64(b, 3);
    w_str(b, "a"); w_str(b, ""); w_str(b, "tok en");
    b = gf_key(&gf, "a.empty", VLC_GGUF_ARRAY); w_u32(b, VLC_GGUF_INT32);  w_u64(b, 0);

    for (size_t i = 0; i < sizeof(g_q8_data); i++) { g_q8_data[i] = (uint8_t) (i * 37 + 11); }
    gf_tensor(&gf, "tok_embd.weight", 2, (const uint64_t[]) { 3, 2 }, 0, k_f32_data, sizeof(k_f32_data));
    gf_tensor(&gf, "output_norm.weight", 1, (const uint64_t[]) { 4 }, 1, k_f16_data, sizeof(k_f16_data));
    gf_tensor(&gf, "blk.0.attn_q.weight", 2, (const uint64_t[]) { 32, 2 }, 8, g_q8_data, sizeof(g_q8_data));
    return gf_finish(&gf);
}

// ---------------------------------------------------------------------------------------
// Helpers

// Parses a copy of (p, n) in an exactly sized heap block, so ASan sees reads past the end.
static vlc_status parse_copy(const void * p, size_t n, vlc_gguf ** out) {
    void * copy = malloc(n ? n : 1);
    if (n) { memcpy(copy, p, n); }
    vlc_status st = vlc_gguf_open_buffer(copy, n, out);
    if (st != VLC_STATUS_OK) {
        free(copy);
    }
    return st; // on success the caller frees (*out)->base after vlc_gguf_close
}

static void close_copy(vlc_gguf * g) {
    void * copy = (void *) g->base;
    vlc_gguf_close(g);
    free(copy);
}

// Expects `want` and a message containing `needle`; frees b.
#define EXPECT_FAIL(b, want, needle) expect_fail_((b), (want), (needle), __LINE__)
static void expect_fail_(wbuf b, vlc_status want, const char * needle, int line) {
    vlc_clear_error();
    vlc_gguf * g = (vlc_gguf *) &b; // must be overwritten with NULL
    vlc_status st = parse_copy(b.p, b.n, &g);
    if (st != want || g != NULL || strstr(vlc_last_error(), needle) == NULL) {
        fprintf(stderr, "line %d: expected %s with '%s', got %s, out %s, message '%s'\n", line,
                vlc_status_str(want), needle, vlc_status_str(st), g ? "set" : "NULL", vlc_last_error());
        g_failures++;
        if (st == VLC_STATUS_OK) { close_copy(g); }
    }
    free(b.p);
}

// A file whose only content is one tensor info (and `data_bytes` bytes of data).
static wbuf one_tensor(const char * name, uint32_t n_dims, const uint64_t * ne, uint32_t type,
                       uint64_t offset, size_t data_bytes) {
    gfile gf = gf_new(32);
    gf_tensor_info(&gf, name, n_dims, ne, type, offset);
    uint8_t * zeros = calloc(data_bytes ? data_bytes : 1, 1);
    w_bytes(&gf.data, zeros, data_bytes);
    free(zeros);
    return gf_finish(&gf);
}

// ---------------------------------------------------------------------------------------
// Tests

static void test_valid(const wbuf * file) {
    vlc_gguf * g = NULL;
    vlc_status st = parse_copy(file->p, file->n, &g);
    CHECK(st == VLC_STATUS_OK);
    if (st != VLC_STATUS_OK) {
        return;
    }
    CHECK(g->version == 3);
    CHECK(g->alignment == 64);
    CHECK(g->n_kv == 30);
    CHECK(g->n_tensors == 3);
    CHECK(g->data_offset % 64 == 0);
    CHECK(g->map == NULL);

    int64_t i = -1;
    CHECK(vlc_gguf_get_int(g, "v.u8", 1, &i) == VLC_STATUS_OK && i == 250);
    CHECK(vlc_gguf_get_int(g, "v.i8", 1, &i) == VLC_STATUS_OK && i == -7);
    CHECK(vlc_gguf_get_int(g, "v.u16", 1, &i) == VLC_STATUS_OK && i == 65000);
    CHECK(vlc_gguf_get_int(g, "v.i16", 1, &i) == VLC_STATUS_OK && i == -32000);
    CHECK(vlc_gguf_get_int(g, "v.u32", 1, &i) == VLC_STATUS_OK && i == 4000000000ll);
    CHECK(vlc_gguf_get_int(g, "v.i32", 1, &i) == VLC_STATUS_OK && i == -2000000000);
    CHECK(vlc_gguf_get_int(g, "v.u64", 1, &i) == VLC_STATUS_OK && i == 123);
    CHECK(vlc_gguf_get_int(g, "v.i64", 1, &i) == VLC_STATUS_OK && i == -1099511627776ll);
    i = 77;
    CHECK(vlc_gguf_get_int(g, "v.u64big", 1, &i) == VLC_STATUS_FORMAT && i == 77);
    CHECK(strstr(vlc_last_error(), "v.u64big") != NULL);
    CHECK(vlc_gguf_get_int(g, "v.f32", 1, &i) == VLC_STATUS_FORMAT);
    CHECK(strstr(vlc_last_error(), "'v.f32' has type FLOAT32") != NULL);
    CHECK(vlc_gguf_get_int(g, "v.bool1", 1, &i) == VLC_STATUS_FORMAT);
    CHECK(vlc_gguf_get_int(g, "a.i32", 1, &i) == VLC_STATUS_FORMAT);
    CHECK(strstr(vlc_last_error(), "ARRAY[INT32]") != NULL);
    i = 42;
    CHECK(vlc_gguf_get_int(g, "no.such.key", 0, &i) == VLC_STATUS_OK && i == 42);
    CHECK(vlc_gguf_get_int(g, "no.such.key", 1, &i) == VLC_STATUS_FORMAT && i == 42);
    CHECK(strstr(vlc_last_error(), "missing required key 'no.such.key'") != NULL);

    // Floats: exact binary values, so == is the right comparison.
    double f = 0.0;
    CHECK(vlc_gguf_get_float(g, "v.f32", 1, &f) == VLC_STATUS_OK && f == 0.25);
    CHECK(vlc_gguf_get_float(g, "v.f64", 1, &f) == VLC_STATUS_OK && f == -2.5e-300);
    CHECK(vlc_gguf_get_float(g, "v.i32", 1, &f) == VLC_STATUS_OK && f == -2000000000.0);
    CHECK(vlc_gguf_get_float(g, "v.u64big", 1, &f) == VLC_STATUS_OK && f == 9223372036854775808.0);
    CHECK(vlc_gguf_get_float(g, "v.str", 1, &f) == VLC_STATUS_FORMAT);
    CHECK(strstr(vlc_last_error(), "'v.str' has type STRING") != NULL);

    int bv = -1;
    CHECK(vlc_gguf_get_bool(g, "v.bool1", 1, &bv) == VLC_STATUS_OK && bv == 1);
    CHECK(vlc_gguf_get_bool(g, "v.bool0", 1, &bv) == VLC_STATUS_OK && bv == 0);
    CHECK(vlc_gguf_get_bool(g, "v.u8", 1, &bv) == VLC_STATUS_FORMAT);
    CHECK(strstr(vlc_last_error(), "expected BOOL") != NULL);

    vlc_gguf_str s = { 0 };
    CHECK(vlc_gguf_get_str(g, "general.architecture", 1, &s) == VLC_STATUS_OK && s.len == 5 &&
          memcmp(s.data, "llama", 5) == 0);
    CHECK(vlc_gguf_get_str(g, "v.str", 1, &s) == VLC_STATUS_OK && s.len == 13 &&
          memcmp(s.data, "h\xc3\xa9llo w\xc3\xb6rld", 13) == 0);
    CHECK(vlc_gguf_get_str(g, "v.str.empty", 1, &s) == VLC_STATUS_OK && s.len == 0);
    CHECK(vlc_gguf_get_str(g, "v.u32", 1, &s) == VLC_STATUS_FORMAT);
    CHECK(strstr(vlc_last_error(), "'v.u32' has type UINT32, expected STRING") != NULL);
    CHECK(vlc_gguf_get_str(g, "a.str", 1, &s) == VLC_STATUS_FORMAT);

    // Arrays
    const vlc_gguf_kv * kv;
#define ARR(key, et, count) \
    ((kv = vlc_gguf_find_kv(g, key)) != NULL && kv->type == VLC_GGUF_ARRAY && kv->arr_type == (et) && kv->n == (count))
    CHECK(ARR("a.u8", VLC_GGUF_UINT8, 2) && vlc_gguf_arr_int(kv, 0) == 1 && vlc_gguf_arr_int(kv, 1) == 255);
    CHECK(ARR("a.i8", VLC_GGUF_INT8, 2) && vlc_gguf_arr_int(kv, 0) == -128 && vlc_gguf_arr_int(kv, 1) == 127);
    CHECK(ARR("a.u16", VLC_GGUF_UINT16, 1) && vlc_gguf_arr_int(kv, 0) == 65535);
    CHECK(ARR("a.i16", VLC_GGUF_INT16, 1) && vlc_gguf_arr_int(kv, 0) == -300 && vlc_gguf_arr_float(kv, 0) == -300.0);
    CHECK(ARR("a.u32", VLC_GGUF_UINT32, 1) && vlc_gguf_arr_int(kv, 0) == 4294967295ll);
    CHECK(ARR("a.i32", VLC_GGUF_INT32, 3) && vlc_gguf_arr_int(kv, 0) == 1 && vlc_gguf_arr_int(kv, 1) == -2 &&
          vlc_gguf_arr_int(kv, 2) == 3 && vlc_gguf_arr_float(kv, 1) == -2.0);
    CHECK(vlc_gguf_arr_int(kv, 3) == 0); // out of range: 0, no read
    CHECK(ARR("a.u64", VLC_GGUF_UINT64, 2) && vlc_gguf_arr_int(kv, 0) == 7 &&
          vlc_gguf_arr_int(kv, 1) == INT64_MAX /* saturated */ && vlc_gguf_arr_float(kv, 1) == 18446744073709551616.0);
    CHECK(ARR("a.i64", VLC_GGUF_INT64, 1) && vlc_gguf_arr_int(kv, 0) == INT64_MIN);
    CHECK(ARR("a.f32", VLC_GGUF_FLOAT32, 3) && vlc_gguf_arr_float(kv, 0) == 0.5 &&
          vlc_gguf_arr_float(kv, 1) == -1.75 && vlc_gguf_arr_float(kv, 2) == (double) 3e38f &&
          vlc_gguf_arr_int(kv, 1) == -1 /* truncated toward zero */ && vlc_gguf_arr_int(kv, 2) == INT64_MAX);
    CHECK(ARR("a.f64", VLC_GGUF_FLOAT64, 2) && vlc_gguf_arr_float(kv, 0) == 1e300 && vlc_gguf_arr_float(kv, 1) == -0.1);
    CHECK(ARR("a.bool", VLC_GGUF_BOOL, 3) && kv->data[0] == 1 && kv->data[1] == 0 && kv->data[2] == 1);
    CHECK(ARR("a.str", VLC_GGUF_STRING, 3) && kv->strs != NULL && kv->strs[0].len == 1 && kv->strs[0].data[0] == 'a' &&
          kv->strs[1].len == 0 && kv->strs[2].len == 6 && memcmp(kv->strs[2].data, "tok en", 6) == 0);
    CHECK(vlc_gguf_arr_int(kv, 0) == 0); // strings are not numeric
    CHECK(ARR("a.empty", VLC_GGUF_INT32, 0));
#undef ARR
    CHECK((kv = vlc_gguf_find_kv(g, "v.i16")) != NULL && kv->n == 1 && vlc_gguf_arr_int(kv, 0) == -32000);
    CHECK(vlc_gguf_find_kv(g, "v.") == NULL);

    // Tensors
    const vlc_gguf_tensor * t = vlc_gguf_find_tensor(g, "tok_embd.weight");
    CHECK(t && t->type == 0 && t->n_dims == 2 && t->ne[0] == 3 && t->ne[1] == 2 && t->ne[2] == 1 &&
          t->ne[3] == 1 && t->nbytes == sizeof(k_f32_data) && t->offset == 0 &&
          memcmp(t->data, k_f32_data, sizeof(k_f32_data)) == 0);
    t = vlc_gguf_find_tensor(g, "output_norm.weight");
    CHECK(t && t->type == 1 && t->n_dims == 1 && t->ne[0] == 4 && t->ne[1] == 1 && t->nbytes == 8 &&
          t->offset == 64 && memcmp(t->data, k_f16_data, 8) == 0);
    t = vlc_gguf_find_tensor(g, "blk.0.attn_q.weight");
    CHECK(t && t->type == 8 && t->ne[0] == 32 && t->ne[1] == 2 && t->nbytes == 68 && t->offset == 128 &&
          memcmp(t->data, g_q8_data, 68) == 0);
    CHECK(t && (size_t) ((const uint8_t *) t->data - g->base) == g->data_offset + 128);
    CHECK(vlc_gguf_find_tensor(g, "blk.0") == NULL);
    close_copy(g);
}

static void test_type_tables(void) {
    int64_t blk = 0;
    size_t  bytes = 0;
    CHECK(vlc_ggml_type_info(12, &blk, &bytes) == 1 && blk == 256 && bytes == 144);
    CHECK(vlc_ggml_type_info(8, &blk, &bytes) == 1 && blk == 32 && bytes == 34);
    CHECK(vlc_ggml_type_info(30, &blk, &bytes) == 1 && blk == 1 && bytes == 2);
    CHECK(vlc_ggml_type_info(4, &blk, &bytes) == 0);   // removed Q4_2
    CHECK(vlc_ggml_type_info(99, &blk, &bytes) == 0);
    CHECK(strcmp(vlc_ggml_type_name(14), "Q6_K") == 0);
    CHECK(strcmp(vlc_ggml_type_name(99), "unknown") == 0);
    CHECK(strcmp(vlc_gguf_type_name(VLC_GGUF_ARRAY), "ARRAY") == 0);
    CHECK(strcmp(vlc_gguf_type_name(13), "unknown") == 0);
}

// Every proper prefix of a valid file is an error with a message, never a crash.
static void test_truncations(const wbuf * file) {
    int bad = 0;
    for (size_t n = 0; n < file->n; n++) {
        vlc_clear_error();
        vlc_gguf * g = NULL;
        vlc_status st = parse_copy(file->p, n, &g);
        if (st != VLC_STATUS_FORMAT || g != NULL || vlc_last_error()[0] == '\0') {
            if (bad++ < 5) {
                fprintf(stderr, "prefix of %zu / %zu bytes: %s '%s'\n", n, file->n, vlc_status_str(st), vlc_last_error());
            }
            if (st == VLC_STATUS_OK) { close_copy(g); }
        }
    }
    CHECK(bad == 0);
}

static void test_header_errors(const wbuf * valid) {
    wbuf b = { 0 };
    w_bytes(&b, valid->p, valid->n);
    memcpy(b.p, "GGUX", 4);
    EXPECT_FAIL(b, VLC_STATUS_FORMAT, "magic");

    const uint32_t versions[3] = { 1, 4, 0x03000000 }; // the last is 3 written big-endian
    const vlc_status want[3] = { VLC_STATUS_UNSUPPORTED, VLC_STATUS_UNSUPPORTED, VLC_STATUS_FORMAT };
    const char * needle[3] = { "version 1 ", "version 4 ", "big-endian" };
    for (int k = 0; k < 3; k++) {
        wbuf v = { 0 };
        w_bytes(&v, valid->p, valid->n);
        memcpy(v.p + 4, &versions[k], 4);
        EXPECT_FAIL(v, want[k], needle[k]);
    }

    // version 2 has the v3 layout and is accepted
    gfile gf = gf_new(32);
    gf.version = 2;
    w_u32(gf_key(&gf, "x", VLC_GGUF_UINT32), 5);
    wbuf v2 = gf_finish(&gf);
    vlc_gguf * g = NULL;
    CHECK(parse_copy(v2.p, v2.n, &g) == VLC_STATUS_OK && g->version == 2 && g->alignment == 32 && g->n_tensors == 0);
    if (g) { close_copy(g); }
    free(v2.p);

    // counts far beyond the file: rejected before any allocation (ASan would abort on a huge one)
    gf = gf_new(32);
    b = gf_finish(&gf);
    uint64_t huge = 1ull << 60;
    memcpy(b.p + 16, &huge, 8);
    EXPECT_FAIL(b, VLC_STATUS_FORMAT, "metadata count 1152921504606846976");
    gf = gf_new(32);
    b = gf_finish(&gf);
    memcpy(b.p + 8, &huge, 8);
    EXPECT_FAIL(b, VLC_STATUS_FORMAT, "tensor count 1152921504606846976");
}

static void test_metadata_errors(void) {
    gfile gf;
    wbuf * b;

    // key string length 2^60
    gf = gf_new(32);
    gf.n_kv = 1;
    w_u64(&gf.kv, 1ull << 60);
    w_bytes(&gf.kv, "abcdefghijklmnop", 16); // enough bytes left for the count check to pass
    EXPECT_FAIL(gf_finish(&gf), VLC_STATUS_FORMAT, "needs 1152921504606846976 bytes");

    // string value length 2^60
    gf = gf_new(32);
    b = gf_key(&gf, "s", VLC_GGUF_STRING);
    w_u64(b, 1ull << 60);
    EXPECT_FAIL(gf_finish(&gf), VLC_STATUS_FORMAT, "value of key 's'");

    // array counts 2^60 (fixed-size and string elements)
    gf = gf_new(32);
    b = gf_key(&gf, "arr", VLC_GGUF_ARRAY); w_u32(b, VLC_GGUF_INT32); w_u64(b, 1ull << 60); w_u32(b, 0);
    EXPECT_FAIL(gf_finish(&gf), VLC_STATUS_FORMAT, "key 'arr': 1152921504606846976 INT32 values");
    gf = gf_new(32);
    b = gf_key(&gf, "toks", VLC_GGUF_ARRAY); w_u32(b, VLC_GGUF_STRING); w_u64(b, 1ull << 60); w_str(b, "a");
    EXPECT_FAIL(gf_finish(&gf), VLC_STATUS_FORMAT, "key 'toks': 1152921504606846976 strings");

    gf = gf_new(32);
    b = gf_key(&gf, "nest", VLC_GGUF_ARRAY); w_u32(b, VLC_GGUF_ARRAY); w_u64(b, 1);
    w_u32(b, VLC_GGUF_INT32); w_u64(b, 1); w_u32(b, 5);
    EXPECT_FAIL(gf_finish(&gf), VLC_STATUS_FORMAT, "key 'nest': nested arrays");

    gf = gf_new(32);
    b = gf_key(&gf, "t.bool", VLC_GGUF_BOOL); w_u8(b, 2);
    EXPECT_FAIL(gf_finish(&gf), VLC_STATUS_FORMAT, "key 't.bool': bool 0 at offset");
    gf = gf_new(32);
    b = gf_key(&gf, "t.bools", VLC_GGUF_ARRAY); w_u32(b, VLC_GGUF_BOOL); w_u64(b, 3);
    w_u8(b, 1); w_u8(b, 0); w_u8(b, 7);
    EXPECT_FAIL(gf_finish(&gf), VLC_STATUS_FORMAT, "bool 2 at offset");

    gf = gf_new(32);
    w_u32(gf_key(&gf, "dup", VLC_GGUF_UINT32), 1);
    w_u32(gf_key(&gf, "other", VLC_GGUF_UINT32), 1);
    w_u32(gf_key(&gf, "dup", VLC_GGUF_UINT32), 2);
    EXPECT_FAIL(gf_finish(&gf), VLC_STATUS_FORMAT, "duplicate key 'dup'");

    gf = gf_new(32);
    w_u32(gf_key(&gf, "", VLC_GGUF_UINT32), 1);
    EXPECT_FAIL(gf_finish(&gf), VLC_STATUS_FORMAT, "is empty");

    gf = gf_new(32);
    w_u32(gf_key(&gf, "t.weird", 13), 1);
    EXPECT_FAIL(gf_finish(&gf), VLC_STATUS_FORMAT, "key 't.weird': unknown value type 13");
    gf = gf_new(32);
    b = gf_key(&gf, "t.weird", VLC_GGUF_ARRAY); w_u32(b, 42); w_u64(b, 0);
    EXPECT_FAIL(gf_finish(&gf), VLC_STATUS_FORMAT, "unknown array element type 42");

    // general.alignment: UINT32 power of two only
    gf = gf_new(32);
    w_u32(gf_key(&gf, "general.alignment", VLC_GGUF_UINT32), 48);
    EXPECT_FAIL(gf_finish(&gf), VLC_STATUS_FORMAT, "'general.alignment' is 48, not a power of two");
    gf = gf_new(32);
    w_u32(gf_key(&gf, "general.alignment", VLC_GGUF_UINT32), 0);
    EXPECT_FAIL(gf_finish(&gf), VLC_STATUS_FORMAT, "not a power of two");
    gf = gf_new(32);
    w_u64(gf_key(&gf, "general.alignment", VLC_GGUF_UINT64), 32);
    EXPECT_FAIL(gf_finish(&gf), VLC_STATUS_FORMAT, "'general.alignment' has type UINT64, expected UINT32");
}

static void test_tensor_errors(void) {
    EXPECT_FAIL(one_tensor("w", 1, (const uint64_t[]) { 8 }, 0, 0, 16), VLC_STATUS_FORMAT,
                "tensor 'w' data [");
    EXPECT_FAIL(one_tensor("w", 1, (const uint64_t[]) { 4 }, 0, 32, 16), VLC_STATUS_FORMAT,
                "extends past the end of the file");
    EXPECT_FAIL(one_tensor("w", 1, (const uint64_t[]) { 4 }, 0, UINT64_MAX - 31, 16), VLC_STATUS_FORMAT,
                "extends past the end of the file");
    EXPECT_FAIL(one_tensor("w", 1, (const uint64_t[]) { 1ull << 62 }, 0, 0, 16), VLC_STATUS_FORMAT,
                "tensor 'w' has absurd dimensions [4611686018427387904, 1, 1, 1]");
    EXPECT_FAIL(one_tensor("w", 3, (const uint64_t[]) { 1u << 31, 1u << 31, 1u << 31 }, 24, 0, 16),
                VLC_STATUS_FORMAT, "absurd dimensions");
    EXPECT_FAIL(one_tensor("w", 2, (const uint64_t[]) { 4, 0 }, 0, 0, 16), VLC_STATUS_FORMAT, "absurd dimensions");
    EXPECT_FAIL(one_tensor("w", 1, (const uint64_t[]) { UINT64_MAX }, 0, 0, 16), VLC_STATUS_FORMAT, "absurd");
    EXPECT_FAIL(one_tensor("w", 1, (const uint64_t[]) { 4 }, 99, 0, 16), VLC_STATUS_UNSUPPORTED,
                "tensor 'w' has unknown type 99");
    EXPECT_FAIL(one_tensor("w", 1, (const uint64_t[]) { 16 }, 8, 0, 34), VLC_STATUS_FORMAT,
                "ne[0] = 16 is not a multiple of the Q8_0 block size 32");
    EXPECT_FAIL(one_tensor("w", 1, (const uint64_t[]) { 4 }, 0, 4, 32), VLC_STATUS_FORMAT,
                "offset 4, not a multiple of the alignment 32");
    EXPECT_FAIL(one_tensor("w", 0, NULL, 0, 0, 16), VLC_STATUS_FORMAT, "n_dims = 0");
    EXPECT_FAIL(one_tensor("w", 5, (const uint64_t[]) { 1, 1, 1, 1, 1 }, 0, 0, 16), VLC_STATUS_FORMAT, "n_dims = 5");
    char name[65];
    memset(name, 'n', 64);
    name[64] = '\0';
    EXPECT_FAIL(one_tensor(name, 1, (const uint64_t[]) { 4 }, 0, 0, 16), VLC_STATUS_FORMAT, "is 64 bytes");
    EXPECT_FAIL(one_tensor("", 1, (const uint64_t[]) { 4 }, 0, 0, 16), VLC_STATUS_FORMAT, "name ''");

    // 63-byte name, every valid ggml type in a 4-d tensor: accepted
    name[63] = '\0';
    wbuf ok = one_tensor(name, 4, (const uint64_t[]) { 256, 2, 1, 3 }, 12, 0, 6 * 144);
    vlc_gguf * g = NULL;
    CHECK(parse_copy(ok.p, ok.n, &g) == VLC_STATUS_OK);
    if (g) {
        const vlc_gguf_tensor * t = vlc_gguf_find_tensor(g, name);
        CHECK(t && t->n_dims == 4 && t->ne[3] == 3 && t->nbytes == 6 * 144 && g->data_offset % 32 == 0);
        close_copy(g);
    }
    free(ok.p);

    gfile gf = gf_new(32);
    float x[4] = { 0 };
    gf_tensor(&gf, "w", 1, (const uint64_t[]) { 4 }, 0, x, sizeof(x));
    gf_tensor(&gf, "v", 1, (const uint64_t[]) { 4 }, 0, x, sizeof(x));
    gf_tensor(&gf, "w", 1, (const uint64_t[]) { 4 }, 0, x, sizeof(x));
    EXPECT_FAIL(gf_finish(&gf), VLC_STATUS_FORMAT, "duplicate tensor name 'w'");
}

static void test_disk(const wbuf * valid) {
    const char * tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char path[512];
    snprintf(path, sizeof(path), "%s/test_gguf_XXXXXX", tmp);
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) {
        return;
    }
    CHECK(write(fd, valid->p, valid->n) == (ssize_t) valid->n);
    close(fd);

    vlc_gguf * g = NULL;
    CHECK(vlc_gguf_open(path, &g) == VLC_STATUS_OK);
    if (g) {
        const vlc_gguf_tensor * t = vlc_gguf_find_tensor(g, "blk.0.attn_q.weight");
        CHECK(g->map != NULL && g->size == valid->n && g->n_kv == 30 && g->n_tensors == 3);
        CHECK(t && t->nbytes == 68 && memcmp(t->data, g_q8_data, 68) == 0);
        CHECK((uintptr_t) t->data % 64 == 0); // mmap is page-aligned, so file alignment carries over
        int64_t v = 0;
        CHECK(vlc_gguf_get_int(g, "v.u32", 1, &v) == VLC_STATUS_OK && v == 4000000000ll);
        vlc_gguf_close(g);
    }

    // truncated file on disk: FORMAT, message names the path
    CHECK(truncate(path, 100) == 0);
    g = (vlc_gguf *) valid;
    CHECK(vlc_gguf_open(path, &g) == VLC_STATUS_FORMAT && g == NULL);
    CHECK(strstr(vlc_last_error(), path) != NULL);
    CHECK(truncate(path, 0) == 0);
    CHECK(vlc_gguf_open(path, &g) == VLC_STATUS_FORMAT && g == NULL);
    CHECK(strstr(vlc_last_error(), "empty") != NULL);
    unlink(path);

    CHECK(vlc_gguf_open(path, &g) == VLC_STATUS_IO && g == NULL);
    CHECK(strstr(vlc_last_error(), path) != NULL);
    CHECK(vlc_gguf_open(tmp, &g) == VLC_STATUS_IO && g == NULL); // a directory
    CHECK(vlc_gguf_open_buffer(valid->p, valid->n, NULL) == VLC_STATUS_INVALID_ARG);
    CHECK(vlc_gguf_open_buffer(NULL, 10, &g) == VLC_STATUS_INVALID_ARG && g == NULL);
}

// Random corruption: whatever the bytes, the status is OK / FORMAT / UNSUPPORTED and, when
// the file parses, everything it points to is readable (ASan checks the reads).
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static void touch_all(const vlc_gguf * g) {
    volatile uint64_t sink = 0;
    for (int64_t k = 0; k < g->n_kv; k++) {
        const vlc_gguf_kv * kv = &g->kv[k];
        int64_t i; double f; int b; vlc_gguf_str s;
        vlc_gguf_get_int(g, kv->key, 1, &i);
        vlc_gguf_get_float(g, kv->key, 1, &f);
        vlc_gguf_get_bool(g, kv->key, 1, &b);
        vlc_gguf_get_str(g, kv->key, 1, &s);
        for (uint64_t e = 0; e < kv->n; e++) {
            sink += (uint64_t) vlc_gguf_arr_int(kv, e) + (uint64_t) vlc_gguf_arr_float(kv, e);
            if (kv->strs && kv->strs[e].len) {
                sink += (uint8_t) kv->strs[e].data[0] + (uint8_t) kv->strs[e].data[kv->strs[e].len - 1];
            }
        }
    }
    for (int64_t k = 0; k < g->n_tensors; k++) {
        const uint8_t * p = g->tensors[k].data;
        for (size_t j = 0; j < g->tensors[k].nbytes; j++) { sink += p[j]; }
    }
    (void) sink;
}

static void test_fuzz(const wbuf * valid, int iterations) {
    int n_ok = 0, n_err = 0, bad = 0;
    uint8_t * buf = malloc(valid->n);
    for (int it = 0; it < iterations; it++) {
        memcpy(buf, valid->p, valid->n);
        const int n_flips = 1 + (int) (rng_next() % 4);
        for (int k = 0; k < n_flips; k++) {
            const size_t pos = rng_next() % valid->n;
            switch (rng_next() % 3) {
                case 0: buf[pos] ^= (uint8_t) (1u << (rng_next() % 8)); break;
                case 1: buf[pos] = (uint8_t) rng_next(); break;
                default: // a run of 0xFF: huge lengths and counts
                    for (size_t j = pos; j < valid->n && j < pos + 1 + rng_next() % 8; j++) { buf[j] = 0xFF; }
            }
        }
        vlc_clear_error();
        vlc_gguf * g = NULL;
        vlc_status st = parse_copy(buf, valid->n, &g);
        if (st == VLC_STATUS_OK) {
            n_ok++;
            touch_all(g);
            close_copy(g);
        } else {
            n_err++;
            if ((st != VLC_STATUS_FORMAT && st != VLC_STATUS_UNSUPPORTED) || g != NULL || !vlc_last_error()[0]) {
                if (bad++ < 5) { fprintf(stderr, "fuzz %d: %s '%s'\n", it, vlc_status_str(st), vlc_last_error()); }
            }
        }
    }
    free(buf);
    CHECK(bad == 0);
    CHECK(n_ok > 0 && n_err > 0); // both outcomes occur, so the loop exercised both paths
    printf("fuzz: %d iterations, %d parsed, %d rejected\n", iterations, n_ok, n_err);
}

// ---------------------------------------------------------------------------------------

static int dump(const char * path) {
    vlc_gguf * g = NULL;
    if (vlc_gguf_open(path, &g) != VLC_STATUS_OK) {
        fprintf(stderr, "%s\n", vlc_last_error());
        return 1;
    }
    printf("version %u, alignment %u, data at %zu, %" PRId64 " kv, %" PRId64 " tensors\n", g->version,
           g->alignment, g->data_offset, g->n_kv, g->n_tensors);
    for (int64_t k = 0; k < g->n_kv; k++) {
        const vlc_gguf_kv * kv = &g->kv[k];
        printf("  %-40s %-8s", kv->key, vlc_gguf_type_name(kv->type));
        if (kv->type == VLC_GGUF_STRING) {
            printf(" '%.*s'\n", (int) kv->strs[0].len, kv->strs[0].data);
        } else if (kv->type == VLC_GGUF_ARRAY) {
            printf(" [%s x %" PRIu64 "]", vlc_gguf_type_name(kv->arr_type), kv->n);
            for (uint64_t e = 0; e < kv->n && e < 4; e++) {
                if (kv->arr_type == VLC_GGUF_STRING) { printf(" '%.*s'", (int) kv->strs[e].len, kv->strs[e].data); }
                else { printf(" %g", vlc_gguf_arr_float(kv, e)); }
            }
            printf("\n");
        } else if (kv->type == VLC_GGUF_BOOL) {
            printf(" %d\n", kv->data[0]);
        } else {
            printf(" %.17g\n", vlc_gguf_arr_float(kv, 0));
        }
    }
    for (int64_t k = 0; k < g->n_tensors; k++) {
        const vlc_gguf_tensor * t = &g->tensors[k];
        printf("  %-40s %-6s [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64 "] offset %" PRIu64 " bytes %zu\n",
               t->name, vlc_ggml_type_name(t->type), t->ne[0], t->ne[1], t->ne[2], t->ne[3], t->offset, t->nbytes);
    }
    vlc_gguf_close(g);
    return 0;
}

int main(int argc, char ** argv) {
    if (argc > 1) {
        return dump(argv[1]);
    }
    wbuf valid = build_valid();
    test_valid(&valid);
    test_type_tables();
    test_truncations(&valid);
    test_header_errors(&valid);
    test_metadata_errors();
    test_tensor_errors();
    test_disk(&valid);
    test_fuzz(&valid, 4000);
    free(valid.p);
    if (g_failures) {
        fprintf(stderr, "test_gguf: %d failure(s)\n", g_failures);
        return 1;
    }
    printf("test_gguf: all passed (file of %zu bytes)\n", valid.n);
    return 0;
}
