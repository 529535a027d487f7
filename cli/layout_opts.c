/* --layout / --tp / --config: find the layout of an engine dump from the flags, or from what
 * `weightsum shard` left in the directory (weightsum-layout.json, config.json). */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

int cli_open_layout(const cli_layout_opts *o, const char *dir, const ws_dump *d,
                    ws_layout **out) {
    *out = NULL;
    const char *family = o->family ? o->family : ws_dump_family(d);
    long tp = o->tp ? o->tp : ws_dump_tp(d);
    if (!family)
        return cli_failf("%s: no weightsum-layout.json here: say --layout sglang|vllm|megatron", dir);
    if (!tp) tp = ws_dump_rank_count(d);
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
    if (ws_layout_create(family, &cfg, (int)tp, out, &err) != WS_OK) return cli_fail(&err);
    return EXIT_MATCH;
}
