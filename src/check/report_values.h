/* Internal: filling a finding's value fields (ws_finding's digests, element, holders) from
 * what the checks hold, in one place. */
#ifndef WS_REPORT_VALUES_H
#define WS_REPORT_VALUES_H
#include "internal.h"

/* Version of ws_report_to_json's output ("version"); bumped only when a field changes
 * meaning or goes away, never for an added field. */
#define WSI_REPORT_JSON_VERSION 1

/* The digests a mismatch of e (expected) and a (found) is about, into f (he / ha hold the
 * hex and must outlive f's use): SHA-256 when both have it and it differs, else fast. */
WSI_HIDDEN void wsi_finding_digests(ws_finding *f, const ws_manifest_entry *e,
                                    const ws_manifest_entry *a, bool same_key, char he[65],
                                    char ha[65]);
/* The first differing element of a tensor of this shape, both values and how many differ. */
WSI_HIDDEN void wsi_finding_element(ws_finding *f, uint64_t element, int ndim,
                                    const uint64_t *shape, double expected, double found,
                                    uint64_t differ);
#endif
