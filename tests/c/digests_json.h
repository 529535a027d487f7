/* A manifest's digests as a request's "checksums" ({name: hex}, sha256 where the entry has it,
 * else fast), shared by the protocol tests and the checker fuzz target. Needs jansson. */
#ifndef WS_TEST_DIGESTS_JSON_H
#define WS_TEST_DIGESTS_JSON_H
#include "weightsum.h"

#include <jansson.h>
#include <stdbool.h>

static inline json_t *digests_of(const ws_manifest *m) {
    json_t *o = json_object();
    for (size_t i = 0; i < ws_manifest_count(m); i++) {
        const ws_manifest_entry *e = ws_manifest_entry_at(m, i);
        char hex[65];
        if (e->digest.algos & WS_ALGO_SHA256) ws_sha256_hex(e->digest.sha256, hex);
        else ws_fast_hex(&e->digest.fast, hex);
        json_object_set_new(o, e->name, json_string(hex));
    }
    return o;
}

/* A "checksums" answer ({name: hex}) holds exactly the manifest's digests, as digests_of. */
static inline bool digests_equal(json_t *sums, const ws_manifest *m) {
    json_t *want = digests_of(m);
    bool same = json_equal(sums, want);
    json_decref(want);
    return same;
}
#endif
