/* Fuzz target: the manifest parser (JSON and sha256sum-style lines) and the config parser. */
#include "weightsum.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ws_manifest *m = NULL;
    ws_error err;
    if (ws_manifest_parse((const char *)data, size, "fuzz", &m, &err) == WS_OK) {
        char *text = NULL;
        if (ws_manifest_to_json(m, &text, &err) == WS_OK) free(text);
        ws_manifest_free(m);
    }
    ws_model_config cfg;
    if (ws_model_config_parse((const char *)data, size, "fuzz", &cfg, &err) == WS_OK) {
        ws_layout *l = NULL;
        if (ws_layout_create("sglang", &cfg, 2, &l, &err) == WS_OK) ws_layout_free(l);
    }
    return 0;
}
