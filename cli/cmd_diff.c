/* weightsum diff A B: element-level differences between two checkpoints. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: weightsum diff A B [--json] [--quiet|--status] [--layout L] [--tp N] [--ep N] [--pp N] [--config F]\n"
    "                [--expert-map FILE] [--redundant-experts N] (EPLB expert slots)\n"
    CLI_DP_USAGE
    "                        [--force] [--[no-]progress] [--read mmap|pread]\n"
    "\n"
    "Compare two checkpoints element by element (native bits when dtypes agree, canonical\n"
    "bf16 values otherwise). For each differing tensor: how many elements differ, the first\n"
    "as flat index and coordinates with both values, the largest absolute and ULP difference.\n"
    "B may be an engine dump of A (any layout): each HF tensor is rebuilt from the shards and\n"
    "compared in canonical bf16 values; the first bad element also names its engine tensor,\n"
    "rank and coordinates there.\n"
    "  --read M   mmap (default: through the file mapping, no copy) or pread (into buffers);\n"
    "             either way a file cut while being read is exit 2 naming it\n"
    "Exit: 0 identical, 1 differences, 2 trouble.\n";

void cli_coords(FILE *f, uint64_t flat, int ndim, const uint64_t *shape) {
    uint64_t c[WS_MAX_DIMS];
    if (ws_unravel(flat, ndim, shape, c, NULL) != WS_OK) {
        fputs("[?]", f);
        return;
    }
    fputc('[', f);
    for (int d = 0; d < ndim; d++) fprintf(f, d ? ", %llu" : "%llu", (unsigned long long)c[d]);
    fputc(']', f);
}

/* Describe one tensor's differences in one line: shared by diff and verify --locate. */
void cli_print_diff(FILE *f, const char *name, const ws_diff *d, int ndim, const uint64_t *shape) {
    fprintf(f, "%s: %llu of %llu elements differ; first at %llu ", name,
            (unsigned long long)d->differ, (unsigned long long)d->compared,
            (unsigned long long)d->first);
    cli_coords(f, d->first, ndim, shape);
    fprintf(f, ": %.9g vs %.9g; max abs %.6g, max ulp %llu\n", d->first_a, d->first_b,
            d->max_abs, (unsigned long long)d->max_ulp);
}

/* A checkpoint against an engine dump of it. */
static int diff_dump(const char *ckpt, const char *dir, const cli_layout_opts *lo, bool json,
                     cli_verbosity verb, int progress) {
    ws_error err;
    ws_ckpt *c = NULL;
    ws_dump *d = NULL;
    ws_layout *l = NULL;
    ws_report *r = ws_report_new();
    int rc = EXIT_MATCH;
    cli_progress prog;
    cli_progress_init(&prog, progress);
    if (!r) rc = cli_failf("out of memory");
    else if (ws_ckpt_open(ckpt, &c, &err) != WS_OK || ws_dump_open(dir, &d, &err) != WS_OK)
        rc = cli_fail(&err);
    else if ((rc = cli_open_layout(lo, dir, d, &l)) != EXIT_MATCH) { /* said */ }
    else if (ws_diff_dump(c, l, d, WS_CANON_BF16, cli_progress_cb, &prog, r, &err) != WS_OK)
        rc = cli_fail(&err);
    cli_progress_end(&prog);
    if (rc == EXIT_MATCH) rc = cli_print_report(r, json, verb, "diff", NULL);
    ws_report_free(r);
    ws_layout_free(l);
    ws_dump_free(d);
    ws_ckpt_free(c);
    return rc;
}

int cmd_diff(int argc, char **argv) {
    static const struct option opts[] = {
        {"json", no_argument, 0, 'J'},          {"quiet", no_argument, 0, 'q'},
        {"layout", required_argument, 0, 'L'},  {"tp", required_argument, 0, 't'}, CLI_LAYOUT_PAR_OPTS,
        {"config", required_argument, 0, 'C'},  {"force", no_argument, 0, 'f'},
        {"status", no_argument, 0, 'S'},        {"progress", no_argument, 0, 'P'},
        {"no-progress", no_argument, 0, 'N'},   CLI_READ_OPT, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    cli_common cc = CLI_COMMON_INIT;
    bool json = false;
    cli_verbosity verb = CLI_NORMAL;
    int ch;
    while ((ch = cli_getopt("diff", argc, argv, "qh", opts)) != -1) {
        switch (ch) {
        case 'J': json = cli_json_errors = true; break;
        case 'q': verb = CLI_QUIET; break;
        case 'S': verb = CLI_STATUS; break;
        case 'h': fputs(usage, stdout); return EXIT_MATCH;
        default:
            if (!cli_common_or_usage(ch, optarg, &cc, usage)) return EXIT_TROUBLE;
        }
    }
    if (optind + 2 != argc)
        return cli_usage("diff", "two checkpoints to compare, not %d", argc - optind);
    if (ws_dump_detect(argv[optind + 1]) || ws_dump_detect(argv[optind])) {
        bool swapped = ws_dump_detect(argv[optind]);
        return diff_dump(argv[optind + swapped], argv[optind + !swapped], &cc.lo, json, verb,
                         cc.progress);
    }
    ws_error err;
    ws_ckpt *a = NULL, *b = NULL;
    if (ws_ckpt_open(argv[optind], &a, &err) != WS_OK) return cli_fail(&err);
    if (ws_ckpt_open(argv[optind + 1], &b, &err) != WS_OK) {
        ws_ckpt_free(a);
        return cli_fail(&err);
    }
    ws_report *r = ws_report_new();
    int rc = EXIT_MATCH;
    cli_progress prog;
    cli_progress_init(&prog, cc.progress);
    if (!r) rc = cli_failf("out of memory");
    else if (ws_diff_checkpoints(a, b, cli_progress_cb, &prog, r, &err) != WS_OK) rc = cli_fail(&err);
    cli_progress_end(&prog);
    if (rc == EXIT_MATCH) rc = cli_print_report(r, json, verb, "diff", NULL);
    ws_report_free(r);
    ws_ckpt_free(a);
    ws_ckpt_free(b);
    return rc;
}
