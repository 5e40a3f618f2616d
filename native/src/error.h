// error.h: thread-local last error and the check macros every module uses.
// Errors are recorded where they happen, with the function name, and returned as a
// vlc_status; nothing here exits. VLC_ASSERT is only for internal invariants (bugs).
#pragma once

#include "vlcache.h"

#include <stdio.h>
#include <stdlib.h>

#if defined(__GNUC__)
#    define VLC_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#    define VLC_PRINTF(a, b)
#endif

// Records "func: message" as this thread's last error and returns status.
vlc_status vlc_error_set(vlc_status status, const char * func, const char * fmt, ...) VLC_PRINTF(3, 4);

// return VLC_ERR(VLC_STATUS_FORMAT, "tensor '%s' ...", name);
#define VLC_ERR(status, ...) vlc_error_set((status), __func__, __VA_ARGS__)

// VLC_CHECK(n > 0, VLC_STATUS_INVALID_ARG, "n = %d", n);  returns from the caller
#define VLC_CHECK(cond, status, ...)                                   \
    do {                                                               \
        if (!(cond)) { return vlc_error_set((status), __func__, __VA_ARGS__); } \
    } while (0)

// Propagates a failed status (the callee already set the message).
#define VLC_TRY(expr)                                                  \
    do {                                                               \
        vlc_status vlc_try_st_ = (expr);                               \
        if (vlc_try_st_ < 0) { return vlc_try_st_; }                   \
    } while (0)

#define VLC_ASSERT(cond)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "vlcache: %s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                  \
        }                                                                             \
    } while (0)
