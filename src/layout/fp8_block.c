/*
 * Block-FP8 weights (DeepSeek-style: an e4m3 weight plus one fp32 `weight_scale_inv` per
 * block_n x block_k block): the dequantisation rule SGLang's weight checker hashes
 * (docs/layouts.md, "Block FP8").
 */
#include "internal.h"

#include <string.h>

ws_err ws_fp8_block_dequant_bf16(const uint8_t *q, const float *s, uint64_t rows, uint64_t cols,
                                 uint64_t s_rows, uint64_t s_cols, uint32_t block_n,
                                 uint32_t block_k, uint64_t row0, uint64_t nrows, uint16_t *out,
                                 ws_value_stats *stats, ws_error *err) {
    if (!q || !s || (!out && nrows))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "ws_fp8_block_dequant_bf16: q, s and out must not be NULL");
    if (rows == 0 || cols == 0 || s_rows == 0 || s_cols == 0)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "ws_fp8_block_dequant_bf16: empty weight or scale");
    if (block_n == 0 && block_k == 0) {
        /* SGLang's Fp8BlockComparable._infer_block_size: block = k / k_scales, both dims. */
        if (cols % s_cols)
            return wsi_fail(err, WS_ERR_SHAPE, NULL, NULL, -1,
                            "block size cannot be inferred: %llu columns over %llu scale "
                            "columns (SGLang asserts k %% s_k == 0)",
                            (unsigned long long)cols, (unsigned long long)s_cols);
        uint64_t b = cols / s_cols;
        if (b > UINT32_MAX)
            return wsi_fail(err, WS_ERR_SHAPE, NULL, NULL, -1, "block size %llu too large",
                            (unsigned long long)b);
        block_n = block_k = (uint32_t)b;
    }
    if (block_n == 0 || block_k == 0)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "ws_fp8_block_dequant_bf16: block_n and block_k both 0 (infer) or both "
                        "positive");
    /* Every element needs its scale: s covers ceil(rows / block_n) x ceil(cols / block_k). */
    if ((rows + block_n - 1) / block_n > s_rows || (cols + block_k - 1) / block_k > s_cols)
        return wsi_fail(err, WS_ERR_SHAPE, NULL, NULL, -1,
                        "scale [%llu, %llu] does not cover weight [%llu, %llu] in %ux%u blocks",
                        (unsigned long long)s_rows, (unsigned long long)s_cols,
                        (unsigned long long)rows, (unsigned long long)cols, block_n, block_k);
    if (row0 > rows || nrows > rows - row0)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "ws_fp8_block_dequant_bf16: rows [%llu, +%llu) outside the weight",
                        (unsigned long long)row0, (unsigned long long)nrows);
    for (uint64_t i = 0; i < nrows; i++) {
        uint64_t r = row0 + i;
        const uint8_t *qr = q + r * cols;
        const float *sr = s + (r / block_n) * s_cols;
        uint16_t *o = out + i * cols;
        for (uint64_t j = 0; j < cols; j++) {
            /* fp32 product (one IEEE rounding), then bf16 by round-to-nearest-even:
             * (x_q.to(float32) * x_s_repeat).to(bfloat16). */
            float p = ws_f8e4m3_to_f32(qr[j]) * sr[j / block_k];
            if (stats) {
                if (p != p) stats->nan++;
                else if (p - p != 0.0f) stats->inf++;
            }
            o[j] = ws_f32_to_bf16(p);
        }
    }
    return WS_OK;
}

/* Tensors whose exact fp32 values matter and that no engine casts: block-FP8 scales, and the
 * fp32 router buffers (e_score_correction_bias, Megatron's expert_bias). */
static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

ws_canon ws_canon_for_tensor(const char *name, ws_dtype dtype, ws_canon policy) {
    if (!name || policy == WS_CANON_NATIVE || !ws_dtype_is_float(dtype) || dtype == WS_BF16)
        return policy;
    static const char *const exact[] = {"weight_scale_inv", "weight_scale", "input_scale",
                                        "e_score_correction_bias", "expert_bias"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (ends_with(name, exact[i])) return WS_CANON_NATIVE;
    return policy;
}
