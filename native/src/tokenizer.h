// tokenizer.h: the SentencePiece-style ("llama") vocabulary read from GGUF metadata
// (tokenizer.ggml.*): score-ordered bigram merges, byte fallback <0xNN>, space prefix,
// BOS/EOS, control and user-defined tokens; and the detokenizer.
#pragma once

#include "gguf.h"

typedef struct vlc_vocab vlc_vocab;

// Token types as stored in tokenizer.ggml.token_type.
enum {
    VLC_TOKEN_NORMAL = 1, VLC_TOKEN_UNKNOWN = 2, VLC_TOKEN_CONTROL = 3,
    VLC_TOKEN_USER_DEFINED = 4, VLC_TOKEN_UNUSED = 5, VLC_TOKEN_BYTE = 6
};

// Errors: VLC_STATUS_FORMAT (missing tokenizer.ggml.tokens, arrays of the wrong type or
// length, ids out of range), VLC_STATUS_UNSUPPORTED (tokenizer.ggml.model other than
// "llama"), VLC_STATUS_OOM.
vlc_status vlc_vocab_load(const vlc_gguf * g, vlc_vocab ** out);
void       vlc_vocab_free(vlc_vocab * v);

int32_t vlc_vocab_n_tokens(const vlc_vocab * v);
int32_t vlc_vocab_bos(const vlc_vocab * v);     // -1 = none
int32_t vlc_vocab_eos(const vlc_vocab * v);     // -1 = none
int     vlc_vocab_add_bos(const vlc_vocab * v);
int     vlc_vocab_is_eog(const vlc_vocab * v, int32_t token);
// Id of the token whose text is exactly text[0..len), or -1.
int32_t vlc_vocab_find(const vlc_vocab * v, const char * text, size_t len);

// Same contracts as vlc_tokenize / vlc_token_to_piece / vlc_detokenize in vlcache.h.
vlc_status vlc_vocab_tokenize(const vlc_vocab * v, const char * text, size_t len, int add_bos,
                              int parse_special, int32_t * out, int32_t cap, int32_t * n_out);
vlc_status vlc_vocab_token_to_piece(const vlc_vocab * v, int32_t token, int special,
                                    char * buf, int32_t cap, int32_t * n_out);
vlc_status vlc_vocab_detokenize(const vlc_vocab * v, const int32_t * tokens, int32_t n,
                                int remove_special, int unparse_special,
                                char * buf, int32_t cap, int32_t * n_out);
