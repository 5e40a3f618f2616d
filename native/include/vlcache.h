// vlcache.h: the public C API of vlcache_native.
//
// Two handles: vlc_model (weights + vocabulary, immutable after load, may be shared
// between threads) and vlc_session (KV cache, scratch, position; one thread at a time).
//
// Lifetime: a session holds a reference on its model (counted atomically), so the model's
// memory lives until vlc_model_free has been called and the last of its sessions has been
// freed, in whichever order and from whichever threads. Freeing a handle is the one thing
// that must happen after every call on that handle has returned, and no call may follow it
// (a binding that lets threads close handles, like the Python package, makes close wait
// for the running calls and refuse new ones).
//
// Threads: a model changes nothing after vlc_model_load returns (metadata strings are
// copied once, at load), so every function taking a const vlc_model * (info, metadata,
// tokenizer, tensors, vision) may run from any number of threads at once, also beside
// sessions of the model running in other threads; vlc_vision_encode runs one encode at a
// time per model (it keeps its scratch, under an internal lock). Sessions of one model may
// run in parallel threads, each session in one thread at a time (vlc_batch_decode takes all
// of its sessions); a sampler likewise. vlc_last_error() is per thread.
//
// Every fallible call returns a vlc_status (0 ok, > 0 soft result, < 0 error) and writes
// results through out-parameters; vlc_last_error() then holds a thread-local message that
// names the function and the offending value. The library never exits or aborts on bad
// input. Params structs are filled by their *_params_init(); NULL params mean defaults.
// Whatever *_load / *_create returns is released by the matching *_free; *_free(NULL) is
// a no-op.
//
// The block between VLC_CDEF_BEGIN and VLC_CDEF_END is read by the Python package and
// handed to cffi as is (after removing VLC_API), so it holds only typedefs, enums,
// structs, prototypes, comments and integer #defines.
#ifndef VLCACHE_H
#define VLCACHE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#    define VLC_API __declspec(dllexport)
#else
#    define VLC_API __attribute__((visibility("default")))
#endif

// VLC_CDEF_BEGIN
#define VLC_ABI_VERSION 7

typedef enum vlc_status {
    VLC_STATUS_OK               =  0,
    VLC_STATUS_BUFFER_TOO_SMALL =  1, // soft: the out-count holds the size needed
    VLC_STATUS_INVALID_ARG      = -1, // a caller value is out of range (token id, size, NULL)
    VLC_STATUS_IO               = -2, // file missing or unreadable
    VLC_STATUS_FORMAT           = -3, // file is not a valid GGUF / model (truncated, corrupt, missing key)
    VLC_STATUS_UNSUPPORTED      = -4, // valid file, but an architecture / type we do not run
    VLC_STATUS_OOM              = -5, // allocation failed
    VLC_STATUS_CONTEXT_FULL     = -6, // the tokens do not fit in the session's context
    VLC_STATUS_CUDA             = -7, // CUDA runtime error
    VLC_STATUS_INTERNAL         = -8, // a bug: please report
    VLC_STATUS_NUMERIC          = -9  // a forward pass gave NaN / inf (weights or inputs not finite)
} vlc_status;

// Element types; the values are ggml's type ids, as stored in GGUF files.
typedef enum vlc_type {
    VLC_TYPE_F32  = 0,
    VLC_TYPE_F16  = 1,
    VLC_TYPE_Q4_0 = 2,   // 32-element blocks (GGUF_LLAVA.md §4 gives every layout)
    VLC_TYPE_Q4_1 = 3,
    VLC_TYPE_Q5_0 = 6,
    VLC_TYPE_Q5_1 = 7,
    VLC_TYPE_Q8_0 = 8,
    VLC_TYPE_Q4_K = 12,  // 256-element super-blocks
    VLC_TYPE_Q5_K = 13,
    VLC_TYPE_Q6_K = 14,
    VLC_TYPE_BF16 = 30
} vlc_type;

typedef struct vlc_model   vlc_model;
typedef struct vlc_session vlc_session;
typedef struct vlc_sampler vlc_sampler;

typedef struct vlc_model_params {
    const char * mmproj_path; // llama.cpp "mmproj" GGUF holding the vision tower; NULL = none
                              // (a file from our converter carries its vision tower itself)
    int32_t vocab_only;       // 1 = load only the tokenizer (no weights are bound)
    int32_t no_mmap;          // 1 = read the files into anonymous memory (2 MiB aligned, with
                              // transparent huge pages asked for) instead of mapping them
                              // (llama.cpp's --no-mmap); 0 (default) = mmap
} vlc_model_params;

typedef struct vlc_session_params {
    int32_t n_ctx;        // tokens the KV cache holds; 0 = the model's training context
    int32_t n_batch;      // most tokens per forward chunk (sizes the scratch); 0 = 512
    int32_t n_threads;    // worker threads; 0 = all online cores
    int32_t type_kv;      // VLC_TYPE_F16 (default) or VLC_TYPE_F32
} vlc_session_params;

// Hyperparameters of a loaded model, as read from its GGUF.
typedef struct vlc_model_info {
    int32_t n_vocab;
    int32_t n_ctx_train;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;
    int32_t n_ff;
    float   rope_freq_base;
    float   rope_freq_scale;  // 1 / linear scaling factor; 1 = none
    float   rms_eps;
    int32_t bos_id;           // -1 = none
    int32_t eos_id;           // -1 = none
    int32_t add_bos;          // tokenizer.ggml.add_bos_token
    int32_t tied_embeddings;  // 1 when output.weight is absent and token_embd is reused
    int32_t weight_type;      // vlc_type of the attention/FFN weights (first layer's wq)
    int64_t n_params;         // elements in all tensors
    uint64_t weight_bytes;    // bytes of all tensors in the file
} vlc_model_info;

// The vision tower (CLIP ViT + projector), when the model has one.
typedef struct vlc_vision_info {
    int32_t has_vision;        // 0 = text-only model; the other fields are then 0
    int32_t image_size;        // side of one square tile, pixels
    int32_t patch_size;
    int32_t n_embd;            // ViT width
    int32_t n_head;
    int32_t n_ff;
    int32_t n_layer;           // ViT layers run: hidden state n_layer is the selected feature layer
    int32_t n_layer_file;      // ViT layers stored in the file
    int32_t select_full;       // 1 = "full" (CLS row kept), 0 = "default" (CLS dropped)
    int32_t n_tokens_per_tile; // rows vlc_vision_encode writes per tile
    int32_t n_embd_out;        // projector output width (= the text model's n_embd)
    int32_t gelu_exact;        // ViT MLP activation: 1 = erf GELU, 0 = quick_gelu
    float   image_mean[3];
    float   image_std[3];
} vlc_vision_info;

typedef struct vlc_sampler_params {
    float    temperature;     // <= 0: greedy (argmax)
    int32_t  top_k;           // <= 0: off
    float    top_p;           // >= 1: off
    float    min_p;           // <= 0: off
    float    repeat_penalty;  // 1: off; llama.cpp rule (divide positive logits, multiply negative)
    int32_t  repeat_last_n;   // tokens of history the penalty looks at; 0 = off, -1 = up to 65536
    uint64_t seed;            // RNG seed; the same seed and inputs give the same tokens
} vlc_sampler_params;

typedef struct vlc_session_stats {
    int32_t n_past;           // tokens in the KV cache
    int32_t n_ctx;
    uint64_t kv_bytes;        // bytes the KV allocator holds now
    double  prefill_ms;       // summed over prefill calls since create / reset
    int32_t n_prefill_tokens;
    double  decode_ms;
    int32_t n_decode_tokens;
} vlc_session_stats;

// Attention statistics gathered while the prompt is prefilled (VL-Cache, shared/docs/
// VLCACHE.md): for the rows of the post-vision window [window_start, window_end), per
// layer the sparsity (Eq. 2: mean over query heads of the fraction of causal weights
// < p * row max) and per KV head the per-key sum of the attention weights over those
// rows and the group's query heads. Optional extra sets of rows give the column sums of
// the baselines: every row [0, window_end) (H2O) and the last snapkv_window rows before
// window_end (SnapKV, before pooling). Computed inside the tiled attention (no m x m
// matrix), in double from the f32 weights the attention uses; independent of n_threads
// and n_batch.
typedef enum vlc_attn_set {
    VLC_ATTN_WINDOW = 0,  // rows [window_start, window_end): the post-vision window
    VLC_ATTN_H2O    = 1,  // rows [0, window_end)
    VLC_ATTN_SNAPKV = 2   // rows [window_end - snapkv_window, window_end)
} vlc_attn_set;

typedef struct vlc_attn_stats_params {
    int32_t window_start;  // first window row (absolute position), n_past .. window_end - 1
    int32_t window_end;    // rows at positions >= window_end are not gathered (<= n_ctx);
                           // 0 = open: every row run until the statistics are turned off,
                           // decode steps included
    float   p;             // sparsity threshold relative to the row max, [0, 1]; default 0.01
    int32_t h2o;           // 1 = also gather VLC_ATTN_H2O (needs window_end > 0 and n_past == 0)
    int32_t snapkv_window; // > 0 = also gather VLC_ATTN_SNAPKV (needs window_end > 0 and
                           // snapkv_window <= window_end - n_past); 0 = off
} vlc_attn_stats_params;

// KV-cache policies (VLCACHE.md): which prompt entries each layer and KV head keeps.
typedef enum vlc_kv_policy {
    VLC_KV_FULL             = 0, // keep everything (buffers still shrink to n_past + room)
    VLC_KV_VLCACHE          = 1, // sparsity budgets + post-vision scores (needs WINDOW)
    VLC_KV_STREAMINGLLM     = 2, // uniform budgets; n_sink first tokens + the most recent
    VLC_KV_H2O              = 3, // uniform budgets + column sums over all rows (needs H2O)
    VLC_KV_SNAPKV           = 4, // uniform budgets + last-window sums, max-pooled (needs SNAPKV)
    VLC_KV_PYRAMIDKV        = 5, // linearly decreasing budgets + SnapKV scores (needs SNAPKV)
    VLC_KV_ADAKV            = 6, // uniform budgets split across heads on SnapKV scores (needs SNAPKV)
    VLC_KV_RANDOM           = 7, // uniform budgets + splitmix64 scores (seed)
    VLC_KV_VLCACHE_UNIFORM  = 8, // ablation: uniform budgets + post-vision scores (needs WINDOW)
    VLC_KV_SPARSITY_H2O     = 9, // ablation: sparsity budgets (WINDOW) + H2O scores (needs H2O)
    VLC_KV_N_POLICIES       = 10
} vlc_kv_policy;

// Parameters of a policy (tests/python/kvref.py states every rule). The statistics'
// threshold p and windows are chosen before prefill (vlc_attn_stats_params).
typedef struct vlc_kv_params {
    int32_t  policy;        // vlc_kv_policy
    double   budget;        // alpha in (0, 1]: fraction of the prompt's KV entries kept,
                            // over all layers; T = clamp(floor(alpha L m + 0.5), L, L m)
    double   recent_frac;   // [0, 1]: the last ceil(recent_frac k_l) prompt tokens are kept; 0.1
    double   clip_lo;       // layer budget range as a fraction of m (sparsity budgets); 0.01
    double   clip_hi;       // 1.0
    int32_t  exact_total;   // 1 = sum of layer budgets == T exactly; 0 = the paper's drifting total
    int32_t  pool_kernel;   // odd >= 1: SnapKV / PyramidKV / AdaKV max-pool kernel; 7
    int32_t  n_sink;        // >= 0: StreamingLLM sink tokens; 4
    double   floor_alpha;   // [0, 1]: AdaKV safeguard fraction; 0.2
    double   pyramid_beta;  // >= 1: PyramidKV min = C / beta; 20
    uint64_t seed;          // random policy; 0
    int32_t  decode_room;   // vlc_session_compress: entries reserved per KV head after the
                            // kept ones for tokens still to come (more grow the buffers);
                            // clipped to n_ctx - n_past; -1 = n_ctx - n_past; default 256
} vlc_kv_params;

// What vlc_session_compress did.
typedef struct vlc_compress_report {
    int32_t  n_prompt;         // m: the prompt entries the policy ranked, positions [0, m)
                               // (the statistics' window_end, or n_past without statistics)
    int64_t  total;            // prompt entries kept, summed over layers and KV heads
    uint64_t kv_bytes_before;  // bytes the KV allocator held before
    uint64_t kv_bytes_after;   // and after (kept entries + decode room, positions included)
    double   seconds;          // wall time of the call
} vlc_compress_report;

// ---- library
VLC_API int32_t      vlc_abi_version(void);            // == VLC_ABI_VERSION of the build
VLC_API const char * vlc_build_info(void);             // backends and compiler, static string
VLC_API const char * vlc_status_str(vlc_status status); // "VLC_STATUS_FORMAT", static string
VLC_API const char * vlc_last_error(void);             // this thread's last message, "" if none
VLC_API void         vlc_clear_error(void);
VLC_API int32_t      vlc_n_cpus(void);                 // online cores
VLC_API size_t       vlc_model_params_size(void);      // sizeof checks for the bindings
VLC_API size_t       vlc_session_params_size(void);
VLC_API size_t       vlc_model_info_size(void);
VLC_API size_t       vlc_sampler_params_size(void);
VLC_API size_t       vlc_session_stats_size(void);
VLC_API size_t       vlc_vision_info_size(void);
VLC_API size_t       vlc_attn_stats_params_size(void);
VLC_API size_t       vlc_kv_params_size(void);
VLC_API size_t       vlc_compress_report_size(void);

// ---- model
VLC_API void       vlc_model_params_init(vlc_model_params * params);
// Maps the GGUF at path and binds its tensors. On failure *out is NULL and nothing leaks.
VLC_API vlc_status vlc_model_load(const char * path, const vlc_model_params * params, vlc_model ** out);
// Drops the caller's reference: the weights go now, or when the last session of the model
// is freed. Sessions keep working after it; the model handle itself may not be used again.
VLC_API void       vlc_model_free(vlc_model * model);
VLC_API void       vlc_model_get_info(const vlc_model * model, vlc_model_info * out);
// A string metadata value of the model file (then of its mmproj), NUL-terminated, owned
// by the model: a copy made at load, the same pointer on every call, valid until the model
// goes. NULL when the key is absent or not a string. Allocates nothing.
VLC_API const char * vlc_model_meta_str(const vlc_model * model, const char * key);
// A numeric metadata value or array (model file, then mmproj) converted to double: writes
// up to cap elements and returns the element count (1 for a scalar), -1 when the key is
// absent or not numeric.
VLC_API int64_t      vlc_model_meta_num(const vlc_model * model, const char * key, double * out, int64_t cap);

// Copies a tensor of the model (or its mmproj) as f32 into out[n], n = its element count
// (e.g. "v.image_newline"). VLC_STATUS_INVALID_ARG if absent or n differs.
VLC_API vlc_status vlc_model_tensor_f32(const vlc_model * model, const char * name, float * out, int64_t n);

// ---- vision
VLC_API void       vlc_model_get_vision_info(const vlc_model * model, vlc_vision_info * out);
// Encodes n_tiles preprocessed tiles, pixels [n_tiles, 3, S, S] (normalised, planar RGB,
// S = image_size), into out [n_tiles, n_tokens_per_tile, n_embd_out]: CLIP ViT up to the
// feature layer, CLS handling per select strategy, then the projector. Uses n_threads
// threads (0 = all cores). The model is not changed (callable from several threads).
VLC_API vlc_status vlc_vision_encode(const vlc_model * model, const float * pixels, int32_t n_tiles,
                                     int32_t n_threads, float * out);

// ---- tokenizer
// Tokenizes text_len bytes of text. Writes at most cap ids; *n_out gets the count needed.
// Returns VLC_STATUS_BUFFER_TOO_SMALL (and writes nothing useful) when cap < *n_out.
// parse_special: control tokens written in the text (e.g. "<s>") become their ids.
VLC_API vlc_status vlc_tokenize(const vlc_model * model, const char * text, int32_t text_len,
                                int32_t add_bos, int32_t parse_special,
                                int32_t * tokens, int32_t cap, int32_t * n_out);
// The bytes of one token (a byte token gives its single byte; control tokens give their
// text only if special != 0). Same buffer rule as vlc_tokenize.
VLC_API vlc_status vlc_token_to_piece(const vlc_model * model, int32_t token, int32_t special,
                                      char * buf, int32_t cap, int32_t * n_out);
// Text of a token sequence (UTF-8 bytes, not NUL-terminated). Drops a leading BOS and the
// leading space SentencePiece adds, like llama.cpp / Hugging Face decode.
VLC_API vlc_status vlc_detokenize(const vlc_model * model, const int32_t * tokens, int32_t n_tokens,
                                  int32_t remove_special, int32_t unparse_special,
                                  char * buf, int32_t cap, int32_t * n_out);
VLC_API int32_t    vlc_token_is_eog(const vlc_model * model, int32_t token); // 1 = ends generation

// ---- session
VLC_API void       vlc_session_params_init(vlc_session_params * params);
// The session takes a reference on model (see Lifetime above).
VLC_API vlc_status vlc_session_create(vlc_model * model, const vlc_session_params * params, vlc_session ** out);
// Frees the session and drops its reference on the model (the last one frees the model).
VLC_API void       vlc_session_free(vlc_session * session);
VLC_API void       vlc_session_reset(vlc_session * session);     // empties the KV cache
VLC_API int32_t    vlc_session_n_past(const vlc_session * session);
VLC_API void       vlc_session_get_stats(const vlc_session * session, vlc_session_stats * out);
// Runs n_tokens tokens at positions n_past .. n_past+n_tokens-1 and appends them to the KV
// cache. logits ([n_logit_rows, n_vocab], may be NULL when n_logit_rows is 0) receives the
// logits of the last n_logit_rows positions (1 = last, n_tokens = all). Token ids out of
// range give VLC_STATUS_INVALID_ARG and too many tokens VLC_STATUS_CONTEXT_FULL; in both
// cases the session is unchanged. Other errors leave n_past unchanged. Logits that come out
// NaN / inf give VLC_STATUS_NUMERIC, naming the position, its input and the first layer whose
// output was not finite; n_past and the KV cache are then as before the call (statistics
// gathered in it are not undone).
VLC_API vlc_status vlc_session_prefill(vlc_session * session, const int32_t * tokens, int32_t n_tokens,
                                       float * logits, int32_t n_logit_rows);
// Runs n rows of input embeddings embd [n, n_embd] (e.g. image features from
// vlc_vision_encode) at positions n_past .. n_past+n-1, like vlc_session_prefill; the
// session records them as one image span. n_embd must equal the model's; a NaN / inf in
// embd is VLC_STATUS_INVALID_ARG (session unchanged).
VLC_API vlc_status vlc_session_prefill_embd(vlc_session * session, const float * embd, int32_t n, int32_t n_embd,
                                            float * logits, int32_t n_logit_rows);
// Image spans prefilled so far (in order); span i covers positions [pos0, pos0 + n).
VLC_API int32_t    vlc_session_n_images(const vlc_session * session);
VLC_API vlc_status vlc_session_image_span(const vlc_session * session, int32_t i, int32_t * pos0, int32_t * n);
// One token at position n_past; logits ([n_vocab]) may be NULL. Same failure rules.
VLC_API vlc_status vlc_session_decode(vlc_session * session, int32_t token, float * logits);
// Batched decoding: one step for n distinct sessions of one model at once, every weight
// matrix read once for the n rows. tokens[i] runs at position n_past of sessions[i], whose
// logits go to logits + i * n_vocab (logits [n, n_vocab], required). Each row attends over
// its own session's KV (any length, compressed or not); the results are bit-identical to
// n vlc_session_decode calls. Runs on sessions[0]'s threads and scratch. Fails, changing
// no session, on a NULL or repeated session, sessions of different models, a token out of
// range, a full context, or a session gathering attention statistics at its next position.
// A row of logits that comes out NaN / inf gives VLC_STATUS_NUMERIC naming the session, and
// every session is stepped back (n_past and KV as before the call).
VLC_API vlc_status vlc_batch_decode(vlc_session * const * sessions, const int32_t * tokens, int32_t n,
                                    float * logits);
// Logits of the last position run, [n_vocab], borrowed: valid until the next call on the
// session; NULL before the first prefill.
VLC_API const float * vlc_session_logits(const vlc_session * session);

// ---- attention statistics (see vlc_attn_stats_params)
VLC_API void       vlc_attn_stats_params_init(vlc_attn_stats_params * params); // p = 0.01, rest 0
// Turns the statistics on for the rows still to be run (params != NULL; they start from
// zero, replacing any gathered before) or off (NULL; frees them). vlc_session_reset also
// turns them off. Call before the prefill that runs the window rows; the rows are
// gathered across any number of prefill calls. On error nothing changes. Errors:
// VLC_STATUS_INVALID_ARG (a range or p above; a compressed cache), VLC_STATUS_OOM.
VLC_API vlc_status vlc_session_set_attn_stats(vlc_session * session, const vlc_attn_stats_params * params);
// Rows of a set gathered so far; -1 when the statistics or that set are off.
VLC_API int32_t    vlc_session_attn_stats_rows(const vlc_session * session, vlc_attn_set set);
// Per-layer sparsity of a set's rows into out [n_layer] (n_layer must equal the model's);
// NAN for every layer while no row has been gathered. VLC_STATUS_INVALID_ARG when the set
// is off or n_layer differs.
VLC_API vlc_status vlc_session_attn_sparsity(const vlc_session * session, vlc_attn_set set, double * out,
                                             int32_t n_layer);
// Per-key weight sums of one layer and a set into out [n_head_kv, n_keys] (key j of KV
// head g at out[g * n_keys + j]; j is the key's position, the cache being uncompressed).
// n_keys is 0 .. n_ctx, usually n_past; keys no gathered row saw read 0.
// VLC_STATUS_INVALID_ARG when the set is off or layer / n_keys is out of range.
VLC_API vlc_status vlc_session_attn_scores(const vlc_session * session, vlc_attn_set set, int32_t layer,
                                           double * out, int32_t n_keys);

// ---- KV-cache compression (VL-Cache and baselines)
VLC_API void       vlc_kv_params_init(vlc_kv_params * params); // vl-cache, budget 0.1, defaults above
// A policy's name ("vl-cache", "h2o", ...: the names the Python package and tools use);
// NULL for an unknown policy. Policies are 0 .. VLC_KV_N_POLICIES - 1.
VLC_API const char * vlc_kv_policy_name(int32_t policy);
// Bit mask of the statistics sets (1 << vlc_attn_set) a policy reads; 0 for full,
// streamingllm and random. -1 for an unknown policy.
VLC_API int32_t    vlc_kv_policy_needs(int32_t policy);
// The statistics set whose per-key sums rank a policy's tokens (the scores vlc_kv_plan
// takes); -1 when it ranks by none (full, streamingllm, random) or is unknown.
VLC_API int32_t    vlc_kv_policy_ranks_by(int32_t policy);
// Pure planning, no session: the budgets and kept sets of params->policy for a prompt of
// m entries in n_layer layers x n_head_kv KV heads. sparsity [n_layer] (needed by vl-cache
// and sparsity-h2o, else may be NULL); scores [n_layer, n_head_kv, m] the per-key sums of
// the set the policy needs (H2O sums for h2o / sparsity-h2o, SNAPKV sums before pooling
// for snapkv / pyramidkv / adakv, WINDOW sums otherwise; may be NULL when it needs none).
// Writes keep [n_layer, n_head_kv, m] (1 = kept, 0 = evicted) and, when not NULL,
// layer_budgets [n_layer] (k_l, tokens per KV head; AdaKV: before the head split).
// VLC_STATUS_INVALID_ARG for a parameter out of range or a missing input.
VLC_API vlc_status vlc_kv_plan(const vlc_kv_params * params, int32_t n_layer, int32_t n_head_kv, int32_t m,
                               const double * sparsity, const double * scores, uint8_t * keep,
                               int32_t * layer_budgets);
// Compresses the session's KV cache once, right after the prompt's prefill: plans with the
// statistics gathered (vlc_session_set_attn_stats; the policy's sets must cover their rows
// completely), then per layer and KV head gathers the kept prompt entries, in position
// order, into new buffers of kept + decode_room entries and frees the old ones. Entries at
// positions >= n_prompt (tokens run after the prompt) are all kept. Frees the statistics.
// Decoding continues at position n_past; kept keys keep their RoPE rotation.
// Errors (the session is then unchanged): VLC_STATUS_INVALID_ARG (empty session, already
// compressed, statistics missing or incomplete, a parameter), VLC_STATUS_OOM.
// layer_budgets [n_layer] may be NULL; out may be NULL.
VLC_API vlc_status vlc_session_compress(vlc_session * session, const vlc_kv_params * params,
                                        int32_t * layer_budgets, vlc_compress_report * out);
// 1 after vlc_session_compress until vlc_session_reset.
VLC_API int32_t    vlc_session_is_compressed(const vlc_session * session);
// Entries one KV head of one layer holds (-1 for a bad layer / head).
VLC_API int32_t    vlc_session_kv_len(const vlc_session * session, int32_t layer, int32_t head);
// Original positions of those entries, ascending, into out [cap]. Same buffer rule as
// vlc_tokenize: *n_out gets the count, VLC_STATUS_BUFFER_TOO_SMALL when cap < *n_out.
VLC_API vlc_status vlc_session_kv_positions(const vlc_session * session, int32_t layer, int32_t head,
                                            int32_t * out, int32_t cap, int32_t * n_out);
// A new session with a copy of src's state: KV cache (compressed or not), position, image
// spans, statistics, timings, same parameters. For comparing policies on one prefill. It
// takes its own reference on the model.
VLC_API vlc_status vlc_session_clone(const vlc_session * src, vlc_session ** out);

// ---- weight types and quantization (reference kernels; for tools/quantize.py and tests)
VLC_API const char * vlc_type_name(int32_t type);              // "Q4_K"; NULL for a type we do not run
VLC_API int32_t      vlc_type_block_size(int32_t type);        // elements per block; 0 if unknown
// Bytes of n elements of type (n a multiple of the block size); 0 if unknown or not a multiple.
VLC_API size_t       vlc_type_row_bytes(int32_t type, int64_t n);
// Quantizes src [n] (whole rows; n a multiple of the block size) into dst [cap bytes].
VLC_API vlc_status   vlc_quantize(int32_t type, const float * src, int64_t n, void * dst, size_t cap);
// dst [n] = the values of src (n elements of type).
VLC_API vlc_status   vlc_dequantize(int32_t type, const void * src, int64_t n, float * dst);

// ---- sampler (independent of the model; feed it logits)
VLC_API void       vlc_sampler_params_init(vlc_sampler_params * params);
VLC_API vlc_status vlc_sampler_create(const vlc_sampler_params * params, vlc_sampler ** out);
VLC_API void       vlc_sampler_free(vlc_sampler * sampler);
VLC_API void       vlc_sampler_reset(vlc_sampler * sampler);                 // forget history, reseed
VLC_API void       vlc_sampler_accept(vlc_sampler * sampler, int32_t token); // add to the penalty history
// Picks a token from logits [n_vocab] (not modified). Does not accept it. A NaN logit is
// never picked, a +inf one counts as the largest float; VLC_STATUS_INVALID_ARG when no
// logit is finite (no token is written).
VLC_API vlc_status vlc_sampler_sample(vlc_sampler * sampler, const float * logits, int32_t n_vocab, int32_t * out);
// VLC_CDEF_END

#ifdef __cplusplus
}
#endif

#endif // VLCACHE_H
