/*
 * Fuzz target: the manifest parser (JSON and sha256sum-style lines). What parses must survive
 * a round trip, else abort: its JSON form parses again into a manifest of the same tensors
 * with the same digests, and its line form parses again into as many tensors.
 */
#include "weightsum.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void round_trip(const ws_manifest *m) {
    ws_error err;
    char *text = NULL;
    if (ws_manifest_to_json(m, &text, &err) != WS_OK) return; /* e.g. out of memory */
    ws_manifest *back = NULL;
    if (ws_manifest_parse(text, strlen(text), "json", &back, &err) != WS_OK) abort();
    if (ws_manifest_count(back) != ws_manifest_count(m)) abort();
    for (size_t i = 0; i < ws_manifest_count(m); i++) {
        const ws_manifest_entry *a = ws_manifest_entry_at(m, i);
        const ws_manifest_entry *b = ws_manifest_find(back, a->name);
        if (!b || b->digest.algos != a->digest.algos) abort();
        if ((a->digest.algos & WS_ALGO_SHA256) && memcmp(a->digest.sha256, b->digest.sha256, 32))
            abort();
        if ((a->digest.algos & WS_ALGO_FAST) && memcmp(&a->digest.fast, &b->digest.fast, sizeof a->digest.fast))
            abort();
    }
    ws_manifest_free(back);
    ws_free(text);
    if (ws_manifest_to_lines(m, &text, &err) != WS_OK) return;
    if (ws_manifest_parse(text, strlen(text), "lines", &back, &err) == WS_OK) {
        if (ws_manifest_count(back) != ws_manifest_count(m)) abort();
        ws_manifest_free(back);
    }
    ws_free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ws_manifest *m = NULL;
    ws_error err;
    if (ws_manifest_parse((const char *)data, size, "fuzz", &m, &err) == WS_OK) {
        round_trip(m);
        ws_manifest_free(m);
    }
    return 0;
}
