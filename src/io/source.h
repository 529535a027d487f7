/*
 * Internal: sources, the one interface between layouts and bytes (ws_source in weightsum.h).
 * A source holds a rank's named local tensors; every read of their bytes goes through
 * wsi_source_rect, which hands the caller host memory of a rectangle of a tensor's 2-D view,
 * however the bytes live: a file read by pread into reused buffers, a file mapping (size
 * checked with fstat before pages are touched, let go of once read), caller-provided host
 * buffers (strided ones gathered) or device memory (copied through the device backend).
 * Page-cache policy lives here (source_file.c) and nowhere else.
 */
#ifndef WS_SOURCE_H
#define WS_SOURCE_H
#include "device_loader.h"
#include "internal.h"
#include "read_ahead.h"

typedef enum wsi_src_kind { WSI_SRC_HOST = 0, WSI_SRC_DEVICE, WSI_SRC_FILE } wsi_src_kind;

/* One local tensor of a source. */
typedef struct wsi_src_tensor {
    const char *name;
    ws_dtype dtype;
    int ndim;
    uint64_t shape[WS_MAX_DIMS];
    uint64_t numel;
    wsi_src_kind kind;
    /* host / device: element (i0, i1, ...) at data + sum(i_d * strides[d]) * dtype size */
    const void *data;
    int64_t strides[WS_MAX_DIMS];
    bool contiguous;
    void *stream; /* device */
    /* file: numel elements at byte offset file_offset of fd, mapped at map (the file's own
     * mapping, file_len bytes, starts at map - file_offset; a memory image has fd -1) */
    const char *file;
    int fd;
    uint64_t file_offset, file_len;
    const uint8_t *map;
    const ws_ckpt *ckpt;
} wsi_src_tensor;

struct ws_source {
    int read_mode;          /* WS_READ_PREAD / WS_READ_MMAP (file sources) */
    wsi_src_tensor *t;      /* sorted by name */
    size_t n, cap;
    char **names;           /* owned copies of host/device tensor names */
    const wsi_device_backend *dev; /* loaded on the first device tensor */
    int rank;               /* dump sources: the rank; -1 otherwise */
    wsi_read_ahead *ahead;  /* file sources: reads their files ahead of the reader, or NULL */
};

/* Every tensor of checkpoint c (which must outlive the source), as ws_source_dump reads a
 * rank. */
WSI_HIDDEN ws_err wsi_source_ckpt(const ws_ckpt *c, int read_mode, ws_source **out,
                                  ws_error *err);
/* The tensor called name, or NULL. */
WSI_HIDDEN const wsi_src_tensor *wsi_source_find(const ws_source *s, const char *name);

/* Reused read buffers of one thread (free with wsi_readbuf_free; zero-initialise). */
typedef struct wsi_readbuf {
    uint8_t *p;
    size_t cap;
} wsi_readbuf;
WSI_HIDDEN void wsi_readbuf_free(wsi_readbuf *b);
/* Largest read of one call (bytes): bounds memory by a buffer, never by a tensor. */
#define WSI_READ_CHUNK (8u << 20)
/* A contiguous run read by pread comes in reads of this size into the reused buffer: small
 * enough that what the kernel copies in is still in L2 when the digest reads it (8 MiB reads
 * made the copy and the digest each go to memory: perf showed a third of the time in the
 * kernel's copy, a sixth in prefetching the buffer back). */
#ifndef WSI_PREAD_CHUNK
#define WSI_PREAD_CHUNK (256u << 10)
#endif

/*
 * Visit the rectangle rows x cols at (row0, col0) of tensor t's 2-D view [*, l_cols]:
 * fn(ctx, at, data, n) gets n elements (host memory, stored dtype, contiguous) that are
 * elements at .. at + n of the rectangle in row-major order (at = r * cols + c). A call never
 * crosses a row boundary unless cols == l_cols (then rows are contiguous and a call may span
 * several). Calls come in increasing order of at. A read that fails (a file that shrank,
 * an I/O error, a device copy that failed) is WS_ERR_IO naming the file and tensor; fn's
 * error stops the walk and is returned.
 */
typedef ws_err (*wsi_rect_fn)(void *ctx, uint64_t at, const void *data, uint64_t n);
WSI_HIDDEN ws_err wsi_source_rect(const ws_source *s, const wsi_src_tensor *t, uint64_t row0,
                                  uint64_t col0, uint64_t rows, uint64_t cols, uint64_t l_cols,
                                  wsi_readbuf *buf, wsi_rect_fn fn, void *ctx, ws_error *err);

/* Copy n elements at flat index `at` of t into dst (n * dtype size bytes): a file read with
 * pread goes straight into dst (one system call per WSI_READ_CHUNK, no bounce buffer); other
 * kinds through wsi_source_rect (buf is its scratch). Errors as wsi_source_rect's. */
WSI_HIDDEN ws_err wsi_source_read(const ws_source *s, const wsi_src_tensor *t, uint64_t at,
                                  uint64_t n, void *dst, wsi_readbuf *buf, ws_error *err);

/* Per-kind readers (source_file.c, source_host.c, source_device.c). */
WSI_HIDDEN ws_err wsi_file_rect(const ws_source *s, const wsi_src_tensor *t, uint64_t row0,
                                uint64_t col0, uint64_t rows, uint64_t cols, uint64_t l_cols,
                                wsi_readbuf *buf, wsi_rect_fn fn, void *ctx, ws_error *err);
/* pread of n elements at flat index at straight into dst; false when t is not read by pread
 * (mapped mode, a memory image): the caller copies instead. */
WSI_HIDDEN bool wsi_file_pread_mode(const ws_source *s, const wsi_src_tensor *t);
WSI_HIDDEN ws_err wsi_file_read(const ws_source *s, const wsi_src_tensor *t, uint64_t at,
                                uint64_t n, void *dst, ws_error *err);
WSI_HIDDEN ws_err wsi_host_rect(const wsi_src_tensor *t, uint64_t row0, uint64_t col0,
                                uint64_t rows, uint64_t cols, uint64_t l_cols, wsi_readbuf *buf,
                                wsi_rect_fn fn, void *ctx, ws_error *err);
WSI_HIDDEN ws_err wsi_device_rect(const ws_source *s, const wsi_src_tensor *t, uint64_t row0,
                                  uint64_t col0, uint64_t rows, uint64_t cols, uint64_t l_cols,
                                  wsi_readbuf *buf, wsi_rect_fn fn, void *ctx, ws_error *err);
/* Row and column strides (elements) of a strided tensor's 2-D view; false when the view's
 * columns are not one arithmetic progression in memory (then elements are gathered one by
 * one). */
WSI_HIDDEN bool wsi_view_strides(const wsi_src_tensor *t, int64_t *row_stride,
                                 int64_t *col_stride);

/* Grow b to at least n bytes. */
WSI_HIDDEN ws_err wsi_readbuf_reserve(wsi_readbuf *b, size_t n, ws_error *err);

/* Add a tensor (host or device kind) to a source, keeping names sorted; WS_ERR_ARG for a name
 * present already. */
WSI_HIDDEN ws_err wsi_source_insert(ws_source *s, const wsi_src_tensor *t, ws_error *err);
#endif
