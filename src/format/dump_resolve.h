/* Internal: the layout of an engine dump, from the caller's flags, weightsum-layout.json and
 * config.json, checked to describe the dump at all (ws_dump_layout_open_parallel). Matching
 * the dump's tensors and the structural checks are the dump check's (src/check/dump_check.h),
 * which reads every byte through sources. */
#ifndef WS_DUMP_RESOLVE_H
#define WS_DUMP_RESOLVE_H
#include "internal.h"

#endif
