/* weightsum push URL... MANIFEST: send the trainer's digests to engines' /weights_checker
 * (compare_checksum, libcurl), as a trainer does after a weight sync, and report each answer. */
#include "cli.h"
#include "internal.h" /* wsi_read_file */

#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: weightsum push URL... MANIFEST [--rank-offset N] [--timeout S] [--json]\n"
    "                      [--canonical bf16|native] [--algo sha256|fast]\n"
    "       weightsum push URL... EXPECTED [--skip S]... [--selector target|draft|all]\n"
    "       weightsum push URL... CKPT --layout L --tp N [--config F] [--engine E] [--device D]\n"
    "\n"
    "With EXPECTED (a file of `weightsum expect`) or CKPT and its layout: POST\n"
    "{\"action\": \"checksum\"} to every engine (SGLang's /weights_checker, vLLM's\n"
    "/weight_checker) and compare each rank's answer, matched by tp_rank, with what that rank\n"
    "must hold: one line per engine tensor that differs, is missing or extra, naming the rank\n"
    "and the HF tensors and rows it holds. --skip (skip_tensor_list) and --selector are passed\n"
    "through; an engine error (success false, unsupported action) is trouble (exit 2).\n"
    "\n"
    "With MANIFEST:\n"
    "POST {\"action\": \"compare_checksum\", \"checksums\": ...} to every engine URL at once\n"
    "and report what each says: one line per problem, prefixed by the URL, then a summary.\n"
    "A URL with no path gets /weights_checker. MANIFEST ('-' = stdin) is a weightsum\n"
    "manifest (JSON or sha256sum lines: full HF tensors), or a JSON list of per-rank\n"
    "{engine name: digest} dicts (or a saved \"checksum\" answer holding \"ranks\"), which\n"
    "engine rank r reads at index r (its tp_rank).\n"
    "  --rank-offset N   the NCCL rank base of the weight-update group, passed through as\n"
    "                    \"rank_offset\" (it does not shift the list)\n"
    "  --timeout S       give up on an engine after S seconds (default 600)\n"
    "  --canonical P     policy of a line-form manifest or per-rank list (default bf16)\n"
    "  --algo A          digests to send when the manifest has both (default sha256)\n"
    "  --json            print every engine's answer as a JSON list; on trouble (exit 2) a\n"
    "                    weightsum-error document, the answers in its \"answers\"\n"
    "Exit: 0 every engine matches, 1 one reports a mismatch, 2 transport or protocol error.\n";

#ifndef WS_HAVE_HTTP
int cmd_push(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        fputs(usage, stdout);
        return EXIT_MATCH;
    }
    return cli_failf("push: this weightsum was built without libcurl");
}
#else
#include <curl/curl.h>
#include <jansson.h>

#define MAX_ANSWER (256u * 1024u * 1024u)

typedef struct target {
    char *url;
    CURL *h;
    char *buf;
    size_t len, cap;
    bool overflow;
    char errbuf[CURL_ERROR_SIZE];
    CURLcode code;
    long status;
} target;

static size_t on_data(char *p, size_t size, size_t n, void *arg) {
    target *t = arg;
    size_t k = size * n;
    if (t->overflow || k > MAX_ANSWER - t->len) {
        t->overflow = true;
        return 0; /* aborts the transfer */
    }
    if (t->len + k + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 16384;
        while (cap < t->len + k + 1) cap *= 2;
        char *g = realloc(t->buf, cap);
        if (!g) return 0;
        t->buf = g;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, p, k);
    t->len += k;
    t->buf[t->len] = 0;
    return k;
}

/* "http://host:port" -> "http://host:port" + route; NULL for a non-HTTP URL. */
static char *endpoint(const char *url, const char *route) {
    const char *rest = strncmp(url, "http://", 7) == 0    ? url + 7
                       : strncmp(url, "https://", 8) == 0 ? url + 8
                                                          : NULL;
    if (!rest || !*rest) return NULL;
    const char *slash = strchr(rest, '/');
    bool bare = !slash || strcmp(slash, "/") == 0;
    size_t n = strlen(url) + 32;
    char *u = malloc(n);
    if (!u) return NULL;
    if (bare) snprintf(u, n, "%.*s%s", (int)(slash ? slash - url : (long)strlen(url)), url, route);
    else snprintf(u, n, "%s", url);
    return u;
}

/* Build the request body from the manifest file (the library builds it: ws_compare_request). */
static char *request_body(const char *path, long rank_offset, bool offset_given, ws_canon canon,
                          bool canon_given, unsigned algo) {
    size_t len = 0;
    char *text = NULL, *body = NULL, *out = NULL;
    ws_error err;
    if (wsi_read_file(path, true, (size_t)1 << 31, "a manifest", &text, &len, &err) != WS_OK) {
        cli_fail(&err);
        return NULL;
    }
    if (ws_compare_request(text, len, path, canon, canon_given, algo, rank_offset, offset_given,
                           &body, &err) != WS_OK)
        cli_fail(&err);
    else if (!(out = strdup(body)))
        cli_failf("out of memory");
    ws_free(body);
    free(text);
    return out;
}

/* "TENSOR: STATUS [LOCAL on rank R]: DETAIL" for one finding of an answer's lists. */
static void print_item(FILE *out, const char *url, const ws_finding *f) {
    fprintf(out, "%s: %s: %s", url, f->tensor[0] ? f->tensor : "(dump)", ws_status_name(f->status));
    char rs[256] = "";
    if (f->rank >= 0) {
        snprintf(rs, sizeof rs, "rank %d", f->rank);
    } else if (f->nholders) {
        size_t len = (size_t)snprintf(rs, sizeof rs, "ranks ");
        for (size_t i = 0; i < f->nholders && len < sizeof rs; i++)
            len += (size_t)snprintf(rs + len, sizeof rs - len, i ? ",%d" : "%d", f->holders[i].rank);
    }
    if (f->local) fprintf(out, " [%s%s%s]", f->local, rs[0] ? " on " : "", rs);
    else if (rs[0]) fprintf(out, " [%s]", rs);
    fprintf(out, ": %s\n", f->detail);
}

static const char *list_name(ws_status s) {
    switch (s) {
    case WS_MISSING: return "missing";
    case WS_UNEXPECTED: return "unexpected";
    case WS_REPLICA_MISMATCH: return "replica_mismatch";
    default: return "mismatched";
    }
}

/* The first trouble of this run (--json: the weightsum-error document names it). */
static struct {
    const char *code;
    char message[2048];
} first_trouble;

static int push_fail(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int push_fail(const char *code, const char *fmt, ...) {
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (!first_trouble.code) {
        first_trouble.code = code;
        snprintf(first_trouble.message, sizeof first_trouble.message, "%s", line);
    }
    return cli_failf("%s", line);
}

/* An engine that could not be reached or whose answer was cut: trouble naming it. */
static int transport_fail(const target *t) {
    return push_fail("WS_ERR_IO", "%s: %s", t->url,
                     t->overflow ? "answer larger than 256 MiB"
                     : t->errbuf[0] ? t->errbuf
                                    : curl_easy_strerror(t->code));
}

/* Judge one engine's compare_checksum answer (the library judges: ws_compare_judge):
 * EXIT_MATCH, EXIT_MISMATCH or EXIT_TROUBLE (said on stderr). */
static int judge(target *t, bool json_out) {
    if (t->code != CURLE_OK) return transport_fail(t);
    ws_report *r = ws_report_new();
    ws_error err;
    ws_error_clear(&err);
    if (!r) return push_fail("WS_ERR_NOMEM", "out of memory");
    if (ws_compare_judge(t->buf, t->buf ? t->len : 0, (int)t->status, r, &err) != WS_OK) {
        ws_report_free(r);
        return push_fail(ws_err_name(err.code), "%s: %s", t->url, err.what);
    }
    int code = ws_report_ok(r) ? EXIT_MATCH : EXIT_MISMATCH;
    if (!json_out && code == EXIT_MATCH) {
        printf("%s: %llu matched -> OK\n", t->url, (unsigned long long)ws_report_matched(r));
    } else if (!json_out) {
        static const char *const lists[] = {"mismatched", "missing", "unexpected", "replica_mismatch"};
        size_t counts[4] = {0};
        for (size_t k = 0; k < 4; k++)
            for (size_t i = 0; i < ws_report_count(r); i++) {
                const ws_finding *f = ws_report_at(r, i);
                if (strcmp(list_name(f->status), lists[k]) != 0) continue;
                print_item(stdout, t->url, f);
                counts[k]++;
            }
        printf("%s: %llu matched", t->url, (unsigned long long)ws_report_matched(r));
        for (size_t k = 0; k < 4; k++)
            if (counts[k]) printf(", %zu %s", counts[k], lists[k]);
        printf(" -> FAILED\n");
    }
    ws_report_free(r);
    return code;
}

/* Judge one engine's checksum answer against the expectation: EXIT_MATCH, EXIT_MISMATCH
 * (findings on stdout) or EXIT_TROUBLE (said on stderr, the engine's message in it). */
static int judge_expect(target *t, const ws_expect *e, const char *const *skip, size_t nskip,
                        bool json_out) {
    if (t->code != CURLE_OK) return transport_fail(t);
    ws_report *r = ws_report_new();
    ws_error err;
    ws_error_clear(&err);
    if (!r) return push_fail("WS_ERR_NOMEM", "out of memory");
    ws_err rc = ws_expect_judge(e, t->buf ? t->buf : "", t->len, (int)t->status, skip, nskip, r, &err);
    if (rc != WS_OK) {
        ws_report_free(r);
        return push_fail(ws_err_name(rc), "%s: %s", t->url, err.what);
    }
    if (!json_out) {
        for (size_t i = 0; i < ws_report_count(r); i++) {
            printf("%s: ", t->url);
            cli_print_finding(stdout, ws_report_at(r, i));
        }
        uint64_t counts[WS_STATUS__COUNT] = {0};
        for (size_t i = 0; i < ws_report_count(r); i++) counts[ws_report_at(r, i)->status]++;
        printf("%s: %llu matched", t->url, (unsigned long long)ws_report_matched(r));
        for (int s = 1; s < WS_STATUS__COUNT; s++)
            if (counts[s]) printf(", %llu %s", (unsigned long long)counts[s], ws_status_name((ws_status)s));
        printf(" -> %s\n", ws_report_ok(r) ? "OK" : "FAILED");
    }
    int code = ws_report_ok(r) ? EXIT_MATCH : EXIT_MISMATCH;
    ws_report_free(r);
    return code;
}

/* The expectation in path, or NULL when path holds something else (a manifest; standard
 * input is always a manifest: it can be read only once). */
static ws_expect *load_expect(const char *path, bool *trouble) {
    if (strcmp(path, "-") == 0) return NULL;
    size_t len = 0;
    char *text = NULL;
    ws_error rerr;
    if (wsi_read_file(path, true, (size_t)1 << 31, "an expectation", &text, &len, &rerr) != WS_OK) {
        cli_fail(&rerr);
        *trouble = true;
        return NULL;
    }
    ws_expect *e = NULL;
    if (text && strstr(text, "\"weightsum-expect\"")) {
        ws_error err;
        if (ws_expect_parse(text, len, path, &e, &err) != WS_OK) {
            cli_fail(&err);
            *trouble = true;
        }
    }
    free(text);
    return e;
}

int cmd_push(int argc, char **argv) {
    static const struct option opts[] = {
        {"rank-offset", required_argument, 0, 'r'}, {"timeout", required_argument, 0, 'T'},
        {"json", no_argument, 0, 'J'}, {"canonical", required_argument, 0, 'c'},
        {"algo", required_argument, 0, 'a'}, {"help", no_argument, 0, 'h'},
        {"layout", required_argument, 0, 'L'}, {"tp", required_argument, 0, 't'},
        {"config", required_argument, 0, 'C'}, {"jobs", required_argument, 0, 'j'},
        {"engine", required_argument, 0, 'E'}, {"device", required_argument, 0, 'D'},
        {"skip", required_argument, 0, 'S'}, {"selector", required_argument, 0, 's'},
        {0, 0, 0, 0}};
    cli_common co = CLI_COMMON_INIT;
    ws_engine engine = WS_ENGINE_SGLANG;
    ws_sglang_path path_kind = WS_SGLANG_CUDA;
    const char *skip[64], *selector = NULL;
    size_t nskip = 0;
    long rank_offset = 0, timeout = 600;
    bool offset_given = false, json_out = false, canon_given = false;
    ws_canon canon = WS_CANON_BF16;
    unsigned algo = WS_ALGO_SHA256;
    int ch;
    while ((ch = cli_getopt("push", argc, argv, "h", opts)) != -1) {
        switch (ch) {
        case 'r':
            if (!cli_parse_int(optarg, 0, 1L << 20, &rank_offset))
                return cli_usage("push", "--rank-offset needs 0..%ld", 1L << 20);
            offset_given = true;
            break;
        case 'T':
            if (!cli_parse_int(optarg, 1, 86400, &timeout))
                return cli_usage("push", "--timeout needs 1..86400 seconds");
            break;
        case 'J': json_out = cli_json_errors = true; break;
        case 'c':
            if (ws_canon_from_name(optarg, &canon) != WS_OK)
                return cli_usage("push", "--canonical must be bf16 or native, not '%s'", optarg);
            canon_given = true;
            break;
        case 'a':
            if (strcmp(optarg, "sha256") == 0) algo = WS_ALGO_SHA256;
            else if (strcmp(optarg, "fast") == 0) algo = WS_ALGO_FAST;
            else return cli_usage("push", "--algo must be sha256 or fast, not '%s'", optarg);
            break;
        case 'h': fputs(usage, stdout); return EXIT_MATCH;
        case 'E':
            if (ws_engine_from_name(optarg, &engine) != WS_OK)
                return cli_usage("push", "--engine must be sglang or vllm, not '%s'", optarg);
            break;
        case 'D':
            if (strcmp(optarg, "cuda") == 0) path_kind = WS_SGLANG_CUDA;
            else if (strcmp(optarg, "cpu") == 0) path_kind = WS_SGLANG_CPU;
            else return cli_usage("push", "--device must be cuda or cpu, not '%s'", optarg);
            break;
        case 'S':
            if (nskip == 64) return cli_usage("push", "at most 64 --skip");
            skip[nskip++] = optarg;
            break;
        case 's': selector = optarg; break;
        default:
            if (!cli_common_or_usage(ch, optarg, &co, usage)) return EXIT_TROUBLE;
        }
    }
    if (argc - optind < 2)
        return cli_usage("push", "an engine URL and a manifest, not %d arguments", argc - optind);
    size_t n = (size_t)(argc - optind - 1);
    const char *path = argv[argc - 1];
    /* checksum mode: an expectation file, or the checkpoint and its layout (one step) */
    ws_expect *expect = NULL;
    bool trouble = false;
    if (co.lo.family) {
        if (cli_expect_build(path, &co.lo, engine, path_kind, (int)co.threads, co.progress,
                             &expect) != EXIT_MATCH)
            return EXIT_TROUBLE;
    } else {
        expect = load_expect(path, &trouble);
        if (trouble) return EXIT_TROUBLE;
    }
    target *ts = calloc(n, sizeof *ts);
    if (!ts) {
        ws_expect_free(expect);
        return cli_failf("out of memory");
    }
    int rc = EXIT_MATCH;
    const char *route = expect ? ws_expect_route(expect) : "/weights_checker";
    for (size_t i = 0; i < n && rc == EXIT_MATCH; i++)
        if (!(ts[i].url = endpoint(argv[optind + (int)i], route)))
            rc = cli_failf("'%s' is not an http:// or https:// URL", argv[optind + (int)i]);
    char *body = NULL;
    if (rc == EXIT_MATCH && expect) {
        ws_error err;
        char *b = NULL;
        if (ws_expect_request(expect, skip, nskip, selector, &b, &err) != WS_OK) rc = cli_fail(&err);
        else body = strdup(b);
        ws_free(b);
    } else if (rc == EXIT_MATCH) {
        body = request_body(path, rank_offset, offset_given, canon, canon_given, algo);
    }
    if (!body) rc = EXIT_TROUBLE;
    if (rc != EXIT_MATCH) {
        for (size_t i = 0; i < n; i++) free(ts[i].url);
        free(ts);
        free(body);
        ws_expect_free(expect);
        return rc;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "Expect:"); /* no 100-continue round trip */
    for (size_t i = 0; multi && i < n; i++) {
        target *t = &ts[i];
        if (!(t->h = curl_easy_init())) continue;
        curl_easy_setopt(t->h, CURLOPT_URL, t->url);
#if LIBCURL_VERSION_NUM >= 0x075500
        curl_easy_setopt(t->h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
        curl_easy_setopt(t->h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
        curl_easy_setopt(t->h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(t->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
        curl_easy_setopt(t->h, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(t->h, CURLOPT_TIMEOUT, timeout);
        curl_easy_setopt(t->h, CURLOPT_CONNECTTIMEOUT, timeout < 10 ? timeout : 10L);
        curl_easy_setopt(t->h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(t->h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(t->h, CURLOPT_WRITEDATA, t);
        curl_easy_setopt(t->h, CURLOPT_ERRORBUFFER, t->errbuf);
        curl_easy_setopt(t->h, CURLOPT_PRIVATE, t);
        curl_multi_add_handle(multi, t->h);
    }
    int running = 1;
    while (multi && running) { /* every engine at once */
        if (curl_multi_perform(multi, &running) != CURLM_OK) break;
        if (running) curl_multi_poll(multi, NULL, 0, 1000, NULL);
    }
    CURLMsg *msg;
    int left;
    while (multi && (msg = curl_multi_info_read(multi, &left)))
        if (msg->msg == CURLMSG_DONE) {
            target *t = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
            if (t) t->code = msg->data.result;
        }
    json_t *all = json_out ? json_array() : NULL;
    /* each engine's trouble is one line on stderr; with --json, one document on stdout below */
    cli_json_errors = false;
    for (size_t i = 0; i < n; i++) {
        target *t = &ts[i];
        if (!t->h) {
            t->code = CURLE_OUT_OF_MEMORY;
        } else {
            curl_easy_getinfo(t->h, CURLINFO_RESPONSE_CODE, &t->status);
        }
        json_error_t je;
        json_t *ans = t->code == CURLE_OK && t->buf ? json_loadb(t->buf, t->len, 0, &je) : NULL;
        int r = expect ? judge_expect(t, expect, skip, nskip, json_out) : judge(t, json_out);
        if (r > rc) rc = r; /* trouble outranks a mismatch, which outranks a match */
        if (all)
            json_array_append_new(
                all, json_pack("{s:s,s:I,s:O,s:s?}", "url", t->url, "http_status",
                               (json_int_t)t->status, "response", ans ? ans : json_null(),
                               "error", t->code != CURLE_OK ? (t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->code)) : NULL));
        json_decref(ans);
        if (t->h) {
            if (multi) curl_multi_remove_handle(multi, t->h);
            curl_easy_cleanup(t->h);
        }
        free(t->buf);
        free(t->url);
    }
    if (all && rc == EXIT_TROUBLE && first_trouble.code) {
        /* trouble is a weightsum-error document, as in every command; the answers that did
         * come are kept beside it (docs/json.md) */
        json_t *doc = json_pack("{s:s,s:i,s:b,s:i,s:{s:s,s:s},s:o}", "format", "weightsum-error",
                                "version", 1, "ok", 0, "exit", EXIT_TROUBLE, "error", "code",
                                first_trouble.code, "message", first_trouble.message,
                                "answers", all);
        all = doc;
    }
    if (all) {
        char *text = json_dumps(all, JSON_INDENT(1));
        if (text) puts(text);
        free(text);
        json_decref(all);
    }
    curl_slist_free_all(hdr);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
    free(ts);
    free(body);
    ws_expect_free(expect);
    return rc;
}
#endif
