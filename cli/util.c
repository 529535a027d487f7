/* Helpers shared by the subcommands: error lines, numbers, keys, report printing. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

bool cli_json_errors = false;
const char *cli_cmd = NULL;

/* {"format": "weightsum-error", "version": 1, "ok": false, "exit": 2, "error": {...}} */
static void json_error(const ws_error *err, const char *line) {
    json_t *e = json_object();
    json_object_set_new(e, "code", json_string(err ? ws_err_name(err->code) : "usage"));
    json_object_set_new(e, "message", json_string(line));
    if (err && err->file[0]) json_object_set_new(e, "file", json_string(err->file));
    if (err && err->tensor[0]) json_object_set_new(e, "tensor", json_string(err->tensor));
    if (err && err->offset >= 0) json_object_set_new(e, "offset", json_integer(err->offset));
    if (err && err->what[0]) json_object_set_new(e, "what", json_string(err->what));
    json_t *root = json_pack("{s:s, s:i, s:b, s:i, s:o}", "format", "weightsum-error", "version",
                             1, "ok", 0, "exit", EXIT_TROUBLE, "error", e);
    char *text = root ? json_dumps(root, JSON_INDENT(1)) : NULL;
    if (text) printf("%s\n", text);
    fflush(stdout);
    free(text);
    json_decref(root);
}

int cli_fail(const ws_error *err) {
    char line[2048];
    ws_error_format(err, line, sizeof line);
    cli_progress_wipe();
    fprintf(stderr, "weightsum: %s\n", line);
    if (cli_json_errors) json_error(err, line);
    return EXIT_TROUBLE;
}

static int vfail(const char *prefix, const char *fmt, va_list ap, const char *suffix) {
    char line[2048];
    vsnprintf(line, sizeof line, fmt, ap);
    cli_progress_wipe();
    fprintf(stderr, "weightsum%s: %s%s\n", prefix, line, suffix);
    if (cli_json_errors) json_error(NULL, line);
    return EXIT_TROUBLE;
}

int cli_failf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail("", fmt, ap, "");
    va_end(ap);
    return EXIT_TROUBLE;
}

ws_hash_options *cli_hash_options(ws_canon canon, unsigned algos, const ws_fastkey *key,
                                  int threads, cli_progress *prog) {
    ws_error err;
    ws_hash_options *o = NULL;
    if (ws_hash_options_create(&o, &err) != WS_OK ||
        ws_hash_options_set(o, WS_HASH_CANON, canon, &err) != WS_OK ||
        (algos && ws_hash_options_set(o, WS_HASH_ALGOS, algos, &err) != WS_OK) ||
        ws_hash_options_set(o, WS_HASH_THREADS, threads, &err) != WS_OK ||
        ws_hash_options_set_key(o, key, &err) != WS_OK ||
        (prog && ws_hash_options_set_progress(o, cli_progress_cb, prog, &err) != WS_OK)) {
        ws_hash_options_free(o);
        cli_fail(&err);
        return NULL;
    }
    return o;
}

int cli_usage(const char *cmd, const char *fmt, ...) {
    char prefix[64], suffix[96];
    snprintf(prefix, sizeof prefix, "%s%s", cmd ? " " : "", cmd ? cmd : "");
    snprintf(suffix, sizeof suffix, " (see 'weightsum %s%s--help')", cmd ? cmd : "", cmd ? " " : "");
    va_list ap;
    va_start(ap, fmt);
    vfail(prefix, fmt, ap, suffix);
    va_end(ap);
    return EXIT_TROUBLE;
}

int cli_getopt(const char *cmd, int argc, char **argv, const char *shortopts,
               const struct option *longopts) {
    cli_cmd = cmd;
    char spec[128];
    snprintf(spec, sizeof spec, ":%s", shortopts); /* ':' first: a missing argument is ':' */
    opterr = 0;
    int ch = getopt_long(argc, argv, spec, longopts, NULL);
    if (ch != '?' && ch != ':') return ch;
    const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "";
    char shortname[3] = {'-', (char)optopt, 0};
    /* a bundled short option (-xq) leaves argv[optind-1] as the bundle: name the option */
    const char *name = optopt && strncmp(arg, "--", 2) != 0 ? shortname : arg;
    if (ch == ':') {
        char opt[128];
        snprintf(opt, sizeof opt, "%s", name);
        char *eq = strchr(opt, '=');
        if (eq) *eq = 0;
        cli_usage(cmd, "option '%s' needs a value", opt);
    } else {
        cli_usage(cmd, "unknown option '%s'", name);
    }
    return CLI_BADOPT;
}

bool cli_parse_int(const char *s, long lo, long hi, long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

int cli_common_option(int ch, const char *arg, cli_common *c) {
    switch (ch) {
    case 'L': c->lo.family = arg; return 1;
    case 't':
        if (cli_parse_int(arg, 1, 4096, &c->lo.tp)) return 1;
        cli_usage(cli_cmd, "--tp needs a rank count from 1 to 4096, not '%s'", arg);
        return -1;
    case 'C': c->lo.config = arg; return 1;
    case 'f': c->lo.force = true; return 1;
    case CLI_OPT_EP:
    case CLI_OPT_PP:
    case CLI_OPT_EXPERT_MAP:
    case CLI_OPT_REDUNDANT:
    case CLI_OPT_ATTN_DP:
    case CLI_OPT_DP_LM_HEAD:
    case CLI_OPT_MOE_DENSE_TP:
    case CLI_OPT_FUSED_SHARED: return cli_parse_par(ch, arg, &c->lo);
    case 'c':
        c->canon_given = true;
        if (ws_canon_from_name(arg, &c->canon) == WS_OK) return 1;
        cli_usage(cli_cmd, "--canonical must be bf16 or native, not '%s'", arg);
        return -1;
    case 'k': c->seed = arg; return 1;
    case 'j':
        if (cli_parse_int(arg, 1, 4096, &c->threads)) return 1;
        cli_usage(cli_cmd, "-j needs a thread count from 1 to 4096, not '%s'", arg);
        return -1;
    case 'P': c->progress = 1; return 1;
    case 'N': c->progress = 0; return 1;
    case CLI_OPT_READ: {
        int mode = strcmp(arg, "pread") == 0 ? WS_READ_PREAD
                   : strcmp(arg, "mmap") == 0 ? WS_READ_MMAP : -1;
        if (mode > 0 && ws_set_read_mode(mode, NULL) == WS_OK) return 1;
        cli_usage(cli_cmd, "--read must be pread or mmap, not '%s'", arg);
        return -1;
    }
    default: return 0;
    }
}

bool cli_common_or_usage(int ch, const char *arg, cli_common *c, const char *usage) {
    if (ch == CLI_BADOPT) return false; /* said by cli_getopt */
    int k = cli_common_option(ch, arg, c);
    if (k == 0) { /* "usage: weightsum CMD ...": name the command */
        char cmd[32] = "";
        sscanf(usage, "usage: weightsum %31s", cmd);
        cli_usage(cmd, "option '%c' not handled", ch);
    }
    return k > 0;
}

bool cli_parse_algo(const char *s, unsigned *out) {
    if (strcmp(s, "sha256") == 0) *out = WS_ALGO_SHA256;
    else if (strcmp(s, "fast") == 0) *out = WS_ALGO_FAST;
    else if (strcmp(s, "both") == 0) *out = WS_ALGO_SHA256 | WS_ALGO_FAST;
    else return false;
    return true;
}

int cli_make_key(const char *seed, ws_fastkey **out) {
    ws_error err;
    const char *s = seed ? seed : WS_FAST_DEFAULT_SEED;
    if (ws_fastkey_create(s, strlen(s), out, &err) != WS_OK) return cli_fail(&err);
    return EXIT_MATCH;
}

void cli_print_finding(FILE *out, const ws_finding *f) {
    fprintf(out, "%s: %s", f->tensor[0] ? f->tensor : "(dump)", ws_status_name(f->status));
    if (f->local) fprintf(out, " [%s", f->local);
    if (f->local && f->rank >= 0) fprintf(out, " on rank %d", f->rank);
    if (f->local) fprintf(out, "]");
    else if (f->rank >= 0) fprintf(out, " [rank %d]", f->rank);
    if (f->row0 >= 0) fprintf(out, " rows %lld..%lld", (long long)f->row0, (long long)f->row1);
    fprintf(out, ": %s\n", f->detail);
}

/* 1 when some finding of r names this tensor. */
static bool has_finding(const ws_report *r, const char *name) {
    for (size_t i = 0; i < ws_report_count(r); i++)
        if (strcmp(ws_report_at(r, i)->tensor, name) == 0) return true;
    return false;
}

void cli_print_warnings(const ws_report *r, const char *what) {
    for (size_t i = 0; i < ws_report_warning_count(r); i++)
        fprintf(stderr, "weightsum: warning: %s: %s\n", what, ws_report_warning_at(r, i)->detail);
}

int cli_print_report(const ws_report *r, bool json, cli_verbosity v, const char *what,
                     const ws_manifest *expected) {
    if (v >= CLI_QUIET) cli_print_warnings(r, what); /* stderr, with --json too */
    if (json) {
        char *text = NULL;
        ws_error err;
        if (ws_report_to_json(r, &text, &err) != WS_OK) return cli_fail(&err);
        fputs(text, stdout);
        fputc('\n', stdout);
        free(text);
    } else {
        uint64_t counts[WS_STATUS__COUNT] = {0};
        if (v >= CLI_VERBOSE && expected)
            for (size_t i = 0; i < ws_manifest_count(expected); i++) {
                const char *name = ws_manifest_entry_at(expected, i)->name;
                if (!has_finding(r, name)) printf("%s: OK\n", name);
            }
        for (size_t i = 0; i < ws_report_count(r); i++) {
            const ws_finding *f = ws_report_at(r, i);
            counts[f->status]++;
            if (v >= CLI_QUIET) cli_print_finding(stdout, f);
        }
        if (v >= CLI_NORMAL) {
            printf("%s: %llu matched", what, (unsigned long long)ws_report_matched(r));
            for (int s = 1; s < WS_STATUS__COUNT; s++)
                if (counts[s]) printf(", %llu %s", (unsigned long long)counts[s], ws_status_name((ws_status)s));
            printf(" -> %s\n", ws_report_ok(r) ? "OK" : "FAILED");
        }
    }
    return ws_report_ok(r) ? EXIT_MATCH : EXIT_MISMATCH;
}
