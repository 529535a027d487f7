/*
 * The weights_checker protocol, transport-free (docs/http.md): one JSON request in, one JSON
 * response and an HTTP status out. An engine mounts ws_checker_handle behind its own server;
 * `weightsum serve` puts it behind libmicrohttpd. The request is validated in full before the
 * dump is touched, so a malformed one costs nothing and is always a 400 with a message.
 */
#include "protocol.h"

#include "dump_check.h"
#include "model_config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RANK_OFFSET (1L << 20)

/* ---- lifecycle ---------------------------------------------------------------------------- */

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Per HF tensor, the ranks that hold a piece of it (a tied tensor: those of its target), so
 * that a finding about a whole tensor can name them. */
static ws_err index_ranks(ws_checker *c, ws_error *err) {
    const ws_layout *l = c->l;
    size_t nh = ws_layout_hf_count(l), np = ws_layout_piece_count(l);
    c->hf_ranks = calloc(nh + 1, sizeof *c->hf_ranks);
    c->hf_nranks = calloc(nh + 1, sizeof *c->hf_nranks);
    size_t *count = calloc(nh + 1, sizeof *count);
    ws_err rc = c->hf_ranks && c->hf_nranks && count
                    ? WS_OK
                    : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; rc == WS_OK && i < np; i++) count[ws_layout_piece(l, i)->hf]++;
    for (size_t h = 0; rc == WS_OK && h < nh; h++)
        if (count[h] && !(c->hf_ranks[h] = malloc(count[h] * sizeof(int))))
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; rc == WS_OK && i < np; i++) {
        const ws_piece *p = ws_layout_piece(l, i);
        c->hf_ranks[p->hf][c->hf_nranks[p->hf]++] = ws_layout_local(l, p->local)->rank;
    }
    for (size_t h = 0; rc == WS_OK && h < nh; h++) {
        size_t n = c->hf_nranks[h], u = 0;
        if (n) qsort(c->hf_ranks[h], n, sizeof(int), cmp_int);
        for (size_t i = 0; i < n; i++)
            if (u == 0 || c->hf_ranks[h][u - 1] != c->hf_ranks[h][i]) c->hf_ranks[h][u++] = c->hf_ranks[h][i];
        c->hf_nranks[h] = u;
    }
    free(count);
    return rc;
}

void ws_checker_free(ws_checker *c) {
    if (!c) return;
    for (size_t h = 0; c->hf_ranks && h < ws_layout_hf_count(c->l); h++) free(c->hf_ranks[h]);
    free(c->hf_ranks);
    free(c->hf_nranks);
    ws_layout_free(c->l);
    ws_fastkey_free(c->key);
    free(c->dir);
    free(c);
}

/* The checker for dir: with a dump on disk its layout as verify finds it (tp, ep, pp 0: from
 * weightsum-layout.json; opts' engine options), else built from family, config and par (when
 * given; else tp alone). */
static ws_err checker_create(const char *dir, const char *family, int tp, int ep, int pp,
                             const ws_parallel *par, const char *config, unsigned flags,
                             ws_canon canon, const char *key_seed, int threads,
                             ws_checker **out, ws_error *err) {
    if (!out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    if (!dir || !*dir) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "no dump directory");
    if (tp < 0 || tp > 4096) return wsi_fail(err, WS_ERR_ARG, dir, NULL, -1, "tp must be 0..4096");
    if (canon != WS_CANON_BF16 && canon != WS_CANON_NATIVE)
        return wsi_fail(err, WS_ERR_ARG, dir, NULL, -1, "invalid canonical policy");
    ws_checker *c = calloc(1, sizeof *c);
    if (!c) return wsi_fail(err, WS_ERR_NOMEM, dir, NULL, -1, "out of memory");
    c->canon = canon;
    c->threads = threads;
    c->dir = wsi_strdup(dir);
    ws_err rc = c->dir ? WS_OK : wsi_fail(err, WS_ERR_NOMEM, dir, NULL, -1, "out of memory");
    /* A dump already there: its layout as `weightsum verify` finds it, flags checked against
     * weightsum-layout.json and the layout against the dump (a mistake is said at start-up,
     * not as findings in every answer). Not there yet: the flags must say it all. */
    ws_dump *d = NULL;
    ws_error derr;
    if (rc == WS_OK && ws_dump_open(dir, &d, &derr) == WS_OK) {
        rc = ws_dump_layout_open_options(d, dir, family, tp, ep, pp, par, config,
                                         flags & WS_LAYOUT_FORCE, &c->l, err);
    } else if (rc == WS_OK && (!family || tp == 0)) {
        if (err) *err = derr;
        rc = derr.code;
    } else if (rc == WS_OK) {
        char path[4096];
        if (config) snprintf(path, sizeof path, "%s", config);
        else snprintf(path, sizeof path, "%s/config.json", dir);
        ws_model_config cfg;
        rc = wsi_model_config_load_into(path, &cfg, err);
        if (rc == WS_OK)
            rc = par ? ws_layout_create_parallel(family, &cfg, par, &c->l, err)
                     : ws_layout_create(family, &cfg, tp, &c->l, err);
    }
    ws_dump_free(d);
    const char *seed = key_seed ? key_seed : WS_FAST_DEFAULT_SEED;
    if (rc == WS_OK) rc = ws_fastkey_create(seed, strlen(seed), &c->key, err);
    if (rc == WS_OK) rc = index_ranks(c, err);
    if (rc != WS_OK) {
        ws_checker_free(c);
        return rc;
    }
    *out = c;
    return WS_OK;
}

ws_err ws_checker_create(const char *dir, const char *family, int tp, const char *config,
                         ws_canon canon, const char *key_seed, int threads, ws_checker **out,
                         ws_error *err) {
    return ws_checker_create_flags(dir, family, tp, config, 0, canon, key_seed, threads, out, err);
}

ws_err ws_checker_create_flags(const char *dir, const char *family, int tp, const char *config,
                               unsigned flags, ws_canon canon, const char *key_seed, int threads,
                               ws_checker **out, ws_error *err) {
    return checker_create(dir, family, tp, 0, 0, NULL, config, flags, canon, key_seed, threads,
                          out, err);
}

ws_err ws_checker_create_parallel(const char *dir, const char *family, const ws_parallel *par,
                                  const char *config, unsigned flags, ws_canon canon,
                                  const char *key_seed, int threads, ws_checker **out,
                                  ws_error *err) {
    if (!par) /* every size from weightsum-layout.json */
        return checker_create(dir, family, 0, 0, 0, NULL, config, flags, canon, key_seed, threads,
                              out, err);
    /* With a dump on disk every size of par is the caller's word, 1 included (a tp=1 said
     * against a TP=2 dump is a mistake to name, never replaced by weightsum-layout.json's tp):
     * only the sizes flagged WS_LAYOUT_DUMP_* come from the dump. */
    long tp = ws_parallel_get(par, WS_PAR_TP), ep = ws_parallel_get(par, WS_PAR_EP),
         pp = ws_parallel_get(par, WS_PAR_PP);
    if (out) *out = NULL;
    if (tp < 1 || tp > 4096)
        return wsi_fail(err, WS_ERR_ARG, dir, NULL, -1, "tp must be 1..4096");
    if (dir && *dir && ws_dump_detect(dir))
        return checker_create(dir, family, flags & WS_LAYOUT_DUMP_TP ? 0 : (int)tp,
                              flags & WS_LAYOUT_DUMP_EP ? 0 : (int)ep,
                              flags & WS_LAYOUT_DUMP_PP ? 0 : (int)pp, par, config, flags,
                              canon, key_seed, threads, out, err);
    return checker_create(dir, family, (int)tp, 0, 0, par, config, flags, canon, key_seed,
                          threads, out, err);
}

const char *ws_checker_key_id(const ws_checker *c) { return c ? ws_fastkey_id(c->key) : NULL; }

/* ---- responses ---------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when s does not start one. */
static size_t utf8_len(const unsigned char *s) {
    if (s[0] < 0x80) return 1;
    size_t n = s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC2 && s[0] < 0xE0 ? 2 : 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (n == 3 && ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] >= 0xA0))) return 0;
    if (n == 4 && ((s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] >= 0x90))) return 0;
    return n;
}

/* A JSON string of s, any byte that is not UTF-8 (a name cut mid-character by a bounded
 * format, say) replaced by '?': a response is always valid JSON. */
static json_t *jstr(const char *s) {
    json_t *j = json_string(s);
    if (j || !s) return j;
    char *t = wsi_strdup(s);
    for (unsigned char *p = (unsigned char *)t; p && *p;) {
        size_t n = utf8_len(p);
        if (n) p += n;
        else *p++ = '?';
    }
    j = t ? json_string(t) : NULL;
    free(t);
    return j;
}

typedef struct reply {
    json_t *root;
    int status;
} reply;

static void reply_start(reply *rp, int status, bool success, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply_start(reply *rp, int status, bool success, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_decref(rp->root);
    rp->root = json_object();
    json_object_set_new(rp->root, "success", json_boolean(success));
    json_object_set_new(rp->root, "message", jstr(msg));
    rp->status = status;
}

/* A request the handler will not run: 400 (or 413) with a message, no check lists. */
#define BAD(rp, ...) reply_start((rp), 400, false, __VA_ARGS__)

const char *wsp_list_of(ws_status s) {
    switch (s) {
    case WS_MISSING: return "missing";
    case WS_UNEXPECTED: return "unexpected";
    case WS_REPLICA_MISMATCH: return "replica_mismatch";
    default: return "mismatched"; /* mismatch, shape, dtype, padding, coverage, not comparable */
    }
}

/* One finding as a list item: tensor, status, rank (or null), ranks, local, rows, detail.
 * A verdict on a whole canonical tensor (its digest differs) names every rank that holds a
 * piece or a copy of it; a finding about one rank's tensor (per-rank requests, a replica, a
 * local shape, padding) names that rank. */
static json_t *finding_json(const ws_checker *c, const ws_finding *f, bool per_rank) {
    json_t *o = json_object(), *ranks = json_array();
    bool whole = !per_rank && (f->rank < 0 || f->status == WS_MISMATCH ||
                               f->status == WS_DTYPE_DIFFERS || f->status == WS_NOT_COMPARABLE);
    long h = whole && f->tensor && f->tensor[0] ? ws_layout_find_hf(c->l, f->tensor) : -1;
    const ws_hf_desc *hf = h >= 0 ? ws_layout_hf(c->l, (size_t)h) : NULL;
    if (hf && hf->tied_to) h = ws_layout_find_hf(c->l, hf->tied_to);
    int rank = f->rank;
    if (h >= 0) {
        for (size_t i = 0; i < c->hf_nranks[h]; i++)
            json_array_append_new(ranks, json_integer(c->hf_ranks[h][i]));
        rank = c->hf_nranks[h] == 1 ? c->hf_ranks[h][0] : -1;
    } else if (rank >= 0) {
        json_array_append_new(ranks, json_integer(rank));
    }
    json_object_set_new(o, "tensor", f->tensor && f->tensor[0] ? jstr(f->tensor) : json_null());
    json_object_set_new(o, "status", json_string(ws_status_name(f->status)));
    json_object_set_new(o, "rank", rank >= 0 ? json_integer(rank) : json_null());
    json_object_set_new(o, "ranks", ranks);
    json_object_set_new(o, "local", f->local ? jstr(f->local) : json_null());
    if (f->row0 >= 0)
        json_object_set_new(o, "rows", json_pack("[II]", (json_int_t)f->row0, (json_int_t)f->row1));
    json_object_set_new(o, "detail", jstr(f->detail ? f->detail : ""));
    return o;
}

/* " on rank 1" / " on ranks 0,1,2,3" for an item's ranks (a few, then "..."). */
static size_t ranks_str(json_t *item, char *buf, size_t n) {
    json_t *ranks = json_object_get(item, "ranks");
    size_t k = json_array_size(ranks), len = 0;
    buf[0] = 0;
    if (k) len = (size_t)snprintf(buf, n, " on rank%s ", k > 1 ? "s" : "");
    for (size_t i = 0; i < k && i < 8 && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, i ? ",%lld" : "%lld",
                                (long long)json_integer_value(json_array_get(ranks, i)));
    if (k > 8 && len < n) len += (size_t)snprintf(buf + len, n - len, ",...");
    return len;
}

/* The verdict of a check that ran: success iff r holds no finding; the four lists; a message
 * naming the first problems. */
static void reply_report(reply *rp, const ws_checker *c, const ws_report *r, const char *what,
                         bool per_rank) {
    size_t n = ws_report_count(r);
    unsigned long long matched = (unsigned long long)ws_report_matched(r);
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(items, finding_json(c, ws_report_at(r, i), per_rank));
    if (n == 0) {
        reply_start(rp, 200, true, "%s: %llu matched", what, matched);
    } else {
        char msg[1024], rs[128];
        size_t len = (size_t)snprintf(msg, sizeof msg, "%s: %zu problem%s, %llu matched", what, n,
                                      n == 1 ? "" : "s", matched);
        for (size_t i = 0; i < n && i < 3 && len < sizeof msg; i++) {
            json_t *it = json_array_get(items, i);
            const char *t = json_string_value(json_object_get(it, "tensor"));
            ranks_str(it, rs, sizeof rs);
            len += (size_t)snprintf(msg + len, sizeof msg - len, "%s %s: %s%s", i ? ";" : ":",
                                    t ? t : "(dump)",
                                    json_string_value(json_object_get(it, "status")), rs);
        }
        if (n > 3 && len < sizeof msg) snprintf(msg + len, sizeof msg - len, "; ...");
        reply_start(rp, 400, false, "%s", msg);
    }
    static const char *const lists[] = {"mismatched", "missing", "unexpected", "replica_mismatch"};
    for (size_t k = 0; k < 4; k++) json_object_set_new(rp->root, lists[k], json_array());
    json_object_set_new(rp->root, "matched", json_integer((json_int_t)matched));
    json_t *warnings = wsi_report_warnings_json(r); /* what the check could not see */
    if (warnings) json_object_set_new(rp->root, "warnings", warnings);
    for (size_t i = 0; i < n; i++)
        json_array_append(json_object_get(rp->root, wsp_list_of(ws_report_at(r, i)->status)),
                          json_array_get(items, i));
    json_decref(items);
}

static void reply_trouble(reply *rp, const char *what, const ws_error *e) {
    char line[1200];
    ws_error_format(e, line, sizeof line);
    reply_start(rp, 500, false, "%s: %s", what, line);
}

/* ---- requests ----------------------------------------------------------------------------- */

/* Deepest nesting of arrays and objects in text, counted before parsing so that no parser
 * recursion depends on the client; stops counting past limit. */
static int nesting(const char *s, size_t n, int limit) {
    int depth = 0, max = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < n && max <= limit; i++) {
        char ch = s[i];
        if (in_str) {
            if (esc) esc = false;
            else if (ch == '\\') esc = true;
            else if (ch == '"') in_str = false;
        } else if (ch == '"') {
            in_str = true;
        } else if (ch == '[' || ch == '{') {
            if (++depth > max) max = depth;
        } else if (ch == ']' || ch == '}') {
            depth--;
        }
    }
    return max;
}

typedef struct request {
    const char *action;
    ws_canon canon;
    unsigned algos;
    json_t *checksums;
    size_t rank_offset;
} request;

/* Fields every action shares. false: rp holds the 400. */
static bool parse_common(const ws_checker *c, json_t *root, request *q, reply *rp) {
    json_t *a = json_object_get(root, "action");
    if (!a) {
        BAD(rp, "missing \"action\": say \"checksum\" or \"compare_checksum\"");
        return false;
    }
    if (!json_is_string(a)) {
        BAD(rp, "\"action\" must be a string");
        return false;
    }
    q->action = json_string_value(a);
    q->canon = c->canon;
    json_t *cn = json_object_get(root, "canonical");
    if (cn && !json_is_null(cn)) {
        if (!json_is_string(cn) || ws_canon_from_name(json_string_value(cn), &q->canon) != WS_OK) {
            BAD(rp, "\"canonical\" must be \"bf16\" or \"native\"");
            return false;
        }
    }
    json_t *k = json_object_get(root, "key_id");
    if (k && !json_is_null(k)) {
        if (!json_is_string(k)) {
            BAD(rp, "\"key_id\" must be a string");
            return false;
        }
        if (strcmp(json_string_value(k), ws_fastkey_id(c->key)) != 0) {
            BAD(rp, "fast digests made with key %.64s cannot be compared here: this engine's key "
                    "is %s (start it with the same --key)",
                json_string_value(k), ws_fastkey_id(c->key));
            return false;
        }
    }
    return true;
}

/* One {name: hex} object into expectations; false (rp holds the 400) on a bad entry. */
static bool parse_digests(json_t *obj, const char *where, wsp_rank_expect *out, unsigned *algos,
                          reply *rp) {
    out->n = 0;
    out->items = calloc(json_object_size(obj) + 1, sizeof *out->items);
    if (!out->items) {
        reply_start(rp, 500, false, "out of memory");
        return false;
    }
    const char *name;
    json_t *v;
    json_object_foreach(obj, name, v) {
        wsp_expect *e = &out->items[out->n];
        if (!json_is_string(v) || !wsp_parse_hex(json_string_value(v), &e->digest)) {
            BAD(rp, "%s: \"%.200s\": a digest must be a string of 64 (sha256) or 48 (fast) hex "
                    "digits",
                where, name);
            return false;
        }
        e->name = name;
        *algos |= e->digest.algos;
        out->n++;
    }
    return true;
}

/* "checksum" with no "algorithm": SGLang's own answer, hash and shape (protocol_sglang.c). */
static void action_checksum_sglang(const ws_checker *c, json_t *root, reply *rp) {
    json_t *skip = json_object_get(root, "skip_tensor_list"), *sel = json_object_get(root, "selector");
    if (skip && !json_is_null(skip)) {
        bool ok = json_is_array(skip);
        size_t i;
        json_t *s;
        json_array_foreach(skip, i, s) ok = ok && json_is_string(s);
        if (!ok) {
            BAD(rp, "\"skip_tensor_list\" must be a list of strings");
            return;
        }
    } else {
        skip = NULL;
    }
    const char *selector = sel && !json_is_null(sel) ? json_string_value(sel) : "all";
    if (!selector || (strcmp(selector, "all") && strcmp(selector, "target") && strcmp(selector, "draft"))) {
        BAD(rp, "invalid selector %.40s; expected 'target', 'draft', or 'all'",
            selector ? selector : "(not a string)");
        return;
    }
    ws_error e;
    ws_error_clear(&e);
    ws_dump *d = NULL;
    json_t *ans = NULL;
    if (ws_dump_open(c->dir, &d, &e) != WS_OK) reply_trouble(rp, "cannot read the engine dump", &e);
    else if (wsp_sglang_checksum(c, d, skip, strcmp(selector, "draft") == 0, &ans, &e) != WS_OK)
        reply_trouble(rp, "cannot hash the engine's ranks", &e);
    else {
        json_decref(rp->root);
        rp->root = ans;
        rp->status = 200;
    }
    ws_dump_free(d);
}

/* Per rank of the layout (and of the dump), a zeroed digest per tensor its files hold. */
static ws_digest **local_table(const ws_checker *c, const ws_dump *d, int *n) {
    int tp = ws_layout_rank_count(c->l), nd = ws_dump_rank_count(d);
    *n = tp > nd ? tp : nd;
    ws_digest **t = calloc((size_t)*n + 1, sizeof *t);
    for (int k = 0; t && k < *n; k++) {
        t[k] = calloc(ws_ckpt_count(ws_dump_rank(d, k)) + 1, sizeof **t);
        if (!t[k]) {
            for (int j = 0; j < k; j++) free(t[j]);
            free(t);
            return NULL;
        }
    }
    return t;
}

static void action_checksum(const ws_checker *c, json_t *root, const request *q, reply *rp) {
    unsigned algos = WS_ALGO_SHA256;
    /* digests sent with "checksum" would be ignored, and its 200 (the dump agrees with itself)
     * read as "they matched": a false match in the reader's eyes */
    if (json_object_get(root, "checksums")) {
        BAD(rp, "\"checksum\" reports this engine's digests and compares none: to compare "
                "\"checksums\", send \"action\": \"compare_checksum\"");
        return;
    }
    json_t *al0 = json_object_get(root, "algorithm");
    if (!al0 || json_is_null(al0)) {
        action_checksum_sglang(c, root, rp);
        return;
    }
    json_t *al = json_object_get(root, "algorithm");
    if (al && !json_is_null(al)) {
        const char *s = json_string_value(al);
        if (s && strcmp(s, "sha256") == 0) algos = WS_ALGO_SHA256;
        else if (s && strcmp(s, "fast") == 0) algos = WS_ALGO_FAST;
        else if (s && strcmp(s, "both") == 0) algos = WS_ALGO_SHA256 | WS_ALGO_FAST;
        else {
            BAD(rp, "\"algorithm\" must be \"sha256\", \"fast\" or \"both\"");
            return;
        }
    }
    ws_error e;
    ws_error_clear(&e);
    ws_dump *d = NULL;
    ws_manifest *m = NULL;
    ws_report *r = ws_report_new();
    json_t *ranks = NULL;
    ws_digest **local = NULL;
    int nlocal = 0;
    ws_hash_options opt = {.canon = q->canon, .algos = algos, .key = c->key, .threads = c->threads};
    if (!r) reply_start(rp, 500, false, "out of memory");
    else if (ws_dump_open(c->dir, &d, &e) != WS_OK) reply_trouble(rp, "cannot read the engine dump", &e);
    else if (!(local = local_table(c, d, &nlocal))) reply_start(rp, 500, false, "out of memory");
    /* one read of every byte: canonical digests, findings and each rank's tensors' digests */
    else if (wsi_hash_dump_pass(c->l, d, &opt, c->dir, &m, r, algos, local, &e) != WS_OK) reply_trouble(rp, "cannot digest the engine dump", &e);
    else if (wsp_rank_checksums(c, d, q->canon, algos, local, &ranks, &e) != WS_OK) reply_trouble(rp, "cannot digest the engine's ranks", &e);
    else {
        char what[128];
        snprintf(what, sizeof what, "checksum (%s tp=%d, %s)", ws_layout_family(c->l),
                 ws_layout_tp(c->l), ws_canon_name(q->canon));
        ws_report_count_match(r, ws_manifest_count(m));
        reply_report(rp, c, r, what, false);
        json_t *sums = json_object(), *fast = json_object();
        bool both = algos == (WS_ALGO_SHA256 | WS_ALGO_FAST);
        for (size_t i = 0; i < ws_manifest_count(m); i++) {
            const ws_manifest_entry *me = ws_manifest_entry_at(m, i);
            char hex[65];
            if (algos & WS_ALGO_SHA256) ws_sha256_hex(me->digest.sha256, hex);
            else ws_fast_hex(&me->digest.fast, hex);
            json_object_set_new(sums, me->name, json_string(hex));
            if (both) {
                ws_fast_hex(&me->digest.fast, hex);
                json_object_set_new(fast, me->name, json_string(hex));
            }
        }
        json_object_del(rp->root, "matched");
        json_object_set_new(rp->root, "canonical", json_string(ws_canon_name(q->canon)));
        json_object_set_new(rp->root, "algorithm", json_string(both ? "both" : algos == WS_ALGO_FAST ? "fast" : "sha256"));
        if (algos & WS_ALGO_FAST) json_object_set_new(rp->root, "key_id", json_string(ws_fastkey_id(c->key)));
        json_object_set_new(rp->root, "family", json_string(ws_layout_family(c->l)));
        json_object_set_new(rp->root, "tp", json_integer(ws_layout_tp(c->l)));
        json_object_set_new(rp->root, "checksums", sums);
        if (both) json_object_set_new(rp->root, "fast_checksums", fast);
        else json_decref(fast);
        json_object_set_new(rp->root, "ranks", ranks);
        ranks = NULL;
    }
    json_decref(ranks);
    for (int k = 0; local && k < nlocal; k++) free(local[k]);
    free(local);
    ws_report_free(r);
    ws_manifest_free(m);
    ws_dump_free(d);
}

/* compare_checksum with {HF name: hex}: the dump's canonical tensors against the trainer's. */
static void compare_full(const ws_checker *c, const request *q, reply *rp) {
    wsp_rank_expect ex = {0};
    unsigned algos = 0;
    if (json_object_size(q->checksums) == 0) {
        BAD(rp, "\"checksums\" is empty: there is nothing to compare");
        return;
    }
    if (!parse_digests(q->checksums, "checksums", &ex, &algos, rp)) {
        free(ex.items);
        return;
    }
    ws_error e;
    ws_error_clear(&e);
    ws_manifest *m = ws_manifest_new(q->canon, algos, ws_fastkey_id(c->key), "request");
    ws_report *r = ws_report_new();
    ws_dump *d = NULL;
    bool ok = m && r;
    for (size_t i = 0; ok && i < ex.n; i++) {
        ws_manifest_entry me;
        memset(&me, 0, sizeof me);
        me.name = (char *)ex.items[i].name;
        me.ndim = -1;
        me.dtype = me.canonical_dtype = WS_DTYPE__COUNT;
        me.digest = ex.items[i].digest;
        ok = ws_manifest_add(m, &me) == WS_OK; /* names are unique: the parser rejects twins */
    }
    ws_hash_options opt = {.canon = q->canon, .algos = algos, .key = c->key, .threads = c->threads};
    if (!ok) reply_start(rp, 500, false, "out of memory");
    else if (ws_dump_open(c->dir, &d, &e) != WS_OK) reply_trouble(rp, "cannot read the engine dump", &e);
    else if (ws_verify_dump(m, c->l, d, &opt, NULL, r, &e) != WS_OK) reply_trouble(rp, "cannot verify the engine dump", &e);
    else {
        char what[128];
        snprintf(what, sizeof what, "compare_checksum (%zu tensors, %s tp=%d, %s)", ex.n,
                 ws_layout_family(c->l), ws_layout_tp(c->l), ws_canon_name(q->canon));
        reply_report(rp, c, r, what, false);
    }
    ws_dump_free(d);
    ws_report_free(r);
    ws_manifest_free(m);
    free(ex.items);
}

/* compare_checksum with per-rank dicts of engine-named local digests. */
static void compare_ranks(const ws_checker *c, const request *q, reply *rp) {
    size_t n = json_array_size(q->checksums);
    if (n == 0) {
        BAD(rp, "\"checksums\" is an empty list: there is nothing to compare");
        return;
    }
    wsp_rank_expect *ex = calloc(n, sizeof *ex);
    if (!ex) {
        reply_start(rp, 500, false, "out of memory");
        return;
    }
    unsigned algos = 0;
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *o = json_array_get(q->checksums, i);
        char where[64];
        snprintf(where, sizeof where, "checksums[%zu]", i);
        if (!json_is_object(o)) {
            BAD(rp, "%s must be an object {engine tensor name: hex digest}", where);
            ok = false;
        } else {
            ok = parse_digests(o, where, &ex[i], &algos, rp);
        }
    }
    ws_error e;
    ws_error_clear(&e);
    ws_dump *d = NULL;
    ws_report *r = ok ? ws_report_new() : NULL;
    if (!ok) { /* rp says why */
    } else if (!r) reply_start(rp, 500, false, "out of memory");
    else if (ws_dump_open(c->dir, &d, &e) != WS_OK) reply_trouble(rp, "cannot read the engine dump", &e);
    else if (wsp_compare_ranks(c, d, q->canon, ex, n, r, &e) != WS_OK) reply_trouble(rp, "cannot compare the engine's ranks", &e);
    else {
        char what[160];
        snprintf(what, sizeof what, "compare_checksum (per rank, %zu dicts for rank 0..%d, "
                 "rank_offset %zu, %s tp=%d, %s)", n, ws_layout_rank_count(c->l) - 1, q->rank_offset,
                 ws_layout_family(c->l), ws_layout_tp(c->l), ws_canon_name(q->canon));
        reply_report(rp, c, r, what, true);
    }
    ws_dump_free(d);
    ws_report_free(r);
    for (size_t i = 0; i < n; i++) free(ex[i].items);
    free(ex);
}

static void action_compare(const ws_checker *c, json_t *root, request *q, reply *rp) {
    q->checksums = json_object_get(root, "checksums");
    if (!q->checksums) {
        BAD(rp, "compare_checksum needs \"checksums\": {HF name: hex} or a list of per-rank "
                "{engine name: hex}");
        return;
    }
    json_t *off = json_object_get(root, "rank_offset");
    if (off && !json_is_null(off)) {
        if (!json_is_integer(off) || json_integer_value(off) < 0 ||
            json_integer_value(off) > MAX_RANK_OFFSET) {
            BAD(rp, "\"rank_offset\" must be an integer from 0 to %ld", MAX_RANK_OFFSET);
            return;
        }
        q->rank_offset = (size_t)json_integer_value(off);
    }
    if (json_is_object(q->checksums)) compare_full(c, q, rp);
    else if (json_is_array(q->checksums)) compare_ranks(c, q, rp);
    else BAD(rp, "\"checksums\" must be an object {HF name: hex} or a list of per-rank objects");
}

ws_err ws_checker_handle(ws_checker *c, const char *body, size_t len, char **response_json,
                         int *http_status) {
    reply rp = {NULL, 500};
    json_t *root = NULL;
    if (response_json) *response_json = NULL;
    if (http_status) *http_status = 500;
    if (!response_json || !http_status) return WS_ERR_ARG;
    if (!c) reply_start(&rp, 500, false, "no checker");
    else if (!body && len) BAD(&rp, "no request body");
    else if (len > WS_CHECKER_MAX_BODY)
        reply_start(&rp, 413, false, "request body of %zu bytes is over the limit of %u", len,
                    WS_CHECKER_MAX_BODY);
    else if (nesting(body, len, WS_CHECKER_MAX_DEPTH) > WS_CHECKER_MAX_DEPTH)
        BAD(&rp, "request nested deeper than %d levels", WS_CHECKER_MAX_DEPTH);
    else {
        json_error_t je;
        root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
        request q = {0};
        if (!root)
            BAD(&rp, "request is not valid JSON (line %d, column %d): %s", je.line, je.column, je.text);
        else if (!json_is_object(root)) BAD(&rp, "request must be a JSON object");
        else if (!parse_common(c, root, &q, &rp)) { /* rp says why */
        } else if (strcmp(q.action, "checksum") == 0) action_checksum(c, root, &q, &rp);
        else if (strcmp(q.action, "compare_checksum") == 0) action_compare(c, root, &q, &rp);
        else BAD(&rp, "Unsupported action \"%.64s\": this engine answers \"checksum\" and "
                      "\"compare_checksum\"", q.action);
    }
    json_decref(root);
    char *text = rp.root ? json_dumps(rp.root, JSON_COMPACT) : NULL;
    json_decref(rp.root);
    if (!text) { /* out of memory on the way: still answer, if anything can be allocated */
        text = wsi_strdup("{\"success\": false, \"message\": \"out of memory\"}");
        rp.status = 500;
        if (!text) return WS_ERR_NOMEM;
    }
    *response_json = text;
    *http_status = rp.status;
    return WS_OK;
}
