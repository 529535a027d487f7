/* weightsum: the command-line tool. Thin: parses arguments, calls the library, prints. */
#include "cli.h"

#include <string.h>

static const char usage[] =
    "usage: weightsum COMMAND [ARGS]   (weightsum COMMAND --help for each)\n"
    "\n"
    "  demo      run the built-in example end to end (offline, seconds)\n"
    "  hash      digest every tensor of a checkpoint (sha256sum-style lines or a manifest)\n"
    "  verify    check a checkpoint or an engine dump against a manifest\n"
    "  diff      element-level differences between two checkpoints (or a checkpoint and a dump)\n"
    "  shard     write a checkpoint as SGLang/vLLM/Megatron ranks hold it (sharded_state)\n"
    "  synth     write a synthetic checkpoint for a model config (tests, benchmarks)\n"
    "  serve     answer POST /weights_checker for an engine dump (HTTP)\n"
    "  push      send a manifest to engines' /weights_checker, as a trainer after a sync\n"
    "  expect    predict every engine rank's \"checksum\" answer from the trainer's checkpoint\n"
    "  version   print the version (also -V, --version)\n"
    "  help CMD  the help of CMD (as CMD --help)\n"
    "\n"
    "Exit codes: 0 all match, 1 mismatch found, 2 trouble.\n";

static const struct {
    const char *name;
    int (*fn)(int, char **);
} cmds[] = {{"hash", cmd_hash},   {"verify", cmd_verify}, {"diff", cmd_diff},
            {"demo", cmd_demo},   {"synth", cmd_synth},   {"shard", cmd_shard},
            {"serve", cmd_serve}, {"push", cmd_push},     {"expect", cmd_expect}};

static int (*find_cmd(const char *name))(int, char **) {
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(name, cmds[i].name) == 0) return cmds[i].fn;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(usage, stderr);
        return EXIT_TROUBLE;
    }
    const char *cmd = argv[1];
    /* warm files are read through the mapping (no copy); a file cut under it is an error
     * naming it, caught by the guard (--read pread: preads, which cannot fault) */
    cli_sigbus_guard_install();
    ws_set_read_mode(WS_READ_MMAP, NULL);
    int (*fn)(int, char **) = find_cmd(cmd);
    if (fn) return fn(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        printf("weightsum %s\n", ws_version());
        return EXIT_MATCH;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        if (argc == 2) {
            fputs(usage, stdout);
            return EXIT_MATCH;
        }
        /* weightsum help CMD = weightsum CMD --help */
        if (strcmp(argv[2], "version") == 0 || strcmp(argv[2], "help") == 0) {
            printf("usage: weightsum %s\n\n%s\n", strcmp(argv[2], "help") == 0 ? "help CMD" : "version",
                   strcmp(argv[2], "help") == 0 ? "The help of CMD, as 'weightsum CMD --help'."
                                                : "Print the version (also -V, --version).");
            return EXIT_MATCH;
        }
        if (!(fn = find_cmd(argv[2])))
            return cli_failf("no command '%s' (see 'weightsum --help')", argv[2]);
        char *help_argv[] = {argv[2], "--help", NULL};
        return fn(2, help_argv);
    }
    return cli_failf("unknown command '%s' (see 'weightsum --help')", cmd);
}
