/*
 * Internal: the device slot of the sources. The core never includes CUDA: a device backend is
 * a separate shared library (libweightsum_cuda.so, built from cuda/ when nvcc is found) that
 * the core loads with dlopen only when a caller hands it a device buffer. The library exports
 * one symbol, WSI_DEVICE_BACKEND_SYMBOL, returning this table; the core checks abi before use.
 *
 * Rectangles are the device side of a piece: rows x cols elements of one local tensor starting
 * at ptr, element (r, c) at ptr + (r * row_stride + c * col_stride) * dtype size (strides in
 * elements, so non-contiguous torch views need no copy). Its canonical units sit at global unit
 * index hf_unit0 + r * hf_row_units + c * units of the HF tensor (units of the canonical
 * dtype, ws_dtype_units(ws_canonical_dtype(dtype, canon))) (fast-digest algebra,
 * docs/fast-digest.md), so a rectangle's fast digest is the same partial the CPU computes.
 */
#ifndef WS_DEVICE_BACKEND_H
#define WS_DEVICE_BACKEND_H
#include "weightsum_experimental.h" /* ws_dtype_units, the fast-digest algebra */

#define WSI_DEVICE_BACKEND_SYMBOL "ws_device_backend_v1"
#define WSI_DEVICE_BACKEND_ABI 1

typedef struct wsi_dev_rect {
    const void *ptr;        /* device pointer to element (0, 0) */
    ws_dtype dtype;         /* stored dtype */
    uint64_t rows, cols;
    int64_t row_stride;     /* elements */
    int64_t col_stride;     /* elements (1 when rows are contiguous) */
    uint64_t hf_unit0;      /* global unit index of element (0, 0) in its HF tensor */
    uint64_t hf_row_units;  /* global units between two rows of the rectangle */
} wsi_dev_rect;

/* Where the zero-padded local tensor SGLang hashes gets its bytes: rows x row_bytes bytes
 * from src (row r at src + r * src_row_stride bytes, cast from src_dtype to dst_dtype when
 * they differ, with the canonical cast's rules) land at dst_offset + r * dst_row_stride in the
 * local tensor's byte image. Bytes no segment covers are zero. */
typedef struct wsi_dev_segment {
    const void *src;
    ws_dtype src_dtype, dst_dtype;
    uint64_t rows;
    uint64_t row_bytes;     /* in dst_dtype bytes */
    int64_t src_row_stride; /* bytes */
    uint64_t dst_offset;
    uint64_t dst_row_stride;
} wsi_dev_segment;

/* One tensor of a batch SGLang hashes: segments [seg0, seg0 + n_segs) of the batch's segment
 * array describe its total_bytes-byte image. */
typedef struct wsi_dev_sglang_tensor {
    size_t seg0, n_segs;
    uint64_t total_bytes;
} wsi_dev_sglang_tensor;

/* One tensor of a batch SHA-256 hashes: its canonical elements, in C order, are those of
 * rectangles [rect0, rect0 + n_rects) one after another, each rectangle row by row. */
typedef struct wsi_dev_tensor {
    size_t rect0, n_rects;
} wsi_dev_tensor;

/* Memory a backend keeps between calls (staging buffers, descriptor arrays). */
typedef struct wsi_dev_memory {
    uint64_t device_bytes; /* device memory allocated by the backend itself */
    uint64_t host_bytes;   /* pinned host memory */
} wsi_dev_memory;

typedef struct wsi_device_backend {
    int abi;                /* WSI_DEVICE_BACKEND_ABI */
    const char *name;       /* "cuda" */
    /* Device the pointer belongs to, or -1 when it is not a device pointer (host memory). */
    int (*pointer_device)(const void *ptr);
    /* Copy n bytes at ptr (device memory) into host memory dst; stream may be NULL (the
     * default stream); returns when dst holds them. */
    ws_err (*read)(const void *ptr, size_t n, void *dst, void *stream, ws_error *err);
    /* Fast digest of n rectangles in one launch (key: the host-side struct ws_fastkey of
     * fastdigest.h; the backend may cache its upload by key id): out[i] the partial of rects[i]
     * under canonical policy canon, stats[i] its NaN/Inf counts (in the stored dtype). */
    ws_err (*fast_rects)(const struct ws_fastkey *key, const wsi_dev_rect *rects, size_t n,
                         ws_canon canon, ws_fast *out, ws_value_stats *stats, void *stream,
                         ws_error *err);
    /* SGLang's gpu_tensor_hash of a local tensor of total_bytes bytes described by segments
     * (zero elsewhere), without building it. */
    ws_err (*sglang_hash)(const wsi_dev_segment *segs, size_t n, uint64_t total_bytes,
                          uint64_t *out, void *stream, ws_error *err);
    /* Appended to ABI 1 (the fields above are unchanged). */
    /* SGLang's gpu_tensor_hash of n tensors at once (one launch): out[i] for tensors[i]. */
    ws_err (*sglang_hash_batch)(const wsi_dev_segment *segs, size_t n_segs,
                                const wsi_dev_sglang_tensor *tensors, size_t n, uint64_t *out,
                                void *stream, ws_error *err);
    /* SHA-256 of n tensors' canonical bytes (hashlib-identical), cast on the device, copied
     * through pinned staging buffers, hashed on `threads` CPU threads (<= 0: all cores);
     * stats[i] (stats may be NULL): NaN/Inf counts in the stored dtype. A rectangle whose ptr
     * is NULL (rows * cols > 0) stands for that many zero elements (the padding of a local
     * tensor's image, expect_image.c); only this entry takes such rectangles. */
    ws_err (*sha256_rects)(const wsi_dev_rect *rects, size_t n_rects,
                           const wsi_dev_tensor *tensors, size_t n, ws_canon canon,
                           int threads, uint8_t (*out)[32], ws_value_stats *stats, void *stream,
                           ws_error *err);
    /* The canonical cast of one rectangle into device memory dst (rows * cols canonical
     * elements, row-major), with NaN/Inf counts (stats may be NULL); stream-ordered. */
    ws_err (*cast)(const wsi_dev_rect *rect, ws_canon canon, void *dst, ws_value_stats *stats,
                   void *stream, ws_error *err);
    /* What the backend holds now (bounded: see README, "CUDA tensors"). */
    ws_err (*memory)(wsi_dev_memory *out, ws_error *err);
} wsi_device_backend;

typedef const wsi_device_backend *(*wsi_device_backend_fn)(void);

#endif
