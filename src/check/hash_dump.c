/*
 * Digest the canonical tensors of a layout from the pieces an engine dump holds (see
 * ws_hash_dump in weightsum.h): the dump is bound once through sources and partials
 * (dump_check.c), and every byte is read once (dump_pass.c): the fast partials, the padding
 * rows and the canonical SHA-256 of each tensor are fed from the same reads.
 */
#include "dump_check.h"

ws_err ws_hash_dump(const ws_layout *l, const ws_dump *d, const ws_hash_options *opt,
                    const char *source, ws_manifest **out, ws_report *r, ws_error *err) {
    return wsi_hash_dump_pass(l, d, opt, source, out, r, 0, NULL, err);
}
