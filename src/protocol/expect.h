/* Internal: predicted "checksum" answers (expect.c builds them, expect_judge.c compares an
 * engine's answer with them). An expectation is held as the JSON of its file. */
#ifndef WS_EXPECT_H
#define WS_EXPECT_H
#include "protocol.h"

struct ws_expect {
    json_t *root;
    ws_engine engine;
    int tp;
    int pp; /* pipeline stages ("pp", 1 when absent): tp * pp ranks, rank = pp_rank * tp + tp_rank */
    int attn_dp; /* SGLang DP attention groups ("attn_dp", 1 when absent): the dp_size expected */
};

/* "gpu_tensor_hash", "sha256_first8" (SGLang's CPU path) or "sha256" (vLLM). */
WSI_HIDDEN const char *wsp_hash_name(ws_engine e, ws_sglang_path p);
/* Take root (a whole expectation, validated) into a new ws_expect; root is consumed. */
WSI_HIDDEN ws_err wsp_expect_wrap(json_t *root, ws_expect **out, ws_error *err);
/* The answers for every local tensor of l (hex[i], as the engine writes it, for
 * ws_layout_local(l, i)), computed by the caller where the tensors lie; hf[h] is the trainer's
 * tensor of HF index h (NULL when tied). Called once the pieces are checked against the
 * tensors (every piece lies inside its HF tensor and its local tensor, dtypes agree). */
typedef ws_err (*wsp_local_hashes_fn)(void *arg, const ws_layout *l, const ws_tensor *const *hf,
                                      char (*hex)[65], ws_error *err);
/* ws_expect_create, with the local tensors' answers from hashes() (NULL: hashed here from
 * host memory). */
WSI_HIDDEN ws_err wsp_expect_create_with(const ws_layout *l, const ws_tensor *tensors, size_t n,
                                         ws_engine engine, ws_sglang_path path,
                                         const char *source, int threads,
                                         wsp_local_hashes_fn hashes, void *arg, ws_expect **out,
                                         ws_error *err);
/* The answer for a local tensor whose byte image has SHA-256 md: vLLM's hex digest, or
 * SGLang's CPU-path value (the first 8 bytes, big-endian, as 16 hex digits). */
WSI_HIDDEN void wsp_image_hex(ws_engine e, const uint8_t md[32], char hex[65]);
struct wsi_dev_rect; /* device_backend.h */
/* The byte image of local tensor `local` (its pieces: pieces[0..np), layout indices, in layout
 * order; already checked to fit) as rectangles of the HF tensors' data (hf[h]->data, wherever
 * it lies) in the order SHA-256 streams it: rows of its [rows, cols] view, each row's columns
 * from the last piece (layout order) that covers them, zero elsewhere (a rectangle with a NULL
 * ptr, device_backend.h). A band of rows one piece covers whole (or none does) is one
 * rectangle; rows whose columns come from several pieces are a rectangle per row and segment.
 * *out is malloc'ed (free it; NULL when *n is 0). WS_ERR_LIMIT past WSI_VIEW_MAX_RECTS. */
WSI_HIDDEN ws_err wsp_image_rects(const ws_layout *l, size_t local, const size_t *pieces,
                                  size_t np, const ws_tensor *const *hf,
                                  struct wsi_dev_rect **out, size_t *n, ws_error *err);
#endif
