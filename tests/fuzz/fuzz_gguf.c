// fuzz_gguf.c: libFuzzer harness for the GGUF reader and everything a model load builds on it.
//
// Each input is a whole file. Two passes:
//  1. vlc_gguf_open_buffer over an exact-size heap copy (so ASan sees a read one byte past
//     the end), then every metadata getter on every key, every array element, every byte of
//     every tensor, and the vision tower's loader when the file has clip.* keys (an mmproj);
//  2. the public vlc_model_load on the same bytes through a memfd (there is no load from
//     memory in the API), then the model's readers: info, vision info, each key's string
//     and numbers, small tensors as f32 (dequantizing whatever type the file claims), and a
//     tokenize / detokenize round.
// Built and run by tests/fuzz/build.sh.
#include "error.h"
#include "gguf.h"
#include "model.h"
#include "vision.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile uint64_t g_sink;

static void touch_gguf(const vlc_gguf * g) {
    uint64_t sink = 0;
    for (int64_t k = 0; k < g->n_kv; k++) {
        const vlc_gguf_kv * kv = &g->kv[k];
        int64_t      i = 0;
        double       f = 0;
        int          b = 0;
        vlc_gguf_str s = { 0 };
        int32_t      i32 = 0;
        vlc_gguf_get_int(g, kv->key, 1, &i);
        vlc_gguf_get_float(g, kv->key, 1, &f);
        vlc_gguf_get_bool(g, kv->key, 0, &b);
        vlc_gguf_get_str(g, kv->key, 0, &s);
        vlc_gguf_get_i32(g, kv->key, 0, &i32, -5, 5);
        sink += (uint64_t) i + (uint64_t) b + s.len + (uint64_t) i32;
        if (kv != vlc_gguf_find_kv(g, kv->key) && strcmp(vlc_gguf_find_kv(g, kv->key)->key, kv->key) != 0) {
            abort();
        }
        for (uint64_t e = 0; e < kv->n; e++) {
            if (kv->strs) {
                if (kv->strs[e].len) {
                    sink += (uint8_t) kv->strs[e].data[0] + (uint8_t) kv->strs[e].data[kv->strs[e].len - 1];
                }
            } else {
                const double x = vlc_gguf_arr_float(kv, e);  // may be NaN or huge: keep its bits
                uint64_t     bits;
                memcpy(&bits, &x, sizeof(bits));
                sink += (uint64_t) vlc_gguf_arr_int(kv, e) + bits;
            }
        }
    }
    for (int64_t t = 0; t < g->n_tensors; t++) {
        const uint8_t * p = g->tensors[t].data;
        for (size_t j = 0; j < g->tensors[t].nbytes; j++) {
            sink += p[j];
        }
        sink += (uint64_t) (vlc_gguf_find_tensor(g, g->tensors[t].name) != NULL);
    }
    g_sink += sink;
}

// The projector's output width, for loading a tower without its text model (an mmproj).
static int32_t projector_width(const vlc_gguf * g) {
    const vlc_gguf_tensor * t = vlc_gguf_find_tensor(g, "mm.2.weight");
    return t && t->ne[1] >= 1 && t->ne[1] <= INT32_MAX ? (int32_t) t->ne[1] : 1;
}

static void from_buffer(const uint8_t * data, size_t size) {
    uint8_t * copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    vlc_gguf * g = NULL;
    if (vlc_gguf_open_buffer(copy, size, &g) == VLC_STATUS_OK) {
        touch_gguf(g);
        if (vlc_gguf_find_kv(g, "clip.vision.image_size")) {
            vlc_vision * v = NULL;
            if (vlc_vision_load(g, projector_width(g), &v) == VLC_STATUS_OK) {
                vlc_vision_info info;
                vlc_vision_get_info(v, &info);
                vlc_vision_free(v);
            }
        }
        vlc_gguf_close(g);
    } else if (g != NULL) {
        abort();  // a failed open leaves *out NULL
    }
    free(copy);
}

static int  g_fd = -1;
static char g_path[64];

static void from_file(const uint8_t * data, size_t size) {
    if (g_fd < 0) {
        g_fd = memfd_create("fuzz_gguf", 0);
        if (g_fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(g_path, sizeof(g_path), "/proc/self/fd/%d", g_fd);
    }
    if (ftruncate(g_fd, 0) != 0 || (size && pwrite(g_fd, data, size, 0) != (ssize_t) size)) {
        perror("memfd write");
        abort();
    }
    vlc_model * m = NULL;
    if (vlc_model_load(g_path, NULL, &m) != VLC_STATUS_OK) {
        if (m != NULL) {
            abort();
        }
        return;
    }
    vlc_model_info info;
    vlc_model_get_info(m, &info);
    vlc_vision_info vinfo;
    vlc_model_get_vision_info(m, &vinfo);
    const vlc_gguf * g = m->gguf;
    for (int64_t k = 0; k < g->n_kv; k++) {
        double       nums[4];
        const char * s = vlc_model_meta_str(m, g->kv[k].key);
        g_sink += s ? strlen(s) : 0;
        g_sink += (uint64_t) vlc_model_meta_num(m, g->kv[k].key, nums, 4);
    }
    for (int64_t t = 0; t < g->n_tensors; t++) {
        const vlc_gguf_tensor * gt = &g->tensors[t];
        const int64_t n = gt->ne[0] * gt->ne[1] * gt->ne[2] * gt->ne[3];
        if (n > 0 && n <= 4096) {
            float * out = malloc(sizeof(float) * (size_t) n);
            vlc_model_tensor_f32(m, gt->name, out, n);
            free(out);
        }
    }
    static const char text[] = "the <s>ab\xC3\xA9 <image> \xFF";
    int32_t ids[64], n_ids = 0;
    if (vlc_tokenize(m, text, (int32_t) sizeof(text) - 1, 1, 1, ids, 64, &n_ids) == VLC_STATUS_OK) {
        char    out[256];
        int32_t n_out = 0;
        vlc_detokenize(m, ids, n_ids, 1, 0, out, (int32_t) sizeof(out), &n_out);
    }
    vlc_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    from_buffer(data, size);
    from_file(data, size);
    vlc_clear_error();
    return 0;
}
