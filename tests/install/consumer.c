/* A program outside the tree: built against an installed weightsum with nothing but
 * `pkg-config --cflags --libs weightsum` (tests/install/run.sh). It uses both headers, checks
 * that the library it loaded is the version its header names, and that a digest computed
 * through the installed library is right (SHA-256 of "abc", FIPS 180-2's test vector). */
#include <weightsum.h>
#include <weightsum_experimental.h>

#include <stdio.h>
#include <string.h>

#if !defined(WS_VERSION_NUMBER) || !defined(WS_EXPERIMENTAL)
#error "weightsum headers incomplete"
#endif

int main(void) {
    if (strcmp(ws_version(), WS_VERSION_STRING) != 0 || ws_version_number() != WS_VERSION_NUMBER) {
        fprintf(stderr, "library %s, header %s\n", ws_version(), WS_VERSION_STRING);
        return 1;
    }
    ws_error err;
    ws_digest d;
    uint64_t shape[1] = {3};
    if (ws_digest_buffer(WS_U8, WS_CANON_NATIVE, "abc", 1, shape, WS_ALGO_SHA256, NULL, &d,
                         NULL, &err) != WS_OK) {
        char line[1024];
        ws_error_format(&err, line, sizeof line);
        fprintf(stderr, "%s\n", line);
        return 1;
    }
    char hex[65];
    if (ws_sha256_hex(d.sha256, hex) != WS_OK ||
        strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") != 0) {
        fprintf(stderr, "sha256(abc) = %s\n", hex);
        return 1;
    }
    /* the experimental surface links too */
    if (ws_f32_to_bf16(1.0f) != 0x3F80 || !ws_fast_kernel()) return 1;
    printf("weightsum %s (%d) from an installed tree: sha256(abc) = %s\n", ws_version(),
           (int)ws_version_number(), hex);
    return 0;
}
