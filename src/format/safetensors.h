/* Internal: the safetensors header parser (safetensors_read.c) and its result. */
#ifndef WS_SAFETENSORS_H
#define WS_SAFETENSORS_H
#include "internal.h"

typedef struct wsi_st_entry {
    char *name;
    ws_dtype dtype;
    int ndim;
    uint64_t shape[WS_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end; /* offsets within the data section */
} wsi_st_entry;

typedef struct wsi_st_header {
    wsi_st_entry *entries; /* in header order */
    size_t count;
    char *metadata;        /* "__metadata__" as compact JSON, or NULL */
    uint64_t data_offset;  /* 8 + header length */
    uint64_t data_len;
} wsi_st_header;

WSI_HIDDEN ws_err wsi_st_parse_header(const void *buf, size_t len, const char *label,
                                      wsi_st_header *out, ws_error *err);
WSI_HIDDEN void wsi_st_header_free(wsi_st_header *h);
#endif
