/* weightsum expect CKPT --layout L --tp N: what every rank of an engine that loaded CKPT must
 * answer to {"action": "checksum"} (docs/http.md, "Checking an unmodified engine"). */
#include "cli.h"

#include <getopt.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char usage[] =
    "usage: weightsum expect CKPT --layout L --tp N [--ep N] [--pp N] [--config F] [-o FILE]\n"
    "                [--expert-map FILE] [--redundant-experts N] (EPLB expert slots)\n"
    CLI_DP_USAGE
    "                        [--engine sglang|vllm] [--device cuda|cpu] [-j N] [--[no-]progress]\n"
    "\n"
    "Predict, from the trainer's HF checkpoint CKPT and the engine's layout, what each rank\n"
    "must answer to {\"action\": \"checksum\"}: SGLang's answer (per rank, its tensor hash of\n"
    "every local tensor, fused, padded, replicated) or vLLM's proposed one (SHA-256 of each\n"
    "local shard), plus what each local tensor holds. `weightsum push URL EXPECTED` compares an\n"
    "engine's answer with it.\n"
    "  --layout L        sglang, vllm, ... (the engine's layout family)\n"
    "  --tp N            the engine's tensor-parallel size\n"
    "  --ep N, --pp N    its expert-parallel size and pipeline stages (default 1; tp x pp ranks)\n"
    "  --config F        the model's config.json (default: beside CKPT)\n"
    "  -o FILE           write the JSON there (atomically) instead of stdout ('-': stdout)\n"
    "  --engine E        sglang (default) or vllm: the dialect and its hash\n"
    "  --device D        where SGLang holds the weights: cuda (default; gpu_tensor_hash) or cpu\n"
    "                    (SHA-256's first 8 bytes)\n"
    "  -j N              threads (default: all cores)\n"
    "  --[no-]progress   a progress line on stderr (default: when it is a terminal)\n"
    "Exit: 0 written, 2 trouble.\n";

/* CKPT's config.json when --config is not given: in CKPT if it is a directory, else beside it. */
static void default_config(const char *ckpt, char *buf, size_t n) {
    struct stat st;
    if (stat(ckpt, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(buf, n, "%s/config.json", ckpt);
        return;
    }
    char *copy = strdup(ckpt);
    snprintf(buf, n, "%s/config.json", copy ? dirname(copy) : ".");
    free(copy);
}

int cli_expect_build(const char *ckpt, const cli_layout_opts *lo, ws_engine engine,
                     ws_sglang_path path, int threads, int progress, ws_expect **out) {
    *out = NULL;
    if (!lo->family || lo->tp <= 0)
        return cli_usage(cli_cmd, "say --layout L and --tp N: the engine's layout is not in the "
                                  "checkpoint %s", ckpt);
    char cfgpath[4096];
    if (lo->config) snprintf(cfgpath, sizeof cfgpath, "%s", lo->config);
    else default_config(ckpt, cfgpath, sizeof cfgpath);
    ws_model_config *cfg = NULL;
    ws_error err;
    ws_ckpt *c = NULL;
    ws_layout *l = NULL;
    int rc = EXIT_MATCH;
    if (ws_model_config_load(cfgpath, &cfg, &err) != WS_OK) {
        rc = !lo->config && err.code == WS_ERR_IO
                 ? cli_failf("%s: no config.json beside it: say --config FILE", ckpt)
                 : cli_fail(&err);
    } else if ((rc = cli_make_layout(lo->family, cfg, lo->tp, lo->ep, lo->pp, lo, &l)) != EXIT_MATCH) {
        /* (said) */
    } else if (ws_ckpt_open(ckpt, &c, &err) != WS_OK) {
        rc = cli_fail(&err);
    } else {
        cli_progress prog;
        cli_progress_init(&prog, progress);
        ws_err e = ws_expect_checkpoint_progress(l, c, engine, path, ckpt, threads,
                                                 cli_progress_cb, &prog, out, &err);
        cli_progress_end(&prog);
        if (e != WS_OK) rc = cli_fail(&err);
    }
    ws_ckpt_free(c);
    ws_layout_free(l);
    ws_model_config_free(cfg);
    return rc;
}

int cmd_expect(int argc, char **argv) {
    enum { OPT_ENGINE = 1000, OPT_DEVICE };
    static const struct option opts[] = {
        {"layout", required_argument, 0, 'L'}, {"tp", required_argument, 0, 't'},
        {"config", required_argument, 0, 'C'}, {"output", required_argument, 0, 'o'},
        {"engine", required_argument, 0, OPT_ENGINE}, {"device", required_argument, 0, OPT_DEVICE},
        {"jobs", required_argument, 0, 'j'}, {"progress", no_argument, 0, 'P'},
        {"no-progress", no_argument, 0, 'N'}, {"help", no_argument, 0, 'h'}, CLI_LAYOUT_PAR_OPTS,
        {0, 0, 0, 0}};
    cli_common co = CLI_COMMON_INIT;
    const char *outpath = NULL;
    ws_engine engine = WS_ENGINE_SGLANG;
    ws_sglang_path path = WS_SGLANG_CUDA;
    int ch;
    while ((ch = cli_getopt("expect", argc, argv, "o:j:h", opts)) != -1) {
        switch (ch) {
        case 'o': outpath = strcmp(optarg, "-") == 0 ? NULL : optarg; break; /* -: stdout */
        case OPT_ENGINE:
            if (ws_engine_from_name(optarg, &engine) != WS_OK)
                return cli_usage("expect", "--engine must be sglang or vllm, not '%s'", optarg);
            break;
        case OPT_DEVICE:
            if (strcmp(optarg, "cuda") == 0) path = WS_SGLANG_CUDA;
            else if (strcmp(optarg, "cpu") == 0) path = WS_SGLANG_CPU;
            else return cli_usage("expect", "--device must be cuda or cpu, not '%s'", optarg);
            break;
        case 'h': fputs(usage, stdout); return EXIT_MATCH;
        default:
            if (!cli_common_or_usage(ch, optarg, &co, usage)) return EXIT_TROUBLE;
        }
    }
    if (argc - optind != 1)
        return cli_usage("expect", "one checkpoint, not %d arguments", argc - optind);
    ws_expect *e = NULL;
    int rc = cli_expect_build(argv[optind], &co.lo, engine, path, (int)co.threads, co.progress,
                              &e);
    if (rc != EXIT_MATCH) return rc;
    char *text = NULL;
    ws_error err;
    if (ws_expect_to_json(e, &text, &err) != WS_OK) rc = cli_fail(&err);
    else if (outpath) {
        if (ws_write_file_atomic(outpath, text, strlen(text), &err) != WS_OK) rc = cli_fail(&err);
    } else {
        fputs(text, stdout);
        fputc('\n', stdout);
    }
    ws_free(text);
    ws_expect_free(e);
    return rc;
}
