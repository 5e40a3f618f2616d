// error.c: the thread-local last-error buffer behind vlc_last_error().
#include "error.h"

#include <stdarg.h>

static _Thread_local char g_last_error[1024];

vlc_status vlc_error_set(vlc_status status, const char * func, const char * fmt, ...) {
    int n = snprintf(g_last_error, sizeof(g_last_error), "%s: ", func);
    if (n < 0 || n >= (int) sizeof(g_last_error)) {
        n = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last_error + n, sizeof(g_last_error) - (size_t) n, fmt, ap);
    va_end(ap);
    return status;
}

const char * vlc_last_error(void) { return g_last_error; }

void vlc_clear_error(void) { g_last_error[0] = '\0'; }

const char * vlc_status_str(vlc_status status) {
    switch (status) {
        case VLC_STATUS_OK:               return "VLC_STATUS_OK";
        case VLC_STATUS_BUFFER_TOO_SMALL: return "VLC_STATUS_BUFFER_TOO_SMALL";
        case VLC_STATUS_INVALID_ARG:      return "VLC_STATUS_INVALID_ARG";
        case VLC_STATUS_IO:               return "VLC_STATUS_IO";
        case VLC_STATUS_FORMAT:           return "VLC_STATUS_FORMAT";
        case VLC_STATUS_UNSUPPORTED:      return "VLC_STATUS_UNSUPPORTED";
        case VLC_STATUS_OOM:              return "VLC_STATUS_OOM";
        case VLC_STATUS_CONTEXT_FULL:     return "VLC_STATUS_CONTEXT_FULL";
        case VLC_STATUS_CUDA:             return "VLC_STATUS_CUDA";
        case VLC_STATUS_INTERNAL:         return "VLC_STATUS_INTERNAL";
        case VLC_STATUS_NUMERIC:          return "VLC_STATUS_NUMERIC";
    }
    return "VLC_STATUS_UNKNOWN";
}
