/*
 * The trainer's half of "checksum": reading, writing and sending an expectation, and judging an
 * engine's answer against it. SGLang's answer (sglang/srt/managers/io_struct.py ChecksumInfo;
 * tokenizer_control_mixin.check_weights) is {"success", "message", "ranks": [{"checksums":
 * {name: 16 hex}, "per_gpu_checksum", "parallelism_info": [{"role", "tp_rank", "tp_size",
 * ...}]}], "per_engine_checksum"}: one entry per rank, in the order the scheduler's fan-out
 * gathered them, parallelism_info one dict in older builds; draft runners' names carry their
 * role as a prefix. Ranks are matched by tp_rank, never by position or per_engine_checksum.
 */
#include "expect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- the expectation object -------------------------------------------------------------- */

ws_err wsp_expect_wrap(json_t *root, ws_expect **out, ws_error *err) {
    ws_expect *e = calloc(1, sizeof *e);
    if (!e) {
        json_decref(root);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    e->root = root;
    ws_engine_from_name(json_string_value(json_object_get(root, "engine")), &e->engine);
    e->tp = (int)json_integer_value(json_object_get(root, "tp"));
    json_t *pp = json_object_get(root, "pp");
    e->pp = json_is_integer(pp) ? (int)json_integer_value(pp) : 1;
    json_t *adp = json_object_get(root, "attn_dp");
    e->attn_dp = json_is_integer(adp) ? (int)json_integer_value(adp) : 1;
    *out = e;
    return WS_OK;
}

void ws_expect_free(ws_expect *e) {
    if (!e) return;
    json_decref(e->root);
    free(e);
}

ws_engine ws_expect_engine(const ws_expect *e) { return e ? e->engine : WS_ENGINE_SGLANG; }
int ws_expect_tp(const ws_expect *e) { return e ? e->tp : 0; }

const char *ws_expect_route(const ws_expect *e) {
    return e && e->engine == WS_ENGINE_VLLM ? "/weight_checker" : "/weights_checker";
}

ws_err ws_expect_to_json(const ws_expect *e, char **out, ws_error *err) {
    if (!e || !out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = json_dumps(e->root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    return *out ? WS_OK : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
}

/* One rank's view: its tp_rank and its {name: value} (expected or answered). */
typedef struct rank_view {
    int tp_rank, tp_size, dp_rank, dp_size, pp_rank, pp_size;
    json_t *sums;          /* borrowed, or owned (vLLM) */
    const char *roles[16]; /* non-target roles: their names carry "role." */
    size_t nroles;
    bool seen;
} rank_view;

typedef struct views {
    rank_view *v;
    size_t n;
    json_t *owned; /* vLLM per-rank objects */
} views;

static void views_free(views *vs) {
    free(vs->v);
    json_decref(vs->owned);
    memset(vs, 0, sizeof *vs);
}

static bool int_field(json_t *o, const char *k, int *out) {
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 24)) return false;
    *out = (int)json_integer_value(v);
    return true;
}

/* SGLang's "ranks" list into views; false (err says why) when an entry cannot be read. */
static ws_err sglang_views(json_t *ranks, const char *label, views *vs, ws_error *err) {
    size_t n = json_array_size(ranks);
    vs->v = calloc(n + 1, sizeof *vs->v);
    if (!vs->v) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(ranks, i), *pi = json_object_get(o, "parallelism_info");
        rank_view *rv = &vs->v[vs->n];
        rv->sums = json_object_get(o, "checksums");
        json_t *target = json_is_object(pi) ? pi : NULL;
        if (json_is_array(pi)) { /* one role dict per runner; all share the GPU rank */
            size_t k;
            json_t *it;
            json_array_foreach(pi, k, it) {
                const char *role = json_string_value(json_object_get(it, "role"));
                if (role && strcmp(role, "target") == 0) target = it;
                else if (role && rv->nroles < 16) rv->roles[rv->nroles++] = role;
            }
            if (!target) target = json_array_get(pi, 0);
        }
        rv->tp_size = -1;
        rv->pp_size = 1;
        if (!json_is_object(o) || !json_is_object(rv->sums) || !json_is_object(target) ||
            !int_field(target, "tp_rank", &rv->tp_rank))
            return wsi_fail(err, WS_ERR_REMOTE, label, NULL, -1,
                            "ranks[%zu] is no checksum entry: it needs \"checksums\" {name: hex} "
                            "and \"parallelism_info\" with an integer tp_rank", i);
        if (!int_field(target, "tp_size", &rv->tp_size)) rv->tp_size = -1;
        if (!int_field(target, "dp_rank", &rv->dp_rank)) rv->dp_rank = 0;
        if (!int_field(target, "dp_size", &rv->dp_size)) rv->dp_size = -1;
        if (!int_field(target, "pp_size", &rv->pp_size)) rv->pp_size = 1;
        if (!int_field(target, "pp_rank", &rv->pp_rank)) rv->pp_rank = 0;
        vs->n++;
    }
    return WS_OK;
}

/* vLLM's {"<tp_rank>:<name>": hex} into one view per rank. */
static ws_err vllm_views(json_t *sums, const char *label, views *vs, ws_error *err) {
    vs->owned = json_object(); /* "rank" -> {name: hex} */
    if (!vs->owned) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach(sums, key, val) {
        const char *colon = strchr(key, ':');
        char rk[16];
        size_t dl = colon ? (size_t)(colon - key) : 0;
        bool digits = dl > 0 && dl < 8;
        for (size_t i = 0; digits && i < dl; i++) digits = key[i] >= '0' && key[i] <= '9';
        if (!digits || !colon[1])
            return wsi_fail(err, WS_ERR_REMOTE, label, key, -1,
                            "a vLLM checksum key must be \"<tp_rank>:<name>\"");
        snprintf(rk, sizeof rk, "%.*s", (int)dl, key);
        json_t *per = json_object_get(vs->owned, rk);
        if (!per) {
            per = json_object();
            if (!per || json_object_set_new(vs->owned, rk, per) != 0)
                return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
        }
        json_object_set(per, colon + 1, val);
    }
    size_t n = json_object_size(vs->owned);
    vs->v = calloc(n + 1, sizeof *vs->v);
    if (!vs->v) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    json_object_foreach(vs->owned, key, val) {
        rank_view *rv = &vs->v[vs->n++];
        rv->tp_rank = atoi(key);
        rv->tp_size = -1; /* vLLM's answer does not say; its key is the global rank */
        rv->pp_size = -1;
        rv->sums = val;
    }
    return WS_OK;
}

static bool check_expect_shape(json_t *root) {
    const char *eng = json_string_value(json_object_get(root, "engine"));
    json_t *tp = json_object_get(root, "tp"), *holds = json_object_get(root, "holds");
    json_t *pp = json_object_get(root, "pp");
    if (pp && (!json_is_integer(pp) || json_integer_value(pp) < 1 || json_integer_value(pp) > 4096))
        return false;
    json_int_t stages = pp ? json_integer_value(pp) : 1;
    json_t *adp = json_object_get(root, "attn_dp");
    if (adp && (!json_is_integer(adp) || json_integer_value(adp) < 1 ||
                json_integer_value(adp) > json_integer_value(tp)))
        return false;
    if (!eng || !json_is_integer(tp) || json_integer_value(tp) < 1 || json_integer_value(tp) > 4096 ||
        !json_is_array(holds) || json_array_size(holds) != (size_t)(json_integer_value(tp) * stages))
        return false;
    if (strcmp(eng, "sglang") == 0) return json_is_array(json_object_get(root, "ranks"));
    if (strcmp(eng, "vllm") == 0) return json_is_object(json_object_get(root, "checksums"));
    return false;
}

ws_err ws_expect_parse(const char *json, size_t len, const char *label, ws_expect **out,
                       ws_error *err) {
    if (!out) return wsi_fail(err, WS_ERR_ARG, label, NULL, -1, "NULL argument");
    *out = NULL;
    if (!json && len) return wsi_fail(err, WS_ERR_ARG, label, NULL, -1, "NULL argument");
    json_error_t je;
    json_t *root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return wsi_fail(err, WS_ERR_JSON, label, NULL, (int64_t)je.position,
                        "not JSON (line %d): %s", je.line, je.text);
    const char *fmt = json_string_value(json_object_get(root, "format"));
    if (!fmt || strcmp(fmt, "weightsum-expect") != 0) {
        json_decref(root);
        return wsi_fail(err, WS_ERR_FORMAT, label, NULL, -1,
                        "not a weightsum expectation (no \"format\": \"weightsum-expect\")");
    }
    if (!check_expect_shape(root)) {
        json_decref(root);
        return wsi_fail(err, WS_ERR_FORMAT, label, NULL, -1,
                        "an expectation needs engine, tp, holds (one per rank) and the engine's "
                        "checksums");
    }
    views vs = {0};
    ws_err rc = WS_OK;
    json_t *ranks = json_object_get(root, "ranks");
    if (ranks) rc = sglang_views(ranks, label, &vs, err);
    else rc = vllm_views(json_object_get(root, "checksums"), label, &vs, err);
    views_free(&vs);
    if (rc != WS_OK) {
        json_decref(root);
        if (err) err->code = WS_ERR_FORMAT;
        return WS_ERR_FORMAT;
    }
    return wsp_expect_wrap(root, out, err);
}

ws_err ws_expect_request(const ws_expect *e, const char *const *skip, size_t nskip,
                         const char *selector, char **body, ws_error *err) {
    if (!e || !body || (!skip && nskip)) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *body = NULL;
    if (selector && strcmp(selector, "target") && strcmp(selector, "draft") && strcmp(selector, "all"))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "selector must be target, draft or all, not '%.40s'", selector);
    json_t *req = json_object(), *list = nskip ? json_array() : NULL;
    json_object_set_new(req, "action", json_string("checksum"));
    for (size_t i = 0; list && i < nskip; i++) json_array_append_new(list, json_string(skip[i]));
    if (list) json_object_set_new(req, "skip_tensor_list", list);
    if (selector && e->engine == WS_ENGINE_SGLANG)
        json_object_set_new(req, "selector", json_string(selector));
    *body = req ? json_dumps(req, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(req);
    return *body ? WS_OK : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
}

/* ---- judging ------------------------------------------------------------------------------ */

static bool skipped(const char *name, const char *const *skip, size_t nskip) {
    for (size_t i = 0; i < nskip; i++)
        if (skip[i] && skip[i][0] && strstr(name, skip[i])) return true;
    return false;
}

/* Does name belong to a draft runner (its role is its prefix)? */
static bool is_draft(const rank_view *rv, const char *name) {
    if (strncmp(name, "draft.", 6) == 0 || strncmp(name, "draft_", 6) == 0) return true;
    for (size_t i = 0; i < rv->nroles; i++) {
        size_t k = strlen(rv->roles[i]);
        if (k && strncmp(name, rv->roles[i], k) == 0 && name[k] == '.') return true;
    }
    return false;
}

/* "it holds q_proj.weight rows 0..32 at local rows 0..32, ...; zero rows 1000..1024" */
static void holds_str(json_t *h, char *buf, size_t n, const char **first, int64_t *r0, int64_t *r1) {
    json_t *segs = json_object_get(h, "segments"), *zero = json_object_get(h, "zero_rows"), *s;
    size_t len = 0, i;
    *first = NULL;
    *r0 = *r1 = -1;
    buf[0] = 0;
    json_array_foreach(segs, i, s) {
        const char *t = json_string_value(json_object_get(s, "tensor"));
        json_t *rows = json_object_get(s, "rows"), *cols = json_object_get(s, "cols");
        json_t *lr = json_object_get(s, "local_rows");
        if (!t) continue;
        if (!*first) {
            *first = t;
            *r0 = json_integer_value(json_array_get(rows, 0));
            *r1 = json_integer_value(json_array_get(rows, 1));
        }
        if (len < n)
            len += (size_t)snprintf(buf + len, n - len, "%s%s rows %lld..%lld", i ? ", " : "it holds ", t,
                                    (long long)json_integer_value(json_array_get(rows, 0)),
                                    (long long)json_integer_value(json_array_get(rows, 1)));
        if (cols && len < n)
            len += (size_t)snprintf(buf + len, n - len, " cols %lld..%lld",
                                    (long long)json_integer_value(json_array_get(cols, 0)),
                                    (long long)json_integer_value(json_array_get(cols, 1)));
        if (len < n)
            len += (size_t)snprintf(buf + len, n - len, " at local rows %lld..%lld",
                                    (long long)json_integer_value(json_array_get(lr, 0)),
                                    (long long)json_integer_value(json_array_get(lr, 1)));
        if (json_is_integer(json_object_get(s, "replica")) && len < n)
            len += (size_t)snprintf(buf + len, n - len, " (replica %lld)",
                                    (long long)json_integer_value(json_object_get(s, "replica")));
    }
    json_array_foreach(zero, i, s)
        if (len < n)
            len += (size_t)snprintf(buf + len, n - len, "%s%lld..%lld", i ? ", " : "; zero rows ",
                                    (long long)json_integer_value(json_array_get(s, 0)),
                                    (long long)json_integer_value(json_array_get(s, 1)));
}

typedef struct judge {
    const ws_expect *e;
    const char *hash;
    ws_report *r;
    const char *const *skip;
    size_t nskip;
} judge;

static ws_err tensor_finding(judge *j, ws_status st, int rank, const char *dp, const char *name,
                             const char *what, ws_error *err) {
    json_t *holds = json_array_get(json_object_get(j->e->root, "holds"), (size_t)rank);
    json_t *h = json_object_get(holds, name);
    char hs[1500], detail[2048];
    const char *first = NULL;
    int64_t r0 = -1, r1 = -1;
    hs[0] = 0;
    if (h) holds_str(h, hs, sizeof hs, &first, &r0, &r1);
    snprintf(detail, sizeof detail, "%s on rank %d%s%s%s", what, rank, dp, hs[0] ? "; " : "", hs);
    return wsi_report_add(j->r, st, first ? first : name, name, rank, r0, r1, detail, err);
}

static ws_err judge_rank(judge *j, int rank, const rank_view *exp, const rank_view *got,
                         ws_error *err) {
    char dp[32] = "";
    if (got->dp_rank) snprintf(dp, sizeof dp, " (dp_rank %d)", got->dp_rank);
    int tp = j->e->tp;
    if (got->tp_size >= 0 && got->tp_size != tp) {
        char d[160];
        snprintf(d, sizeof d, "the engine's rank %d answers tp_size %d%s; the expectation is for tp %d "
                 "(its tensors were not compared)", rank, got->tp_size, dp, tp);
        return wsi_report_add(j->r, WS_MISMATCH, "", NULL, rank, -1, -1, d, err);
    }
    if (got->pp_size >= 0 && got->pp_size != j->e->pp) {
        char d[200];
        snprintf(d, sizeof d, "the engine's rank %d answers pp_size %d%s; the expectation is for "
                 "%d pipeline stage%s (its tensors were not compared)", rank, got->pp_size, dp,
                 j->e->pp, j->e->pp == 1 ? "" : "s");
        return wsi_report_add(j->r, WS_MISMATCH, "", NULL, rank, -1, -1, d, err);
    }
    /* SGLang reports dp_size = attn_dp_size (1 without DP attention): an engine of another
     * attention-DP size shards attention otherwise */
    const char *fam = json_string_value(json_object_get(j->e->root, "layout"));
    if (j->e->engine == WS_ENGINE_SGLANG && fam && strcmp(fam, "sglang") == 0 &&
        got->dp_size >= 1 && got->dp_size != j->e->attn_dp) {
        char d[200];
        snprintf(d, sizeof d, "the engine's rank %d answers dp_size %d%s; the expectation is for "
                 "attn-dp %d (its tensors were not compared)", rank, got->dp_size, dp,
                 j->e->attn_dp);
        return wsi_report_add(j->r, WS_MISMATCH, "", NULL, rank, -1, -1, d, err);
    }
    const char *name;
    json_t *want;
    ws_err rc = WS_OK;
    json_object_foreach(exp->sums, name, want) {
        if (rc != WS_OK) break;
        if (skipped(name, j->skip, j->nskip)) continue;
        json_t *v = json_object_get(got->sums, name);
        const char *w = json_string_value(want), *g = json_string_value(v);
        char what[400];
        if (!v) {
            rc = tensor_finding(j, WS_MISSING, rank, dp, name, "the engine's answer lacks it", err);
        } else if (!g || strlen(g) != strlen(w) || strcasecmp(g, w) != 0) {
            snprintf(what, sizeof what, "%s %s expected, %.80s found", j->hash, w,
                     g ? g : "(not a string)");
            rc = tensor_finding(j, WS_MISMATCH, rank, dp, name, what, err);
        } else {
            ws_report_count_match(j->r, 1);
        }
    }
    json_t *v;
    json_object_foreach(got->sums, name, v) {
        if (rc != WS_OK) break;
        if (json_object_get(exp->sums, name) || skipped(name, j->skip, j->nskip) || is_draft(got, name))
            continue;
        char d[700];
        snprintf(d, sizeof d, "the engine answers a tensor the layout does not put on rank %d%s", rank, dp);
        rc = wsi_report_add(j->r, WS_UNEXPECTED, name, name, rank, -1, -1, d, err);
    }
    return rc;
}

/* A short printable excerpt of an answer that is not one. */
static void excerpt(const char *s, size_t len, char *buf, size_t n) {
    size_t i = 0;
    for (; s && i < len && i + 1 < n; i++) buf[i] = s[i] >= 32 && s[i] < 127 ? s[i] : ' ';
    buf[i] = 0;
}

ws_err ws_expect_judge(const ws_expect *e, const char *answer, size_t len, int http_status,
                       const char *const *skip, size_t nskip, ws_report *r, ws_error *err) {
    if (!e || !r || (!answer && len) || (!skip && nskip))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    char snip[121];
    excerpt(answer, len, snip, sizeof snip);
    json_error_t je;
    json_t *ans = json_loadb(answer ? answer : "", len, 0, &je);
    if (!json_is_object(ans)) {
        json_decref(ans);
        return wsi_fail(err, WS_ERR_REMOTE, NULL, NULL, -1,
                        "HTTP %d: not a weights_checker answer: %s", http_status, snip);
    }
    json_t *ok = json_object_get(ans, "success");
    const char *msg = json_string_value(json_object_get(ans, "message"));
    if (!msg) msg = json_string_value(json_object_get(ans, "detail")); /* FastAPI's errors */
    if (json_is_false(ok) || (http_status && (http_status < 200 || http_status > 299))) {
        ws_err rc = wsi_fail(err, WS_ERR_REMOTE, NULL, NULL, -1, "HTTP %d: the engine says: %.400s",
                             http_status, msg ? msg : snip);
        json_decref(ans);
        return rc;
    }
    views want = {0}, got = {0};
    ws_err rc = WS_OK;
    if (e->engine == WS_ENGINE_SGLANG) {
        json_t *ranks = json_object_get(ans, "ranks");
        if (!json_is_array(ranks))
            rc = wsi_fail(err, WS_ERR_REMOTE, NULL, NULL, -1,
                          "the answer holds no \"ranks\" (%s%s%s): no checksum was computed",
                          msg ? "the engine says: " : "", msg ? msg : "", msg ? "" : "nothing said");
        if (rc == WS_OK) rc = sglang_views(ranks, NULL, &got, err);
        if (rc == WS_OK) rc = sglang_views(json_object_get(e->root, "ranks"), NULL, &want, err);
    } else {
        json_t *sums = json_object_get(ans, "checksums");
        if (!json_is_object(sums))
            rc = wsi_fail(err, WS_ERR_REMOTE, NULL, NULL, -1,
                          "the answer holds no \"checksums\" object: %s", snip);
        if (rc == WS_OK) rc = vllm_views(sums, NULL, &got, err);
        if (rc == WS_OK) rc = vllm_views(json_object_get(e->root, "checksums"), NULL, &want, err);
    }
    judge j = {.e = e, .hash = json_string_value(json_object_get(e->root, "hash")), .r = r,
               .skip = skip, .nskip = nskip};
    if (!j.hash) j.hash = "hash";
    /* global rank = pp_rank * tp + tp_rank (SGLang's PP groups; vLLM's keys are the rank) */
    int nranks = e->tp * e->pp;
    for (int rank = 0; rc == WS_OK && rank < nranks; rank++) {
        const rank_view *w = NULL;
        for (size_t i = 0; i < want.n; i++)
            if (want.v[i].pp_rank * e->tp + want.v[i].tp_rank == rank) w = &want.v[i];
        json_t *empty = json_object();
        rank_view none = {.tp_rank = rank, .sums = empty};
        if (!w) w = &none; /* a rank that holds nothing (cannot happen with today's layouts) */
        bool found = false;
        for (size_t i = 0; rc == WS_OK && i < got.n; i++) {
            if (got.v[i].pp_rank * e->tp + got.v[i].tp_rank != rank) continue;
            found = got.v[i].seen = true;
            rc = judge_rank(&j, rank, w, &got.v[i], err);
        }
        if (rc == WS_OK && !found) {
            char d[300];
            size_t k = e->pp > 1
                           ? (size_t)snprintf(d, sizeof d, "the engine's answer has no rank with tp_rank %d, "
                                              "pp_rank %d (it answers %zu rank%s", rank % e->tp,
                                              rank / e->tp, got.n, got.n == 1 ? "" : "s")
                           : (size_t)snprintf(d, sizeof d, "the engine's answer has no rank with tp_rank %d "
                                              "(it answers %zu rank%s", rank, got.n, got.n == 1 ? "" : "s");
            for (size_t i = 0; i < got.n && i < 8 && k < sizeof d; i++)
                k += (size_t)snprintf(d + k, sizeof d - k, "%s%d", i ? "," : ": tp_rank ", got.v[i].tp_rank);
            if (k < sizeof d) snprintf(d + k, sizeof d - k, "); its %zu tensors were not checked",
                                       json_object_size(w->sums));
            rc = wsi_report_add(r, WS_MISSING, "", NULL, rank, -1, -1, d, err);
        }
        json_decref(empty);
    }
    for (size_t i = 0; rc == WS_OK && i < got.n; i++)
        if (!got.v[i].seen) {
            char d[200];
            if (got.v[i].pp_rank)
                snprintf(d, sizeof d, "the engine answers tp_rank %d, pp_rank %d, but the expectation "
                         "has tp ranks 0..%d and pp ranks 0..%d", got.v[i].tp_rank, got.v[i].pp_rank,
                         e->tp - 1, e->pp - 1);
            else
                snprintf(d, sizeof d, "the engine answers tp_rank %d, but the expectation has ranks 0..%d",
                         got.v[i].tp_rank, e->tp - 1);
            rc = wsi_report_add(r, WS_UNEXPECTED, "", NULL,
                                got.v[i].pp_rank * e->tp + got.v[i].tp_rank, -1, -1, d, err);
        }
    views_free(&want);
    views_free(&got);
    json_decref(ans);
    return rc;
}
