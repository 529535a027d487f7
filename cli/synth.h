/* Synthetic checkpoints for the demo, tests and benchmarks. */
#ifndef WS_CLI_SYNTH_H
#define WS_CLI_SYNTH_H
#include "weightsum.h"

#include <stdbool.h>

/* Write every HF tensor of cfg (tied lm_head left out) as dtype dt (F32 or BF16) to path;
 * progress (may be NULL) hears of the bytes made, then of the whole once written. */
ws_err synth_checkpoint(const ws_model_config *cfg, ws_dtype dt, uint64_t seed,
                        const char *path, void (*progress)(void *, uint64_t, uint64_t),
                        void *progress_user, ws_error *err);
#endif
