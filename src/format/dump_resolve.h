/* Internal: a dump matched against a layout — which dump tensor is which local tensor — and
 * the structural checks that need no digest (missing, unexpected, shape, padding). Shared by
 * hashing and verifying dumps. */
#ifndef WS_DUMP_RESOLVE_H
#define WS_DUMP_RESOLVE_H
#include "pieces.h"

#include <pthread.h>

typedef struct wsi_dumpview {
    const ws_layout *l;
    const ws_dump *d;
    wsi_plan *plans;           /* per HF tensor */
    const ws_tensor **loc;     /* per local tensor: its tensor in the dump, or NULL */
    const char **why_missing;  /* per local tensor: why it cannot be used (NULL when usable) */
    ws_report *r;
    pthread_mutex_t lock;      /* guards r and progress */
} wsi_dumpview;

/* Match every dump tensor to the layout; report missing rank files, missing / unexpected /
 * misshapen local tensors and non-zero padding into r. */
WSI_HIDDEN ws_err wsi_dumpview_open(wsi_dumpview *v, const ws_layout *l, const ws_dump *d,
                                    ws_report *r, ws_error *err);
WSI_HIDDEN void wsi_dumpview_close(wsi_dumpview *v);
/* Thread-safe report append. */
WSI_HIDDEN void wsi_dumpview_report(wsi_dumpview *v, ws_status s, const char *tensor,
                                    const char *local, int rank, int64_t row0, int64_t row1,
                                    const char *fmt, ...) __attribute__((format(printf, 8, 9)));
/* Thread-safe report append of a finding with its value fields (ws_finding). */
WSI_HIDDEN void wsi_dumpview_add(wsi_dumpview *v, const ws_finding *f);
/* Element pointer of a run's local data. */
static inline const uint8_t *wsi_run_data(const wsi_dumpview *v, const wsi_run *run) {
    const ws_tensor *t = v->loc[run->local];
    return (const uint8_t *)t->data + run->l_at * ws_dtype_size(t->dtype);
}
#endif
