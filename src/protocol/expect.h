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
#endif
