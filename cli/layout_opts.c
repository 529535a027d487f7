/* --layout / --tp / --ep / --pp / --config: find the layout of an engine dump from the flags, or
 * from what `weightsum shard` left in the directory (weightsum-layout.json, config.json). */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

int cli_parse_par(int ch, const char *arg, cli_layout_opts *o) {
    long *dst = ch == CLI_OPT_EP ? &o->ep : &o->pp;
    if (cli_parse_int(arg, 1, 4096, dst)) return 1;
    cli_failf("--%s needs a size from 1 to 4096, not '%s'", ch == CLI_OPT_EP ? "ep" : "pp", arg);
    return -1;
}

int cli_make_layout(const char *family, const ws_model_config *cfg, long tp, long ep, long pp,
                    ws_layout **out) {
    ws_error err;
    ws_parallel *par = NULL;
    ws_err e = ws_parallel_create(&par, &err);
    if (!e) e = ws_parallel_set(par, WS_PAR_TP, tp, &err);
    if (!e && ep) e = ws_parallel_set(par, WS_PAR_EP, ep, &err);
    if (!e && pp) e = ws_parallel_set(par, WS_PAR_PP, pp, &err);
    if (!e) e = ws_layout_create_parallel(family, cfg, par, out, &err);
    ws_parallel_free(par);
    return e ? cli_fail(&err) : EXIT_MATCH;
}

int cli_open_layout(const cli_layout_opts *o, const char *dir, const ws_dump *d,
                    ws_layout **out) {
    *out = NULL;
    const char *family = o->family ? o->family : ws_dump_family(d);
    long tp = o->tp ? o->tp : ws_dump_tp(d);
    long ep = o->ep ? o->ep : ws_dump_ep(d);
    long pp = o->pp ? o->pp : ws_dump_pp(d);
    if (!family)
        return cli_failf("%s: no weightsum-layout.json here: say --layout sglang|vllm|megatron", dir);
    if (!pp) pp = 1;
    if (!tp) tp = ws_dump_rank_count(d) / pp; /* one file per rank: tp x pp of them */
    if (tp < 1) tp = 1;
    char path[4096];
    if (o->config) snprintf(path, sizeof path, "%s", o->config);
    else snprintf(path, sizeof path, "%s/config.json", dir);
    ws_model_config cfg;
    ws_error err;
    if (ws_model_config_load(path, &cfg, &err) != WS_OK) {
        if (!o->config && err.code == WS_ERR_IO)
            return cli_failf("%s: no config.json here: say --config FILE", dir);
        return cli_fail(&err);
    }
    return cli_make_layout(family, &cfg, tp, ep, pp, out);
}
