/*
 * weightsum — the experimental surface: test hooks, kernel forcing, the fast digest's raw
 * algebra, the layout's piece table and scalar casts.
 *
 * Like zstd's ZSTD_STATIC_LINKING_ONLY section, nothing here is stable: names, structs and
 * signatures may change in any release, and a program that includes this header should link
 * the library of the exact version it was built with (ideally statically). The symbols are
 * exported from the shared library all the same (the Python binding and the tests use them).
 * Everything in include/weightsum.h stays stable; this header includes it, and follows its
 * conventions (ws_ prefix, ws_err + ws_error for every call that can fail).
 */
#ifndef WEIGHTSUM_EXPERIMENTAL_H
#define WEIGHTSUM_EXPERIMENTAL_H

#include "weightsum.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Defined once this header is included, so code can test for the experimental surface. */
#define WS_EXPERIMENTAL 1

/* ------------------------------------------------------------------------------------------ */
/* Scalar casts (dtypes; the canonical cast of whole buffers is ws_cast_to_canonical)          */
/* ------------------------------------------------------------------------------------------ */

/* f32 -> bf16 as PyTorch's CPU cast (round to nearest even, every NaN 0x7FC0). */
WS_API uint16_t ws_f32_to_bf16(float f);
/* Exact widenings to f32 (f8 e4m3 is the "fn" variant: no infinities). */
WS_API float ws_f16_to_f32(uint16_t h);
WS_API float ws_bf16_to_f32(uint16_t b);
WS_API float ws_f8e4m3_to_f32(uint8_t v);
WS_API float ws_f8e5m2_to_f32(uint8_t v);

/* ------------------------------------------------------------------------------------------ */
/* Fast digest: raw algebra and kernel forcing (docs/fast-digest.md)                           */
/* ------------------------------------------------------------------------------------------ */

/*
 * Canonical bytes are split into units: 1-byte dtypes give one byte-valued unit per element,
 * wider dtypes one little-endian 16-bit unit per 2 bytes. Unit j of a tensor has global index j
 * (element i, sub-unit s: j = i*units + s). ws_fast_accumulate adds to acc the contribution of
 * n_units units starting at global index unit_index; data holds them as bytes (unit_bytes = 1)
 * or little-endian u16 (unit_bytes = 2), any alignment. Contributions of disjoint runs add up
 * (ws_fast_add) to the digest of their union, in any order: a tensor's raw digest is the sum
 * over any split of it into runs, its digest that sum sealed (ws_fast_seal). A fresh
 * accumulator is all zeros.
 * WS_ERR_ARG (acc untouched) for a NULL key or acc, NULL data with n_units > 0, or unit_bytes
 * other than 1 or 2; WS_ERR_LIMIT when a unit's index would pass 2^64 - 1. n_units = 0 is a
 * no-op.
 */
WS_API ws_err ws_fast_accumulate(const ws_fastkey *k, ws_fast *acc, uint64_t unit_index,
                                 const void *data, size_t n_units, int unit_bytes,
                                 ws_error *err);
/* acc += part (mod p, lane by lane). WS_ERR_ARG (acc untouched) when either is NULL. */
WS_API ws_err ws_fast_add(ws_fast *acc, const ws_fast *part, ws_error *err);
/* Seal a tensor's fast digest: d holds the raw sum over all its units (the pieces added up);
 * afterwards it is the tensor's digest, bound to its canonical dtype and shape, as every
 * manifest, answer and ws_digest_* / ws_hasher records it (docs/fast-digest.md, "Sealing").
 * Range digests stay raw. WS_ERR_ARG (d untouched) for NULL, an invalid dtype or ndim;
 * WS_ERR_LIMIT for a shape whose units overflow 64 bits. */
WS_API ws_err ws_fast_seal(const ws_fastkey *k, ws_fast *d, ws_dtype canonical_dtype, int ndim,
                           const uint64_t *shape);
/* 16-bit units per element of dtype t (1 for 1- and 2-byte dtypes, 2 for 4, 4 for 8); 0 for
 * an invalid dtype. */
WS_API unsigned ws_dtype_units(ws_dtype t);
/* Force a kernel ("scalar", "avx2", "avx512", "avx512vnni") or "auto" (the best this CPU
 * has, chosen once at first use), for tests and benchmarks; process-wide.
 * WS_ERR_ARG for an unknown name, WS_ERR_NOTFOUND if this CPU lacks it. */
WS_API ws_err ws_fast_set_kernel(const char *name);
/* Name of the kernel in use (never NULL). */
WS_API const char *ws_fast_kernel(void);
/* SGLang's tensor hash (ws_sglang_hash): force the per-word kernel ("scalar", "avx2",
 * "avx512") or "auto" (the best this CPU has, chosen once at first use); process-wide.
 * WS_ERR_ARG for an unknown name, WS_ERR_NOTFOUND if this CPU lacks it. */
WS_API ws_err ws_sglang_set_kernel(const char *name);
/* Name of the SGLang-hash kernel in use (never NULL). */
WS_API const char *ws_sglang_kernel(void);

/* ------------------------------------------------------------------------------------------ */
/* The pieces of a layout (docs/layouts.md)                                                    */
/* ------------------------------------------------------------------------------------------ */

/*
 * A piece says: rows x cols of local tensor `local` (on its rank), starting at (l_row0, l_col0)
 * in the local tensor's 2-D view [*, l_cols], IS the same rectangle of canonical HF tensor `hf`
 * starting at (t_row0, t_col0) in T's 2-D view [*, t_cols], as replica `replica` (0 = primary).
 * 2-D views are row-major: element (r, c) is flat element r * cols + c. Each tensor's view is
 * chosen by the layout (usually [shape[0], numel / shape[0]]; [numel, 1] for 1-D tensors).
 */
typedef struct ws_piece {
    uint32_t hf;      /* index into the layout's HF tensors */
    uint32_t local;   /* index into the layout's local tensors */
    uint32_t replica; /* 0 = primary copy; k > 0 must equal replica 0 of the same rectangle */
    uint64_t rows, cols;
    uint64_t t_row0, t_col0, t_cols;
    uint64_t l_row0, l_col0, l_cols;
} ws_piece;

/* The layout's pieces, in the order the layout made them (0 / NULL for a NULL layout or an
 * index out of range). Valid as long as the layout. */
WS_API size_t ws_layout_piece_count(const ws_layout *l);
WS_API const ws_piece *ws_layout_piece(const ws_layout *l, size_t i);

/*
 * A tensor an engine keeps beside its weights whose every value the layout knows, and that is
 * no piece of any HF tensor: vLLM's FusedMoE `_expert_map` buffer (int32 [physical experts],
 * each slot's local index on this rank or -1), present in its state_dict() with expert
 * parallelism. Optional in a dump; when present it must hold exactly these values.
 */
typedef struct ws_buffer_desc {
    const char *name;
    int rank;
    ws_dtype dtype; /* WS_I32 */
    int ndim;
    uint64_t shape[WS_MAX_DIMS];
    const int32_t *values; /* numel of them */
} ws_buffer_desc;
WS_API size_t ws_layout_buffer_count(const ws_layout *l);
WS_API const ws_buffer_desc *ws_layout_buffer(const ws_layout *l, size_t i);
/* Index of the buffer `name` on `rank`, or -1. */
WS_API long ws_layout_find_buffer(const ws_layout *l, int rank, const char *name);

#ifdef __cplusplus
}
#endif
#endif /* WEIGHTSUM_EXPERIMENTAL_H */
