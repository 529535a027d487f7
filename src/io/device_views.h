/* Internal: tensors in place (ws_view) as the device backend's descriptors (device_views.c). */
#ifndef WS_DEVICE_VIEWS_H
#define WS_DEVICE_VIEWS_H
#include "device_backend.h"
#include "internal.h"

/* Upper bound on the rectangles one view may need (views whose outer dims do not merge
 * become one rectangle per outer index). */
#define WSI_VIEW_MAX_RECTS (UINT64_C(1) << 24)

/*
 * The rectangles of view v whose canonical elements, one rectangle after another and each row
 * by row, are v's elements in C order; hf_unit0 / hf_row_units place them at v's own unit
 * indices (canonical units of policy c). Size-1 dims are dropped and dims that follow each
 * other in memory merged, so a contiguous tensor is one rectangle of one row. An empty view
 * gives 0 rectangles. *out is malloc'ed (free it); WS_ERR_ARG / WS_ERR_LIMIT / WS_ERR_DTYPE.
 */
WSI_HIDDEN ws_err wsi_view_rects(const ws_view *v, ws_canon c, wsi_dev_rect **out, size_t *n,
                                 ws_error *err);

/* Numel of a view (WS_ERR_LIMIT on overflow). */
WSI_HIDDEN ws_err wsi_view_numel(const ws_view *v, uint64_t *numel, ws_error *err);
#endif
