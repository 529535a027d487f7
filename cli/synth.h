/* Synthetic checkpoints for the demo, tests and benchmarks. */
#ifndef WS_CLI_SYNTH_H
#define WS_CLI_SYNTH_H
#include "weightsum.h"

#include <stdbool.h>

/* Write every HF tensor of cfg (tied lm_head left out) as dtype dt (F32 or BF16) to path. */
ws_err synth_checkpoint(const ws_model_config *cfg, ws_dtype dt, uint64_t seed,
                        const char *path, ws_error *err);
#endif
