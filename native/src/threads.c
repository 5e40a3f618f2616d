// threads.c: the persistent thread pool (threads.h) and vlc_n_cpus().
//
// Is: n - 1 pthread workers that live as long as the pool, woken per run through a
// generation counter (a short spin, then a mutex + condition variable), handing out
// tasks from one atomic counter; the caller runs tasks too.
// Is not: a general scheduler (no nesting, no priorities, one run at a time), and not
// OpenMP. Work splitting (which task computes which outputs) belongs to the callers.
#include "threads.h"

#include "error.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#    define VLC_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#    define VLC_CPU_RELAX() __asm__ __volatile__("yield")
#else
#    define VLC_CPU_RELAX() ((void) 0)
#endif

// Iterations a thread polls before it sleeps on the condition variable (a pause is
// ~10-150 cycles, so ~50 us to ~0.2 ms): long enough to catch the next run of a decode
// step (kernels follow each other within microseconds), short enough not to burn a core
// that another process wants.
enum { VLC_POOL_SPIN = 1 << 12 };

typedef struct vlc_worker {
    vlc_pool * pool;
    int        ith;  // 1 .. n_threads-1 (the caller is 0)
} vlc_worker;

struct vlc_pool {
    int32_t          n_threads;
    pthread_t *      threads;    // [n_threads - 1]
    vlc_worker *     workers;    // [n_threads - 1]
    int32_t          n_started;  // workers actually created

    pthread_mutex_t  mu;
    pthread_cond_t   cv_work;    // generation changed (new run or stop)
    pthread_cond_t   cv_done;    // n_busy reached 0

    // the current run; written by the caller before it publishes a new generation
    vlc_task_fn      fn;
    void *           ctx;
    int64_t          n_tasks;
    atomic_llong     next;       // next task to hand out
    atomic_int       n_busy;     // workers that have not finished the current generation
    atomic_uint      generation;
    atomic_int       stop;
};

// ---------------------------------------------------------------------------
// running tasks

static void run_tasks(vlc_pool * pool, int ith) {
    const int64_t n = pool->n_tasks;
    for (;;) {
        int64_t t = atomic_fetch_add_explicit(&pool->next, 1, memory_order_relaxed);
        if (t >= n) {
            break;
        }
        pool->fn(pool->ctx, t, ith);
    }
}

static void * worker_main(void * arg) {
    vlc_worker * w    = arg;
    vlc_pool *   pool = w->pool;
    unsigned     seen = 0;  // generation 0 is "no run yet"
    for (;;) {
        unsigned gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        for (int i = 0; gen == seen && i < VLC_POOL_SPIN; i++) {
            VLC_CPU_RELAX();
            gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        }
        if (gen == seen) {
            pthread_mutex_lock(&pool->mu);
            while ((gen = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen) {
                pthread_cond_wait(&pool->cv_work, &pool->mu);
            }
            pthread_mutex_unlock(&pool->mu);
        }
        seen = gen;
        if (atomic_load_explicit(&pool->stop, memory_order_acquire)) {
            break;
        }
        run_tasks(pool, w->ith);
        if (atomic_fetch_sub_explicit(&pool->n_busy, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool->mu);
            pthread_cond_signal(&pool->cv_done);
            pthread_mutex_unlock(&pool->mu);
        }
    }
    return NULL;
}

void vlc_pool_run(vlc_pool * pool, vlc_task_fn fn, void * ctx, int64_t n_tasks) {
    if (n_tasks <= 0) {
        return;
    }
    if (!pool || pool->n_threads == 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; t++) {
            fn(ctx, t, 0);
        }
        return;
    }
    pool->fn      = fn;
    pool->ctx     = ctx;
    pool->n_tasks = n_tasks;
    atomic_store_explicit(&pool->next, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->n_busy, pool->n_started, memory_order_relaxed);
    pthread_mutex_lock(&pool->mu);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool->cv_work);
    pthread_mutex_unlock(&pool->mu);

    run_tasks(pool, 0);

    for (int i = 0; i < VLC_POOL_SPIN; i++) {
        if (atomic_load_explicit(&pool->n_busy, memory_order_acquire) == 0) {
            return;
        }
        VLC_CPU_RELAX();
    }
    pthread_mutex_lock(&pool->mu);
    while (atomic_load_explicit(&pool->n_busy, memory_order_acquire) != 0) {
        pthread_cond_wait(&pool->cv_done, &pool->mu);
    }
    pthread_mutex_unlock(&pool->mu);
}

// ---------------------------------------------------------------------------
// life cycle

static void stop_workers(vlc_pool * pool) {
    pthread_mutex_lock(&pool->mu);
    atomic_store_explicit(&pool->stop, 1, memory_order_release);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool->cv_work);
    pthread_mutex_unlock(&pool->mu);
    for (int32_t i = 0; i < pool->n_started; i++) {
        pthread_join(pool->threads[i], NULL);
    }
    pool->n_started = 0;
}

vlc_status vlc_pool_create(int32_t n_threads, vlc_pool ** out) {
    VLC_CHECK(out != NULL, VLC_STATUS_INVALID_ARG, "out is NULL");
    *out = NULL;
    VLC_CHECK(n_threads >= 1 && n_threads <= 1024, VLC_STATUS_INVALID_ARG,
              "n_threads = %d, expected 1 .. 1024", n_threads);
    vlc_pool * pool = calloc(1, sizeof(*pool));
    VLC_CHECK(pool != NULL, VLC_STATUS_OOM, "cannot allocate the pool (%zu bytes)", sizeof(*pool));
    pool->n_threads = n_threads;
    atomic_init(&pool->next, 0);
    atomic_init(&pool->n_busy, 0);
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->stop, 0);
    if (n_threads > 1) {
        pool->threads = calloc((size_t) n_threads - 1, sizeof(pthread_t));
        pool->workers = calloc((size_t) n_threads - 1, sizeof(vlc_worker));
        if (!pool->threads || !pool->workers) {
            free(pool->threads);
            free(pool->workers);
            free(pool);
            return VLC_ERR(VLC_STATUS_OOM, "cannot allocate %d worker records", n_threads - 1);
        }
    }
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv_work, NULL);
    pthread_cond_init(&pool->cv_done, NULL);
    for (int32_t i = 0; i < n_threads - 1; i++) {
        pool->workers[i].pool = pool;
        pool->workers[i].ith  = i + 1;
        int rc = pthread_create(&pool->threads[i], NULL, worker_main, &pool->workers[i]);
        if (rc != 0) {
            vlc_pool_free(pool);
            // EAGAIN is a resource limit (threads, memory for the stack), not a bug: say so
            return VLC_ERR(rc == EAGAIN ? VLC_STATUS_OOM : VLC_STATUS_INTERNAL,
                           "n_threads = %d: cannot start worker %d of %d (%s)%s", n_threads, i + 1, n_threads - 1,
                           strerror(rc), rc == EAGAIN ? "; the system's thread or memory limit: ask for fewer" : "");
        }
        pool->n_started++;
    }
    *out = pool;
    return VLC_STATUS_OK;
}

void vlc_pool_free(vlc_pool * pool) {
    if (!pool) {
        return;
    }
    stop_workers(pool);
    pthread_cond_destroy(&pool->cv_done);
    pthread_cond_destroy(&pool->cv_work);
    pthread_mutex_destroy(&pool->mu);
    free(pool->threads);
    free(pool->workers);
    free(pool);
}

int32_t vlc_pool_n_threads(const vlc_pool * pool) {
    return pool ? pool->n_threads : 1;
}

int32_t vlc_n_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#if defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n_aff = CPU_COUNT(&set);
        if (n_aff > 0 && (n <= 0 || n_aff < n)) {
            n = n_aff;
        }
    }
#endif
    if (n < 1) {
        n = 1;
    }
    if (n > 1024) {
        n = 1024;
    }
    return (int32_t) n;
}

// ---------------------------------------------------------------------------
// per-thread scratch: a _Thread_local table (a root the leak checker sees for live threads)
// and a pthread key whose destructor frees it when a worker exits

typedef struct vlc_scratch {
    void * p[VLC_SCRATCH_SLOTS];
    size_t cap[VLC_SCRATCH_SLOTS];
} vlc_scratch;

static _Thread_local vlc_scratch * t_scratch;
static pthread_key_t               g_scratch_key;
static pthread_once_t              g_scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void * ptr) {
    vlc_scratch * s = ptr;
    for (int i = 0; i < VLC_SCRATCH_SLOTS; i++) {
        free(s->p[i]);
    }
    free(s);
}

static void scratch_key_init(void) {
    (void) pthread_key_create(&g_scratch_key, scratch_free);
}

void * vlc_thread_scratch(int slot, size_t bytes) {
    if (slot < 0 || slot >= VLC_SCRATCH_SLOTS) {
        return NULL;
    }
    if (!t_scratch) {
        pthread_once(&g_scratch_once, scratch_key_init);
        t_scratch = calloc(1, sizeof(vlc_scratch));
        if (!t_scratch) {
            return NULL;
        }
        (void) pthread_setspecific(g_scratch_key, t_scratch);
    }
    vlc_scratch * s = t_scratch;
    if (bytes > s->cap[slot]) {
        const size_t cap = (bytes + 63) & ~(size_t) 63;
        void *       p   = aligned_alloc(64, cap);
        if (!p) {
            return NULL;
        }
        free(s->p[slot]);
        s->p[slot]   = p;
        s->cap[slot] = cap;
    }
    return s->p[slot];
}

