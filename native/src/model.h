// model.h: the loaded model (hyperparameters, weight views into the GGUF mapping,
// vocabulary) and the text decoder's session state.
// Letters: T = tokens, C = n_embd, H = n_head, Hkv = n_head_kv, D = head_dim, F = n_ff,
// V = n_vocab, L = n_layer.
#pragma once

#include "gguf.h"
#include "tokenizer.h"
#include "vision.h"

// A weight matrix (or vector) viewed in place: ne[0] = row length (input features),
// ne[1] = rows (output features), as in GGUF.
typedef struct vlc_weight {
    const void * data;
    uint32_t     type;   // VLC_TYPE_*: F32 / F16 / BF16 or a block type (quant.h)
    int64_t      ne[2];
} vlc_weight;

typedef struct vlc_layer {
    vlc_weight attn_norm;  // blk.N.attn_norm    (C)       model.layers.N.input_layernorm
    vlc_weight wq;         // blk.N.attn_q       (C, H*D)  q_proj, rows permuted for adjacent-pair RoPE
    vlc_weight wk;         // blk.N.attn_k       (C, Hkv*D) k_proj, permuted likewise
    vlc_weight wv;         // blk.N.attn_v       (C, Hkv*D)
    vlc_weight wo;         // blk.N.attn_output  (H*D, C)
    vlc_weight ffn_norm;   // blk.N.ffn_norm     (C)       post_attention_layernorm
    vlc_weight w_gate;     // blk.N.ffn_gate     (C, F)
    vlc_weight w_up;       // blk.N.ffn_up       (C, F)
    vlc_weight w_down;     // blk.N.ffn_down     (F, C)
} vlc_layer;

typedef struct vlc_hparams {
    int32_t n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    float   rope_freq_base;   // llama.rope.freq_base, default 10000
    float   rope_freq_scale;  // 1 / llama.rope.scaling.factor for "linear", else 1
    float   rms_eps;          // llama.attention.layer_norm_rms_epsilon (required)
} vlc_hparams;

struct vlc_model {
    int32_t     n_refs;       // the loader's handle + one per session; freed at 0 (atomic)
    vlc_gguf *  gguf;
    vlc_vocab * vocab;
    vlc_hparams hp;
    int         vocab_only;
    int         tied_embeddings;
    vlc_weight  tok_embd;     // token_embd   (C, V)
    vlc_weight  output_norm;  // output_norm  (C)
    vlc_weight  output;       // output       (C, V); == tok_embd when tied
    vlc_layer * layers;       // [L]
    vlc_gguf *  mmproj;       // llama.cpp mmproj file, when the vision tower comes from one
    vlc_vision * vision;      // NULL for a text-only model
    char **     meta_strs;    // [gguf->n_kv] NUL-terminated copies of the string values (else NULL),
    char **     mmproj_strs;  // [mmproj->n_kv] likewise; made at load, read by vlc_model_meta_str
};

// model.c: VLC_STATUS_UNSUPPORTED unless type is one we run, VLC_STATUS_FORMAT unless
// rows of ne0 elements are whole blocks of it; the message names the tensor.
vlc_status vlc_tensor_type_check(const char * name, uint32_t type, int64_t ne0);

// model.c: reads the llama.* hyperparameters and binds every tensor of the text model
// from m->gguf, checking names, types and shapes (errors name the key or tensor).
// Fails with VLC_STATUS_UNSUPPORTED for an architecture other than "llama".
vlc_status vlc_text_model_init(vlc_model * m);
void       vlc_text_model_free(vlc_model * m);

// text.c: the decoder state of one session (KV cache, scratch, threads, logits).
typedef struct vlc_text_state vlc_text_state;

vlc_status vlc_text_state_create(const vlc_model * m, const vlc_session_params * p, vlc_text_state ** out);
void       vlc_text_state_free(vlc_text_state * st);
void       vlc_text_state_reset(vlc_text_state * st);
int32_t    vlc_text_state_n_past(const vlc_text_state * st);
int32_t    vlc_text_state_n_ctx(const vlc_text_state * st);
uint64_t   vlc_text_state_kv_bytes(const vlc_text_state * st);
// A new state with the same parameters and a copy of everything in src (KV entries and
// capacities, position, logits, statistics, the compressed flag).
vlc_status vlc_text_state_clone(const vlc_text_state * src, vlc_text_state ** out);

// The state's KV cache (kvcache.h) and attention statistics (stats.h), to read.
const struct vlc_kvcache * vlc_text_state_kv(const vlc_text_state * st);
const struct vlc_stats *   vlc_text_state_stats(const vlc_text_state * st);
// Compaction (VL-Cache step E): vlc_kv_compact on the state's cache (keep [L, Hkv, m], all
// entries at positions >= m kept, room free entries per head), then the statistics are
// freed. On VLC_STATUS_OOM the state is unchanged. Requires 1 <= m <= n_past.
vlc_status vlc_text_state_compact(vlc_text_state * st, const uint8_t * keep, int32_t m, int32_t room);
// compress.c: statistics -> plan (vlc_kv_plan) -> compaction, as vlc_session_compress
// documents (report->seconds is the caller's to fill).
vlc_status vlc_text_state_compress(vlc_text_state * st, const vlc_kv_params * p, int32_t * layer_budgets,
                                   vlc_compress_report * out);

// Runs n positions starting at n_past, appending them to the KV cache. Exactly one of
// tokens ([n] ids, already range-checked by the caller) or embd ([n, C] f32 input
// embeddings, used by the vision path later) is non-NULL. Writes the logits of the last
// n_out positions into logits_out ([n_out, V]) when n_out > 0, and always keeps the last
// position's logits (see vlc_text_state_logits). n_past + n <= n_ctx is checked by the caller.
// A NaN / inf in embd is VLC_STATUS_INVALID_ARG; logits rows that come out NaN / inf are
// VLC_STATUS_NUMERIC naming the position, its input and the first layer whose output (the
// last row's) was not finite; both leave n_past and the KV cache as they were.
vlc_status vlc_text_forward(vlc_text_state * st, const int32_t * tokens, const float * embd,
                            int32_t n, float * logits_out, int32_t n_out);
const float * vlc_text_state_logits(const vlc_text_state * st); // [V] or NULL before any forward
// Undoes the positions >= n_past (<= the current n_past): drops their KV entries.
void          vlc_text_state_rewind(vlc_text_state * st, int32_t n_past);
// Index of the first NaN / inf in x[n], or -1.
int64_t       vlc_first_nonfinite(const float * x, int64_t n);

// Batched decoding: one token for each of n distinct states of one model, tokens[i] at
// position n_past of sts[i]. Every weight matrix is read once for all n rows (chunks of
// sts[0]->n_batch, in sts[0]'s scratch and pool); each row attends over its own state's
// KV, compacted or not. Row i's logits go to logits_out + i * V and become state i's last
// logits: the bits of n separate one-token vlc_text_forward calls. No state may gather
// attention statistics at its next position. Fails before changing any state.
vlc_status vlc_text_forward_batch(vlc_text_state * const * sts, const int32_t * tokens, int32_t n,
                                  float * logits_out);
// The checks of vlc_text_forward_batch, and room for one more KV entry in each state (which
// changes no state's contents): what a caller running several batches checks first ...
vlc_status vlc_text_batch_prepare(vlc_text_state * const * sts, const int32_t * tokens, int32_t n);
// ... before running each of them with this, which checks nothing (the step's own work only).
void       vlc_text_batch_run(vlc_text_state * const * sts, const int32_t * tokens, int32_t n, float * logits_out);

// Attention statistics (stats.h) for the rows still to be run (p != NULL, checked by
// vlc_stats_check, buffers allocated here: the forward pass allocates nothing); p == NULL
// turns them off and frees them (so do reset, compaction and free). Results do not depend
// on n_threads or n_batch. Errors: VLC_STATUS_INVALID_ARG (ranges, p, a compressed
// cache), VLC_STATUS_OOM.
vlc_status vlc_text_state_set_stats(vlc_text_state * st, const vlc_attn_stats_params * p);
