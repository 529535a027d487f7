/*
 * Fuzz target: the config.json parser (ws_model_config_parse) and every layout family built
 * from what it accepts, at several tensor-parallel sizes. A layout that is built must be
 * consistent, else abort: every piece inside its HF tensor and its local tensor, every local
 * tensor on a rank below tp, and the names findable by ws_layout_find_hf / find_local.
 */
#include "weightsum.h"
#include "weightsum_experimental.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t numel(int ndim, const uint64_t *shape) {
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

static void check_layout(const ws_layout *l, int tp) {
    size_t nh = ws_layout_hf_count(l), nl = ws_layout_local_count(l);
    for (size_t i = 0; i < nh; i++) {
        const ws_hf_desc *h = ws_layout_hf(l, i);
        if (!h || !h->name || ws_layout_find_hf(l, h->name) != (long)i) abort();
    }
    for (size_t i = 0; i < nl; i++) {
        const ws_local_desc *d = ws_layout_local(l, i);
        if (!d || !d->name || d->rank < 0 || d->rank >= tp) abort();
        if (ws_layout_find_local(l, d->rank, d->name) != (long)i) abort();
    }
    for (size_t i = 0; i < ws_layout_piece_count(l); i++) {
        const ws_piece *p = ws_layout_piece(l, i);
        if (p->hf >= nh || p->local >= nl || !p->t_cols || !p->l_cols) abort();
        const ws_hf_desc *h = ws_layout_hf(l, p->hf);
        const ws_local_desc *d = ws_layout_local(l, p->local);
        uint64_t tn = numel(h->ndim, h->shape), ln = numel(d->ndim, d->shape);
        /* the rectangle's last element lies inside both tensors' 2-D views */
        if (p->t_col0 + p->cols > p->t_cols || p->l_col0 + p->cols > p->l_cols) abort();
        if (p->rows && ((p->t_row0 + p->rows) * p->t_cols > tn ||
                        (p->l_row0 + p->rows) * p->l_cols > ln))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ws_model_config *cfg = NULL;
    ws_error err;
    if (ws_model_config_parse((const char *)data, size, "fuzz", &cfg, &err) != WS_OK) {
        if (cfg) abort(); /* a failed parse hands nothing out */
        return 0;
    }
    static const int tps[] = {1, 2, 3, 4, 8};
    for (const char *const *f = ws_layout_families(); *f; f++)
        for (size_t t = 0; t < sizeof tps / sizeof tps[0]; t++) {
            ws_layout *l = NULL;
            if (ws_layout_create(*f, cfg, tps[t], &l, &err) != WS_OK) {
                if (l) abort(); /* a failed create hands nothing out */
                continue;
            }
            if (ws_layout_tp(l) != tps[t]) abort();
            check_layout(l, tps[t]);
            ws_layout_free(l);
        }
    ws_model_config_free(cfg);
    return 0;
}
