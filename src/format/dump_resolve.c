/* Whether a layout can describe a dump, and the layout of a dump from flags and files (see
 * dump_resolve.h). */
#include "dump_resolve.h"
#include "layout_internal.h"
#include "model_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Whether a layout can describe a dump at all (a usage mistake, not a verdict)                */
/* ------------------------------------------------------------------------------------------ */

/* How well layout l names and shapes what the dump's present ranks (< tp) hold. */
typedef struct fit {
    size_t tensors; /* dump tensors looked at */
    size_t named;   /* of them, names the layout knows on that rank */
    size_t shaped;  /* of the named, of the layout's shape */
    const ws_tensor *bad;       /* first named tensor of another shape */
    const ws_local_desc *want;  /* ... and what the layout expects for it */
} fit;

static fit measure(const ws_layout *l, const ws_dump *d) {
    fit f = {0};
    int tp = ws_layout_rank_count(l); /* global ranks: tp x pp (x ep for megatron) */
    for (int rank = 0; rank < tp && rank < ws_dump_rank_count(d); rank++) {
        const ws_ckpt *c = ws_dump_rank(d, rank);
        for (size_t i = 0; c && i < ws_ckpt_count(c); i++) {
            const ws_tensor *t = ws_ckpt_tensor(c, i);
            f.tensors++;
            long li = ws_layout_find_local(l, rank, t->name);
            if (li < 0) {
                f.named += ws_layout_find_buffer(l, rank, t->name) >= 0;
                continue;
            }
            f.named++;
            const ws_local_desc *ld = ws_layout_local(l, (size_t)li);
            if (t->ndim == ld->ndim &&
                memcmp(t->shape, ld->shape, sizeof(uint64_t) * (size_t)ld->ndim) == 0)
                f.shaped++;
            else if (!f.bad) {
                f.bad = t;
                f.want = ld;
            }
        }
    }
    return f;
}

/* "Most" of n: more than half. */
static bool most(size_t k, size_t n) { return 2 * k > n; }

/* The family (other than l's) whose names fit the dump best, at l's tp (hf: tp 1). */
static const char *best_family(const ws_layout *l, const ws_dump *d, const ws_model_config *cfg,
                               size_t *named, size_t *tensors) {
    const char *best = NULL;
    double best_frac = 0;
    for (const char *const *fam = ws_layout_families(); *fam; fam++) {
        if (strcmp(*fam, ws_layout_family(l)) == 0) continue;
        int tps[2] = {ws_layout_tp(l), ws_dump_rank_count(d)};
        for (int k = 0; k < 2; k++) {
            ws_layout *o = NULL;
            if (ws_layout_create(*fam, cfg, tps[k], &o, NULL) != WS_OK) continue;
            fit f = measure(o, d);
            ws_layout_free(o);
            double frac = f.tensors ? (double)f.named / (double)f.tensors : 0;
            if (most(f.named, f.tensors) && frac > best_frac) {
                best = *fam;
                best_frac = frac;
                *named = f.named;
                *tensors = f.tensors;
            }
        }
    }
    return best;
}

/* A tp (other than l's) at which l's family shapes most of the dump's tensors; 0 when none. */
static int fitting_tp(const ws_layout *l, const ws_dump *d, const ws_model_config *cfg) {
    int nr = ws_dump_rank_count(d), first[2] = {nr, ws_dump_tp(d)};
    for (int k = 0; k < 2 + 64; k++) {
        int tp = k < 2 ? first[k] : k - 1;
        if (tp <= 0 || tp == ws_layout_tp(l) || tp < nr) continue;
        ws_layout *o = NULL;
        if (ws_layout_create(ws_layout_family(l), cfg, tp, &o, NULL) != WS_OK) continue;
        fit f = measure(o, d);
        ws_layout_free(o);
        if (most(f.named, f.tensors) && most(f.shaped, f.named)) return tp;
    }
    return 0;
}

ws_err ws_dump_fits_layout(const ws_layout *l, const ws_dump *d, const ws_model_config *cfg,
                           const char *dir, unsigned flags, ws_error *err) {
    if (!l || !d || !cfg) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    if (!dir) dir = "dump";
    int tp = ws_layout_tp(l), nr = ws_dump_rank_count(d);
    const char *fam = ws_layout_family(l);
    fit f = measure(l, d);
    size_t named = 0, tensors = 0;
    const char *other = best_family(l, d, cfg, &named, &tensors);
    /* another family names clearly more of the dump (a tenth of it) than this one */
    size_t margin = f.tensors / 10 ? f.tensors / 10 : 1;
    bool other_better = other && named * f.tensors > (f.named + margin) * tensors;
    if (!most(f.named, f.tensors) || other_better) {
        if (other)
            return wsi_fail(err, WS_ERR_LAYOUT, dir, NULL, -1,
                            "the engine tensor names are not %s's (%zu of %zu known) but %s's "
                            "(%zu of %zu): say --layout %s",
                            fam, f.named, f.tensors, other, named, tensors, other);
        return wsi_fail(err, WS_ERR_LAYOUT, dir, NULL, -1,
                        "the engine tensor names are not %s's (%zu of %zu known), nor those of "
                        "another family: is this a dump of the model in the config?",
                        fam, f.named, f.tensors);
    }
    if (!most(f.shaped, f.named)) {
        int fits = fitting_tp(l, d, cfg);
        if (fits)
            return wsi_fail(err, WS_ERR_LAYOUT, dir, NULL, -1,
                            "%d rank file%s whose shapes fit %s tp=%d, not tp=%d (%zu of %zu "
                            "tensors of another shape): say --tp %d",
                            nr, nr == 1 ? "" : "s", fam, fits, tp, f.named - f.shaped, f.named,
                            fits);
        char se[160] = "", sa[160] = "";
        if (f.bad) {
            wsi_shape_str(f.want->ndim, f.want->shape, se, sizeof se);
            wsi_shape_str(f.bad->ndim, f.bad->shape, sa, sizeof sa);
        }
        return wsi_fail(err, WS_ERR_LAYOUT, dir, f.bad ? f.bad->name : NULL, -1,
                        "the shapes are of another model config (%zu of %zu tensors differ; "
                        "this one is %s, the config makes %s at %s tp=%d): say --config",
                        f.named - f.shaped, f.named, sa, se, fam, tp);
    }
    if (nr > ws_layout_rank_count(l) && (flags & WS_FIT_TP_GIVEN))
        return wsi_fail(err, WS_ERR_LAYOUT, dir, NULL, -1,
                        "rank files 0..%d (%d ranks) but tp=%d, which ranks 0..%d fit: files of "
                        "rank %d..%d are not of this dump (remove them, or say the dump's tp)",
                        nr - 1, nr, tp, tp - 1, tp, nr - 1);
    return WS_OK;
}

/* weightsum-layout.json's SGLang DP attention options against the ones given (a default value:
 * not given), as check_flags. */
static ws_err check_dp_flags(const ws_dump *d, const char *dir, const ws_parallel *options,
                             unsigned flags, ws_error *err) {
    if ((flags & WS_LAYOUT_FORCE) || !options || !ws_dump_family(d)) return WS_OK;
    static const struct {
        ws_par_key key;
        const char *flag;
        long unset;
    } k[] = {{WS_PAR_ATTN_DP, "--attn-dp-size", 1},
             {WS_PAR_DP_LM_HEAD, "--enable-dp-lm-head", 0},
             {WS_PAR_MOE_DENSE_TP, "--moe-dense-tp-size", 0},
             {WS_PAR_FUSED_SHARED, "--fused-shared-experts", 0}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        long given = ws_parallel_get(options, k[i].key), rec = ws_dump_parallel(d, k[i].key);
        if (rec < k[i].unset) rec = k[i].unset;
        if (given > k[i].unset && given != rec)
            return wsi_fail(err, WS_ERR_LAYOUT, dir, NULL, -1,
                            "weightsum-layout.json says %s %ld, not %s %ld (drop the flag, or "
                            "--force to use it)",
                            k[i].flag, rec, k[i].flag, given);
    }
    return WS_OK;
}

/* weightsum-layout.json's ep / pp against the flags (0: not given), as check_flags. */
static ws_err check_par_flags(const ws_dump *d, const char *dir, int ep, int pp, unsigned flags,
                              ws_error *err) {
    if (flags & WS_LAYOUT_FORCE) return WS_OK;
    int re = ws_dump_ep(d) ? ws_dump_ep(d) : 1, rp = ws_dump_pp(d) ? ws_dump_pp(d) : 1;
    if (!ws_dump_family(d)) return WS_OK; /* no weightsum-layout.json */
    if (ep && ep != re)
        return wsi_fail(err, WS_ERR_LAYOUT, dir, NULL, -1,
                        "weightsum-layout.json says ep %d, not --ep %d (drop the flag, or --force "
                        "to use it)",
                        re, ep);
    if (pp && pp != rp)
        return wsi_fail(err, WS_ERR_LAYOUT, dir, NULL, -1,
                        "weightsum-layout.json says pp %d, not --pp %d (drop the flag, or --force "
                        "to use it)",
                        rp, pp);
    return WS_OK;
}

/* weightsum-layout.json against the flags: a disagreement is a mistake unless forced. */
static ws_err check_flags(const ws_dump *d, const char *dir, const char *family, int tp,
                          unsigned flags, ws_error *err) {
    if (flags & WS_LAYOUT_FORCE) return WS_OK;
    const char *rf = ws_dump_family(d);
    int rt = ws_dump_tp(d);
    if (family && rf && strcmp(family, rf) != 0)
        return wsi_fail(err, WS_ERR_LAYOUT, dir, NULL, -1,
                        "weightsum-layout.json says layout %s, not --layout %s (drop the flag, or "
                        "--force to use it)",
                        rf, family);
    if (tp && rt && tp != rt)
        return wsi_fail(err, WS_ERR_LAYOUT, dir, NULL, -1,
                        "weightsum-layout.json says tp %d, not --tp %d (drop the flag, or --force "
                        "to use it)",
                        rt, tp);
    return WS_OK;
}

/* Engine options and the expert map of `options` (else the dump's recorded map) onto par. */
static ws_err copy_options(ws_parallel *par, const ws_parallel *options, const ws_dump *d,
                           ws_error *err) {
    static const ws_par_key keys[] = {WS_PAR_EXPERT_PLACEMENT, WS_PAR_W13_UP_FIRST,
                                      WS_PAR_FUSED_SHARED, WS_PAR_MEGATRON_SEQUENTIAL,
                                      WS_PAR_REDUNDANT_EXPERTS};
    ws_err rc = WS_OK;
    for (size_t k = 0; options && k < sizeof keys / sizeof keys[0] && rc == WS_OK; k++)
        rc = ws_parallel_set(par, keys[k], ws_parallel_get(options, keys[k]), err);
    /* SGLang DP attention, fused shared experts: the options' value when said, else
     * weightsum-layout.json's */
    static const ws_par_key dp_keys[] = {WS_PAR_ATTN_DP, WS_PAR_DP_LM_HEAD, WS_PAR_MOE_DENSE_TP,
                                         WS_PAR_FUSED_SHARED};
    for (size_t k = 0; k < sizeof dp_keys / sizeof dp_keys[0] && rc == WS_OK; k++) {
        long v = options ? ws_parallel_get(options, dp_keys[k]) : 0;
        if (v <= (dp_keys[k] == WS_PAR_ATTN_DP ? 1 : 0)) v = ws_dump_parallel(d, dp_keys[k]);
        if (v > 0) rc = ws_parallel_set(par, dp_keys[k], v, err);
    }
    size_t rows, phys;
    const int32_t *map = ws_parallel_expert_map(options, &rows, &phys);
    if (!map) map = ws_dump_expert_map(d, &rows, &phys);
    if (rc == WS_OK && map) rc = ws_parallel_set_expert_map(par, rows, phys, map, err);
    return rc;
}

ws_err ws_dump_layout_open(const ws_dump *d, const char *dir, const char *family, int tp,
                           const char *config, unsigned flags, ws_layout **out, ws_error *err) {
    return ws_dump_layout_open_parallel(d, dir, family, tp, 0, 0, config, flags, out, err);
}

ws_err ws_dump_layout_open_parallel(const ws_dump *d, const char *dir, const char *family, int tp,
                                    int ep, int pp, const char *config, unsigned flags,
                                    ws_layout **out, ws_error *err) {
    return ws_dump_layout_open_options(d, dir, family, tp, ep, pp, NULL, config, flags, out, err);
}

/* The options' expert map against weightsum-layout.json's: a disagreement is a mistake unless
 * forced. */
static ws_err check_map_flag(const ws_dump *d, const char *dir, const ws_parallel *options,
                             unsigned flags, ws_error *err) {
    size_t ra, pa, rb, pb;
    const int32_t *a = ws_parallel_expert_map(options, &ra, &pa);
    const int32_t *b = ws_dump_expert_map(d, &rb, &pb);
    if ((flags & WS_LAYOUT_FORCE) || !a || !b) return WS_OK;
    if (ra != rb || pa != pb || memcmp(a, b, ra * pa * sizeof *a) != 0)
        return wsi_fail(err, WS_ERR_LAYOUT, dir, NULL, -1,
                        "weightsum-layout.json's expert_map (%zu x %zu) differs from the one "
                        "given (%zu x %zu) (drop the flag, or --force to use it)",
                        rb, pb, ra, pa);
    return WS_OK;
}

ws_err ws_dump_layout_open_options(const ws_dump *d, const char *dir, const char *family, int tp,
                                   int ep, int pp, const ws_parallel *options, const char *config,
                                   unsigned flags, ws_layout **out, ws_error *err) {
    if (!d || !dir || !out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    if (family) { /* an unknown family is a bad argument first of all (as ws_layout_create) */
        bool known = false;
        for (const char *const *f = ws_layout_families(); *f; f++) known |= strcmp(*f, family) == 0;
        if (!known) {
            char names[256] = "";
            for (const char *const *f = ws_layout_families(); *f; f++)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s",
                         names[0] ? ", " : "", *f);
            return wsi_fail(err, WS_ERR_ARG, dir, NULL, -1,
                            "unknown layout family '%.64s' (known: %s)", family, names);
        }
    }
    ws_err rc = check_flags(d, dir, family, tp, flags, err);
    if (rc == WS_OK) rc = check_par_flags(d, dir, ep, pp, flags, err);
    if (rc == WS_OK) rc = check_map_flag(d, dir, options, flags, err);
    if (rc == WS_OK) rc = check_dp_flags(d, dir, options, flags, err);
    if (rc != WS_OK) return rc;
    unsigned fit_flags = flags & WS_LAYOUT_FORCE;
    if (tp) fit_flags |= WS_FIT_TP_GIVEN;
    if (!family) family = ws_dump_family(d);
    if (!tp) tp = ws_dump_tp(d);
    if (!ep) ep = ws_dump_ep(d) ? ws_dump_ep(d) : 1;
    if (!pp) pp = ws_dump_pp(d) ? ws_dump_pp(d) : 1;
    if (!family)
        return wsi_fail(err, WS_ERR_LAYOUT, dir, NULL, -1,
                        "no weightsum-layout.json here: say --layout sglang|vllm|megatron|"
                        "transformers|hf");
    /* one file per global rank: tp x pp of them (x ep for megatron, whose ep is data-parallel) */
    if (!tp) tp = ws_dump_rank_count(d) / (pp * (strcmp(family, "megatron") == 0 ? ep : 1));
    if (tp < 1) tp = 1;
    char path[4096];
    if (config) snprintf(path, sizeof path, "%s", config);
    else snprintf(path, sizeof path, "%s/config.json", dir);
    ws_model_config cfg;
    if ((rc = wsi_model_config_load_into(path, &cfg, err)) != WS_OK) {
        if (!config && rc == WS_ERR_IO)
            return wsi_fail(err, WS_ERR_IO, dir, NULL, -1, "no config.json here: say --config FILE");
        return rc;
    }
    ws_layout *l = NULL;
    ws_parallel *par = NULL;
    if ((rc = ws_parallel_create(&par, err)) == WS_OK &&
        (rc = copy_options(par, options, d, err)) == WS_OK &&
        (rc = ws_parallel_set(par, WS_PAR_TP, tp, err)) == WS_OK &&
        (rc = ws_parallel_set(par, WS_PAR_EP, ep, err)) == WS_OK &&
        (rc = ws_parallel_set(par, WS_PAR_PP, pp, err)) == WS_OK)
        rc = ws_layout_create_parallel(family, &cfg, par, &l, err);
    ws_parallel_free(par);
    if (rc != WS_OK) return rc;
    if ((rc = ws_dump_fits_layout(l, d, &cfg, dir, fit_flags, err)) != WS_OK) {
        ws_layout_free(l);
        return rc;
    }
    *out = l;
    return WS_OK;
}
