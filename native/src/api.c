// api.c: the public entry points of vlcache.h. Checks arguments, owns the model and
// session structs, and delegates to gguf.c, tokenizer.c, model.c, text.c, stats.c and compress.c. Nothing
// here computes; everything here validates before anything changes, so a failed call
// leaves its handle as it was.
#include "error.h"
#include "gguf.h"
#include "kvcache.h"
#include "model.h"
#include "ops_cpu.h"
#include "stats.h"
#include "tokenizer.h"
#include "vision.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <time.h>

typedef struct vlc_span {
    int32_t pos0;
    int32_t n;
} vlc_span;

struct vlc_session {
    vlc_model *       model;     // one of the model's references, dropped by vlc_session_free
    vlc_text_state *  text;
    vlc_session_stats stats;     // timings; n_past / n_ctx / kv_bytes are filled on read
    vlc_span *        images;    // [n_images] image spans, in prefill order
    int32_t           n_images;
    int32_t           cap_images;
};

// ---------------------------------------------------------------------------
// library

int32_t vlc_abi_version(void) { return VLC_ABI_VERSION; }

const char * vlc_build_info(void) {
    return "vlcache_native CPU"
#if defined(__VERSION__)
           " (cc " __VERSION__ ")"
#endif
        ;
}

size_t vlc_model_params_size(void)   { return sizeof(vlc_model_params); }
size_t vlc_session_params_size(void) { return sizeof(vlc_session_params); }
size_t vlc_model_info_size(void)     { return sizeof(vlc_model_info); }
size_t vlc_sampler_params_size(void) { return sizeof(vlc_sampler_params); }
size_t vlc_session_stats_size(void)  { return sizeof(vlc_session_stats); }
size_t vlc_vision_info_size(void)    { return sizeof(vlc_vision_info); }
size_t vlc_attn_stats_params_size(void) { return sizeof(vlc_attn_stats_params); }

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec * 1e-6;
}

// ---------------------------------------------------------------------------
// model

void vlc_model_params_init(vlc_model_params * p) {
    memset(p, 0, sizeof(*p));
}

// NUL-terminated copies of the string values of g's metadata, [g->n_kv] (NULL for the
// other types): made once at load, so that reading metadata changes nothing.
static vlc_status copy_meta_strs(const vlc_gguf * g, char *** out) {
    char ** strs = calloc(g->n_kv > 0 ? (size_t) g->n_kv : 1, sizeof(char *));
    VLC_CHECK(strs != NULL, VLC_STATUS_OOM, "cannot allocate %lld metadata strings", (long long) g->n_kv);
    *out = strs;
    for (int64_t i = 0; i < g->n_kv; i++) {
        const vlc_gguf_kv * kv = &g->kv[i];
        if (kv->type != VLC_GGUF_STRING) {
            continue;
        }
        strs[i] = malloc(kv->strs[0].len + 1);
        VLC_CHECK(strs[i] != NULL, VLC_STATUS_OOM, "cannot copy metadata '%s' (%zu bytes)", kv->key,
                  (size_t) kv->strs[0].len);
        memcpy(strs[i], kv->strs[0].data, kv->strs[0].len);
        strs[i][kv->strs[0].len] = '\0';
    }
    return VLC_STATUS_OK;
}

static void free_meta_strs(char ** strs, const vlc_gguf * g) {
    for (int64_t i = 0; strs && i < g->n_kv; i++) {
        free(strs[i]);
    }
    free(strs);
}

// Opens and binds everything a model needs; on failure the caller frees m.
static vlc_status load_parts(vlc_model * m, const char * path, const vlc_model_params * p) {
    VLC_TRY(vlc_gguf_open_file(path, !p->no_mmap, &m->gguf));
    VLC_TRY(copy_meta_strs(m->gguf, &m->meta_strs));
    VLC_TRY(vlc_vocab_load(m->gguf, &m->vocab));
    if (m->vocab_only) {
        return VLC_STATUS_OK;
    }
    VLC_TRY(vlc_text_model_init(m));
    const int32_t n_vocab = vlc_vocab_n_tokens(m->vocab);
    VLC_CHECK(n_vocab == m->hp.n_vocab, VLC_STATUS_FORMAT,
              "'%s': the tokenizer has %d tokens but the model has %d rows of logits", path, n_vocab, m->hp.n_vocab);
    // the vision tower: from a llama.cpp mmproj file, or from our one-file LLaVA
    if (p->mmproj_path) {
        VLC_TRY(vlc_gguf_open_file(p->mmproj_path, !p->no_mmap, &m->mmproj));
        VLC_TRY(copy_meta_strs(m->mmproj, &m->mmproj_strs));
        return vlc_vision_load(m->mmproj, m->hp.n_embd, &m->vision);
    }
    if (vlc_gguf_find_kv(m->gguf, "clip.vision.image_size")) {
        return vlc_vision_load(m->gguf, m->hp.n_embd, &m->vision);
    }
    return VLC_STATUS_OK;
}

vlc_status vlc_model_load(const char * path, const vlc_model_params * params, vlc_model ** out) {
    VLC_CHECK(out != NULL, VLC_STATUS_INVALID_ARG, "out is NULL");
    *out = NULL;
    VLC_CHECK(path != NULL, VLC_STATUS_INVALID_ARG, "path is NULL");
    vlc_model_params p;
    vlc_model_params_init(&p);
    if (params) {
        p = *params;
    }
    vlc_model * m = calloc(1, sizeof(*m));
    VLC_CHECK(m != NULL, VLC_STATUS_OOM, "cannot allocate the model struct");
    m->n_refs     = 1;
    m->vocab_only = p.vocab_only != 0;
    vlc_status st = load_parts(m, path, &p);
    if (st != VLC_STATUS_OK) {
        vlc_model_free(m);
        return st;
    }
    *out = m;
    return VLC_STATUS_OK;
}

// A session's reference on its model (see vlc_model_free).
static void model_retain(vlc_model * m) {
    __atomic_add_fetch(&m->n_refs, 1, __ATOMIC_RELAXED);
}

void vlc_model_free(vlc_model * m) {
    if (!m || __atomic_sub_fetch(&m->n_refs, 1, __ATOMIC_ACQ_REL) > 0) {
        return;  // a session still runs on the weights; its vlc_session_free frees them
    }
    vlc_vision_free(m->vision);
    free_meta_strs(m->mmproj_strs, m->mmproj);
    vlc_gguf_close(m->mmproj);
    vlc_text_model_free(m);
    vlc_vocab_free(m->vocab);
    free_meta_strs(m->meta_strs, m->gguf);
    vlc_gguf_close(m->gguf);
    free(m);
}

void vlc_model_get_info(const vlc_model * m, vlc_model_info * out) {
    memset(out, 0, sizeof(*out));
    out->n_vocab         = vlc_vocab_n_tokens(m->vocab);
    out->bos_id          = vlc_vocab_bos(m->vocab);
    out->eos_id          = vlc_vocab_eos(m->vocab);
    out->add_bos         = vlc_vocab_add_bos(m->vocab);
    for (int64_t i = 0; i < m->gguf->n_tensors; i++) {
        const vlc_gguf_tensor * t = &m->gguf->tensors[i];
        out->n_params     += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        out->weight_bytes += t->nbytes;
    }
    if (m->vocab_only) {
        return;
    }
    out->n_ctx_train     = m->hp.n_ctx_train;
    out->n_embd          = m->hp.n_embd;
    out->n_layer         = m->hp.n_layer;
    out->n_head          = m->hp.n_head;
    out->n_head_kv       = m->hp.n_head_kv;
    out->head_dim        = m->hp.head_dim;
    out->n_ff            = m->hp.n_ff;
    out->rope_freq_base  = m->hp.rope_freq_base;
    out->rope_freq_scale = m->hp.rope_freq_scale;
    out->rms_eps         = m->hp.rms_eps;
    out->tied_embeddings = m->tied_embeddings;
    out->weight_type     = m->hp.n_layer > 0 ? (int32_t) m->layers[0].wq.type : (int32_t) m->tok_embd.type;
}

// The metadata record of key in the model file, else in the mmproj; NULL if in neither.
static const vlc_gguf_kv * find_meta(const vlc_model * m, const char * key) {
    const vlc_gguf_kv * kv = key ? vlc_gguf_find_kv(m->gguf, key) : NULL;
    if (!kv && key && m->mmproj) {
        kv = vlc_gguf_find_kv(m->mmproj, key);
    }
    return kv;
}

int64_t vlc_model_meta_num(const vlc_model * m, const char * key, double * out, int64_t cap) {
    const vlc_gguf_kv * kv = find_meta(m, key);
    if (!kv) {
        return -1;
    }
    const uint32_t type = kv->type == VLC_GGUF_ARRAY ? kv->arr_type : kv->type;
    if (type == VLC_GGUF_STRING || type == VLC_GGUF_BOOL || type == VLC_GGUF_ARRAY) {
        return -1;
    }
    for (int64_t i = 0; i < cap && (uint64_t) i < kv->n; i++) {
        out[i] = vlc_gguf_arr_float(kv, (uint64_t) i);
    }
    return (int64_t) kv->n;
}

const char * vlc_model_meta_str(const vlc_model * m, const char * key) {
    if (!key) {
        return NULL;
    }
    const vlc_gguf_kv * kv = vlc_gguf_find_kv(m->gguf, key);
    if (kv) {
        return kv->type == VLC_GGUF_STRING ? m->meta_strs[kv - m->gguf->kv] : NULL;
    }
    kv = m->mmproj ? vlc_gguf_find_kv(m->mmproj, key) : NULL;
    return kv && kv->type == VLC_GGUF_STRING ? m->mmproj_strs[kv - m->mmproj->kv] : NULL;
}

vlc_status vlc_model_tensor_f32(const vlc_model * m, const char * name, float * out, int64_t n) {
    VLC_CHECK(m && name && (out || n == 0), VLC_STATUS_INVALID_ARG, "model, name or out is NULL");
    const vlc_gguf_tensor * t = vlc_gguf_find_tensor(m->gguf, name);
    if (!t && m->mmproj) {
        t = vlc_gguf_find_tensor(m->mmproj, name);
    }
    VLC_CHECK(t != NULL, VLC_STATUS_INVALID_ARG, "no tensor '%s' in the model", name);
    const int64_t ne = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    VLC_CHECK(n == ne, VLC_STATUS_INVALID_ARG, "tensor '%s' has %lld elements, out holds %lld", name,
              (long long) ne, (long long) n);
    VLC_TRY(vlc_tensor_type_check(name, t->type, t->ne[0]));
    vlc_cpu_to_f32(out, t->data, t->type, n);
    return VLC_STATUS_OK;
}

// ---------------------------------------------------------------------------
// vision

void vlc_model_get_vision_info(const vlc_model * m, vlc_vision_info * out) {
    memset(out, 0, sizeof(*out));
    if (m->vision) {
        vlc_vision_get_info(m->vision, out);
    }
}

vlc_status vlc_vision_encode(const vlc_model * m, const float * pixels, int32_t n_tiles, int32_t n_threads,
                             float * out) {
    VLC_CHECK(m != NULL, VLC_STATUS_INVALID_ARG, "model is NULL");
    VLC_CHECK(m->vision != NULL, VLC_STATUS_INVALID_ARG,
              "the model has no vision tower: convert a LLaVA checkpoint, or pass the llama.cpp mmproj file");
    VLC_CHECK(pixels && out, VLC_STATUS_INVALID_ARG, "pixels or out is NULL");
    VLC_CHECK(n_tiles > 0, VLC_STATUS_INVALID_ARG, "n_tiles = %d, expected > 0", n_tiles);
    VLC_CHECK(n_threads >= 0, VLC_STATUS_INVALID_ARG, "n_threads = %d, expected >= 0", n_threads);
    return vlc_vision_encode_tiles(m->vision, pixels, n_tiles, n_threads ? n_threads : vlc_n_cpus(), out);
}

// ---------------------------------------------------------------------------
// tokenizer

vlc_status vlc_tokenize(const vlc_model * m, const char * text, int32_t text_len, int32_t add_bos,
                        int32_t parse_special, int32_t * tokens, int32_t cap, int32_t * n_out) {
    VLC_CHECK(m && n_out, VLC_STATUS_INVALID_ARG, "model or n_out is NULL");
    VLC_CHECK(text || text_len == 0, VLC_STATUS_INVALID_ARG, "text is NULL");
    VLC_CHECK(text_len >= 0, VLC_STATUS_INVALID_ARG, "text_len = %d", text_len);
    VLC_CHECK(tokens || cap == 0, VLC_STATUS_INVALID_ARG, "tokens is NULL with cap = %d", cap);
    return vlc_vocab_tokenize(m->vocab, text, (size_t) text_len, add_bos, parse_special, tokens, cap, n_out);
}

static vlc_status check_token(const vlc_model * m, int32_t token) {
    int32_t n_vocab = vlc_vocab_n_tokens(m->vocab);
    VLC_CHECK(token >= 0 && token < n_vocab, VLC_STATUS_INVALID_ARG,
              "token id %d is out of range [0, %d)", token, n_vocab);
    return VLC_STATUS_OK;
}

vlc_status vlc_token_to_piece(const vlc_model * m, int32_t token, int32_t special, char * buf,
                              int32_t cap, int32_t * n_out) {
    VLC_CHECK(m && n_out, VLC_STATUS_INVALID_ARG, "model or n_out is NULL");
    VLC_CHECK(buf || cap == 0, VLC_STATUS_INVALID_ARG, "buf is NULL with cap = %d", cap);
    VLC_TRY(check_token(m, token));
    return vlc_vocab_token_to_piece(m->vocab, token, special, buf, cap, n_out);
}

vlc_status vlc_detokenize(const vlc_model * m, const int32_t * tokens, int32_t n_tokens,
                          int32_t remove_special, int32_t unparse_special, char * buf, int32_t cap,
                          int32_t * n_out) {
    VLC_CHECK(m && n_out, VLC_STATUS_INVALID_ARG, "model or n_out is NULL");
    VLC_CHECK(n_tokens >= 0 && (tokens || n_tokens == 0), VLC_STATUS_INVALID_ARG, "n_tokens = %d", n_tokens);
    VLC_CHECK(buf || cap == 0, VLC_STATUS_INVALID_ARG, "buf is NULL with cap = %d", cap);
    for (int32_t i = 0; i < n_tokens; i++) {
        VLC_TRY(check_token(m, tokens[i]));
    }
    return vlc_vocab_detokenize(m->vocab, tokens, n_tokens, remove_special, unparse_special, buf, cap, n_out);
}

int32_t vlc_token_is_eog(const vlc_model * m, int32_t token) {
    return vlc_vocab_is_eog(m->vocab, token);
}

// ---------------------------------------------------------------------------
// session

void vlc_session_params_init(vlc_session_params * p) {
    memset(p, 0, sizeof(*p));
    p->n_batch = 512;
    p->type_kv = VLC_TYPE_F16;
}

vlc_status vlc_session_create(vlc_model * m, const vlc_session_params * params, vlc_session ** out) {
    VLC_CHECK(out != NULL, VLC_STATUS_INVALID_ARG, "out is NULL");
    *out = NULL;
    VLC_CHECK(m != NULL, VLC_STATUS_INVALID_ARG, "model is NULL");
    VLC_CHECK(!m->vocab_only, VLC_STATUS_INVALID_ARG, "the model was loaded with vocab_only: it has no weights to run");
    vlc_session_params p;
    vlc_session_params_init(&p);
    if (params) {
        p = *params;
    }
    vlc_session * s = calloc(1, sizeof(*s));
    VLC_CHECK(s != NULL, VLC_STATUS_OOM, "cannot allocate the session struct");
    s->model = m;
    vlc_status st = vlc_text_state_create(m, &p, &s->text);
    if (st != VLC_STATUS_OK) {
        free(s);
        return st;
    }
    model_retain(m);
    *out = s;
    return VLC_STATUS_OK;
}

void vlc_session_free(vlc_session * s) {
    if (!s) {
        return;
    }
    vlc_model * m = s->model;
    vlc_text_state_free(s->text);
    free(s->images);
    free(s);
    vlc_model_free(m);  // the session's reference: the last one out unmaps the model
}

void vlc_session_reset(vlc_session * s) {
    vlc_text_state_reset(s->text);
    memset(&s->stats, 0, sizeof(s->stats));
    s->n_images = 0;
}

int32_t vlc_session_n_past(const vlc_session * s) { return vlc_text_state_n_past(s->text); }

void vlc_session_get_stats(const vlc_session * s, vlc_session_stats * out) {
    *out          = s->stats;
    out->n_past   = vlc_text_state_n_past(s->text);
    out->n_ctx    = vlc_text_state_n_ctx(s->text);
    out->kv_bytes = vlc_text_state_kv_bytes(s->text);
}

// Checks that n tokens are valid ids and fit in the context.
static vlc_status check_tokens(const vlc_session * s, const int32_t * tokens, int32_t n) {
    VLC_CHECK(n > 0, VLC_STATUS_INVALID_ARG, "n_tokens = %d, expected > 0", n);
    VLC_CHECK(tokens != NULL, VLC_STATUS_INVALID_ARG, "tokens is NULL");
    int32_t n_vocab = s->model->hp.n_vocab;
    for (int32_t i = 0; i < n; i++) {
        VLC_CHECK(tokens[i] >= 0 && tokens[i] < n_vocab, VLC_STATUS_INVALID_ARG,
                  "token id %d at index %d is out of range [0, %d)", tokens[i], i, n_vocab);
    }
    int32_t n_past = vlc_text_state_n_past(s->text);
    int32_t n_ctx  = vlc_text_state_n_ctx(s->text);
    VLC_CHECK((int64_t) n_past + n <= n_ctx, VLC_STATUS_CONTEXT_FULL,
              "%d tokens do not fit: %d of the context's %d are used, %d are free",
              n, n_past, n_ctx, n_ctx - n_past);
    return VLC_STATUS_OK;
}

vlc_status vlc_session_prefill(vlc_session * s, const int32_t * tokens, int32_t n_tokens, float * logits,
                               int32_t n_logit_rows) {
    VLC_CHECK(s != NULL, VLC_STATUS_INVALID_ARG, "session is NULL");
    VLC_TRY(check_tokens(s, tokens, n_tokens));
    VLC_CHECK(n_logit_rows >= 0 && n_logit_rows <= n_tokens, VLC_STATUS_INVALID_ARG,
              "n_logit_rows = %d, expected 0 .. %d", n_logit_rows, n_tokens);
    VLC_CHECK(logits || n_logit_rows == 0, VLC_STATUS_INVALID_ARG, "logits is NULL with n_logit_rows = %d", n_logit_rows);
    double t0 = now_ms();
    VLC_TRY(vlc_text_forward(s->text, tokens, NULL, n_tokens, logits, n_logit_rows));
    s->stats.prefill_ms += now_ms() - t0;
    s->stats.n_prefill_tokens += n_tokens;
    return VLC_STATUS_OK;
}

vlc_status vlc_session_prefill_embd(vlc_session * s, const float * embd, int32_t n, int32_t n_embd, float * logits,
                                    int32_t n_logit_rows) {
    VLC_CHECK(s != NULL, VLC_STATUS_INVALID_ARG, "session is NULL");
    VLC_CHECK(n > 0 && embd != NULL, VLC_STATUS_INVALID_ARG, "n = %d rows of embeddings, expected > 0", n);
    VLC_CHECK(n_embd == s->model->hp.n_embd, VLC_STATUS_INVALID_ARG,
              "embeddings have width %d, the text model's n_embd is %d", n_embd, s->model->hp.n_embd);
    VLC_CHECK(n_logit_rows >= 0 && n_logit_rows <= n, VLC_STATUS_INVALID_ARG,
              "n_logit_rows = %d, expected 0 .. %d", n_logit_rows, n);
    VLC_CHECK(logits || n_logit_rows == 0, VLC_STATUS_INVALID_ARG, "logits is NULL with n_logit_rows = %d", n_logit_rows);
    const int32_t n_past = vlc_text_state_n_past(s->text), n_ctx = vlc_text_state_n_ctx(s->text);
    VLC_CHECK((int64_t) n_past + n <= n_ctx, VLC_STATUS_CONTEXT_FULL,
              "%d image rows do not fit: %d of the context's %d are used, %d are free", n, n_past, n_ctx, n_ctx - n_past);
    if (s->n_images == s->cap_images) {  // grow first, so a failure changes nothing
        int32_t    cap = s->cap_images ? 2 * s->cap_images : 8;
        vlc_span * sp  = realloc(s->images, (size_t) cap * sizeof(vlc_span));
        VLC_CHECK(sp != NULL, VLC_STATUS_OOM, "cannot record image span %d", s->n_images);
        s->images     = sp;
        s->cap_images = cap;
    }
    double t0 = now_ms();
    VLC_TRY(vlc_text_forward(s->text, NULL, embd, n, logits, n_logit_rows));
    s->stats.prefill_ms += now_ms() - t0;
    s->stats.n_prefill_tokens += n;
    s->images[s->n_images++] = (vlc_span) { n_past, n };
    return VLC_STATUS_OK;
}

int32_t vlc_session_n_images(const vlc_session * s) { return s->n_images; }

vlc_status vlc_session_image_span(const vlc_session * s, int32_t i, int32_t * pos0, int32_t * n) {
    VLC_CHECK(s && pos0 && n, VLC_STATUS_INVALID_ARG, "session, pos0 or n is NULL");
    VLC_CHECK(i >= 0 && i < s->n_images, VLC_STATUS_INVALID_ARG, "image %d of %d", i, s->n_images);
    *pos0 = s->images[i].pos0;
    *n    = s->images[i].n;
    return VLC_STATUS_OK;
}

vlc_status vlc_session_decode(vlc_session * s, int32_t token, float * logits) {
    VLC_CHECK(s != NULL, VLC_STATUS_INVALID_ARG, "session is NULL");
    VLC_TRY(check_tokens(s, &token, 1));
    double t0 = now_ms();
    VLC_TRY(vlc_text_forward(s->text, &token, NULL, 1, logits, logits ? 1 : 0));
    s->stats.decode_ms += now_ms() - t0;
    s->stats.n_decode_tokens += 1;
    return VLC_STATUS_OK;
}

// Sessions per vlc_text_batch_prepare / _run call (the states' array lives on the stack).
enum { BATCH_CHUNK = 64 };

vlc_status vlc_batch_decode(vlc_session * const * sessions, const int32_t * tokens, int32_t n, float * logits) {
    VLC_CHECK(sessions != NULL && tokens != NULL && logits != NULL, VLC_STATUS_INVALID_ARG,
              "sessions, tokens or logits is NULL");
    VLC_CHECK(n > 0, VLC_STATUS_INVALID_ARG, "n = %d sessions, expected > 0", n);
    for (int32_t i = 0; i < n; i++) {
        VLC_CHECK(sessions[i] != NULL, VLC_STATUS_INVALID_ARG, "session %d is NULL", i);
        VLC_CHECK(sessions[i]->model == sessions[0]->model, VLC_STATUS_INVALID_ARG,
                  "session %d belongs to another model than session 0", i);
        for (int32_t j = 0; j < i; j++) {
            VLC_CHECK(sessions[j] != sessions[i], VLC_STATUS_INVALID_ARG, "sessions %d and %d are the same", j, i);
        }
    }
    const int64_t V  = sessions[0]->model->hp.n_vocab;
    double        t0 = now_ms();
    for (int pass = 0; pass < 2; pass++) {  // every chunk checked before any runs
        for (int32_t c0 = 0; c0 < n; c0 += BATCH_CHUNK) {
            const int32_t    m = n - c0 < BATCH_CHUNK ? n - c0 : BATCH_CHUNK;
            vlc_text_state * sts[BATCH_CHUNK];
            for (int32_t i = 0; i < m; i++) {
                sts[i] = sessions[c0 + i]->text;
            }
            if (pass == 0) {
                vlc_status st = vlc_text_batch_prepare(sts, tokens + c0, m);
                if (st != VLC_STATUS_OK && c0 > 0) {  // say which chunk the state index counts in
                    char msg[512];
                    snprintf(msg, sizeof(msg), "%s", vlc_last_error());
                    return VLC_ERR(st, "sessions %d.. (state i is session %d + i): %s", c0, c0, msg);
                }
                VLC_TRY(st);
            } else {  // checked and reserved in pass 0
                vlc_text_batch_run(sts, tokens + c0, m, logits + c0 * V);
            }
        }
    }
    for (int32_t i = 0; i < n; i++) {  // every row returned must be finite, else the step is undone
        const int64_t bad = vlc_first_nonfinite(logits + i * V, V);
        if (bad >= 0) {
            const double value = logits[i * V + bad];
            for (int32_t j = 0; j < n; j++) {
                vlc_text_state_rewind(sessions[j]->text, vlc_text_state_n_past(sessions[j]->text) - 1);
            }
            return VLC_ERR(VLC_STATUS_NUMERIC, "session %d (token %d at position %d): logits are not finite: %g at"
                           " index %" PRId64 ". The model's weights hold NaN / inf or the values overflowed; no"
                           " session advanced", i, tokens[i], vlc_text_state_n_past(sessions[i]->text), value, bad);
        }
    }
    const double ms = now_ms() - t0;
    for (int32_t i = 0; i < n; i++) {
        sessions[i]->stats.decode_ms += ms;
        sessions[i]->stats.n_decode_tokens += 1;
    }
    return VLC_STATUS_OK;
}

const float * vlc_session_logits(const vlc_session * s) { return vlc_text_state_logits(s->text); }

// ---------------------------------------------------------------------------
// attention statistics (stats.h: checked there, in these names)

void vlc_attn_stats_params_init(vlc_attn_stats_params * p) {
    memset(p, 0, sizeof(*p));
    p->p = 0.01f;
}

vlc_status vlc_session_set_attn_stats(vlc_session * s, const vlc_attn_stats_params * p) {
    VLC_CHECK(s != NULL, VLC_STATUS_INVALID_ARG, "session is NULL");
    return vlc_text_state_set_stats(s->text, p);
}

int32_t vlc_session_attn_stats_rows(const vlc_session * s, vlc_attn_set set) {
    const vlc_stats_set * ss = s ? vlc_stats_get(vlc_text_state_stats(s->text), (int) set) : NULL;
    return ss ? ss->rows : -1;
}

// The set, known and gathered.
static vlc_status check_attn_set(const vlc_session * s, vlc_attn_set set, const vlc_stats_set ** out) {
    VLC_CHECK(s != NULL, VLC_STATUS_INVALID_ARG, "session is NULL");
    VLC_CHECK((int) set >= 0 && (int) set < VLC_ATTN_N_SETS, VLC_STATUS_INVALID_ARG,
              "set = %d, expected VLC_ATTN_WINDOW, VLC_ATTN_H2O or VLC_ATTN_SNAPKV", (int) set);
    *out = vlc_stats_get(vlc_text_state_stats(s->text), (int) set);
    VLC_CHECK(*out != NULL, VLC_STATUS_INVALID_ARG,
              "attention statistics set %d is off (see vlc_session_set_attn_stats)", (int) set);
    return VLC_STATUS_OK;
}

vlc_status vlc_session_attn_sparsity(const vlc_session * s, vlc_attn_set set, double * out, int32_t n_layer) {
    const vlc_stats_set * ss = NULL;
    VLC_TRY(check_attn_set(s, set, &ss));
    VLC_CHECK(out != NULL, VLC_STATUS_INVALID_ARG, "out is NULL");
    VLC_CHECK(n_layer == s->model->hp.n_layer, VLC_STATUS_INVALID_ARG, "n_layer = %d, the model has %d layers",
              n_layer, s->model->hp.n_layer);
    for (int32_t il = 0; il < n_layer; il++) {
        out[il] = vlc_stats_sparsity(vlc_text_state_stats(s->text), (int) set, il);
    }
    return VLC_STATUS_OK;
}

vlc_status vlc_session_attn_scores(const vlc_session * s, vlc_attn_set set, int32_t layer, double * out,
                                   int32_t n_keys) {
    const vlc_stats_set * ss = NULL;
    VLC_TRY(check_attn_set(s, set, &ss));
    const int32_t L = s->model->hp.n_layer, Hkv = s->model->hp.n_head_kv, n_ctx = vlc_text_state_n_ctx(s->text);
    VLC_CHECK(layer >= 0 && layer < L, VLC_STATUS_INVALID_ARG, "layer = %d, expected 0 .. %d", layer, L - 1);
    VLC_CHECK(n_keys >= 0 && n_keys <= n_ctx, VLC_STATUS_INVALID_ARG, "n_keys = %d, expected 0 .. n_ctx = %d",
              n_keys, n_ctx);
    VLC_CHECK(out != NULL || n_keys == 0, VLC_STATUS_INVALID_ARG, "out is NULL with n_keys = %d", n_keys);
    const double * cs = vlc_stats_colsum(vlc_text_state_stats(s->text), (int) set, layer);  // [Hkv, ld]
    const int32_t  nc = n_keys < ss->ld ? n_keys : ss->ld;
    for (int32_t g = 0; g < Hkv; g++) {
        double * o = out + (int64_t) g * n_keys;
        memcpy(o, cs + (int64_t) g * ss->ld, (size_t) nc * sizeof(double));
        for (int32_t j = nc; j < n_keys; j++) {
            o[j] = 0.0;
        }
    }
    return VLC_STATUS_OK;
}

// ---------------------------------------------------------------------------
// KV-cache compression (compress.c) and the cache as it is

vlc_status vlc_session_compress(vlc_session * s, const vlc_kv_params * p, int32_t * layer_budgets,
                                vlc_compress_report * out) {
    const double t0 = now_ms();
    VLC_CHECK(s != NULL && p != NULL, VLC_STATUS_INVALID_ARG, "session or params is NULL");
    VLC_TRY(vlc_text_state_compress(s->text, p, layer_budgets, out));
    if (out) {
        out->seconds = (now_ms() - t0) * 1e-3;
    }
    return VLC_STATUS_OK;
}

int32_t vlc_session_is_compressed(const vlc_session * s) { return s && vlc_text_state_kv(s->text)->compressed; }

int32_t vlc_session_kv_len(const vlc_session * s, int32_t layer, int32_t head) {
    if (!s || layer < 0 || layer >= s->model->hp.n_layer || head < 0 || head >= s->model->hp.n_head_kv) {
        return -1;
    }
    return vlc_kv_at(vlc_text_state_kv(s->text), layer, head)->n;
}

vlc_status vlc_session_kv_positions(const vlc_session * s, int32_t layer, int32_t head, int32_t * out, int32_t cap,
                                    int32_t * n_out) {
    VLC_CHECK(s && n_out, VLC_STATUS_INVALID_ARG, "session or n_out is NULL");
    const int32_t n = vlc_session_kv_len(s, layer, head);
    VLC_CHECK(n >= 0, VLC_STATUS_INVALID_ARG, "layer %d, KV head %d: expected 0 .. %d, 0 .. %d", layer, head,
              s->model->hp.n_layer - 1, s->model->hp.n_head_kv - 1);
    *n_out = n;
    if (cap < n) {
        return VLC_STATUS_BUFFER_TOO_SMALL;
    }
    VLC_CHECK(out != NULL || n == 0, VLC_STATUS_INVALID_ARG, "out is NULL");
    memcpy(out, vlc_kv_at(vlc_text_state_kv(s->text), layer, head)->pos, (size_t) n * sizeof(int32_t));
    return VLC_STATUS_OK;
}

vlc_status vlc_session_clone(const vlc_session * src, vlc_session ** out) {
    VLC_CHECK(src != NULL && out != NULL, VLC_STATUS_INVALID_ARG, "src or out is NULL");
    *out = NULL;
    vlc_session * s = calloc(1, sizeof(*s));
    VLC_CHECK(s != NULL, VLC_STATUS_OOM, "cannot allocate the session struct");
    *s        = *src;
    s->text   = NULL;
    s->images = NULL;
    if (src->n_images > 0) {
        s->images = malloc((size_t) src->cap_images * sizeof(vlc_span));
        if (!s->images) {
            free(s);
            return VLC_ERR(VLC_STATUS_OOM, "cannot copy %d image spans", src->n_images);
        }
        memcpy(s->images, src->images, (size_t) src->n_images * sizeof(vlc_span));
    } else {
        s->cap_images = 0;
    }
    vlc_status rc = vlc_text_state_clone(src->text, &s->text);
    if (rc != VLC_STATUS_OK) {
        free(s->images);
        free(s);
        return rc;
    }
    model_retain(s->model);
    *out = s;
    return VLC_STATUS_OK;
}
