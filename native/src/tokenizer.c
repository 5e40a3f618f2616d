// tokenizer.c: the SentencePiece-style ("llama") tokenizer and detokenizer, built from the
// tokenizer.ggml.* metadata of a GGUF file.
//
// What it is: llama.cpp's SPM algorithm (GGUF_LLAVA.md §5), tuned to give the same ids as
// the Hugging Face tokenizer.json that Llama-2 / LLaVA-1.5 checkpoints ship (normalizer
// Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer, BPE with byte fallback):
//   1. the text is cut at special tokens (CONTROL and UNKNOWN only when parse_special,
//      USER_DEFINED always), leftmost-longest like HF's added-token matcher;
//   2. every text fragment gets "▁" prepended when add_space_prefix (HF applies the
//      Prepend normalizer to every fragment between added tokens; llama.cpp does the same
//      through is_prev_special) and each ' ' becomes "▁" (U+2581);
//   3. the fragment is split into UTF-8 characters (in text that is not UTF-8, a lead byte
//      without its continuation bytes is a symbol alone) and adjacent symbols are merged,
//      highest vocab score first (ties: leftmost), while the concatenation is a token;
//   4. every final symbol is its token, or one <0xNN> byte token per byte.
// Detokenize follows HF decode: BOS dropped when remove_special, control tokens empty
// unless unparse_special, "▁" -> ' ', byte tokens -> raw bytes, and one leading space of
// the whole output removed when add_space_prefix.
//
// What it is not: SentencePiece's unigram (Viterbi) model, the normalizer of non-identity
// SentencePiece models (NFKC charsmaps), or the BPE / WPM / UGM vocabularies of llama.cpp;
// tokenizer.ggml.model other than "llama" is VLC_STATUS_UNSUPPORTED.
//
// Files converted from Hugging Face carry vlcache.tokenizer.prepend_scheme, the rule of
// transformers 5's Metaspace pre-tokenizer: "first" (legacy=False, the default) prepends
// "▁" only to a fragment at the very start of the text, "always" (legacy=True) to every
// fragment; both skip a fragment that already starts with ' ' or "▁". Without the key the
// SentencePiece / llama.cpp rule of step 2 holds.
//
// Where it knowingly differs from llama.cpp (HF wins):
//   - special tokens are matched leftmost-longest in one pass, not longest-token-first over
//     fragments (the two differ only when special texts overlap, e.g. "ab" / "bcd");
//   - detokenize with remove_special drops the BOS *and* the leading space (HF
//     skip_special_tokens=True); llama.cpp keeps the space after a removed BOS;
//   - the one stripped space is the first byte of the output, whichever token makes it (HF's
//     Strip decoder on the fused text); llama.cpp only looks at the first token's piece.
// Where HF itself can differ: between pairs of *equal* score we merge the leftmost (as
// SentencePiece and llama.cpp do), HF BPE the one earlier in its merge list. Llama-2's
// vocabulary has such ties only among its whitespace-only pieces (score -1e9), where both
// orders give the same ids; tests/python/test_tokenizer.py compares ids with HF.
// Duplicate token texts are accepted: text -> id lookups find the lowest id (llama.cpp
// refuses such vocabularies; the HF converter writes none).
// With add_bos (llama.cpp's add_special) an EOS is also appended when add_eos_token is set.
//
// Threading: a vocab is immutable after load; tokenize / detokenize allocate their own
// scratch, so any number of threads may call them on one vocab.
//
// Letters: V = tokens in the vocabulary, N = UTF-8 characters of one text fragment.
#include "tokenizer.h"

#include "error.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define VLC_TOK_MAX_EOG 16

// When a text fragment gets its "▁" (see the header comment).
enum { PREPEND_SPM = 0, PREPEND_ALWAYS = 1, PREPEND_FIRST = 2 };

struct vlc_vocab {
    int32_t    n_tokens;        // V
    char *     blob;            // all token texts, back to back (not NUL-terminated)
    uint32_t * text_off;        // (V) offset of token i's text in blob
    uint32_t * text_len;        // (V) bytes of token i's text
    float *    scores;          // (V) merge priority; higher merges first
    uint8_t *  types;           // (V) VLC_TOKEN_*
    uint8_t *  byte_val;        // (V) the byte a BYTE token stands for

    // text -> id: open addressing, linear probing, -1 = empty slot
    int32_t *  hash_ids;        // (hash_cap)
    uint32_t   hash_cap;        // power of two >= 2 V

    int32_t    byte_to_token[256]; // <0xNN> (or the one-byte text) for each byte; -1 = none

    // tokens matched in raw text: CONTROL, UNKNOWN, USER_DEFINED with non-empty text,
    // grouped by first byte, longest first inside a group
    int32_t *  special_ids;     // (n_special)
    int32_t    n_special;
    int32_t    special_start[257]; // special_ids[special_start[b] .. special_start[b+1]) start with byte b

    int32_t    bos, eos, unk, pad; // -1 = none
    int        add_bos, add_eos, add_space_prefix;
    int        prepend;         // PREPEND_* : when a text fragment gets its "▁"
    int32_t    eog[VLC_TOK_MAX_EOG];
    int32_t    n_eog;
};

// "▁" (U+2581), what SentencePiece writes for a space
static const char k_space_mark[3] = { '\xE2', '\x96', '\x81' };

// ---------------------------------------------------------------------------
// text -> id hash map

static uint64_t hash_bytes(const char * s, size_t n) {
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t) s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static inline const char * tok_text(const vlc_vocab * v, int32_t id) {
    return v->blob + v->text_off[id];
}

int32_t vlc_vocab_find(const vlc_vocab * v, const char * text, size_t len) {
    if (!v || len == 0 || !text) {
        return -1;
    }
    const uint32_t mask = v->hash_cap - 1;
    for (uint32_t slot = (uint32_t) hash_bytes(text, len) & mask;; slot = (slot + 1) & mask) {
        const int32_t id = v->hash_ids[slot];
        if (id < 0) {
            return -1;
        }
        if (v->text_len[id] == len && memcmp(tok_text(v, id), text, len) == 0) {
            return id;
        }
    }
}

// Inserts id unless its text is empty or already present (the first id keeps the text).
static void hash_insert(vlc_vocab * v, int32_t id) {
    const size_t len = v->text_len[id];
    if (len == 0) {
        return;
    }
    const char * text = tok_text(v, id);
    const uint32_t mask = v->hash_cap - 1;
    for (uint32_t slot = (uint32_t) hash_bytes(text, len) & mask;; slot = (slot + 1) & mask) {
        const int32_t other = v->hash_ids[slot];
        if (other < 0) {
            v->hash_ids[slot] = id;
            return;
        }
        if (v->text_len[other] == len && memcmp(tok_text(v, other), text, len) == 0) {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// load

void vlc_vocab_free(vlc_vocab * v) {
    if (!v) {
        return;
    }
    free(v->blob);
    free(v->text_off);
    free(v->text_len);
    free(v->scores);
    free(v->types);
    free(v->byte_val);
    free(v->hash_ids);
    free(v->special_ids);
    free(v);
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') { return c - '0'; }
    if (c >= 'A' && c <= 'F') { return c - 'A' + 10; }
    if (c >= 'a' && c <= 'f') { return c - 'a' + 10; }
    return -1;
}

// Optional special-token id: absent keeps *id; negative means none; >= n is an error.
static vlc_status load_special_id(const vlc_gguf * g, const char * key, int32_t n, int32_t * id) {
    int64_t val = *id;
    VLC_TRY(vlc_gguf_get_int(g, key, 0, &val));
    if (val < 0) {
        *id = -1;
        return VLC_STATUS_OK;
    }
    VLC_CHECK(val < n, VLC_STATUS_FORMAT, "%s = %lld is out of range for %d tokens", key, (long long) val, n);
    *id = (int32_t) val;
    return VLC_STATUS_OK;
}

// A special token as sorted at load: by first byte, then longer text first, then lower id.
typedef struct special_key {
    uint8_t  first;
    uint32_t len;
    int32_t  id;
} special_key;

static int cmp_special(const void * pa, const void * pb) {
    const special_key * a = pa;
    const special_key * b = pb;
    if (a->first != b->first) { return a->first < b->first ? -1 : 1; }
    if (a->len != b->len)     { return a->len > b->len ? -1 : 1; }
    return a->id < b->id ? -1 : (a->id > b->id);
}

static void add_eog(vlc_vocab * v, int32_t id) {
    if (id < 0 || v->n_eog >= VLC_TOK_MAX_EOG) {
        return;
    }
    for (int32_t i = 0; i < v->n_eog; i++) {
        if (v->eog[i] == id) {
            return;
        }
    }
    v->eog[v->n_eog++] = id;
}

static vlc_status vocab_read(const vlc_gguf * g, vlc_vocab * v) {
    // model name
    vlc_gguf_str model = { 0 };
    VLC_TRY(vlc_gguf_get_str(g, "tokenizer.ggml.model", 1, &model));
    VLC_CHECK(model.len == 5 && memcmp(model.data, "llama", 5) == 0, VLC_STATUS_UNSUPPORTED,
              "tokenizer.ggml.model = '%.*s': only 'llama' (SentencePiece) vocabularies are supported",
              (int) (model.len > 64 ? 64 : model.len), model.data);

    // tokens
    const vlc_gguf_kv * kv_tok = vlc_gguf_find_kv(g, "tokenizer.ggml.tokens");
    VLC_CHECK(kv_tok != NULL, VLC_STATUS_FORMAT, "missing required key 'tokenizer.ggml.tokens'");
    VLC_CHECK(kv_tok->type == VLC_GGUF_ARRAY && kv_tok->arr_type == VLC_GGUF_STRING, VLC_STATUS_FORMAT,
              "tokenizer.ggml.tokens must be an array of strings, got %s of %s",
              vlc_gguf_type_name(kv_tok->type), vlc_gguf_type_name(kv_tok->arr_type));
    VLC_CHECK(kv_tok->n > 0 && kv_tok->n < (uint64_t) INT32_MAX / 4, VLC_STATUS_FORMAT,
              "tokenizer.ggml.tokens has %llu entries", (unsigned long long) kv_tok->n);
    const int32_t n = (int32_t) kv_tok->n;
    v->n_tokens = n;

    uint64_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        total += kv_tok->strs[i].len;
    }
    VLC_CHECK(total < UINT32_MAX, VLC_STATUS_FORMAT, "tokenizer.ggml.tokens holds %llu bytes of text",
              (unsigned long long) total);

    v->blob     = malloc(total > 0 ? (size_t) total : 1);
    v->text_off = malloc(sizeof(uint32_t) * (size_t) n);
    v->text_len = malloc(sizeof(uint32_t) * (size_t) n);
    v->scores   = malloc(sizeof(float) * (size_t) n);
    v->types    = malloc((size_t) n);
    v->byte_val = calloc((size_t) n, 1);
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t) n) {
        cap <<= 1;
    }
    v->hash_cap = cap;
    v->hash_ids = malloc(sizeof(int32_t) * cap);
    VLC_CHECK(v->blob && v->text_off && v->text_len && v->scores && v->types && v->byte_val && v->hash_ids,
              VLC_STATUS_OOM, "cannot allocate a vocabulary of %d tokens (%llu bytes of text)", n,
              (unsigned long long) total);

    uint32_t off = 0;
    for (int32_t i = 0; i < n; i++) {
        const vlc_gguf_str s = kv_tok->strs[i];
        v->text_off[i] = off;
        v->text_len[i] = (uint32_t) s.len;
        if (s.len > 0) {
            memcpy(v->blob + off, s.data, (size_t) s.len);
        }
        off += (uint32_t) s.len;
    }

    // scores: f32 or any integer type, optional (0)
    const vlc_gguf_kv * kv_sc = vlc_gguf_find_kv(g, "tokenizer.ggml.scores");
    if (kv_sc) {
        VLC_CHECK(kv_sc->type == VLC_GGUF_ARRAY && kv_sc->arr_type != VLC_GGUF_STRING &&
                  kv_sc->arr_type != VLC_GGUF_ARRAY && kv_sc->arr_type != VLC_GGUF_BOOL,
                  VLC_STATUS_FORMAT, "tokenizer.ggml.scores must be a numeric array, got %s of %s",
                  vlc_gguf_type_name(kv_sc->type), vlc_gguf_type_name(kv_sc->arr_type));
        VLC_CHECK(kv_sc->n == (uint64_t) n, VLC_STATUS_FORMAT,
                  "tokenizer.ggml.scores has %llu entries, tokenizer.ggml.tokens has %d",
                  (unsigned long long) kv_sc->n, n);
    }
    for (int32_t i = 0; i < n; i++) {
        v->scores[i] = kv_sc ? (float) vlc_gguf_arr_float(kv_sc, (uint64_t) i) : 0.0f;
    }

    // token types: integer array, optional (NORMAL); 0 (undefined) is read as NORMAL
    const vlc_gguf_kv * kv_ty = vlc_gguf_find_kv(g, "tokenizer.ggml.token_type");
    if (kv_ty) {
        const uint32_t t = kv_ty->arr_type;
        VLC_CHECK(kv_ty->type == VLC_GGUF_ARRAY && t != VLC_GGUF_STRING && t != VLC_GGUF_ARRAY &&
                  t != VLC_GGUF_BOOL && t != VLC_GGUF_FLOAT32 && t != VLC_GGUF_FLOAT64,
                  VLC_STATUS_FORMAT, "tokenizer.ggml.token_type must be an integer array, got %s of %s",
                  vlc_gguf_type_name(kv_ty->type), vlc_gguf_type_name(t));
        VLC_CHECK(kv_ty->n == (uint64_t) n, VLC_STATUS_FORMAT,
                  "tokenizer.ggml.token_type has %llu entries, tokenizer.ggml.tokens has %d",
                  (unsigned long long) kv_ty->n, n);
    }
    for (int32_t i = 0; i < n; i++) {
        int64_t t = kv_ty ? vlc_gguf_arr_int(kv_ty, (uint64_t) i) : VLC_TOKEN_NORMAL;
        VLC_CHECK(t >= 0 && t <= VLC_TOKEN_BYTE, VLC_STATUS_FORMAT,
                  "tokenizer.ggml.token_type[%d] = %lld is not a token type (0..6)", i, (long long) t);
        v->types[i] = (uint8_t) (t == 0 ? VLC_TOKEN_NORMAL : t);
        if (t == VLC_TOKEN_BYTE) {
            const char * s = tok_text(v, i);
            int hi = v->text_len[i] == 6 ? hex_digit(s[3]) : -1;
            int lo = v->text_len[i] == 6 ? hex_digit(s[4]) : -1;
            VLC_CHECK(hi >= 0 && lo >= 0 && memcmp(s, "<0x", 3) == 0 && s[5] == '>', VLC_STATUS_FORMAT,
                      "byte token %d has text '%.*s', expected <0xNN>", i,
                      (int) (v->text_len[i] > 32 ? 32 : v->text_len[i]), s);
            v->byte_val[i] = (uint8_t) (hi * 16 + lo);
        }
    }

    // text -> id
    memset(v->hash_ids, 0xff, sizeof(int32_t) * cap);
    for (int32_t i = 0; i < n; i++) {
        hash_insert(v, i);
    }

    // special ids and flags (SPM defaults as in llama.cpp)
    v->bos = n > 1 ? 1 : -1;
    v->eos = n > 2 ? 2 : -1;
    v->unk = 0;
    v->pad = -1;
    int32_t eot = -1, eom = -1;
    VLC_TRY(load_special_id(g, "tokenizer.ggml.bos_token_id", n, &v->bos));
    VLC_TRY(load_special_id(g, "tokenizer.ggml.eos_token_id", n, &v->eos));
    VLC_TRY(load_special_id(g, "tokenizer.ggml.unknown_token_id", n, &v->unk));
    VLC_TRY(load_special_id(g, "tokenizer.ggml.padding_token_id", n, &v->pad));
    VLC_TRY(load_special_id(g, "tokenizer.ggml.eot_token_id", n, &eot));
    VLC_TRY(load_special_id(g, "tokenizer.ggml.eom_token_id", n, &eom));
    v->add_bos = 1;
    v->add_eos = 0;
    v->add_space_prefix = 1;
    VLC_TRY(vlc_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", 0, &v->add_bos));
    VLC_TRY(vlc_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", 0, &v->add_eos));
    VLC_TRY(vlc_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", 0, &v->add_space_prefix));
    vlc_gguf_str scheme = { 0 };
    VLC_TRY(vlc_gguf_get_str(g, "vlcache.tokenizer.prepend_scheme", 0, &scheme));
    if (scheme.data) {
        if (scheme.len == 5 && memcmp(scheme.data, "first", 5) == 0) {
            v->prepend = PREPEND_FIRST;
        } else if (scheme.len == 6 && memcmp(scheme.data, "always", 6) == 0) {
            v->prepend = PREPEND_ALWAYS;
        } else {
            return VLC_ERR(VLC_STATUS_UNSUPPORTED, "vlcache.tokenizer.prepend_scheme '%.*s' (first or always)",
                           (int) (scheme.len > 32 ? 32 : scheme.len), scheme.data);
        }
    }

    // end-of-generation tokens: eos, eot, eom, and control tokens with a known end text
    add_eog(v, v->eos);
    add_eog(v, eot);
    add_eog(v, eom);
    static const char * const k_eog_texts[] = { "</s>", "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>" };
    for (size_t k = 0; k < sizeof(k_eog_texts) / sizeof(k_eog_texts[0]); k++) {
        const int32_t id = vlc_vocab_find(v, k_eog_texts[k], strlen(k_eog_texts[k]));
        if (id >= 0 && v->types[id] == VLC_TOKEN_CONTROL) {
            add_eog(v, id);
        }
    }

    // byte fallback table: <0xNN>, else the one-byte text, else none
    for (int b = 0; b < 256; b++) {
        char hex[7];
        snprintf(hex, sizeof(hex), "<0x%02X>", b);
        int32_t id = vlc_vocab_find(v, hex, 6);
        if (id < 0) {
            const char c = (char) b;
            id = vlc_vocab_find(v, &c, 1);
        }
        v->byte_to_token[b] = id;
    }

    // special tokens matched in raw text (CONTROL / UNKNOWN / USER_DEFINED, first id of a text)
    int32_t n_special = 0;
    for (int32_t i = 0; i < n; i++) {
        const int t = v->types[i];
        if ((t == VLC_TOKEN_CONTROL || t == VLC_TOKEN_UNKNOWN || t == VLC_TOKEN_USER_DEFINED) &&
            v->text_len[i] > 0 && vlc_vocab_find(v, tok_text(v, i), v->text_len[i]) == i) {
            n_special++;
        }
    }
    special_key * keys = malloc(sizeof(special_key) * (size_t) (n_special > 0 ? n_special : 1));
    v->special_ids = malloc(sizeof(int32_t) * (size_t) (n_special > 0 ? n_special : 1));
    if (!keys || !v->special_ids) {
        free(keys);
        return VLC_ERR(VLC_STATUS_OOM, "cannot allocate %d special token ids", n_special);
    }
    n_special = 0;
    for (int32_t i = 0; i < n; i++) {
        const int t = v->types[i];
        if ((t == VLC_TOKEN_CONTROL || t == VLC_TOKEN_UNKNOWN || t == VLC_TOKEN_USER_DEFINED) &&
            v->text_len[i] > 0 && vlc_vocab_find(v, tok_text(v, i), v->text_len[i]) == i) {
            keys[n_special++] = (special_key) { (uint8_t) tok_text(v, i)[0], v->text_len[i], i };
        }
    }
    qsort(keys, (size_t) n_special, sizeof(special_key), cmp_special);
    for (int32_t k = 0; k < n_special; k++) {
        v->special_ids[k] = keys[k].id;
    }
    free(keys);
    v->n_special = n_special;
    int32_t k = 0;
    for (int b = 0; b < 256; b++) {
        v->special_start[b] = k;
        while (k < n_special && (uint8_t) tok_text(v, v->special_ids[k])[0] == b) {
            k++;
        }
    }
    v->special_start[256] = n_special;
    return VLC_STATUS_OK;
}

vlc_status vlc_vocab_load(const vlc_gguf * g, vlc_vocab ** out) {
    VLC_CHECK(out != NULL, VLC_STATUS_INVALID_ARG, "out is NULL");
    *out = NULL;
    VLC_CHECK(g != NULL, VLC_STATUS_INVALID_ARG, "gguf is NULL");
    vlc_vocab * v = calloc(1, sizeof(*v));
    VLC_CHECK(v != NULL, VLC_STATUS_OOM, "cannot allocate the vocabulary struct");
    vlc_status st = vocab_read(g, v);
    if (st != VLC_STATUS_OK) {
        vlc_vocab_free(v);
        return st;
    }
    *out = v;
    return VLC_STATUS_OK;
}

// ---------------------------------------------------------------------------
// getters

int32_t vlc_vocab_n_tokens(const vlc_vocab * v) { return v ? v->n_tokens : 0; }
int32_t vlc_vocab_bos(const vlc_vocab * v)      { return v ? v->bos : -1; }
int32_t vlc_vocab_eos(const vlc_vocab * v)      { return v ? v->eos : -1; }
int     vlc_vocab_add_bos(const vlc_vocab * v)  { return v ? v->add_bos : 0; }

int vlc_vocab_is_eog(const vlc_vocab * v, int32_t token) {
    if (!v || token < 0) {
        return 0;
    }
    for (int32_t i = 0; i < v->n_eog; i++) {
        if (v->eog[i] == token) {
            return 1;
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------
// tokenize: output sink and the SPM merge

// Collects ids: writes while there is room, counts always.
typedef struct tok_sink {
    int32_t * out;
    int32_t   cap;
    int64_t   n;
} tok_sink;

static inline void sink_push(tok_sink * s, int32_t id) {
    if (s->n < s->cap) {
        s->out[s->n] = id;
    }
    s->n++;
}

typedef struct spm_symbol {
    int32_t      prev, next;  // neighbours in the list, -1 = none
    const char * text;        // into the escaped fragment
    int32_t      n;           // bytes; 0 = merged away
} spm_symbol;

typedef struct spm_bigram {
    float   score;            // vocab score of the merged text
    int32_t left, right;      // symbol indices
    int32_t size;             // bytes of the merged text when it was queued
} spm_bigram;

// Max-heap order: higher score first, then the leftmost pair.
static inline bool bigram_before(const spm_bigram * a, const spm_bigram * b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct spm_heap {
    spm_bigram * items;       // (cap)
    int64_t      n, cap;
} spm_heap;

static bool heap_push(spm_heap * h, spm_bigram b) {
    if (h->n == h->cap) {
        int64_t cap = h->cap ? h->cap * 2 : 64;
        spm_bigram * items = realloc(h->items, sizeof(spm_bigram) * (size_t) cap);
        if (!items) {
            return false;
        }
        h->items = items;
        h->cap = cap;
    }
    int64_t i = h->n++;
    while (i > 0) {
        int64_t parent = (i - 1) / 2;
        if (!bigram_before(&b, &h->items[parent])) {
            break;
        }
        h->items[i] = h->items[parent];
        i = parent;
    }
    h->items[i] = b;
    return true;
}

static spm_bigram heap_pop(spm_heap * h) {
    spm_bigram top = h->items[0];
    spm_bigram last = h->items[--h->n];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= h->n) {
            break;
        }
        if (c + 1 < h->n && bigram_before(&h->items[c + 1], &h->items[c])) {
            c++;
        }
        if (!bigram_before(&h->items[c], &last)) {
            break;
        }
        h->items[i] = h->items[c];
        i = c;
    }
    if (h->n > 0) {
        h->items[i] = last;
    }
    return top;
}

// Queues (left, right) when their concatenation is a token. False only on OOM.
static bool try_add_bigram(const vlc_vocab * v, spm_symbol * sym, spm_heap * h, int32_t left, int32_t right) {
    if (left < 0 || right < 0) {
        return true;
    }
    const int32_t size = sym[left].n + sym[right].n;
    const int32_t id = vlc_vocab_find(v, sym[left].text, (size_t) size); // symbols are contiguous
    if (id < 0) {
        return true;
    }
    spm_bigram b = { v->scores[id], left, right, size };
    return heap_push(h, b);
}

// Bytes of the UTF-8 sequence a lead byte announces (1 for stray continuation bytes).
static inline int32_t utf8_len(uint8_t c) {
    static const int8_t lens[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };
    return lens[c >> 4];
}

// Scratch reused across the fragments of one tokenize call.
typedef struct spm_scratch {
    char *       esc;         // escaped fragment: optional "▁" + text with ' ' -> "▁"
    size_t       esc_cap;
    spm_symbol * sym;         // (N)
    size_t       sym_cap;
    spm_heap     heap;
} spm_scratch;

static vlc_status spm_fragment(const vlc_vocab * v, spm_scratch * s, const char * text, size_t len,
                               bool prefix, tok_sink * sink) {
    // escape: at most 3 bytes per input byte, plus the prefix
    size_t need = 3 * len + 3;
    if (need > s->esc_cap) {
        char * esc = realloc(s->esc, need);
        VLC_CHECK(esc != NULL, VLC_STATUS_OOM, "cannot allocate %zu bytes for a text fragment", need);
        s->esc = esc;
        s->esc_cap = need;
    }
    size_t m = 0;
    if (prefix) {
        memcpy(s->esc, k_space_mark, 3);
        m = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(s->esc + m, k_space_mark, 3);
            m += 3;
        } else {
            s->esc[m++] = text[i];
        }
    }
    if (m == 0) {
        return VLC_STATUS_OK;
    }
    VLC_CHECK(m < (size_t) INT32_MAX, VLC_STATUS_INVALID_ARG, "text fragment of %zu bytes is too long", m);

    // split into UTF-8 characters
    if (m > s->sym_cap) {
        spm_symbol * sym = realloc(s->sym, sizeof(spm_symbol) * m);
        VLC_CHECK(sym != NULL, VLC_STATUS_OOM, "cannot allocate %zu symbols", m);
        s->sym = sym;
        s->sym_cap = m;
    }
    spm_symbol * sym = s->sym;
    int32_t n_sym = 0;
    for (size_t off = 0; off < m;) {
        // a lead byte takes only the continuation bytes that follow it: in text that is not
        // UTF-8 it must not swallow the next character (e.g. the first byte of a "▁")
        int32_t cl = utf8_len((uint8_t) s->esc[off]);
        for (int32_t j = 1; j < cl; j++) {
            if (off + (size_t) j >= m || ((uint8_t) s->esc[off + (size_t) j] & 0xC0) != 0x80) {
                cl = j;
            }
        }
        sym[n_sym] = (spm_symbol) { n_sym - 1, -1, s->esc + off, cl };
        if (n_sym > 0) {
            sym[n_sym - 1].next = n_sym;
        }
        n_sym++;
        off += (size_t) cl;
    }

    // merge the best-scoring adjacent pair until none is a token
    s->heap.n = 0;
    for (int32_t i = 1; i < n_sym; i++) {
        VLC_CHECK(try_add_bigram(v, sym, &s->heap, i - 1, i), VLC_STATUS_OOM, "cannot grow the merge queue");
    }
    while (s->heap.n > 0) {
        const spm_bigram b = heap_pop(&s->heap);
        spm_symbol * l = &sym[b.left];
        spm_symbol * r = &sym[b.right];
        if (l->n == 0 || r->n == 0 || l->next != b.right || l->n + r->n != b.size) {
            continue; // stale: one side was merged since this pair was queued
        }
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) {
            sym[r->next].prev = b.left;
        }
        VLC_CHECK(try_add_bigram(v, sym, &s->heap, l->prev, b.left), VLC_STATUS_OOM, "cannot grow the merge queue");
        VLC_CHECK(try_add_bigram(v, sym, &s->heap, b.left, l->next), VLC_STATUS_OOM, "cannot grow the merge queue");
    }

    // emit: a merged symbol is always a token (merges only make tokens), so only single
    // characters can miss the vocabulary; those fall back to one byte token per byte
    for (int32_t i = 0; i >= 0 && n_sym > 0; i = sym[i].next) {
        const int32_t id = vlc_vocab_find(v, sym[i].text, (size_t) sym[i].n);
        if (id >= 0) {
            sink_push(sink, id);
            continue;
        }
        for (int32_t j = 0; j < sym[i].n; j++) {
            const uint8_t byte = (uint8_t) sym[i].text[j];
            int32_t bt = v->byte_to_token[byte];
            if (bt < 0) {
                bt = v->unk;
            }
            VLC_CHECK(bt >= 0, VLC_STATUS_UNSUPPORTED,
                      "byte 0x%02X has no <0x%02X> token and the vocabulary has no unknown token", byte, byte);
            sink_push(sink, bt);
        }
    }
    return VLC_STATUS_OK;
}

// Longest special token that starts at text[pos] and is allowed here; -1 if none.
static int32_t match_special(const vlc_vocab * v, const char * text, size_t len, size_t pos, int parse_special) {
    const uint8_t b = (uint8_t) text[pos];
    for (int32_t k = v->special_start[b]; k < v->special_start[b + 1]; k++) {
        const int32_t id = v->special_ids[k];
        const uint32_t n = v->text_len[id];
        if (n > len - pos) {
            continue;
        }
        if (!parse_special && v->types[id] != VLC_TOKEN_USER_DEFINED) {
            continue;
        }
        if (memcmp(text + pos, tok_text(v, id), n) == 0) {
            return id;
        }
    }
    return -1;
}

vlc_status vlc_vocab_tokenize(const vlc_vocab * v, const char * text, size_t len, int add_bos,
                              int parse_special, int32_t * out, int32_t cap, int32_t * n_out) {
    VLC_CHECK(v && n_out, VLC_STATUS_INVALID_ARG, "vocab or n_out is NULL");
    VLC_CHECK(text || len == 0, VLC_STATUS_INVALID_ARG, "text is NULL with len = %zu", len);
    VLC_CHECK(cap >= 0 && (out || cap == 0), VLC_STATUS_INVALID_ARG, "out = %p with cap = %d", (void *) out, cap);
    *n_out = 0;

    tok_sink sink = { out, cap, 0 };
    if (add_bos && v->add_bos && v->bos >= 0) {
        sink_push(&sink, v->bos);
    }

    spm_scratch s = { 0 };
    vlc_status st = VLC_STATUS_OK;
    bool prev_special = true; // the start of the text counts as "after a special token"
    size_t frag = 0;          // start of the pending text fragment
    for (size_t pos = 0; pos <= len && st == VLC_STATUS_OK;) {
        const int32_t id = pos < len && v->n_special > 0 ? match_special(v, text, len, pos, parse_special) : -1;
        if (pos < len && id < 0) {
            pos++;
            continue;
        }
        // pos is at a special token or the end: flush the text before it
        if (pos > frag) {
            bool prefix = prev_special;  // PREPEND_SPM: at the start and after every special token
            if (v->prepend != PREPEND_SPM) {
                const bool marked = text[frag] == ' ' ||
                                    (pos - frag >= 3 && memcmp(text + frag, k_space_mark, 3) == 0);
                prefix = !marked && (v->prepend == PREPEND_ALWAYS || frag == 0);
            }
            st = spm_fragment(v, &s, text + frag, pos - frag, v->add_space_prefix && prefix, &sink);
            prev_special = false;
        }
        if (id < 0) {
            break;
        }
        sink_push(&sink, id);
        prev_special = true;
        pos += v->text_len[id];
        frag = pos;
    }
    free(s.esc);
    free(s.sym);
    free(s.heap.items);
    VLC_TRY(st);

    if (add_bos && v->add_eos && v->eos >= 0) {
        sink_push(&sink, v->eos); // add_bos means "add the special tokens" (llama.cpp add_special)
    }
    VLC_CHECK(sink.n <= INT32_MAX, VLC_STATUS_INVALID_ARG, "text gives %lld tokens", (long long) sink.n);
    *n_out = (int32_t) sink.n;
    return sink.n > cap ? VLC_STATUS_BUFFER_TOO_SMALL : VLC_STATUS_OK;
}

// ---------------------------------------------------------------------------
// detokenize

// Collects bytes: writes while there is room, counts always. strip: drop the next byte if
// it is a space, then stop stripping (HF's Strip(" ", 1, 0) decoder on the fused text).
typedef struct byte_sink {
    char *  buf;
    int64_t cap;
    int64_t n;
    bool    strip;
} byte_sink;

static inline void bsink_put(byte_sink * s, const char * p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (s->strip) {
            s->strip = false;
            if (p[i] == ' ') {
                continue;
            }
        }
        if (s->n < s->cap) {
            s->buf[s->n] = p[i];
        }
        s->n++;
    }
}

// Appends the piece of one token.
static void put_piece(const vlc_vocab * v, int32_t token, int special, byte_sink * s) {
    const char * t = tok_text(v, token);
    const size_t n = v->text_len[token];
    switch (v->types[token]) {
        case VLC_TOKEN_NORMAL:
            for (size_t i = 0; i < n;) {
                if (n - i >= 3 && memcmp(t + i, k_space_mark, 3) == 0) {
                    bsink_put(s, " ", 1);
                    i += 3;
                } else {
                    bsink_put(s, t + i, 1);
                    i++;
                }
            }
            break;
        case VLC_TOKEN_BYTE: {
            const char c = (char) v->byte_val[token];
            bsink_put(s, &c, 1);
            break;
        }
        case VLC_TOKEN_USER_DEFINED:
            bsink_put(s, t, n);
            break;
        case VLC_TOKEN_CONTROL:
        case VLC_TOKEN_UNKNOWN:
            if (special) {
                bsink_put(s, t, n);
            }
            break;
        default: // UNUSED: no text, like llama.cpp
            break;
    }
}

vlc_status vlc_vocab_token_to_piece(const vlc_vocab * v, int32_t token, int special,
                                    char * buf, int32_t cap, int32_t * n_out) {
    VLC_CHECK(v && n_out, VLC_STATUS_INVALID_ARG, "vocab or n_out is NULL");
    VLC_CHECK(token >= 0 && token < v->n_tokens, VLC_STATUS_INVALID_ARG,
              "token id %d is out of range [0, %d)", token, v->n_tokens);
    VLC_CHECK(cap >= 0 && (buf || cap == 0), VLC_STATUS_INVALID_ARG, "buf = %p with cap = %d", (void *) buf, cap);
    byte_sink s = { buf, cap, 0, false };
    put_piece(v, token, special, &s);
    *n_out = (int32_t) s.n;
    return s.n > cap ? VLC_STATUS_BUFFER_TOO_SMALL : VLC_STATUS_OK;
}

vlc_status vlc_vocab_detokenize(const vlc_vocab * v, const int32_t * tokens, int32_t n,
                                int remove_special, int unparse_special,
                                char * buf, int32_t cap, int32_t * n_out) {
    VLC_CHECK(v && n_out, VLC_STATUS_INVALID_ARG, "vocab or n_out is NULL");
    VLC_CHECK(n >= 0 && (tokens || n == 0), VLC_STATUS_INVALID_ARG, "tokens = %p with n = %d", (void *) tokens, n);
    VLC_CHECK(cap >= 0 && (buf || cap == 0), VLC_STATUS_INVALID_ARG, "buf = %p with cap = %d", (void *) buf, cap);
    *n_out = 0;
    for (int32_t i = 0; i < n; i++) {
        VLC_CHECK(tokens[i] >= 0 && tokens[i] < v->n_tokens, VLC_STATUS_INVALID_ARG,
                  "token id %d at index %d is out of range [0, %d)", tokens[i], i, v->n_tokens);
    }
    if (remove_special && v->add_bos && n > 0 && tokens[0] == v->bos) {
        tokens++;
        n--;
    }
    if (remove_special && v->add_eos && n > 0 && tokens[n - 1] == v->eos) {
        n--;
    }
    // one leading space of the whole text goes (the one the space prefix added)
    byte_sink s = { buf, cap, 0, v->add_space_prefix != 0 };
    for (int32_t i = 0; i < n; i++) {
        put_piece(v, tokens[i], unparse_special, &s);
        VLC_CHECK(s.n <= INT32_MAX, VLC_STATUS_INVALID_ARG, "the text of %d tokens exceeds 2 GiB", n);
    }
    *n_out = (int32_t) s.n;
    return s.n > cap ? VLC_STATUS_BUFFER_TOO_SMALL : VLC_STATUS_OK;
}
