/* Fuzz target: the safetensors header parser (ws_ckpt_from_memory). Any input either parses
 * into tensors that lie inside the input, or fails with an error; never a crash or a hang.
 * Every tensor that parses is then digested (both algorithms, both policies), which reads each
 * of its bytes: a tensor that claims bytes past the input shows as an over-read under ASan. */
#include "weightsum.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static ws_fastkey *key;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    ws_error err;
    if (ws_fastkey_create(WS_FAST_DEFAULT_SEED, strlen(WS_FAST_DEFAULT_SEED), &key, &err) != WS_OK)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ws_ckpt *c = NULL;
    ws_error err;
    if (ws_ckpt_from_memory(data, size, "fuzz", &c, &err) == WS_OK) {
        for (size_t i = 0; i < ws_ckpt_count(c); i++) {
            const ws_tensor *t = ws_ckpt_tensor(c, i);
            if (t->file_offset > size || t->nbytes > size - t->file_offset) abort(); /* a parser bug */
            if (ws_ckpt_find(c, t->name) != t) abort();
            ws_digest d;
            if (ws_digest_tensor(t, i % 2 ? WS_CANON_NATIVE : WS_CANON_BF16,
                                 WS_ALGO_SHA256 | WS_ALGO_FAST, key, &d, NULL, &err) != WS_OK)
                abort(); /* a tensor that parsed can be digested */
        }
        ws_ckpt_free(c);
    }
    return 0;
}
