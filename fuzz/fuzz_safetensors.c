/* Fuzz target: the safetensors header parser (ws_ckpt_from_memory). Any input either parses
 * into tensors that lie inside the input, or fails with an error; never a crash or a hang. */
#include "weightsum.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ws_ckpt *c = NULL;
    ws_error err;
    if (ws_ckpt_from_memory(data, size, "fuzz", &c, &err) == WS_OK) {
        for (size_t i = 0; i < ws_ckpt_count(c); i++) {
            const ws_tensor *t = ws_ckpt_tensor(c, i);
            if (t->file_offset + t->nbytes > size) abort(); /* a parser bug, not bad input */
        }
        ws_ckpt_free(c);
    }
    return 0;
}
