/* weightsum shard CKPT --layout L --tp N -o DIR: write each rank's local tensors as the engine
 * holds them after loading, in the sharded_state format. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char usage[] =
    "usage: weightsum shard CKPT --layout sglang|vllm|megatron|hf --tp N [--ep N] [--pp N] -o DIR\n"
    "                       [--config config.json]\n"
    "\n"
    "Write what each tensor-parallel rank holds after loading CKPT: DIR/model-rank-R-part-0\n"
    ".safetensors under the engine's tensor names (fused qkv_proj/gate_up_proj, vocab padded\n"
    "to 64 with zero rows, kv heads replicated when tp > kv heads; Megatron: linear_qkv\n"
    "interleaved per query group), plus config.json and weightsum-layout.json so that\n"
    "'weightsum verify MANIFEST DIR' finds the layout by itself. The config defaults to\n"
    "config.json beside CKPT.\n";

int cmd_shard(int argc, char **argv) {
    static const struct option opts[] = {
        {"layout", required_argument, 0, 'L'}, {"tp", required_argument, 0, 't'}, CLI_LAYOUT_PAR_OPTS,
        {"config", required_argument, 0, 'c'}, {"output", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *family = NULL, *config = NULL, *out = NULL;
    long tp = 0;
    cli_layout_opts par = {0};
    int ch;
    while ((ch = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'L': family = optarg; break;
        case 't':
            if (!cli_parse_int(optarg, 1, 4096, &tp)) return cli_failf("--tp needs 1..4096");
            break;
        case CLI_OPT_EP:
        case CLI_OPT_PP:
            if (cli_parse_par(ch, optarg, &par) < 0) return EXIT_TROUBLE;
            break;
        case 'c': config = optarg; break;
        case 'o': out = optarg; break;
        case 'h': fputs(usage, stdout); return EXIT_MATCH;
        default: fputs(usage, stderr); return EXIT_TROUBLE;
        }
    }
    if (optind + 1 != argc || !family || !tp || !out) {
        fputs(usage, stderr);
        return EXIT_TROUBLE;
    }
    const char *ckpt_path = argv[optind];
    char cfg_path[4096];
    if (config) snprintf(cfg_path, sizeof cfg_path, "%s", config);
    else {
        struct stat st;
        char *copy = strdup(ckpt_path);
        bool isdir = stat(ckpt_path, &st) == 0 && S_ISDIR(st.st_mode);
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", isdir ? ckpt_path : dirname(copy));
        free(copy);
    }
    ws_error err;
    ws_model_config cfg;
    if (ws_model_config_load(cfg_path, &cfg, &err) != WS_OK) return cli_fail(&err);
    ws_layout *l = NULL;
    ws_ckpt *c = NULL;
    int rc = EXIT_MATCH;
    if ((rc = cli_make_layout(family, &cfg, tp, par.ep, par.pp, &l)) != EXIT_MATCH) goto done;
    if (ws_ckpt_open(ckpt_path, &c, &err) != WS_OK) {
        rc = cli_fail(&err);
        goto done;
    }
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        rc = cli_failf("%s: cannot create: %s", out, strerror(errno));
        goto done;
    }
    if (ws_shard_checkpoint(c, l, out, &err) != WS_OK) {
        rc = cli_fail(&err);
        goto done;
    }
    /* the engine's directory carries the model config too */
    FILE *f = fopen(cfg_path, "rb");
    char *text = NULL;
    size_t len = 0;
    if (f) {
        FILE *m = open_memstream(&text, &len);
        int chr;
        while ((chr = fgetc(f)) != EOF) fputc(chr, m);
        fclose(m);
        fclose(f);
    }
    char dst[4096];
    snprintf(dst, sizeof dst, "%s/config.json", out);
    if (!text || ws_write_file_atomic(dst, text, len, &err) != WS_OK)
        rc = text ? cli_fail(&err) : cli_failf("%s: cannot read", cfg_path);
    free(text);
done:
    ws_ckpt_free(c);
    ws_layout_free(l);
    return rc;
}
