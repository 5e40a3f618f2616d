// test_header_c.c: the public header compiles as plain C11 and matches the built library.
#include "vlcache.h"

#include <stdio.h>
#include <string.h>

int main(void) {
    if (vlc_abi_version() != VLC_ABI_VERSION) {
        printf("FAIL: library ABI %d, header %d\n", vlc_abi_version(), VLC_ABI_VERSION);
        return 1;
    }
    if (strcmp(vlc_status_str(VLC_STATUS_FORMAT), "VLC_STATUS_FORMAT") != 0 || vlc_last_error() == NULL) {
        printf("FAIL: status names\n");
        return 1;
    }
    vlc_model * m = NULL;
    if (vlc_model_load("/nonexistent/model.gguf", NULL, &m) != VLC_STATUS_IO || m != NULL ||
        strstr(vlc_last_error(), "/nonexistent/model.gguf") == NULL) {
        printf("FAIL: missing file: '%s'\n", vlc_last_error());
        return 1;
    }
    vlc_model_free(NULL);
    vlc_session_free(NULL);
    printf("test_header_c: ok\n");
    return 0;
}
