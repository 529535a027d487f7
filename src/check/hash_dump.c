/*
 * Digest the canonical tensors of a layout from the pieces an engine dump holds (see
 * ws_hash_dump in weightsum.h): the dump is bound once through sources and partials
 * (dump_check.c), which give the structural and replica findings and the fast digests; SHA-256
 * streams each tensor's replica-0 pieces in canonical order through the sources.
 */
#include "dump_check.h"

ws_err ws_hash_dump(const ws_layout *l, const ws_dump *d, const ws_hash_options *opt,
                    const char *source, ws_manifest **out, ws_report *r, ws_error *err) {
    if (!out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    if (!l || !d || !opt) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    wsi_dumpcheck c;
    ws_err rc = wsi_dumpcheck_open(&c, l, d, opt, r, err);
    if (rc == WS_OK) rc = wsi_dumpcheck_manifest(&c, source, out, err);
    wsi_dumpcheck_close(&c);
    return rc;
}
