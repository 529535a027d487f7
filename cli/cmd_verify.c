/* weightsum verify MANIFEST CKPT: recompute and compare, a line per problem, a summary. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: weightsum verify MANIFEST CKPT|DIR [--json] [--quiet] [--key SEED] [-j N]\n"
    "                        [--canonical bf16|native] [--[no-]progress]\n"
    "                        [--layout L] [--tp N] [--ep N] [--pp N] [--config F] [--locate REFERENCE]\n"
    "\n"
    "Check CKPT against MANIFEST (JSON from 'weightsum hash -o', or sha256sum-style lines;\n"
    "'-' reads it from stdin). Prints one line per problem and a summary line.\n"
    "DIR may be an engine dump (model-rank-R-part-P.safetensors): every HF tensor is rebuilt\n"
    "from its pieces by streaming (never gathered), every replica compared with replica 0,\n"
    "padding checked; layout, tp and config come from the flags or from DIR.\n"
    "  --locate REF   for a mismatch, name the first bad element (coordinates, both values,\n"
    "                 engine tensor and rank) by comparing with the reference checkpoint\n"
    "  --canonical P  policy for a line-form manifest (a JSON manifest names its own)\n"
    "  --key SEED     seed of the fast digest when the manifest was made with --key\n"
    "  --quiet        no output, only the exit code\n"
    "Exit: 0 all match, 1 a mismatch/missing/unexpected tensor, 2 trouble.\n";

static int verify_dump(const ws_manifest *expected, const char *dir, const cli_layout_opts *lo,
                       const char *locate, ws_canon canon, unsigned algos, const ws_fastkey *key,
                       int threads, int progress, bool json, bool quiet) {
    ws_error err;
    ws_dump *d = NULL;
    ws_layout *l = NULL;
    ws_ckpt *ref = NULL;
    ws_report *r = ws_report_new();
    int rc = EXIT_MATCH;
    cli_progress prog;
    cli_progress_init(&prog, progress);
    ws_hash_options opt = {.canon = canon, .algos = algos, .key = key, .threads = threads,
                           .progress = cli_progress_cb, .progress_user = &prog};
    if (!r) rc = cli_failf("out of memory");
    else if (ws_dump_open(dir, &d, &err) != WS_OK) rc = cli_fail(&err);
    else if ((rc = cli_open_layout(lo, dir, d, &l)) != EXIT_MATCH) { /* said */ }
    else if (locate && ws_ckpt_open(locate, &ref, &err) != WS_OK) rc = cli_fail(&err);
    else if (ws_verify_dump(expected, l, d, &opt, ref, r, &err) != WS_OK) rc = cli_fail(&err);
    cli_progress_end(&prog);
    if (rc == EXIT_MATCH) rc = cli_print_report(r, json, quiet, dir);
    ws_report_free(r);
    ws_ckpt_free(ref);
    ws_layout_free(l);
    ws_dump_free(d);
    return rc;
}

int cmd_verify(int argc, char **argv) {
    static const struct option opts[] = {
        {"json", no_argument, 0, 'J'}, {"quiet", no_argument, 0, 'q'},
        {"key", required_argument, 0, 'k'}, {"jobs", required_argument, 0, 'j'},
        {"canonical", required_argument, 0, 'c'}, {"progress", no_argument, 0, 'P'},
        {"no-progress", no_argument, 0, 'N'}, {"layout", required_argument, 0, 'L'},
        {"tp", required_argument, 0, 't'}, CLI_LAYOUT_PAR_OPTS, {"config", required_argument, 0, 'C'},
        {"locate", required_argument, 0, 'l'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    cli_common cc = CLI_COMMON_INIT;
    const char *locate = NULL;
    bool json = false, quiet = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "qj:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'J': json = true; break;
        case 'q': quiet = true; break;
        case 'l': locate = optarg; break;
        case 'h': fputs(usage, stdout); return EXIT_MATCH;
        default:
            if (!cli_common_or_usage(ch, optarg, &cc, usage)) return EXIT_TROUBLE;
        }
    }
    if (optind + 2 != argc) {
        fputs(usage, stderr);
        return EXIT_TROUBLE;
    }
    const char *mpath = argv[optind], *cpath = argv[optind + 1];
    ws_canon canon = cc.canon;
    bool canon_given = cc.canon_given;
    ws_error err;
    ws_manifest *expected = NULL, *actual = NULL;
    ws_fastkey *key = NULL;
    int rc = EXIT_MATCH;
    if (ws_manifest_load(mpath, &expected, &err) != WS_OK) return cli_fail(&err);
    if (ws_manifest_count(expected) == 0) { /* nothing to check is no proof of a match */
        ws_manifest_free(expected);
        return cli_failf("%s: the manifest lists no tensors", mpath);
    }
    /* A JSON manifest names its policy; the line form takes --canonical (default bf16). */
    if (!ws_manifest_declares_canon(expected)) ws_manifest_set_canon(expected, canon);
    else if (canon_given && canon != ws_manifest_canon(expected)) {
        rc = cli_failf("%s: manifest was made with --canonical %s", mpath,
                       ws_canon_name(ws_manifest_canon(expected)));
        goto done;
    }
    canon = ws_manifest_canon(expected);
    unsigned algos = ws_manifest_algos(expected);
    if (algos & WS_ALGO_SHA256) algos = WS_ALGO_SHA256; /* one algorithm is enough to verify */
    if (algos & WS_ALGO_FAST) {
        if ((rc = cli_make_key(cc.seed, &key)) != EXIT_MATCH) goto done;
        const char *want = ws_manifest_key_id(expected);
        if (want && strcmp(want, ws_fastkey_id(key)) != 0) {
            rc = cli_failf("%s: fast digests use key %s but this key is %s (pass its --key)",
                           mpath, want, ws_fastkey_id(key));
            goto done;
        }
    }
    if (ws_dump_detect(cpath)) {
        rc = verify_dump(expected, cpath, &cc.lo, locate, canon, algos, key, (int)cc.threads,
                         cc.progress, json, quiet);
        goto done;
    }
    if (locate) {
        rc = cli_failf("--locate is for engine dumps; for checkpoints use 'weightsum diff'");
        goto done;
    }
    if ((rc = cli_hash_path(cpath, &cc.lo, canon, algos, key, (int)cc.threads, cc.progress,
                            &actual)) != EXIT_MATCH)
        goto done;
    ws_report *r = ws_report_new();
    if (!r) {
        rc = cli_failf("out of memory");
        goto done;
    }
    if (ws_compare_manifests(expected, actual, r, &err) != WS_OK) rc = cli_fail(&err);
    else rc = cli_print_report(r, json, quiet, cpath);
    ws_report_free(r);
done:
    ws_fastkey_free(key);
    ws_manifest_free(expected);
    ws_manifest_free(actual);
    return rc;
}
