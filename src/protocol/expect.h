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
};

/* "gpu_tensor_hash", "sha256_first8" (SGLang's CPU path) or "sha256" (vLLM). */
WSI_HIDDEN const char *wsp_hash_name(ws_engine e, ws_sglang_path p);
/* Take root (a whole expectation, validated) into a new ws_expect; root is consumed. */
WSI_HIDDEN ws_err wsp_expect_wrap(json_t *root, ws_expect **out, ws_error *err);
/* Hashes of every local tensor of l (out[i] for ws_layout_local(l, i)), computed by the caller
 * where the tensors lie; hf[h] is the trainer's tensor of HF index h (NULL when tied). */
typedef ws_err (*wsp_local_hashes_fn)(void *arg, const ws_layout *l, const ws_tensor *const *hf,
                                      uint64_t *out, ws_error *err);
/* ws_expect_create, with the local tensors' SGLang hashes from hashes() (NULL: hashed here from
 * host memory) once the tensors are checked against the layout. */
WSI_HIDDEN ws_err wsp_expect_create_with(const ws_layout *l, const ws_tensor *tensors, size_t n,
                                         ws_engine engine, ws_sglang_path path,
                                         const char *source, int threads,
                                         wsp_local_hashes_fn hashes, void *arg, ws_expect **out,
                                         ws_error *err);
#endif
