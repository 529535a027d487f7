/* --layout / --tp / --config / --force: find the layout of an engine dump from the flags, or
 * from what `weightsum shard` left in the directory (weightsum-layout.json, config.json); a
 * layout that cannot describe the dump is a mistake said in one line (ws_dump_layout_open). */
#include "cli.h"

int cli_open_layout(const cli_layout_opts *o, const char *dir, const ws_dump *d,
                    ws_layout **out) {
    ws_error err;
    if (ws_dump_layout_open(d, dir, o->family, (int)o->tp, o->config,
                            o->force ? WS_LAYOUT_FORCE : 0, out, &err) != WS_OK)
        return cli_fail(&err);
    return EXIT_MATCH;
}
