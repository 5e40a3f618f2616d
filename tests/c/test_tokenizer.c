// test_tokenizer.c: unit tests of the SPM tokenizer (native/src/tokenizer.c) on a tiny
// hand-made vocabulary, so every expected id below can be worked out by hand.
//
// Builds a GGUF in memory (tokenizer.ggml.* keys only), loads it with vlc_gguf_open_buffer
// and vlc_vocab_load, and checks: merge order (score, then leftmost), byte fallback,
// special tokens with parse_special on and off, user-defined tokens, the space prefix
// after specials, empty text, BUFFER_TOO_SMALL counts, detokenize / token_to_piece rules,
// EOG, duplicate texts, and the load errors. Comparison with Hugging Face on a trained
// vocabulary lives in tests/python/test_tokenizer.py. Meant to also run under ASan/UBSan.
#include "error.h"
#include "gguf.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_failures = 0;

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: '%s')\n", __FILE__, __LINE__, \
                    #cond, vlc_last_error());                                                  \
            g_failures++;                                                                      \
        }                                                                                      \
    } while (0)

// ---------------------------------------------------------------------------
// a minimal GGUF writer (metadata only)

#include "gguf_bytes.h"

static void kv_str(wbuf * b, const char * key, const char * val) {
    w_str(b, key); w_u32(b, VLC_GGUF_STRING); w_str(b, val); b->n_kv++;
}
static void kv_u32(wbuf * b, const char * key, uint32_t val) {
    w_str(b, key); w_u32(b, VLC_GGUF_UINT32); w_u32(b, val); b->n_kv++;
}
static void kv_bool(wbuf * b, const char * key, int val) {
    uint8_t v = (uint8_t) (val != 0);
    w_str(b, key); w_u32(b, VLC_GGUF_BOOL); w_bytes(b, &v, 1); b->n_kv++;
}
static void kv_arr_str(wbuf * b, const char * key, const char * const * vals, int n) {
    w_str(b, key); w_u32(b, VLC_GGUF_ARRAY); w_u32(b, VLC_GGUF_STRING); w_u64(b, (uint64_t) n);
    for (int i = 0; i < n; i++) { w_str(b, vals[i]); }
    b->n_kv++;
}
static void kv_arr_f32(wbuf * b, const char * key, const float * vals, int n) {
    w_str(b, key); w_u32(b, VLC_GGUF_ARRAY); w_u32(b, VLC_GGUF_FLOAT32); w_u64(b, (uint64_t) n);
    w_bytes(b, vals, sizeof(float) * (size_t) n);
    b->n_kv++;
}
static void kv_arr_i32(wbuf * b, const char * key, const int32_t * vals, int n) {
    w_str(b, key); w_u32(b, VLC_GGUF_ARRAY); w_u32(b, VLC_GGUF_INT32); w_u64(b, (uint64_t) n);
    w_bytes(b, vals, sizeof(int32_t) * (size_t) n);
    b->n_kv++;
}

// header + metadata, padded to the default alignment (no tensors)
static wbuf finish(wbuf * meta) {
    wbuf f = { 0 };
    w_bytes(&f, "GGUF", 4);
    w_u32(&f, 3);
    w_u64(&f, 0);
    w_u64(&f, meta->n_kv);
    w_bytes(&f, meta->p, meta->n);
    while (f.n % 32) { uint8_t z = 0; w_bytes(&f, &z, 1); }
    free(meta->p);
    return f;
}

// ---------------------------------------------------------------------------
// the test vocabulary
//
// id    text       type          score
// 0     <unk>      UNKNOWN       0
// 1     <s>        CONTROL       0
// 2     </s>       CONTROL       0
// 3     <image>    USER_DEFINED  0
// 4+b   <0xBB>     BYTE          0        (b = 0..255)
// 260   ▁          NORMAL        -100
// 261.. a b c      NORMAL        -1 -2 -3
// 264   ab         NORMAL        -10
// 265   bc         NORMAL        -5
// 266   aa         NORMAL        -7
// 267   ▁a         NORMAL        -20
// 268   ▁b         NORMAL        -30
// 269   ▁▁         NORMAL        -50
// 270   a          NORMAL        -60      (duplicate text: lookups find 261)
// 271   <|im_end|> CONTROL       0        (an end-of-generation text)

enum { N_TOK = 272, T_SP = 260, T_A = 261, T_B = 262, T_C = 263, T_AB = 264, T_BC = 265, T_AA = 266,
       T_SPA = 267, T_SPB = 268, T_SPSP = 269 };

#define SP "\xE2\x96\x81"

typedef struct vocab_opts {
    const char * model;      // tokenizer.ggml.model
    int          n_scores;   // entries written to tokenizer.ggml.scores
    uint32_t     bos;        // tokenizer.ggml.bos_token_id
    int          bad_byte;   // make token 261 a BYTE token (its text is not <0xNN>)
    int          add_space_prefix;
} vocab_opts;

static vocab_opts default_opts(void) {
    return (vocab_opts) { "llama", N_TOK, 1, 0, 1 };
}

static wbuf build_vocab(vocab_opts o) {
    static char bytes[256][8];
    const char * text[N_TOK];
    float   score[N_TOK];
    int32_t type[N_TOK];
    text[0] = "<unk>";   type[0] = VLC_TOKEN_UNKNOWN;      score[0] = 0;
    text[1] = "<s>";     type[1] = VLC_TOKEN_CONTROL;      score[1] = 0;
    text[2] = "</s>";    type[2] = VLC_TOKEN_CONTROL;      score[2] = 0;
    text[3] = "<image>"; type[3] = VLC_TOKEN_USER_DEFINED; score[3] = 0;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof(bytes[b]), "<0x%02X>", b);
        text[4 + b] = bytes[b]; type[4 + b] = VLC_TOKEN_BYTE; score[4 + b] = 0;
    }
    static const char * const normal[] = { SP, "a", "b", "c", "ab", "bc", "aa", SP "a", SP "b", SP SP, "a" };
    static const float normal_score[] = { -100, -1, -2, -3, -10, -5, -7, -20, -30, -50, -60 };
    for (int i = 0; i < 11; i++) {
        text[T_SP + i] = normal[i]; type[T_SP + i] = VLC_TOKEN_NORMAL; score[T_SP + i] = normal_score[i];
    }
    text[271] = "<|im_end|>"; type[271] = VLC_TOKEN_CONTROL; score[271] = 0;
    if (o.bad_byte) {
        type[T_A] = VLC_TOKEN_BYTE;
    }

    wbuf m = { 0 };
    kv_str(&m, "general.architecture", "llama");
    kv_str(&m, "tokenizer.ggml.model", o.model);
    kv_arr_str(&m, "tokenizer.ggml.tokens", text, N_TOK);
    kv_arr_f32(&m, "tokenizer.ggml.scores", score, o.n_scores);
    kv_arr_i32(&m, "tokenizer.ggml.token_type", type, N_TOK);
    kv_u32(&m, "tokenizer.ggml.bos_token_id", o.bos);
    kv_u32(&m, "tokenizer.ggml.eos_token_id", 2);
    kv_u32(&m, "tokenizer.ggml.unknown_token_id", 0);
    kv_bool(&m, "tokenizer.ggml.add_bos_token", 1);
    kv_bool(&m, "tokenizer.ggml.add_eos_token", 0);
    kv_bool(&m, "tokenizer.ggml.add_space_prefix", o.add_space_prefix);
    return finish(&m);
}

// Loads a vocabulary; returns the status and keeps the file buffer in *file.
static vlc_status load(vocab_opts o, wbuf * file, vlc_gguf ** g, vlc_vocab ** v) {
    *file = build_vocab(o);
    *v = NULL;
    vlc_status st = vlc_gguf_open_buffer(file->p, file->n, g);
    if (st != VLC_STATUS_OK) {
        return st;
    }
    return vlc_vocab_load(*g, v);
}

// ---------------------------------------------------------------------------
// helpers

static int tok_eq(const vlc_vocab * v, const char * text, int add_bos, int parse_special,
                  const int32_t * want, int n_want) {
    int32_t out[64];
    int32_t n = -1;
    vlc_status st = vlc_vocab_tokenize(v, text, strlen(text), add_bos, parse_special, out, 64, &n);
    int ok = st == VLC_STATUS_OK && n == n_want && memcmp(out, want, sizeof(int32_t) * (size_t) n_want) == 0;
    if (!ok) {
        fprintf(stderr, "tokenize('%s', bos=%d, special=%d): status %d, got", text, add_bos, parse_special, st);
        for (int i = 0; i < n && i < 64; i++) { fprintf(stderr, " %d", out[i]); }
        fprintf(stderr, ", want");
        for (int i = 0; i < n_want; i++) { fprintf(stderr, " %d", want[i]); }
        fprintf(stderr, "\n");
    }
    return ok;
}

static int detok_eq(const vlc_vocab * v, const int32_t * ids, int n, int remove_special, int unparse_special,
                    const char * want) {
    char buf[256];
    int32_t n_out = -1;
    vlc_status st = vlc_vocab_detokenize(v, ids, n, remove_special, unparse_special, buf, sizeof(buf), &n_out);
    int ok = st == VLC_STATUS_OK && n_out == (int32_t) strlen(want) && memcmp(buf, want, strlen(want)) == 0;
    if (!ok) {
        fprintf(stderr, "detokenize: status %d, got '%.*s', want '%s'\n", st, n_out > 0 ? n_out : 0, buf, want);
    }
    return ok;
}

#define IDS(...) ((const int32_t[]) { __VA_ARGS__ }), (int) (sizeof((const int32_t[]) { __VA_ARGS__ }) / sizeof(int32_t))

// ---------------------------------------------------------------------------
// tests

static void test_tokenize(const vlc_vocab * v) {
    // "▁abc": bc (-5) beats ab (-10), then ▁a (-20); "abc" is no token
    CHECK(tok_eq(v, "abc", 1, 1, IDS(1, T_SPA, T_BC)));
    // "▁aaa": the two equal "aa" pairs: the leftmost merges; "▁a" is then stale
    CHECK(tok_eq(v, "aaa", 0, 1, IDS(T_SP, T_AA, T_A)));
    // byte fallback for a character not in the vocabulary: é = C3 A9
    CHECK(tok_eq(v, "\xC3\xA9", 0, 1, IDS(T_SP, 4 + 0xC3, 4 + 0xA9)));
    // a leading space: "▁▁a" -> "▁a" (-20) before "▁▁" (-50)
    CHECK(tok_eq(v, " a", 0, 1, IDS(T_SP, T_SPA)));
    CHECK(tok_eq(v, "a b", 0, 1, IDS(T_SPA, T_SPB)));
    // special tokens: each text fragment gets the space prefix
    CHECK(tok_eq(v, "a<s>b", 0, 1, IDS(T_SPA, 1, T_SPB)));
    CHECK(tok_eq(v, "<s></s>", 0, 1, IDS(1, 2)));
    CHECK(tok_eq(v, "a<s>", 1, 1, IDS(1, T_SPA, 1)));
    // parse_special off: "<s>" is text (bytes), the user-defined token still matches
    CHECK(tok_eq(v, "a<s>b", 0, 0, IDS(T_SPA, 4 + '<', 4 + 's', 4 + '>', T_B)));
    CHECK(tok_eq(v, "a<image>", 0, 0, IDS(T_SPA, 3)));
    CHECK(tok_eq(v, "<unk>", 0, 1, IDS(0)));
    // a broken special text is plain text
    CHECK(tok_eq(v, "<s", 0, 1, IDS(T_SP, 4 + '<', 4 + 's')));
    // empty text
    CHECK(tok_eq(v, "", 1, 1, IDS(1)));
    int32_t n = -1;
    CHECK(vlc_vocab_tokenize(v, "", 0, 0, 1, NULL, 0, &n) == VLC_STATUS_OK && n == 0);
    // NUL bytes are text too (length-delimited)
    int32_t out[8];
    CHECK(vlc_vocab_tokenize(v, "a\0b", 3, 0, 1, out, 8, &n) == VLC_STATUS_OK && n == 3 &&
          out[0] == T_SPA && out[1] == 4 && out[2] == T_B);
}

// Text that is not UTF-8: a lead byte without its continuation bytes is one byte token
// and leaves the next character alone, so the text comes back byte for byte (a stray 0xC3
// before a space used to take the first byte of its "▁": bytes E2 96 81 came back).
static void test_invalid_utf8(const vlc_vocab * v) {
    CHECK(tok_eq(v, "\xC3 a", 0, 0, IDS(T_SP, 4 + 0xC3, T_SPA)));
    CHECK(tok_eq(v, "a\xE2\x96 b", 0, 0, IDS(T_SPA, 4 + 0xE2, 4 + 0x96, T_SPB)));
    CHECK(tok_eq(v, "\xF0\xC3\xA9", 0, 0, IDS(T_SP, 4 + 0xF0, 4 + 0xC3, 4 + 0xA9)));
    static const char * const texts[] = { "\xC3 a", " \xC3\xA9\xC3 \xC3\xA9", "\xE2\x96 \xE2\x96", "b\xF4\x80 c" };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        int32_t ids[64], n = 0, n_out = 0;
        char    out[64];
        const size_t len = strlen(texts[i]);
        CHECK(vlc_vocab_tokenize(v, texts[i], len, 1, 0, ids, 64, &n) == VLC_STATUS_OK);
        CHECK(vlc_vocab_detokenize(v, ids, n, 1, 0, out, 64, &n_out) == VLC_STATUS_OK);
        CHECK((size_t) n_out == len && memcmp(out, texts[i], len) == 0);
    }
}

static void test_buffers(const vlc_vocab * v) {
    int32_t out[2] = { -7, -7 };
    int32_t n = -1;
    CHECK(vlc_vocab_tokenize(v, "abc", 3, 1, 1, out, 1, &n) == VLC_STATUS_BUFFER_TOO_SMALL && n == 3);
    CHECK(vlc_vocab_tokenize(v, "abc", 3, 1, 1, NULL, 0, &n) == VLC_STATUS_BUFFER_TOO_SMALL && n == 3);
    CHECK(out[1] == -7); // nothing past cap was written
    CHECK(vlc_vocab_tokenize(v, "abc", 3, 1, 1, out, -1, &n) == VLC_STATUS_INVALID_ARG);
    CHECK(vlc_vocab_tokenize(v, NULL, 3, 1, 1, out, 2, &n) == VLC_STATUS_INVALID_ARG);

    char buf[4] = { 'x', 'x', 'x', 'x' };
    CHECK(vlc_vocab_token_to_piece(v, T_SPA, 0, buf, 1, &n) == VLC_STATUS_BUFFER_TOO_SMALL && n == 2);
    CHECK(buf[1] == 'x');
    CHECK(vlc_vocab_token_to_piece(v, T_SPA, 0, buf, 2, &n) == VLC_STATUS_OK && n == 2 && memcmp(buf, " a", 2) == 0);
    const int32_t ids[] = { 1, T_SPA, T_BC };
    CHECK(vlc_vocab_detokenize(v, ids, 3, 1, 0, buf, 2, &n) == VLC_STATUS_BUFFER_TOO_SMALL && n == 3);
    CHECK(vlc_vocab_detokenize(v, ids, 3, 1, 0, NULL, 0, &n) == VLC_STATUS_BUFFER_TOO_SMALL && n == 3);
}

static void test_pieces(const vlc_vocab * v) {
    char buf[16];
    int32_t n = -1;
    CHECK(vlc_vocab_token_to_piece(v, 4 + 0xC3, 0, buf, 16, &n) == VLC_STATUS_OK && n == 1 && (uint8_t) buf[0] == 0xC3);
    CHECK(vlc_vocab_token_to_piece(v, 1, 0, buf, 16, &n) == VLC_STATUS_OK && n == 0);
    CHECK(vlc_vocab_token_to_piece(v, 1, 1, buf, 16, &n) == VLC_STATUS_OK && n == 3 && memcmp(buf, "<s>", 3) == 0);
    CHECK(vlc_vocab_token_to_piece(v, 3, 0, buf, 16, &n) == VLC_STATUS_OK && n == 7);
    CHECK(vlc_vocab_token_to_piece(v, T_SPSP, 0, buf, 16, &n) == VLC_STATUS_OK && n == 2 && memcmp(buf, "  ", 2) == 0);
    CHECK(vlc_vocab_token_to_piece(v, N_TOK, 0, buf, 16, &n) == VLC_STATUS_INVALID_ARG);
    CHECK(strstr(vlc_last_error(), "272") != NULL);
    CHECK(vlc_vocab_token_to_piece(v, -1, 0, buf, 16, &n) == VLC_STATUS_INVALID_ARG);
}

static void test_detokenize(const vlc_vocab * v) {
    CHECK(detok_eq(v, IDS(1, T_SPA, T_BC), 1, 0, "abc"));         // BOS and prefix space gone
    CHECK(detok_eq(v, IDS(1, T_SPA, T_BC), 0, 1, "<s> abc"));     // HF skip_special_tokens=False
    CHECK(detok_eq(v, IDS(1, T_SPA, T_BC), 0, 0, "abc"));         // control text empty, space stripped
    CHECK(detok_eq(v, IDS(T_SPA, 1, T_SPB), 1, 1, "a<s> b"));
    CHECK(detok_eq(v, IDS(T_SP, 4 + 0xC3, 4 + 0xA9), 1, 0, "\xC3\xA9"));
    CHECK(detok_eq(v, IDS(T_SP, T_SPA), 1, 0, " a"));             // only one space is stripped
    CHECK(detok_eq(v, IDS(1, 2, T_SPA), 1, 0, "a"));              // strip applies to the first byte out
    CHECK(detok_eq(v, IDS(4 + ' ', T_A), 1, 0, "a"));             // a space from a byte token counts too
    CHECK(detok_eq(v, IDS(3, T_SPA), 1, 0, "<image> a"));         // user defined: literal
    CHECK(detok_eq(v, IDS(0), 1, 1, "<unk>"));
    int32_t n = -1;
    char buf[4];
    CHECK(vlc_vocab_detokenize(v, NULL, 0, 1, 0, buf, 4, &n) == VLC_STATUS_OK && n == 0);
    const int32_t bad[] = { T_A, 5000 };
    CHECK(vlc_vocab_detokenize(v, bad, 2, 1, 0, buf, 4, &n) == VLC_STATUS_INVALID_ARG);
    CHECK(strstr(vlc_last_error(), "5000") != NULL);
}

static void test_misc(const vlc_vocab * v) {
    CHECK(vlc_vocab_n_tokens(v) == N_TOK);
    CHECK(vlc_vocab_bos(v) == 1 && vlc_vocab_eos(v) == 2 && vlc_vocab_add_bos(v) == 1);
    CHECK(vlc_vocab_is_eog(v, 2) && vlc_vocab_is_eog(v, 271));
    CHECK(!vlc_vocab_is_eog(v, 1) && !vlc_vocab_is_eog(v, T_A) && !vlc_vocab_is_eog(v, -1));
    CHECK(vlc_vocab_find(v, "a", 1) == T_A);            // duplicate text: the first id
    CHECK(vlc_vocab_find(v, SP "a", 4) == T_SPA);
    CHECK(vlc_vocab_find(v, "zz", 2) == -1);
    CHECK(vlc_vocab_find(v, "", 0) == -1);
}

static void test_no_space_prefix(void) {
    vocab_opts o = default_opts();
    o.add_space_prefix = 0;
    wbuf f;
    vlc_gguf * g = NULL;
    vlc_vocab * v = NULL;
    CHECK(load(o, &f, &g, &v) == VLC_STATUS_OK);
    if (v) {
        CHECK(tok_eq(v, "abc", 0, 1, IDS(T_A, T_BC)));
        CHECK(tok_eq(v, "a<s>b", 0, 1, IDS(T_A, 1, T_B)));
        CHECK(detok_eq(v, IDS(T_SPA), 1, 0, " a"));
    }
    vlc_vocab_free(v);
    vlc_gguf_close(g);
    free(f.p);
}

static void expect_load_error(vocab_opts o, vlc_status want, const char * msg) {
    wbuf f;
    vlc_gguf * g = NULL;
    vlc_vocab * v = (vlc_vocab *) 1;
    vlc_clear_error();
    vlc_status st = load(o, &f, &g, &v);
    CHECK(st == want);
    CHECK(v == NULL);
    if (strstr(vlc_last_error(), msg) == NULL) {
        fprintf(stderr, "expected '%s' in '%s'\n", msg, vlc_last_error());
        g_failures++;
    }
    vlc_gguf_close(g);
    free(f.p);
}

static void test_load_errors(void) {
    vocab_opts o = default_opts();
    o.model = "gpt2";
    expect_load_error(o, VLC_STATUS_UNSUPPORTED, "gpt2");
    o = default_opts();
    o.n_scores = N_TOK - 1;
    expect_load_error(o, VLC_STATUS_FORMAT, "tokenizer.ggml.scores");
    o = default_opts();
    o.bos = 999;
    expect_load_error(o, VLC_STATUS_FORMAT, "bos_token_id = 999");
    o = default_opts();
    o.bad_byte = 1;
    expect_load_error(o, VLC_STATUS_FORMAT, "byte token 261");

    // no tokenizer keys at all
    wbuf m = { 0 };
    kv_str(&m, "general.architecture", "llama");
    wbuf f = finish(&m);
    vlc_gguf * g = NULL;
    vlc_vocab * v = NULL;
    CHECK(vlc_gguf_open_buffer(f.p, f.n, &g) == VLC_STATUS_OK);
    CHECK(vlc_vocab_load(g, &v) == VLC_STATUS_FORMAT && v == NULL);
    CHECK(strstr(vlc_last_error(), "tokenizer.ggml.model") != NULL);
    vlc_gguf_close(g);
    free(f.p);
}

// A long run of text: the merge must stay O(n log n); also exercises the heap growth.
static void test_long(const vlc_vocab * v) {
    const size_t len = 100000;
    char * text = malloc(len);
    for (size_t i = 0; i < len; i++) {
        text[i] = "abc \xC3\xA9<s>"[i % 10];
    }
    int32_t n = -1;
    CHECK(vlc_vocab_tokenize(v, text, len, 1, 1, NULL, 0, &n) == VLC_STATUS_BUFFER_TOO_SMALL && n > 0);
    int32_t * ids = malloc(sizeof(int32_t) * (size_t) n);
    int32_t n2 = -1;
    CHECK(vlc_vocab_tokenize(v, text, len, 1, 1, ids, n, &n2) == VLC_STATUS_OK && n2 == n);
    free(ids);
    free(text);
}

int main(void) {
    wbuf f;
    vlc_gguf * g = NULL;
    vlc_vocab * v = NULL;
    vlc_status st = load(default_opts(), &f, &g, &v);
    CHECK(st == VLC_STATUS_OK);
    if (st == VLC_STATUS_OK) {
        test_tokenize(v);
        test_invalid_utf8(v);
        test_buffers(v);
        test_pieces(v);
        test_detokenize(v);
        test_misc(v);
        test_long(v);
    }
    vlc_vocab_free(v);
    vlc_gguf_close(g);
    free(f.p);
    test_no_space_prefix();
    test_load_errors();
    if (g_failures) {
        fprintf(stderr, "test_tokenizer: %d failures\n", g_failures);
        return 1;
    }
    printf("test_tokenizer: ok\n");
    return 0;
}
