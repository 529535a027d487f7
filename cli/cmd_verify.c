/* weightsum verify MANIFEST CKPT: recompute and compare, a line per problem, a summary. */
#include "cli.h"
#include "internal.h" /* wsi_read_file */

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: weightsum verify MANIFEST [CKPT|DIR] [--json] [-q|--status|-v] [--key SEED] [-j N]\n"
    "                        [--canonical bf16|native] [--[no-]progress] [--ignore-missing]\n"
    "                        [--layout L] [--tp N] [--ep N] [--pp N] [--config F] [--force]\n"
    "                [--expert-map FILE] [--redundant-experts N] (EPLB expert slots)\n"
    CLI_DP_USAGE
    "                        [--locate REFERENCE]\n"
    "                        [--report FILE.html] [--read mmap|pread]\n"
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
    "  -q, --quiet    print the failures only (no summary line)\n"
    "  --status       print nothing: the exit code says it\n"
    "  -v, --verbose  also one 'NAME: OK' line per tensor that matched\n"
    "  --ignore-missing  tensors of the manifest absent from CKPT are no failure (one shard\n"
    "                 file of a model against the whole manifest); at least one must match\n"
    "  --strict       an improperly formatted manifest line is an error (exit 2); without\n"
    "                 it such a line is warned about and skipped, as 'sha256sum -c' does\n"
    "  --json         the report as JSON on stdout (docs/json.md); errors too\n"
    "  --report FILE  also write the report as one self-contained HTML page: a grid of\n"
    "                 layers x kinds of tensor coloured by verdict, the findings under it\n"
    "  --force        use --layout/--tp even where the dump's weightsum-layout.json differs\n"
    "  --read M       mmap (default: through the file mapping, no copy) or pread (into\n"
    "                 buffers); either way a file cut while being read is exit 2 naming it\n"
    "With one argument, CKPT is a JSON manifest's \"source\" (as 'sha256sum -c'); a line\n"
    "manifest records none: name the checkpoint.\n"
    "Exit: 0 all match, 1 a mismatch/missing/unexpected tensor, 2 trouble.\n";

/* --report FILE: the HTML page of r, written atomically; EXIT_TROUBLE when it cannot be. */
static const char *report_html;
static char report_title[1024];

static int write_html(const ws_report *r, const ws_manifest *expected) {
    if (!report_html) return EXIT_MATCH;
    char *html = NULL;
    ws_error err;
    int rc = EXIT_MATCH;
    if (ws_report_to_html(r, expected, report_title, &html, &err) != WS_OK ||
        ws_write_file_atomic(report_html, html, strlen(html), &err) != WS_OK)
        rc = cli_fail(&err);
    free(html);
    return rc;
}

/* A line manifest without its "# weightsum-manifest" line records no policy: when not one
 * tensor matched, say which policy it was read with and which one to try (NULL: no hint). */
static const char *undeclared_policy;
static char hint_manifest[1024];

/* Write --report, print the report, and the hint above; returns the exit code. */
static int conclude(const ws_report *r, const ws_manifest *m, bool json, cli_verbosity v,
                    const char *what) {
    int rc = write_html(r, m);
    if (rc != EXIT_MATCH) return rc;
    rc = cli_print_report(r, json, v, what, m);
    bool mismatch = false;
    for (size_t i = 0; i < ws_report_count(r); i++)
        mismatch = mismatch || ws_report_at(r, i)->status == WS_MISMATCH;
    if (undeclared_policy && !json && v > CLI_STATUS && mismatch && ws_report_matched(r) == 0)
        fprintf(stderr, "weightsum: note: %s: not one tensor matched, and its lines record no "
                        "policy (no '# weightsum-manifest' line): read as --canonical %s; if it "
                        "was made with --canonical %s, say so\n", hint_manifest, undeclared_policy,
                strcmp(undeclared_policy, "bf16") == 0 ? "native" : "bf16");
    return rc;
}

static int verify_dump(const ws_manifest *expected, const char *dir, const cli_layout_opts *lo,
                       const char *locate, ws_canon canon, unsigned algos, const ws_fastkey *key,
                       int threads, int progress, bool json, cli_verbosity verb) {
    ws_error err;
    ws_dump *d = NULL;
    ws_layout *l = NULL;
    ws_ckpt *ref = NULL;
    ws_report *r = ws_report_new();
    int rc = EXIT_MATCH;
    cli_progress prog;
    cli_progress_init(&prog, progress);
    ws_hash_options *opt = cli_hash_options(canon, algos, key, threads, &prog);
    if (!opt) rc = EXIT_TROUBLE; /* said */
    else if (!r) rc = cli_failf("out of memory");
    else if (ws_dump_open(dir, &d, &err) != WS_OK) rc = cli_fail(&err);
    else if ((rc = cli_open_layout(lo, dir, d, &l)) != EXIT_MATCH) { /* said */ }
    else if (locate && ws_ckpt_open(locate, &ref, &err) != WS_OK) rc = cli_fail(&err);
    else if (ws_verify_dump(expected, l, d, opt, ref, r, &err) != WS_OK) rc = cli_fail(&err);
    cli_progress_end(&prog);
    if (rc == EXIT_MATCH) rc = conclude(r, expected, json, verb, dir);
    ws_report_free(r);
    ws_ckpt_free(ref);
    ws_layout_free(l);
    ws_dump_free(d);
    ws_hash_options_free(opt);
    return rc;
}

/* An improperly formatted digest line of a line manifest, as the parser names it (the line's
 * number and, in err.offset, its first byte). Other mistakes (whole-file digests, a tensor
 * listed twice, the header line, JSON) are always errors. */
static bool misformatted(const ws_error *e) {
    return e->code == WS_ERR_FORMAT && e->offset >= 0 && strncmp(e->what, "line ", 5) == 0 &&
           (strstr(e->what, "expected \"HEX  NAME\"") || strstr(e->what, "hex digits") ||
            strstr(e->what, "not valid UTF-8") || strstr(e->what, "NUL byte"));
}

/* Load the manifest as sha256sum -c reads its lines: an improperly formatted line is warned
 * about (unless quiet) and skipped, or with strict an error (exit 2). A skipped line checks
 * nothing, so its tensor is then reported as unexpected: never a silent match. */
static int load_manifest(const char *path, bool strict, bool quiet, ws_manifest **out,
                         bool *lines) {
    ws_error err;
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    if (wsi_read_file(path, true, (size_t)1 << 31, "a manifest", &text, &len, &err) != WS_OK)
        return cli_fail(&err);
    size_t at = 0; /* as ws_manifest_parse tells the forms apart */
    while (at < len && strchr(" \t\r\n", text[at])) at++;
    *lines = !(at < len && text[at] == '{');
    ws_err e;
    while ((e = ws_manifest_parse(text, len, path, out, &err)) != WS_OK && !strict &&
           misformatted(&err) && (size_t)err.offset < len) {
        if (!quiet)
            fprintf(stderr, "weightsum: warning: %s: %s: improperly formatted, skipped (--strict "
                            "makes it an error)\n", path, err.what);
        /* the line becomes a comment of the same length: later lines keep their numbers */
        for (size_t i = (size_t)err.offset; i < len && text[i] != '\n'; i++) text[i] = '#';
    }
    free(text);
    return e == WS_OK ? EXIT_MATCH : cli_fail(&err);
}

/* --ignore-missing: the findings of r without its `missing` ones; NULL when none matched. */
static ws_report *drop_missing(const ws_report *r) {
    ws_report *k = ws_report_new();
    if (!k) return NULL;
    for (size_t i = 0; i < ws_report_count(r); i++)
        if (ws_report_at(r, i)->status != WS_MISSING) ws_report_add(k, ws_report_at(r, i));
    ws_report_count_match(k, ws_report_matched(r));
    return k;
}

/* The checkpoint a manifest names as its "source", for 'verify MANIFEST' alone: as given
 * (relative to here), else relative to the manifest's directory. */
static bool source_of(const ws_manifest *m, const char *mpath, char *out, size_t n) {
    const char *src = ws_manifest_source(m);
    if (!src || !*src) return false;
    snprintf(out, n, "%s", src);
    if (src[0] == '/' || access(out, F_OK) == 0) return true;
    const char *slash = strrchr(mpath, '/');
    if (!slash) return true;
    snprintf(out, n, "%.*s/%s", (int)(slash - mpath), mpath, src);
    return true;
}

int cmd_verify(int argc, char **argv) {
    static const struct option opts[] = {
        {"json", no_argument, 0, 'J'}, {"quiet", no_argument, 0, 'q'},
        {"status", no_argument, 0, 'S'}, {"verbose", no_argument, 0, 'v'},
        {"ignore-missing", no_argument, 0, 'I'}, {"strict", no_argument, 0, 'T'},
        {"force", no_argument, 0, 'f'},
        {"key", required_argument, 0, 'k'}, {"jobs", required_argument, 0, 'j'},
        {"canonical", required_argument, 0, 'c'}, {"progress", no_argument, 0, 'P'},
        {"no-progress", no_argument, 0, 'N'}, {"layout", required_argument, 0, 'L'},
        {"tp", required_argument, 0, 't'}, CLI_LAYOUT_PAR_OPTS, {"config", required_argument, 0, 'C'},
        {"locate", required_argument, 0, 'l'}, {"report", required_argument, 0, 'R'},
        CLI_READ_OPT, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    cli_common cc = CLI_COMMON_INIT;
    const char *locate = NULL;
    report_html = NULL;
    bool json = false, ignore_missing = false, strict = false;
    cli_verbosity verb = CLI_NORMAL;
    int ch;
    while ((ch = cli_getopt("verify", argc, argv, "qvj:h", opts)) != -1) {
        switch (ch) {
        case 'J': json = cli_json_errors = true; break;
        case 'q': verb = CLI_QUIET; break;
        case 'S': verb = CLI_STATUS; break;
        case 'v': verb = CLI_VERBOSE; break;
        case 'I': ignore_missing = true; break;
        case 'T': strict = true; break;
        case 'l': locate = optarg; break;
        case 'R': report_html = optarg; break;
        case 'h': fputs(usage, stdout); return EXIT_MATCH;
        default:
            if (!cli_common_or_usage(ch, optarg, &cc, usage)) return EXIT_TROUBLE;
        }
    }
    if (report_html && strcmp(report_html, "-") == 0) /* stdout is the report's lines */
        return cli_usage("verify", "--report needs a file name: stdout holds the report's lines");
    if (optind == argc) return cli_usage("verify", "no manifest named");
    if (optind + 2 < argc)
        return cli_usage("verify", "a manifest and one checkpoint, not %d arguments",
                         argc - optind);
    const char *mpath = argv[optind], *cpath = argv[optind + 1];
    ws_canon canon = cc.canon;
    bool canon_given = cc.canon_given;
    ws_error err;
    ws_manifest *expected = NULL, *actual = NULL;
    ws_fastkey *key = NULL;
    int rc = EXIT_MATCH;
    char srcpath[4096];
    bool lines = false;
    if ((rc = load_manifest(mpath, strict, verb == CLI_STATUS, &expected, &lines)) != EXIT_MATCH)
        return rc;
    if (ws_manifest_count(expected) == 0) { /* nothing to check is no proof of a match */
        ws_manifest_free(expected);
        return cli_failf("%s: the manifest lists no tensors", mpath);
    }
    snprintf(report_title, sizeof report_title, "weightsum verify %s %s", mpath,
             cpath ? cpath : "");
    if (!cpath) {
        if (lines) { /* its lines name tensors, not the checkpoint they came from */
            ws_manifest_free(expected);
            return cli_usage("verify", "%s is a line manifest, which records no checkpoint: name "
                                       "it ('weightsum verify %s CKPT')", mpath, mpath);
        }
        if (!source_of(expected, mpath, srcpath, sizeof srcpath)) {
            ws_manifest_free(expected);
            return cli_usage("verify", "%s records no source: name the checkpoint", mpath);
        }
        cpath = srcpath;
    }
    /* A JSON manifest names its policy; the line form takes --canonical (default bf16). */
    undeclared_policy = NULL;
    snprintf(hint_manifest, sizeof hint_manifest, "%s", mpath);
    if (!ws_manifest_declares_canon(expected)) {
        ws_manifest_set_canon(expected, canon, NULL); /* canon: a parsed option */
        if (lines) undeclared_policy = ws_canon_name(canon);
    } else if (canon_given && canon != ws_manifest_canon(expected)) {
        rc = cli_failf("%s: manifest was made with --canonical %s: use --canonical %s (or leave "
                       "it out)", mpath, ws_canon_name(ws_manifest_canon(expected)),
                       ws_canon_name(ws_manifest_canon(expected)));
        goto done;
    }
    canon = ws_manifest_canon(expected);
    unsigned algos = ws_manifest_algos(expected);
    /* every digest the manifest holds is recomputed and compared: one right and one wrong is
     * a finding (the manifest contradicts itself, or the fast digest's key is not the same) */
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
        if (ignore_missing) {
            rc = cli_usage("verify", "--ignore-missing is for checkpoint files; an engine dump "
                                     "must hold every tensor");
            goto done;
        }
        rc = verify_dump(expected, cpath, &cc.lo, locate, canon, algos, key, (int)cc.threads,
                         cc.progress, json, verb);
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
    else if (ignore_missing) {
        ws_report *k = drop_missing(r);
        if (!k) rc = cli_failf("out of memory");
        else if (ws_report_matched(k) == 0)
            rc = cli_failf("%s: no tensor of %s was verified (--ignore-missing)", cpath, mpath);
        else rc = conclude(k, actual, json, verb, cpath);
        ws_report_free(k);
    } else {
        rc = conclude(r, expected, json, verb, cpath);
    }
    ws_report_free(r);
done:
    ws_fastkey_free(key);
    ws_manifest_free(expected);
    ws_manifest_free(actual);
    return rc;
}
