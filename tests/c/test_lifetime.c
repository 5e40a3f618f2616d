// test_lifetime.c: handles through the public API only, run under the sanitizers by
// test_ctests.py. A session holds a reference on its model: the model freed first, its
// sessions still decode (the same logits as before), and the last session out frees the
// weights; clones count too. Then threads: each thread runs sessions of one shared model
// (create, prefill, decode, free) while the main thread has dropped its reference, so the
// model goes with whichever session is freed last. Last, readers: threads read metadata,
// info, the tokenizer and tensors of one model while a session decodes on it; every answer
// must equal the first one (the metadata string the very same pointer: copied at load).
#include "vlcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "tokenizer.h"

#define VLC_TEST_SEED 0x3c1e55a9d0b7f421ull
#include "vlc_test.h"
#include "gguf_bytes.h"

enum { V = 40, C = 32, L = 2, H = 4, HKV = 2, F = 48, N_THREADS = 4, ROUNDS = 6, STEPS = 6 };

// ---------------------------------------------------------------------------
// a tiny llama GGUF: metadata, a V-token vocabulary, random f32 weights

static void kv_key(wbuf * b, const char * key, uint32_t type) {
    w_str(b, key);
    w_u32(b, type);
    b->n_kv++;
}

static void kv_u32(wbuf * b, const char * key, uint32_t v) { kv_key(b, key, VLC_GGUF_UINT32); w_u32(b, v); }
static void kv_f32(wbuf * b, const char * key, float v)    { kv_key(b, key, VLC_GGUF_FLOAT32); w_f32(b, v); }
static void kv_str(wbuf * b, const char * key, const char * v) { kv_key(b, key, VLC_GGUF_STRING); w_str(b, v); }

typedef struct tensor_spec {
    char    name[48];
    int64_t ne0, ne1;  // ne1 = 1 for a vector
} tensor_spec;

// Writes the model to a temporary file; returns its path (static buffer).
static const char * write_model(void) {
    static char path[] = "/tmp/vlc_lifetime_XXXXXX";
    wbuf        meta   = { 0 };
    kv_str(&meta, "general.architecture", "llama");
    kv_str(&meta, "general.name", "lifetime-test");
    kv_u32(&meta, "llama.context_length", 256);
    kv_u32(&meta, "llama.embedding_length", C);
    kv_u32(&meta, "llama.block_count", L);
    kv_u32(&meta, "llama.feed_forward_length", F);
    kv_u32(&meta, "llama.attention.head_count", H);
    kv_u32(&meta, "llama.attention.head_count_kv", HKV);
    kv_f32(&meta, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    kv_str(&meta, "tokenizer.ggml.model", "llama");
    kv_key(&meta, "tokenizer.ggml.tokens", VLC_GGUF_ARRAY);
    w_u32(&meta, VLC_GGUF_STRING);
    w_u64(&meta, V);
    for (int i = 0; i < V; i++) {  // <unk> <s> </s>, then pieces "t3" .. "t39"
        char piece[16];
        snprintf(piece, sizeof(piece), i == 0 ? "<unk>" : i == 1 ? "<s>" : i == 2 ? "</s>" : "t%d", i);
        w_str(&meta, piece);
    }
    kv_key(&meta, "tokenizer.ggml.scores", VLC_GGUF_ARRAY);
    w_u32(&meta, VLC_GGUF_FLOAT32);
    w_u64(&meta, V);
    for (int i = 0; i < V; i++) {
        w_f32(&meta, -(float) i);
    }
    kv_key(&meta, "tokenizer.ggml.token_type", VLC_GGUF_ARRAY);
    w_u32(&meta, VLC_GGUF_INT32);
    w_u64(&meta, V);
    for (int i = 0; i < V; i++) {
        w_u32(&meta, i == 0 ? VLC_TOKEN_UNKNOWN : i < 3 ? VLC_TOKEN_CONTROL : VLC_TOKEN_NORMAL);
    }
    kv_u32(&meta, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(&meta, "tokenizer.ggml.eos_token_id", 2);

    tensor_spec ts[3 + 9 * L];
    int         nt   = 0;
    ts[nt++]         = (tensor_spec) { "token_embd.weight", C, V };
    ts[nt++]         = (tensor_spec) { "output_norm.weight", C, 1 };
    ts[nt++]         = (tensor_spec) { "output.weight", C, V };
    const struct { const char * s; int64_t ne0, ne1; } blk[] = {
        { "attn_norm", C, 1 }, { "attn_q", C, H * (C / H) }, { "attn_k", C, HKV * (C / H) },
        { "attn_v", C, HKV * (C / H) }, { "attn_output", C, C }, { "ffn_norm", C, 1 },
        { "ffn_gate", C, F }, { "ffn_up", C, F }, { "ffn_down", F, C },
    };
    for (int il = 0; il < L; il++) {
        for (int j = 0; j < 9; j++) {
            snprintf(ts[nt].name, sizeof(ts[nt].name), "blk.%d.%s.weight", il, blk[j].s);
            ts[nt].ne0 = blk[j].ne0;
            ts[nt].ne1 = blk[j].ne1;
            nt++;
        }
    }

    wbuf f = { 0 };
    w_bytes(&f, "GGUF", 4);
    w_u32(&f, 3);
    w_u64(&f, (uint64_t) nt);
    w_u64(&f, meta.n_kv);
    w_bytes(&f, meta.p, meta.n);
    free(meta.p);
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        w_str(&f, ts[i].name);
        w_u32(&f, ts[i].ne1 > 1 ? 2 : 1);
        w_u64(&f, (uint64_t) ts[i].ne0);
        if (ts[i].ne1 > 1) {
            w_u64(&f, (uint64_t) ts[i].ne1);
        }
        w_u32(&f, VLC_TYPE_F32);
        w_u64(&f, off);
        off += (uint64_t) (ts[i].ne0 * ts[i].ne1) * 4;
        off = (off + 31) / 32 * 32;
    }
    w_pad(&f, 32);
    for (int i = 0; i < nt; i++) {
        const int is_norm = strstr(ts[i].name, "norm") != NULL;
        for (int64_t e = 0; e < ts[i].ne0 * ts[i].ne1; e++) {
            w_f32(&f, is_norm ? 1.0f : 0.3f * rng_unif());
        }
        w_pad(&f, 32);
    }
    const int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    CHECK(write(fd, f.p, f.n) == (ssize_t) f.n, "write %zu bytes", f.n);
    close(fd);
    free(f.p);
    return path;
}

// ---------------------------------------------------------------------------
// one thread at a time

static const int32_t PROMPT[] = { 1, 5, 9, 12, 30, 7 };
enum { N_PROMPT = sizeof(PROMPT) / sizeof(PROMPT[0]) };

// Prefills PROMPT into s, then decodes STEPS greedy tokens; logits of every step into out.
static void run(vlc_session * s, float out[STEPS + 1][V]) {
    CHECK(vlc_session_prefill(s, PROMPT, N_PROMPT, out[0], 1) == VLC_STATUS_OK, "prefill: %s", vlc_last_error());
    for (int t = 0; t < STEPS; t++) {
        int32_t best = 0;
        for (int32_t v = 1; v < V; v++) {
            best = out[t][v] > out[t][best] ? v : best;
        }
        CHECK(vlc_session_decode(s, best, out[t + 1]) == VLC_STATUS_OK, "decode: %s", vlc_last_error());
    }
}

static float g_want[STEPS + 1][V];

static void test_model_freed_before_its_sessions(const char * path) {
    vlc_model * m = NULL;
    CHECK(vlc_model_load(path, NULL, &m) == VLC_STATUS_OK, "load: %s", vlc_last_error());
    if (!m) {
        return;
    }
    vlc_session_params sp;
    vlc_session_params_init(&sp);
    sp.n_ctx     = 64;
    sp.n_threads = 1;
    vlc_session *a = NULL, *b = NULL, *c = NULL;
    CHECK(vlc_session_create(m, &sp, &a) == VLC_STATUS_OK, "create a");
    CHECK(vlc_session_create(m, &sp, &b) == VLC_STATUS_OK, "create b");
    run(a, g_want);
    CHECK(vlc_session_clone(a, &c) == VLC_STATUS_OK, "clone");
    vlc_model_free(m);  // the sessions hold the weights now
    float got[STEPS + 1][V];
    run(b, got);
    CHECK(memcmp(got, g_want, sizeof(got)) == 0, "after vlc_model_free the session computes other logits");
    vlc_session_free(a);
    vlc_session_free(b);
    float step[V];
    CHECK(vlc_session_decode(c, 3, step) == VLC_STATUS_OK, "the clone decodes: %s", vlc_last_error());
    vlc_session_free(c);  // the last reference: the model goes here (ASan sees any leak or use after)
}

// ---------------------------------------------------------------------------
// threads

typedef struct worker {
    vlc_session * first;  // made by the main thread while it held the model
    int           fails;
} worker;

static void * worker_main(void * arg) {
    worker *      w = arg;
    vlc_session * s = w->first;
    for (int r = 0; r < ROUNDS; r++) {
        float got[STEPS + 1][V];
        run(s, got);
        w->fails += memcmp(got, g_want, sizeof(got)) != 0;
        vlc_session * next = NULL;
        if (r + 1 < ROUNDS) {  // a fresh session from this one (the model handle may be gone)
            vlc_session_reset(s);
            CHECK(vlc_session_clone(s, &next) == VLC_STATUS_OK, "clone in a thread: %s", vlc_last_error());
        }
        vlc_session_free(s);  // one of the threads frees the model here
        s = next;
    }
    return NULL;
}

static void test_threads_share_a_model(const char * path) {
    vlc_model * m = NULL;
    CHECK(vlc_model_load(path, NULL, &m) == VLC_STATUS_OK, "load: %s", vlc_last_error());
    if (!m) {
        return;
    }
    vlc_session_params sp;
    vlc_session_params_init(&sp);
    sp.n_ctx     = 64;
    sp.n_threads = 1;
    worker    ws[N_THREADS] = { 0 };
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        CHECK(vlc_session_create(m, &sp, &ws[i].first) == VLC_STATUS_OK, "create %d", i);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_create(&th[i], NULL, worker_main, &ws[i]);
    }
    vlc_model_free(m);  // while the threads run: the last session to go frees it
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK(ws[i].fails == 0, "thread %d: %d rounds gave other logits than one thread alone", i, ws[i].fails);
    }
}

// ---------------------------------------------------------------------------
// readers

typedef struct reader {
    const vlc_model * m;
    const char *      name;  // vlc_model_meta_str(m, "general.name") in the main thread
    vlc_model_info    info;
    int32_t           ids[16], n_ids;  // "t5 t17" tokenized in the main thread
    int               fails;
} reader;

static void * reader_main(void * arg) {
    reader * r = arg;
    for (int it = 0; it < 2000; it++) {
        const char * name = vlc_model_meta_str(r->m, "general.name");
        r->fails += name != r->name || strcmp(name, "lifetime-test") != 0;
        r->fails += vlc_model_meta_str(r->m, "llama.block_count") != NULL;  // not a string
        double  ctx = 0;
        r->fails += vlc_model_meta_num(r->m, "llama.context_length", &ctx, 1) != 1 || ctx != 256;
        vlc_model_info info;
        vlc_model_get_info(r->m, &info);
        r->fails += memcmp(&info, &r->info, sizeof(info)) != 0;
        int32_t ids[16], n = 0;
        r->fails += vlc_tokenize(r->m, "t5 t17", 6, 1, 0, ids, 16, &n) != VLC_STATUS_OK || n != r->n_ids ||
                    memcmp(ids, r->ids, sizeof(int32_t) * (size_t) n) != 0;
        const int32_t pieces[] = { 1, 5, 17, 2 };
        char          text[64];
        int32_t       n_text = 0;
        r->fails += vlc_detokenize(r->m, pieces, 4, 1, 0, text, sizeof(text), &n_text) != VLC_STATUS_OK ||
                    n_text != 5 || memcmp(text, "t5t17", 5) != 0;
        float norm[C];
        r->fails += vlc_model_tensor_f32(r->m, "output_norm.weight", norm, C) != VLC_STATUS_OK || norm[C - 1] != 1.0f;
    }
    return NULL;
}

static void * decoder_main(void * arg) {
    vlc_session * s = arg;
    for (int r = 0; r < 4; r++) {
        float got[STEPS + 1][V];
        vlc_session_reset(s);
        run(s, got);
        CHECK(memcmp(got, g_want, sizeof(got)) == 0, "a session beside the readers computes other logits");
    }
    return NULL;
}

static void test_readers_from_threads(const char * path) {
    vlc_model * m = NULL;
    CHECK(vlc_model_load(path, NULL, &m) == VLC_STATUS_OK, "load: %s", vlc_last_error());
    if (!m) {
        return;
    }
    vlc_session_params sp;
    vlc_session_params_init(&sp);
    sp.n_ctx     = 64;
    sp.n_threads = 1;
    vlc_session * s = NULL;
    CHECK(vlc_session_create(m, &sp, &s) == VLC_STATUS_OK, "create");
    reader    rs[N_THREADS];
    pthread_t th[N_THREADS + 1];
    for (int i = 0; i < N_THREADS; i++) {
        rs[i] = (reader) { .m = m, .name = vlc_model_meta_str(m, "general.name") };
        vlc_model_get_info(m, &rs[i].info);
        CHECK(vlc_tokenize(m, "t5 t17", 6, 1, 0, rs[i].ids, 16, &rs[i].n_ids) == VLC_STATUS_OK, "tokenize");
        pthread_create(&th[i], NULL, reader_main, &rs[i]);
    }
    pthread_create(&th[N_THREADS], NULL, decoder_main, s);
    for (int i = 0; i <= N_THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    for (int i = 0; i < N_THREADS; i++) {
        CHECK(rs[i].fails == 0, "reader %d: %d answers differ from the first", i, rs[i].fails);
    }
    vlc_session_free(s);
    vlc_model_free(m);
}

int main(void) {
    const char * path = write_model();
    test_model_freed_before_its_sessions(path);
    test_threads_share_a_model(path);
    test_readers_from_threads(path);
    unlink(path);
    if (g_fail) {
        fprintf(stderr, "test_lifetime: %d failures\n", g_fail);
        return 1;
    }
    printf("test_lifetime: ok\n");
    return 0;
}
