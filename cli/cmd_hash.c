/* weightsum hash CKPT: one digest per tensor, as sha256sum lines or a JSON manifest. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: weightsum hash CKPT [-o FILE] [--json] [--tag] [--canonical bf16|native]\n"
    "                      [--algo sha256|fast|both] [--key SEED] [-j N] [--[no-]progress]\n"
    "                      [--layout L] [--tp N] [--ep N] [--pp N] [--config config.json]\n"
    "                [--expert-map FILE] [--redundant-experts N] (EPLB expert slots)\n"
    CLI_DP_USAGE
    "                      [--read mmap|pread]\n"
    "\n"
    "Digest every tensor of CKPT (a .safetensors file, a *.safetensors.index.json or a\n"
    "directory) after the canonical cast. Prints 'DIGEST  NAME' lines like sha256sum (one\n"
    "per digest: --algo both prints two per tensor), after a '# weightsum-manifest' comment\n"
    "line recording the policy and the fast key; or with --json the manifest; -o FILE\n"
    "writes the JSON manifest to FILE atomically.\n"
    "  --tag           BSD-style lines: 'SHA256 (NAME) = DIGEST', 'FAST (NAME) = DIGEST'\n"
    "CKPT may be an engine dump (model-rank-R-part-P.safetensors): its HF tensors are\n"
    "digested from the shards without gathering; --layout/--tp/--config describe it when\n"
    "the directory does not (weightsum-layout.json, config.json).\n"
    "  --canonical P   bf16 (default: floats cast to bf16 as PyTorch does) or native\n"
    "  --algo A        sha256 (default), fast (layout-invariant) or both\n"
    "  --key SEED      seed of the fast digest's keys (default: the public seed)\n"
    "  -j N            threads (default: all cores)\n"
    "  --read M        mmap (default: through the file mapping, no copy) or pread (into\n"
    "                  buffers); either way a file cut while being read is exit 2 naming it\n"
    "  -o FILE         write the JSON manifest to FILE ('-': stdout); with --json also stdout\n"
    "  -c, --check     verify instead: 'hash -c MANIFEST [CKPT]' is 'verify MANIFEST [CKPT]'\n"
    "  --force         use --layout/--tp even where the dump's weightsum-layout.json differs\n"
    "Exit: 0 done; 1 an engine dump with a finding (a stale replica, non-zero padding, a\n"
    "missing or unexpected tensor: one line each on stderr, the digests still printed);\n"
    "2 trouble. NaN/Inf counts are reported on stderr.\n";

/* Digests of an engine dump, HF-named; structural problems printed on stderr (exit 1). */
static int hash_dump(const char *path, const cli_layout_opts *lo, const ws_hash_options *opt,
                     ws_manifest **out) {
    ws_error err;
    ws_dump *d = NULL;
    ws_layout *l = NULL;
    ws_report *r = ws_report_new();
    int rc = EXIT_MATCH;
    if (ws_dump_open(path, &d, &err) != WS_OK) rc = cli_fail(&err);
    else if ((rc = cli_open_layout(lo, path, d, &l)) == EXIT_MATCH &&
             ws_hash_dump(l, d, opt, path, out, r, &err) != WS_OK)
        rc = cli_fail(&err);
    if (rc == EXIT_MATCH) cli_print_warnings(r, path);
    for (size_t i = 0; rc == EXIT_MATCH && i < ws_report_count(r); i++) {
        fprintf(stderr, "weightsum: %s: ", path);
        cli_print_finding(stderr, ws_report_at(r, i));
    }
    if (rc == EXIT_MATCH && !ws_report_ok(r)) rc = EXIT_MISMATCH;
    ws_report_free(r);
    ws_layout_free(l);
    ws_dump_free(d);
    return rc;
}

/* A path written lexically plain: no "//", no "." parts, "a/.." folded, no trailing '/'. */
void cli_normalize_path(const char *in, char *out, size_t n) {
    bool abs = in[0] == '/';
    const char *parts[512];
    size_t lens[512], k = 0;
    for (const char *p = in; *p;) {
        while (*p == '/') p++;
        const char *q = p;
        while (*q && *q != '/') q++;
        size_t len = (size_t)(q - p);
        if (len == 0 || (len == 1 && p[0] == '.')) { /* nothing */
        } else if (len == 2 && p[0] == '.' && p[1] == '.' && k &&
                   !(lens[k - 1] == 2 && parts[k - 1][0] == '.' && parts[k - 1][1] == '.')) {
            k--;
        } else if (!(len == 2 && p[0] == '.' && p[1] == '.' && abs && k == 0) && k < 512) {
            parts[k] = p;
            lens[k++] = len;
        }
        p = q;
    }
    size_t at = 0;
    if (abs && at + 1 < n) out[at++] = '/';
    for (size_t i = 0; i < k && at + lens[i] + 2 < n; i++) {
        if (i) out[at++] = '/';
        memcpy(out + at, parts[i], lens[i]);
        at += lens[i];
    }
    if (at == 0 && n > 1) out[at++] = '.';
    out[at] = 0;
}

int cli_hash_path(const char *path_given, const cli_layout_opts *lo, ws_canon canon,
                  unsigned algos, const ws_fastkey *key, int threads, int progress_mode,
                  ws_manifest **out) {
    ws_error err;
    char path[4096]; /* the manifest's "source": the path, normalised */
    cli_normalize_path(path_given, path, sizeof path);
    cli_progress prog;
    cli_progress_init(&prog, progress_mode);
    int code = EXIT_MATCH;
    ws_hash_options *opt = cli_hash_options(canon, algos, key, threads, &prog);
    if (!opt) return EXIT_TROUBLE; /* said */
    if (ws_dump_detect(path)) {
        code = hash_dump(path, lo, opt, out);
        cli_progress_end(&prog);
        ws_hash_options_free(opt);
        if (code == EXIT_TROUBLE) return code;
    } else {
        ws_ckpt *c = NULL;
        if (ws_ckpt_open(path, &c, &err) != WS_OK) {
            ws_hash_options_free(opt);
            return cli_fail(&err);
        }
        ws_err rc = ws_hash_checkpoint(c, opt, path, out, &err);
        cli_progress_end(&prog);
        ws_ckpt_free(c);
        ws_hash_options_free(opt);
        if (rc != WS_OK) return cli_fail(&err);
    }
    for (size_t i = 0; i < ws_manifest_count(*out); i++) {
        const ws_manifest_entry *e = ws_manifest_entry_at(*out, i);
        if (e->stats.nan || e->stats.inf)
            fprintf(stderr, "weightsum: warning: %s: tensor '%s' holds %llu NaN and %llu Inf\n",
                    path, e->name, (unsigned long long)e->stats.nan,
                    (unsigned long long)e->stats.inf);
    }
    return code;
}

/* -c / --check anywhere before "--" makes `hash` the verifier, as `sha256sum -c`. */
static bool take_check_flag(int *argc, char **argv) {
    for (int i = 1; i < *argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--check") == 0) {
            memmove(argv + i, argv + i + 1, sizeof *argv * (size_t)(*argc - i));
            (*argc)--;
            return true;
        }
    return false;
}

int cmd_hash(int argc, char **argv) {
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'}, {"json", no_argument, 0, 'J'},
        {"canonical", required_argument, 0, 'c'}, {"algo", required_argument, 0, 'a'},
        {"key", required_argument, 0, 'k'}, {"jobs", required_argument, 0, 'j'},
        {"progress", no_argument, 0, 'P'}, {"no-progress", no_argument, 0, 'N'},
        {"layout", required_argument, 0, 'L'}, {"tp", required_argument, 0, 't'}, CLI_LAYOUT_PAR_OPTS,
        {"config", required_argument, 0, 'C'}, {"force", no_argument, 0, 'f'},
        {"tag", no_argument, 0, 'T'}, CLI_READ_OPT, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    if (take_check_flag(&argc, argv)) {
        argv[0] = "verify";
        return cmd_verify(argc, argv);
    }
    cli_common cc = CLI_COMMON_INIT;
    const char *output = NULL;
    bool json = false, tag = false;
    unsigned algos = WS_ALGO_SHA256;
    int ch;
    while ((ch = cli_getopt("hash", argc, argv, "o:j:fh", opts)) != -1) {
        switch (ch) {
        case 'o': output = optarg; break;
        case 'J': json = cli_json_errors = true; break;
        case 'T': tag = true; break;
        case 'a':
            if (!cli_parse_algo(optarg, &algos))
                return cli_usage("hash", "--algo must be sha256, fast or both, not '%s'", optarg);
            break;
        case 'h': fputs(usage, stdout); return EXIT_MATCH;
        default:
            if (!cli_common_or_usage(ch, optarg, &cc, usage)) return EXIT_TROUBLE;
        }
    }
    if (optind == argc) return cli_usage("hash", "no checkpoint named");
    if (optind + 1 != argc) return cli_usage("hash", "one checkpoint at a time, not %d", argc - optind);
    if (output && strcmp(output, "-") == 0) { /* -o - : the JSON manifest on stdout */
        output = NULL;
        json = true;
    }
    ws_fastkey *key = NULL;
    if ((algos & WS_ALGO_FAST) && cli_make_key(cc.seed, &key) != EXIT_MATCH) return EXIT_TROUBLE;
    ws_manifest *m = NULL;
    int rc = cli_hash_path(argv[optind], &cc.lo, cc.canon, algos, key, (int)cc.threads,
                           cc.progress, &m);
    ws_fastkey_free(key);
    if (!m) return rc;
    ws_error err;
    char *text = NULL;
    if (output || json) {
        /* -o FILE writes the JSON manifest atomically; --json prints it on stdout as well */
        if (ws_manifest_to_json(m, &text, &err) != WS_OK) rc = cli_fail(&err);
        else if (output && ws_write_file_atomic(output, text, strlen(text), &err) != WS_OK)
            rc = cli_fail(&err);
        else if (json) fputs(text, stdout);
    } else if ((tag ? ws_manifest_to_bsd_lines(m, &text, &err)
                    : ws_manifest_to_lines(m, &text, &err)) != WS_OK) {
        rc = cli_fail(&err);
    } else {
        fputs(text, stdout);
    }
    free(text);
    ws_manifest_free(m);
    return rc;
}
