/* weightsum verify MANIFEST CKPT: recompute and compare, a line per problem, a summary. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

int cli_hash_path(const char *path, ws_canon canon, unsigned algos, const ws_fastkey *key,
                  int threads, int progress_mode, ws_manifest **out);

static const char usage[] =
    "usage: weightsum verify MANIFEST CKPT [--json] [--quiet] [--key SEED] [-j N]\n"
    "                        [--canonical bf16|native] [--[no-]progress]\n"
    "\n"
    "Check CKPT against MANIFEST (JSON from 'weightsum hash -o', or sha256sum-style lines;\n"
    "'-' reads it from stdin). Prints one line per problem and a summary line.\n"
    "  --canonical P  policy for a line-form manifest (a JSON manifest names its own)\n"
    "  --key SEED     seed of the fast digest when the manifest was made with --key\n"
    "  --quiet        no output, only the exit code\n"
    "Exit: 0 all match, 1 a mismatch/missing/unexpected tensor, 2 trouble.\n";

int cmd_verify(int argc, char **argv) {
    static const struct option opts[] = {
        {"json", no_argument, 0, 'J'}, {"quiet", no_argument, 0, 'q'},
        {"key", required_argument, 0, 'k'}, {"jobs", required_argument, 0, 'j'},
        {"canonical", required_argument, 0, 'c'}, {"progress", no_argument, 0, 'P'},
        {"no-progress", no_argument, 0, 'N'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    bool json = false, quiet = false, canon_given = false;
    const char *seed = NULL;
    long threads = 0;
    int progress = -1, ch;
    ws_canon canon = WS_CANON_BF16;
    while ((ch = getopt_long(argc, argv, "qj:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'J': json = true; break;
        case 'q': quiet = true; break;
        case 'k': seed = optarg; break;
        case 'j':
            if (!cli_parse_int(optarg, 1, 4096, &threads))
                return cli_failf("-j needs a thread count from 1 to 4096, not '%s'", optarg);
            break;
        case 'c':
            if (ws_canon_from_name(optarg, &canon) != WS_OK)
                return cli_failf("--canonical must be bf16 or native, not '%s'", optarg);
            canon_given = true;
            break;
        case 'P': progress = 1; break;
        case 'N': progress = 0; break;
        case 'h': fputs(usage, stdout); return EXIT_MATCH;
        default: fputs(usage, stderr); return EXIT_TROUBLE;
        }
    }
    if (optind + 2 != argc) {
        fputs(usage, stderr);
        return EXIT_TROUBLE;
    }
    const char *mpath = argv[optind], *cpath = argv[optind + 1];
    ws_error err;
    ws_manifest *expected = NULL, *actual = NULL;
    ws_fastkey *key = NULL;
    int rc = EXIT_MATCH;
    if (ws_manifest_load(mpath, &expected, &err) != WS_OK) return cli_fail(&err);
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
        if ((rc = cli_make_key(seed, &key)) != EXIT_MATCH) goto done;
        const char *want = ws_manifest_key_id(expected);
        if (want && strcmp(want, ws_fastkey_id(key)) != 0) {
            rc = cli_failf("%s: fast digests use key %s but this key is %s (pass its --key)",
                           mpath, want, ws_fastkey_id(key));
            goto done;
        }
    }
    if ((rc = cli_hash_path(cpath, canon, algos, key, (int)threads, progress, &actual)) !=
        EXIT_MATCH)
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
