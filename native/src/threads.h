// threads.h: a small persistent thread pool for the CPU kernels.
//
// vlc_pool_create(n) starts n - 1 workers; the calling thread is the n-th participant.
// vlc_pool_run(pool, fn, ctx, n_tasks) calls fn(ctx, task, ith) once for every task in
// [0, n_tasks), spread over the participants, and returns when all are done. ith in
// [0, n_threads) names the participant that runs the task (index per-thread scratch with
// it). Tasks are handed out dynamically, so which thread runs a task varies; a kernel is
// deterministic for any thread count as long as each output element is computed inside
// one task, in a fixed order, which is how every caller here splits its work.
// One run at a time per pool; a pool belongs to one session (one calling thread).
#pragma once

#include "vlcache.h"

#include <stdint.h>

typedef struct vlc_pool vlc_pool;

typedef void (*vlc_task_fn)(void * ctx, int64_t task, int ith);

// n_threads >= 1. Errors: VLC_STATUS_INVALID_ARG, VLC_STATUS_OOM (also when the system
// refuses a thread: EAGAIN, a resource limit), VLC_STATUS_INTERNAL (pthread_create failed
// otherwise). On failure *out is NULL.
vlc_status vlc_pool_create(int32_t n_threads, vlc_pool ** out);
void       vlc_pool_free(vlc_pool * pool); // joins the workers; NULL is a no-op
int32_t    vlc_pool_n_threads(const vlc_pool * pool);

// Runs fn over n_tasks tasks (n_tasks <= 0 does nothing). A NULL pool runs everything on
// the calling thread with ith = 0.
void vlc_pool_run(vlc_pool * pool, vlc_task_fn fn, void * ctx, int64_t n_tasks);

// Scratch of the calling thread that is kept between calls: slot (below)
// holds at least bytes, 64-byte aligned; NULL when it cannot grow. It only allocates when
// a call asks for more than the slot holds (contents are not kept then), so a kernel that
// runs again at the same sizes allocates nothing. Freed when the thread exits.
// Slots: the quantized prefill kernels' interleaved activations and unpacked weights
// (ops_qsimd.c), the float kernels' packed weights (ops_simd.c).
enum { VLC_SCRATCH_QMM_X, VLC_SCRATCH_QMM_U, VLC_SCRATCH_SIMD_PACK, VLC_SCRATCH_SLOTS };
void * vlc_thread_scratch(int slot, size_t bytes);

