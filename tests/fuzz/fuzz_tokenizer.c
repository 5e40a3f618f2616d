// fuzz_tokenizer.c: libFuzzer harness for the SentencePiece tokenizer (native/src/tokenizer.c).
//
// A small vocabulary (control, user-defined, 256 byte tokens, a few merges, a piece that
// is the same text twice) is written as a GGUF once, in two variants (add_space_prefix on
// and off). Each input: byte 0 picks the variant and the flags, the rest is the text. The
// text is tokenized (first into a buffer too small, then into one that fits), the ids are
// detokenized and turned into pieces one by one, and then the raw input is read as int32
// ids and detokenized too (ids out of range must be an error, not a read). Where the text
// holds nothing the tokenizer treats as special, detokenize(tokenize(text)) must give the
// text back. Built and run by tests/fuzz/build.sh.
#include "error.h"
#include "gguf.h"
#include "tokenizer.h"

#include "../c/gguf_bytes.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SP "\xE2\x96\x81"  // U+2581, SentencePiece's space

static void put_key(wbuf * b, const char * key, uint32_t type) {
    w_str(b, key);
    w_u32(b, type);
    b->n_kv++;
}

static wbuf vocab_file(int space_prefix) {
    static const char * const pieces[] = { SP, "a", "b", "t", "h", "e", "ab", "th", "the", SP "the", SP "a",
                                           SP SP, "\xC3\xA9", "a" };
    enum { N_PIECES = sizeof(pieces) / sizeof(pieces[0]), N = 4 + 256 + N_PIECES + 1 };
    static char bytes[256][8];
    const char * text[N];
    float        score[N];
    int32_t      type[N];
    text[0] = "<unk>";   type[0] = VLC_TOKEN_UNKNOWN;
    text[1] = "<s>";     type[1] = VLC_TOKEN_CONTROL;
    text[2] = "</s>";    type[2] = VLC_TOKEN_CONTROL;
    text[3] = "<image>"; type[3] = VLC_TOKEN_USER_DEFINED;
    for (int i = 0; i < 256; i++) {
        snprintf(bytes[i], sizeof(bytes[i]), "<0x%02X>", i);
        text[4 + i] = bytes[i];
        type[4 + i] = VLC_TOKEN_BYTE;
    }
    for (int i = 0; i < N_PIECES; i++) {
        text[260 + i] = pieces[i];
        type[260 + i] = VLC_TOKEN_NORMAL;
    }
    text[N - 1] = "<|im_end|>";
    type[N - 1] = VLC_TOKEN_CONTROL;
    for (int i = 0; i < N; i++) {
        score[i] = i < 260 ? 0.0f : -(float) (i - 259);
    }

    wbuf m = { 0 };
    put_key(&m, "general.architecture", VLC_GGUF_STRING); w_str(&m, "llama");
    put_key(&m, "tokenizer.ggml.model", VLC_GGUF_STRING); w_str(&m, "llama");
    put_key(&m, "tokenizer.ggml.tokens", VLC_GGUF_ARRAY);
    w_u32(&m, VLC_GGUF_STRING); w_u64(&m, N);
    for (int i = 0; i < N; i++) { w_str(&m, text[i]); }
    put_key(&m, "tokenizer.ggml.scores", VLC_GGUF_ARRAY);
    w_u32(&m, VLC_GGUF_FLOAT32); w_u64(&m, N); w_bytes(&m, score, sizeof(score));
    put_key(&m, "tokenizer.ggml.token_type", VLC_GGUF_ARRAY);
    w_u32(&m, VLC_GGUF_INT32); w_u64(&m, N); w_bytes(&m, type, sizeof(type));
    put_key(&m, "tokenizer.ggml.bos_token_id", VLC_GGUF_UINT32); w_u32(&m, 1);
    put_key(&m, "tokenizer.ggml.eos_token_id", VLC_GGUF_UINT32); w_u32(&m, 2);
    put_key(&m, "tokenizer.ggml.add_space_prefix", VLC_GGUF_BOOL); w_u8(&m, (uint8_t) space_prefix);

    wbuf f = { 0 };
    w_bytes(&f, "GGUF", 4);
    w_u32(&f, 3);
    w_u64(&f, 0);
    w_u64(&f, m.n_kv);
    w_bytes(&f, m.p, m.n);
    w_pad(&f, 32);
    free(m.p);
    return f;
}

// kept for the life of the process (the vocabularies point into their files)
static wbuf        g_file[2];
static vlc_gguf *  g_gguf[2];
static vlc_vocab * g_vocab[2];

static void setup(void) {
    for (int i = 0; i < 2; i++) {
        g_file[i] = vocab_file(i);
        if (vlc_gguf_open_buffer(g_file[i].p, g_file[i].n, &g_gguf[i]) != VLC_STATUS_OK ||
            vlc_vocab_load(g_gguf[i], &g_vocab[i]) != VLC_STATUS_OK) {
            fprintf(stderr, "fuzz_tokenizer: cannot load the vocabulary: %s\n", vlc_last_error());
            abort();
        }
    }
}

// The tokenizer leaves text alone unless it holds "<" (specials, user-defined) or "▁".
static int plain(const uint8_t * s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '<' || (s[i] == 0xE2 && i + 2 < n && s[i + 1] == 0x96 && s[i + 2] == 0x81)) {
            return 0;
        }
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    if (!g_vocab[0]) {
        setup();
    }
    if (size < 1 || size > 4096) {
        return 0;
    }
    const uint8_t     flags = data[0];
    const vlc_vocab * v     = g_vocab[flags & 1];
    const int add_bos = (flags >> 1) & 1, special = (flags >> 2) & 1, remove = (flags >> 3) & 1, unparse = (flags >> 4) & 1;
    const char * text = (const char *) data + 1;
    const size_t len  = size - 1;

    int32_t    n  = -1;
    int32_t    small[2];
    vlc_status st = vlc_vocab_tokenize(v, text, len, add_bos, special, small, 2, &n);
    if (st != VLC_STATUS_OK && st != VLC_STATUS_BUFFER_TOO_SMALL) {
        abort();  // any text tokenizes
    }
    const int32_t cap = n > 0 ? n : 1;
    int32_t *     ids = malloc(sizeof(int32_t) * (size_t) cap);
    int32_t       n2  = -1;
    if (vlc_vocab_tokenize(v, text, len, add_bos, special, ids, cap, &n2) != VLC_STATUS_OK || n2 != n) {
        abort();
    }
    const int32_t n_tok = vlc_vocab_n_tokens(v);
    for (int32_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= n_tok) {
            abort();
        }
    }

    const int32_t out_cap = (int32_t) len * 4 + 64;  // byte tokens give 1 byte, pieces at most their text
    char *        out     = malloc((size_t) out_cap);
    int32_t       n_out   = -1;
    st = vlc_vocab_detokenize(v, ids, n, remove, unparse, out, out_cap, &n_out);
    if (st != VLC_STATUS_OK) {
        abort();
    }
    if (!special && remove && plain(data + 1, len)) {
        if ((size_t) n_out != len || memcmp(out, text, len) != 0) {
            fprintf(stderr, "round trip: %zu bytes in, %d out\n", len, n_out);
            abort();
        }
    }
    for (int32_t i = 0; i < n; i++) {
        char    piece[64];
        int32_t np = -1;
        st = vlc_vocab_token_to_piece(v, ids[i], unparse, piece, (int32_t) sizeof(piece), &np);
        if (st != VLC_STATUS_OK || np < 0 || np > (int32_t) sizeof(piece)) {
            abort();
        }
    }

    // the raw bytes as token ids, in range or not
    const int32_t n_raw = (int32_t) (len / 4);
    int32_t *     raw   = malloc(sizeof(int32_t) * (size_t) (n_raw > 0 ? n_raw : 1));
    if (len >= 4) {
        memcpy(raw, text, sizeof(int32_t) * (size_t) n_raw);
    }
    int32_t need = -1;
    st = vlc_vocab_detokenize(v, raw, n_raw, remove, unparse, out, 8, &need);
    if (st == VLC_STATUS_BUFFER_TOO_SMALL && need > 0) {
        char * big = malloc((size_t) need);
        int32_t got = -1;
        if (vlc_vocab_detokenize(v, raw, n_raw, remove, unparse, big, need, &got) != VLC_STATUS_OK || got != need) {
            abort();
        }
        free(big);
    }
    for (int32_t i = 0; i < n_raw; i++) {
        char    piece[4];
        int32_t np = -1;
        vlc_vocab_token_to_piece(v, raw[i], unparse, piece, (int32_t) sizeof(piece), &np);
    }
    vlc_clear_error();
    free(raw);
    free(out);
    free(ids);
    return 0;
}
