/* --layout / --tp / --ep / --pp / --expert-map / --redundant-experts / --attn-dp-size /
 * --enable-dp-lm-head / --moe-dense-tp-size / --config / --force: find
 * the layout of an engine dump from the flags, or from what `weightsum shard` left in the
 * directory (weightsum-layout.json, config.json); a layout that cannot describe the dump is a
 * mistake said in one line (ws_dump_layout_open_options). */
#include "cli.h"
#include "internal.h" /* wsi_read_file */

#include <stdlib.h>

int cli_parse_par(int ch, const char *arg, cli_layout_opts *o) {
    if (ch == CLI_OPT_EXPERT_MAP) {
        o->expert_map = arg;
        return 1;
    }
    if (ch == CLI_OPT_REDUNDANT) {
        if (cli_parse_int(arg, 0, 65536, &o->redundant)) return 1;
        cli_usage(cli_cmd, "--redundant-experts needs a count from 0 to 65536, not '%s'", arg);
        return -1;
    }
    if (ch == CLI_OPT_DP_LM_HEAD) {
        o->dp_lm_head = true;
        return 1;
    }
    if (ch == CLI_OPT_FUSED_SHARED) {
        o->fused_shared = true;
        return 1;
    }
    if (ch == CLI_OPT_ATTN_DP) {
        if (cli_parse_int(arg, 1, 4096, &o->attn_dp)) return 1;
        cli_usage(cli_cmd, "--attn-dp-size needs a size from 1 to 4096, not '%s'", arg);
        return -1;
    }
    if (ch == CLI_OPT_MOE_DENSE_TP) {
        if (cli_parse_int(arg, 1, 4096, &o->moe_dense_tp)) return 1;
        cli_usage(cli_cmd, "--moe-dense-tp-size needs 1 or the tp size, not '%s'", arg);
        return -1;
    }
    long *dst = ch == CLI_OPT_EP ? &o->ep : &o->pp;
    if (cli_parse_int(arg, 1, 4096, dst)) return 1;
    cli_usage(cli_cmd, "--%s needs a size from 1 to 4096, not '%s'", ch == CLI_OPT_EP ? "ep" : "pp",
              arg);
    return -1;
}

/* The engine options of o (expert map file, redundant experts, SGLang DP attention) onto par. */
ws_err cli_set_par_options(ws_parallel *par, const cli_layout_opts *o, ws_error *err) {
    if (!o) return WS_OK;
    ws_err e = WS_OK;
    if (o->redundant) e = ws_parallel_set(par, WS_PAR_REDUNDANT_EXPERTS, o->redundant, err);
    if (!e && o->attn_dp) e = ws_parallel_set(par, WS_PAR_ATTN_DP, o->attn_dp, err);
    if (!e && o->dp_lm_head) e = ws_parallel_set(par, WS_PAR_DP_LM_HEAD, 1, err);
    if (!e && o->moe_dense_tp) e = ws_parallel_set(par, WS_PAR_MOE_DENSE_TP, o->moe_dense_tp, err);
    if (!e && o->fused_shared) e = ws_parallel_set(par, WS_PAR_FUSED_SHARED, 1, err);
    if (!e && o->expert_map) {
        char *text = NULL;
        size_t n = 0;
        e = wsi_read_file(o->expert_map, true, 16u << 20, "an expert map", &text, &n, err);
        if (!e) e = ws_parallel_parse_expert_map(par, text, n, o->expert_map, err);
        free(text);
    }
    return e;
}

int cli_make_layout(const char *family, const ws_model_config *cfg, long tp, long ep, long pp,
                    const cli_layout_opts *o, ws_layout **out) {
    ws_error err;
    ws_parallel *par = NULL;
    ws_err e = ws_parallel_create(&par, &err);
    if (!e) e = ws_parallel_set(par, WS_PAR_TP, tp, &err);
    if (!e && ep) e = ws_parallel_set(par, WS_PAR_EP, ep, &err);
    if (!e && pp) e = ws_parallel_set(par, WS_PAR_PP, pp, &err);
    if (!e) e = cli_set_par_options(par, o, &err);
    if (!e) e = ws_layout_create_parallel(family, cfg, par, out, &err);
    ws_parallel_free(par);
    return e ? cli_fail(&err) : EXIT_MATCH;
}

int cli_open_layout(const cli_layout_opts *o, const char *dir, const ws_dump *d,
                    ws_layout **out) {
    ws_error err;
    /* --attn-dp-size 1 is said, though it is the default the library cannot tell from unsaid */
    long rec = ws_dump_parallel(d, WS_PAR_ATTN_DP);
    if (o->attn_dp == 1 && rec > 1 && !o->force && ws_dump_family(d))
        return cli_failf("%s: weightsum-layout.json says --attn-dp-size %ld, not --attn-dp-size 1 "
                         "(drop the flag, or --force to use it)",
                         dir, rec);
    ws_parallel *opts = NULL;
    ws_err e = ws_parallel_create(&opts, &err);
    if (!e) e = cli_set_par_options(opts, o, &err);
    if (!e)
        e = ws_dump_layout_open_options(d, dir, o->family, (int)o->tp, (int)o->ep, (int)o->pp,
                                        opts, o->config, o->force ? WS_LAYOUT_FORCE : 0, out,
                                        &err);
    ws_parallel_free(opts);
    return e ? cli_fail(&err) : EXIT_MATCH;
}
