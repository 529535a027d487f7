/* weightsum shard CKPT --layout L --tp N -o DIR: write each rank's local tensors as the engine
 * holds them after loading, in the sharded_state format. */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage[] =
    "usage: weightsum shard CKPT --layout sglang|vllm|megatron|transformers|hf --tp N -o DIR\n"
    "                       [--ep N] [--pp N] (MoE expert parallelism, pipeline stages)\n"
    "                [--expert-map FILE] [--redundant-experts N] (EPLB expert slots)\n"
    CLI_DP_USAGE
    "                       [--config config.json] [--force] [--[no-]progress]\n"
    "\n"
    "Write what each tensor-parallel rank holds after loading CKPT: DIR/model-rank-R-part-0\n"
    ".safetensors under the engine's tensor names (fused qkv_proj/gate_up_proj, vocab padded\n"
    "to 64 with zero rows, kv heads replicated when tp > kv heads; Megatron: linear_qkv\n"
    "interleaved per query group), plus config.json and weightsum-layout.json so that\n"
    "'weightsum verify MANIFEST DIR' finds the layout by itself. The config defaults to\n"
    "config.json beside CKPT.\n"
    "DIR must be new or empty; --force writes into a non-empty one and then removes the\n"
    "rank files (model-rank-*-part-*.safetensors) it did not write, so that what DIR holds\n"
    "is one dump.\n"
    "  --[no-]progress  a progress line on stderr (default: when it is a terminal)\n";

/* Number of entries of dir other than . and ..; -1 when it cannot be read. */
static long entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    long n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* After --force: remove the rank files of an older dump (ranks >= tp, parts other than 0). */
static int remove_stale_ranks(const char *dir, long tp) {
    DIR *d = opendir(dir);
    if (!d) return cli_failf("%s: cannot read: %s", dir, strerror(errno));
    int rc = EXIT_MATCH;
    for (struct dirent *e; (e = readdir(d));) {
        long rank, part;
        int n = 0;
        if (sscanf(e->d_name, "model-rank-%ld-part-%ld.safetensors%n", &rank, &part, &n) != 2 ||
            e->d_name[n] != 0 || (rank < tp && part == 0))
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0) rc = cli_failf("%s: cannot remove: %s", path, strerror(errno));
        else fprintf(stderr, "weightsum: removed %s (not part of this dump)\n", path);
    }
    closedir(d);
    return rc;
}

int cmd_shard(int argc, char **argv) {
    static const struct option opts[] = {
        {"layout", required_argument, 0, 'L'}, {"tp", required_argument, 0, 't'}, CLI_LAYOUT_PAR_OPTS,
        {"config", required_argument, 0, 'c'}, {"output", required_argument, 0, 'o'},
        {"force", no_argument, 0, 'f'},        {"progress", no_argument, 0, 'P'},
        {"no-progress", no_argument, 0, 'N'},  {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *family = NULL, *config = NULL, *out = NULL;
    long tp = 0;
    cli_layout_opts par = {0};
    bool force = false;
    int progress = -1;
    int ch;
    while ((ch = cli_getopt("shard", argc, argv, "o:h", opts)) != -1) {
        switch (ch) {
        case 'L': family = optarg; break;
        case 't':
            if (!cli_parse_int(optarg, 1, 4096, &tp))
                return cli_usage("shard", "--tp needs a rank count from 1 to 4096, not '%s'", optarg);
            break;
        case 'f': force = true; break;
        case CLI_OPT_EP:
        case CLI_OPT_PP:
        case CLI_OPT_EXPERT_MAP:
        case CLI_OPT_REDUNDANT:
        case CLI_OPT_ATTN_DP:
        case CLI_OPT_DP_LM_HEAD:
        case CLI_OPT_MOE_DENSE_TP:
        case CLI_OPT_FUSED_SHARED:
            if (cli_parse_par(ch, optarg, &par) < 0) return EXIT_TROUBLE;
            break;
        case 'P': progress = 1; break;
        case 'N': progress = 0; break;
        case 'c': config = optarg; break;
        case 'o': out = optarg; break;
        case 'h': fputs(usage, stdout); return EXIT_MATCH;
        default: return EXIT_TROUBLE; /* said by cli_getopt */
        }
    }
    if (optind == argc) return cli_usage("shard", "no checkpoint named");
    if (optind + 1 != argc) return cli_usage("shard", "one checkpoint at a time, not %d", argc - optind);
    if (!family) return cli_usage("shard", "say which engine layout: --layout sglang|vllm|megatron|transformers|hf");
    if (!tp) return cli_usage("shard", "say the tensor-parallel size: --tp N");
    if (!out) return cli_usage("shard", "say where to write: -o DIR");
    if (strcmp(out, "-") == 0)
        return cli_usage("shard", "-o - is stdout, but shard writes a directory: -o DIR");
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
    ws_model_config *cfg = NULL;
    if (ws_model_config_load(cfg_path, &cfg, &err) != WS_OK) return cli_fail(&err);
    ws_layout *l = NULL;
    ws_ckpt *c = NULL;
    int rc = EXIT_MATCH;
    if ((rc = cli_make_layout(family, cfg, tp, par.ep, par.pp, &par, &l)) != EXIT_MATCH) goto done;
    if (ws_ckpt_open(ckpt_path, &c, &err) != WS_OK) {
        rc = cli_fail(&err);
        goto done;
    }
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        rc = cli_failf("%s: cannot create: %s", out, strerror(errno));
        goto done;
    }
    long n = entries(out);
    if (n < 0) {
        rc = cli_failf("%s: cannot read: %s", out, strerror(errno));
        goto done;
    }
    if (n > 0 && !force) {
        rc = cli_failf("%s: not empty (%ld entries): pass --force to write there anyway", out, n);
        goto done;
    }
    cli_progress prog;
    cli_progress_init(&prog, progress);
    uint64_t total = 0;
    for (size_t i = 0; i < ws_ckpt_count(c); i++) total += ws_ckpt_tensor(c, i)->nbytes;
    cli_progress_cb(&prog, 0, total);
    ws_err e = ws_shard_checkpoint(c, l, out, &err);
    if (e == WS_OK) cli_progress_cb(&prog, total, total);
    cli_progress_end(&prog);
    if (e != WS_OK) {
        rc = cli_fail(&err);
        goto done;
    }
    if (force && n > 0 && (rc = remove_stale_ranks(out, ws_layout_rank_count(l))) != EXIT_MATCH) goto done;
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
    ws_model_config_free(cfg);
    return rc;
}
