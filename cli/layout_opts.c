/* --layout / --tp / --ep / --pp / --config / --force: find the layout of an engine dump from
 * the flags, or from what `weightsum shard` left in the directory (weightsum-layout.json,
 * config.json); a layout that cannot describe the dump is a mistake said in one line
 * (ws_dump_layout_open_parallel). */
#include "cli.h"

int cli_parse_par(int ch, const char *arg, cli_layout_opts *o) {
    long *dst = ch == CLI_OPT_EP ? &o->ep : &o->pp;
    if (cli_parse_int(arg, 1, 4096, dst)) return 1;
    cli_usage(cli_cmd, "--%s needs a size from 1 to 4096, not '%s'", ch == CLI_OPT_EP ? "ep" : "pp",
              arg);
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
    ws_error err;
    if (ws_dump_layout_open_parallel(d, dir, o->family, (int)o->tp, (int)o->ep, (int)o->pp,
                                     o->config, o->force ? WS_LAYOUT_FORCE : 0, out,
                                     &err) != WS_OK)
        return cli_fail(&err);
    return EXIT_MATCH;
}
