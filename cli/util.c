/* Helpers shared by the subcommands: error lines, numbers, keys, report printing. */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int cli_fail(const ws_error *err) {
    char line[2048];
    ws_error_format(err, line, sizeof line);
    fprintf(stderr, "weightsum: %s\n", line);
    return EXIT_TROUBLE;
}

int cli_failf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("weightsum: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return EXIT_TROUBLE;
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
        cli_failf("--tp needs a rank count from 1 to 4096, not '%s'", arg);
        return -1;
    case 'C': c->lo.config = arg; return 1;
    case CLI_OPT_EP:
    case CLI_OPT_PP: return cli_parse_par(ch, arg, &c->lo);
    case 'c':
        c->canon_given = true;
        if (ws_canon_from_name(arg, &c->canon) == WS_OK) return 1;
        cli_failf("--canonical must be bf16 or native, not '%s'", arg);
        return -1;
    case 'k': c->seed = arg; return 1;
    case 'j':
        if (cli_parse_int(arg, 1, 4096, &c->threads)) return 1;
        cli_failf("-j needs a thread count from 1 to 4096, not '%s'", arg);
        return -1;
    case 'P': c->progress = 1; return 1;
    case 'N': c->progress = 0; return 1;
    default: return 0;
    }
}

bool cli_common_or_usage(int ch, const char *arg, cli_common *c, const char *usage) {
    int k = cli_common_option(ch, arg, c);
    if (k == 0) fputs(usage, stderr);
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

int cli_print_report(const ws_report *r, bool json, bool quiet, const char *what) {
    if (json) {
        char *text = NULL;
        ws_error err;
        if (ws_report_to_json(r, &text, &err) != WS_OK) return cli_fail(&err);
        fputs(text, stdout);
        fputc('\n', stdout);
        free(text);
    } else {
        uint64_t counts[WS_STATUS__COUNT] = {0};
        for (size_t i = 0; i < ws_report_count(r); i++) {
            const ws_finding *f = ws_report_at(r, i);
            counts[f->status]++;
            if (!quiet) cli_print_finding(stdout, f);
        }
        if (!quiet) {
            printf("%s: %llu matched", what, (unsigned long long)ws_report_matched(r));
            for (int s = 1; s < WS_STATUS__COUNT; s++)
                if (counts[s]) printf(", %llu %s", (unsigned long long)counts[s], ws_status_name((ws_status)s));
            printf(" -> %s\n", ws_report_ok(r) ? "OK" : "FAILED");
        }
    }
    return ws_report_ok(r) ? EXIT_MATCH : EXIT_MISMATCH;
}
