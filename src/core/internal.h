/* Internal helpers shared by the library's source files; never installed. */
#ifndef WS_INTERNAL_H
#define WS_INTERNAL_H

#include "weightsum.h"
#include "weightsum_experimental.h"

#include <stdarg.h>
#include <stdbool.h>

#define WSI_HIDDEN __attribute__((visibility("hidden")))

/* Fill err (if non-NULL) and return code. file/tensor may be NULL; offset -1 = none. */
WSI_HIDDEN ws_err wsi_fail(ws_error *err, ws_err code, const char *file, const char *tensor,
                           int64_t offset, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Overflow-checked arithmetic: return false on overflow. */
static inline bool wsi_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool wsi_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* Hex digit value (either case), or -1. */
WSI_HIDDEN int wsi_hex_value(int c);
/* n bytes as 2n lowercase hex digits and a NUL into out. */
WSI_HIDDEN void wsi_hex_encode(const uint8_t *bytes, size_t n, char *out);
/* Exactly 2n hex digits (either case) at hex into n bytes; false (out partly written) on any
 * other character. The caller checks the length. */
WSI_HIDDEN bool wsi_hex_decode(const char *hex, size_t n, uint8_t *out);

/* The whole of a file (with dash_is_stdin, "-" is standard input) into a NUL-terminated buffer
 * (*out, free with free()), *len bytes not counting the NUL. Errors name the file: WS_ERR_IO
 * (open or read failed: never a short buffer taken for the whole file), WS_ERR_NOMEM,
 * WS_ERR_LIMIT over max_bytes (what: "a manifest", "a config.json", ..., for the message). */
WSI_HIDDEN ws_err wsi_read_file(const char *path, bool dash_is_stdin, size_t max_bytes,
                                const char *what, char **out, size_t *len, ws_error *err);

/* strdup that returns NULL on NULL. */
WSI_HIDDEN char *wsi_strdup(const char *s);

/* ws_cast_to_canonical for arguments the caller has validated (a dtype and policy in range,
 * non-NULL buffers): the inner loops' form, which cannot fail. */
WSI_HIDDEN void wsi_cast_to_canonical(ws_dtype t, ws_canon c, const void *src, size_t n,
                                      void *dst, ws_value_stats *stats);
/* ws_diff_update for validated arguments (a valid dtype, non-NULL d, a and b). */
WSI_HIDDEN void wsi_diff_update(ws_diff *d, ws_dtype t, uint64_t at, const void *a,
                                const void *b, uint64_t n);
/* ws_unravel for validated arguments. */
WSI_HIDDEN void wsi_unravel(uint64_t i, int ndim, const uint64_t *shape, uint64_t *coords);
/* ws_fast_accumulate / ws_fast_add for validated arguments (a key, an accumulator, data for
 * n_units units, unit_bytes 1 or 2): the digest paths' form, which cannot fail. */
WSI_HIDDEN void wsi_fast_accumulate(const ws_fastkey *k, ws_fast *acc, uint64_t unit_index,
                                    const void *data, size_t n_units, int unit_bytes);
WSI_HIDDEN void wsi_fast_add(ws_fast *acc, const ws_fast *part);
/* wsi_fast_accumulate of 16-bit units that also says whether any unit, sign bit cleared, is at
 * least `special` (the exponent mask of a 16-bit float: 0x7f80 bf16, 0x7c00 f16): a NaN/Inf
 * candidate. The scan runs over the call's data once the kernel has read it: callers pass
 * L1-sized spans (digest.c: 16 KiB), so it is still cached. */
WSI_HIDDEN bool wsi_fast_accumulate_scan(const ws_fastkey *k, ws_fast *acc, uint64_t unit_index,
                                         const void *data, size_t n_units, uint16_t special);

/* Add the NaN/Inf counts of n elements of float dtype t to st (no-op for other dtypes). */
WSI_HIDDEN void wsi_count_specials(ws_dtype t, const void *src, size_t n, ws_value_stats *st);
/* The largest of n 16-bit units at src with the sign bit shifted out (u << 1): >= exp << 1
 * when any is a NaN or Inf of a 16-bit float whose exponent field is exp (the prefilter of
 * wsi_count_specials, and the scan the fast digest runs beside its kernel). */
WSI_HIDDEN uint16_t wsi_max_mag16(const void *src, size_t n);

/* Let go of the resident pages of [p, p+n) of a checkpoint's file mapping (no-op otherwise). */
WSI_HIDDEN void wsi_ckpt_release(const ws_ckpt *c, const void *p, size_t n);
/* The file holding tensor t of c: its open descriptor (-1 for a memory image), its mapping and
 * the size the file had when it was opened. false when t is not c's. */
typedef struct wsi_ckpt_file {
    const char *path;
    int fd;
    const void *map;
    size_t len;
} wsi_ckpt_file;
WSI_HIDDEN bool wsi_ckpt_file_of(const ws_ckpt *c, const ws_tensor *t, wsi_ckpt_file *out);
/* File i of c (false past the last). */
WSI_HIDDEN bool wsi_ckpt_file_at(const ws_ckpt *c, size_t i, wsi_ckpt_file *out);
/* The mapped range a thread is reading (what ws_mapped_read_current reports). */
typedef struct wsi_touch {
    const char *file, *tensor;
    const uint8_t *begin;
    uint64_t file_offset;
    size_t len;
} wsi_touch;
/* For code that reads a checkpoint's tensors through their mapping rather than through a
 * source (expect and shard take ws_tensor; source_file.c keeps the record): before bytes
 * [off, off + n) of t's data are touched, its file must still hold them (fstat; else WS_ERR_IO naming it, "shrank"), and
 * until wsi_ckpt_touch_end(prev) they are this thread's touch, so that a program's SIGBUS
 * guard can say a file cut after the check. c NULL, or t not in one of c's files (host
 * memory): nothing to check or record. *prev is always set: pass it to wsi_ckpt_touch_end. */
WSI_HIDDEN ws_err wsi_ckpt_touch_begin(const ws_ckpt *c, const ws_tensor *t, uint64_t off,
                                       uint64_t n, wsi_touch *prev, ws_error *err);
WSI_HIDDEN void wsi_ckpt_touch_end(const wsi_touch *prev);

/* ---- comparison helpers (compare.c) ---- */
/* "[a, b, c]" */
WSI_HIDDEN void wsi_shape_str(int ndim, const uint64_t *shape, char *buf, size_t n);
/* "FAMILY tp=T" plus " ep=E" / " pp=P" where they are not 1, into buf; returns buf. */
WSI_HIDDEN const char *wsi_layout_sizes(const ws_layout *l, char *buf, size_t n);
/* Verdict for one tensor present on both sides; detail gets one line when not a match. */
WSI_HIDDEN ws_status wsi_compare_entry(const ws_manifest_entry *expected,
                                       const ws_manifest_entry *actual, bool same_key,
                                       char *detail, size_t n);
/* WS_ERR_ARG when the canonical policies differ; *same_key says whether fast digests compare. */
/* The bf16 policy's caveat as a warning of r: tensors that both sides store wider than bf16
 * (F16, F32, F64 recorded in both manifests) were compared in bf16, so bits both hold were
 * not compared; names them and says how to compare them (--canonical native). */
WSI_HIDDEN ws_err wsi_warn_unseen_bits(const ws_manifest *exp, const ws_manifest *act,
                                       ws_report *r, ws_error *err);
WSI_HIDDEN ws_err wsi_check_comparable(const ws_manifest *exp, const ws_manifest *act,
                                       bool *same_key, ws_error *err);
/* r's warnings as a JSON array [{kind, detail, count, names}] (a jansson json_t the caller
 * owns); NULL when r has none. Shared by ws_report_to_json and the HTTP answers. */
struct json_t;
WSI_HIDDEN struct json_t *wsi_report_warnings_json(const ws_report *r);
/* ws_report_add with the fields spelled out; WS_ERR_NOMEM (in err) when it cannot. */
WSI_HIDDEN ws_err wsi_report_add(ws_report *r, ws_status s, const char *tensor,
                                 const char *local, int rank, int64_t row0, int64_t row1,
                                 const char *detail, ws_error *err);
/* A finding whose detail is printf(fmt, ap), appended to r (NULL: dropped) under lock (a
 * pthread_mutex_t *, may be NULL) by threads that share one report. */
WSI_HIDDEN void wsi_report_vaddf(ws_report *r, void *lock, ws_status s, const char *tensor,
                                 const char *local, int rank, int64_t row0, int64_t row1,
                                 const char *fmt, va_list ap);

/* Call fn(ctx, i) for i in [0, n) on `threads` threads (<= 0: all cores), the caller's
 * included; returns when all are done. fn must do its own locking. */
typedef void (*wsi_item_fn)(void *ctx, size_t i);
WSI_HIDDEN void wsi_parallel_for(size_t n, int threads, wsi_item_fn fn, void *ctx);

/* Number of online CPUs (>= 1). */
WSI_HIDDEN int wsi_cpu_count(void);

#endif
