// seeds.c: writes the fuzzers' seed corpora (tests/fuzz/build.sh runs it):
//   OUT/gguf/mmproj.gguf       the C tests' tiny CLIP tower + projector (vlc_tiny_vision.h)
//   OUT/gguf/text.gguf         a tiny llama (C 4, 1 layer, 2 heads / 1 KV head, F 8) with a
//                              12-token vocabulary, written with the same helpers
//   OUT/gguf/vocab_only.gguf   its tokenizer keys alone
//   OUT/tokenizer/*            texts for fuzz_tokenizer (byte 0: flags, then the text)
// A few KB in all, made at build time so that nothing binary is committed.
#include "../c/vlc_test.h"

#include "../c/vlc_tiny_vision.h"

enum { TC = 4, TH = 2, THD = 2, TF = 8, TV = 12 };

static void key_arr(gfile * g, const char * k, uint32_t type, uint64_t n) {
    wbuf * b = key(g, k, VLC_GGUF_ARRAY);
    w_u32(b, type);
    w_u64(b, n);
}

static void vocab_keys(gfile * g) {
    static const char * const tokens[TV] = { "<unk>", "<s>", "</s>", "<0x41>", "\xE2\x96\x81", "a", "b",
                                             "ab", "\xE2\x96\x81" "a", "<image>", "\xC3\xA9", "<|im_end|>" };
    static const int32_t types[TV] = { 2, 3, 3, 6, 1, 1, 1, 1, 1, 4, 1, 3 };
    key_str(g, "tokenizer.ggml.model", "llama");
    key_arr(g, "tokenizer.ggml.tokens", VLC_GGUF_STRING, TV);
    for (int i = 0; i < TV; i++) {
        w_str(&g->kv, tokens[i]);
    }
    key_arr(g, "tokenizer.ggml.scores", VLC_GGUF_FLOAT32, TV);
    for (int i = 0; i < TV; i++) {
        w_f32(&g->kv, -(float) i);
    }
    key_arr(g, "tokenizer.ggml.token_type", VLC_GGUF_INT32, TV);
    w_bytes(&g->kv, types, sizeof(types));
    key_u32(g, "tokenizer.ggml.bos_token_id", 1);
    key_u32(g, "tokenizer.ggml.eos_token_id", 2);
    key_bool(g, "tokenizer.ggml.add_bos_token", 1);
}

static void mat(gfile * g, const char * name, int64_t ne0, int64_t ne1) {
    float   x[TC * TV];
    int64_t ne[2] = { ne0, ne1 };
    fill(x, (int) (ne0 * ne1), 0.5f, ne1 == 1 ? 1.0f : 0.0f);
    tensor(g, name, ne1 == 1 ? 1 : 2, ne, x);
}

static wbuf text_model(int with_weights) {
    gfile g = { 0 };
    key_str(&g, "general.architecture", "llama");
    key_u32(&g, "llama.context_length", 64);
    key_u32(&g, "llama.embedding_length", TC);
    key_u32(&g, "llama.block_count", 1);
    key_u32(&g, "llama.feed_forward_length", TF);
    key_u32(&g, "llama.attention.head_count", TH);
    key_u32(&g, "llama.attention.head_count_kv", 1);
    w_f32(key(&g, "llama.attention.layer_norm_rms_epsilon", VLC_GGUF_FLOAT32), 1e-5f);
    w_f32(key(&g, "llama.rope.freq_base", VLC_GGUF_FLOAT32), 10000.0f);
    vocab_keys(&g);
    if (with_weights) {
        mat(&g, "token_embd.weight", TC, TV);
        mat(&g, "output_norm.weight", TC, 1);
        mat(&g, "blk.0.attn_norm.weight", TC, 1);
        mat(&g, "blk.0.attn_q.weight", TC, TH * THD);
        mat(&g, "blk.0.attn_k.weight", TC, THD);
        mat(&g, "blk.0.attn_v.weight", TC, THD);
        mat(&g, "blk.0.attn_output.weight", TH * THD, TC);
        mat(&g, "blk.0.ffn_norm.weight", TC, 1);
        mat(&g, "blk.0.ffn_gate.weight", TC, TF);
        mat(&g, "blk.0.ffn_up.weight", TC, TF);
        mat(&g, "blk.0.ffn_down.weight", TF, TC);
    }
    return finish(&g);
}

static void save(const char * dir, const char * name, const void * p, size_t n) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE * f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "seeds: cannot write %s\n", path);
        exit(1);
    }
}

static void save_wbuf(const char * dir, const char * name, wbuf b) {
    save(dir, name, b.p, b.n);
    free(b.p);
}

int main(int argc, char ** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: seeds OUT_DIR (with gguf/ and tokenizer/ in it)\n");
        return 2;
    }
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/gguf", argv[1]);
    static tower t;
    tower_init(&t);
    opts o = default_opts();
    save_wbuf(dir, "mmproj.gguf", write_tower(&t, &o));
    save_wbuf(dir, "text.gguf", text_model(1));
    save_wbuf(dir, "vocab_only.gguf", text_model(0));

    // fuzz_tokenizer: byte 0 = flags (bit 0 space prefix, 1 add_bos, 2 parse_special,
    // 3 remove_special, 4 unparse_special), then the text
    static const char * const texts[] = {
        "\x0bthe a the ab", "\x0e<s>the</s><image> <|im_end|>", "\x09 \xC3\xA9\xC3\xA9  th", "\x1f\xFF\xE2\x96\x81\x80",
        "\x08", "\x02\x01\x00\x00\x00\x05\x01\x00\x00\x10\x01\x00\x00",
    };
    snprintf(dir, sizeof(dir), "%s/tokenizer", argv[1]);
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "text%zu", i);
        size_t n = strlen(texts[i]);
        if (i == 5) {
            n = 13;  // holds NULs: little-endian ids 1, 261, 272 after the flags
        }
        save(dir, name, texts[i], n);
    }
    return 0;
}
