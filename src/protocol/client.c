/*
 * The client half of compare_checksum (docs/http.md), shared by `weightsum push` and Python:
 * the request body built from what a trainer holds — a weightsum manifest (full HF tensors), a
 * JSON list of per-rank {engine name: digest} dicts, or a saved "checksum" answer holding
 * "ranks" — and the judging of the engine's answer. The transport (libcurl) stays in the CLI.
 */
#include "protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The checksums of a per-rank list (a JSON array of objects, or a saved checksum answer
 * {"ranks": [{"checksums": {...}}, ...]}); NULL when text is neither. */
static json_t *per_rank_list(const char *text, size_t len, const char *path, bool *trouble,
                             ws_error *err) {
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')) i++;
    if (i == len || (text[i] != '[' && text[i] != '{')) return NULL;
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return NULL; /* the manifest parser will say what is wrong */
    json_t *list = NULL;
    if (json_is_array(root)) {
        list = json_incref(root);
    } else if (json_is_array(json_object_get(root, "ranks"))) {
        json_t *ranks = json_object_get(root, "ranks"), *r;
        size_t k;
        list = json_array();
        json_array_foreach(ranks, k, r) {
            json_t *c = json_object_get(r, "checksums");
            if (!json_is_object(c)) {
                wsi_fail(err, WS_ERR_JSON, path, NULL, -1, "ranks[%zu] has no \"checksums\" object", k);
                *trouble = true;
                break;
            }
            json_array_append(list, c);
        }
    }
    json_decref(root);
    if (*trouble) {
        json_decref(list);
        return NULL;
    }
    return list;
}

ws_err ws_compare_request(const char *text, size_t len, const char *label, ws_canon canon,
                         int canon_given, unsigned algo, long rank_offset, int offset_given,
                         char **body, ws_error *err) {
    if (!body) return wsi_fail(err, WS_ERR_ARG, label, NULL, -1, "NULL argument");
    *body = NULL;
    if (!text && len) return wsi_fail(err, WS_ERR_ARG, label, NULL, -1, "NULL argument");
    if (!text) text = "";
    const char *path = label ? label : "";
    bool trouble = false;
    ws_err rc = WS_OK;
    json_t *req = json_object(), *list = per_rank_list(text, len, path, &trouble, err);
    json_object_set_new(req, "action", json_string("compare_checksum"));
    if (trouble) {
        rc = WS_ERR_JSON;
        goto done;
    }
    if (list) {
        json_object_set_new(req, "checksums", list);
        json_object_set_new(req, "rank_offset", json_integer(rank_offset));
        json_object_set_new(req, "canonical", json_string(ws_canon_name(canon)));
    } else {
        ws_manifest *m = NULL;
        if ((rc = ws_manifest_parse(text, len, path, &m, err)) != WS_OK) goto done;
        if (!ws_manifest_declares_canon(m)) {
            if ((rc = ws_manifest_set_canon(m, canon, err)) != WS_OK) {
                ws_manifest_free(m);
                goto done;
            }
        } else if (canon_given && canon != ws_manifest_canon(m)) {
            rc = wsi_fail(err, WS_ERR_ARG, path, NULL, -1, "manifest was made with --canonical %s",
                          ws_canon_name(ws_manifest_canon(m)));
            ws_manifest_free(m);
            goto done;
        }
        json_t *sums = json_object();
        bool fast_used = false;
        for (size_t i = 0; i < ws_manifest_count(m); i++) {
            const ws_manifest_entry *e = ws_manifest_entry_at(m, i);
            char hex[65];
            bool fast = (e->digest.algos & WS_ALGO_FAST) &&
                        (algo == WS_ALGO_FAST || !(e->digest.algos & WS_ALGO_SHA256));
            if (!fast && !(e->digest.algos & WS_ALGO_SHA256)) continue;
            if (fast) ws_fast_hex(&e->digest.fast, hex);
            else ws_sha256_hex(e->digest.sha256, hex);
            fast_used |= fast;
            json_object_set_new(sums, e->name, json_string(hex));
        }
        json_object_set_new(req, "checksums", sums);
        json_object_set_new(req, "canonical", json_string(ws_canon_name(ws_manifest_canon(m))));
        if (offset_given) json_object_set_new(req, "rank_offset", json_integer(rank_offset));
        if (fast_used && ws_manifest_key_id(m))
            json_object_set_new(req, "key_id", json_string(ws_manifest_key_id(m)));
        ws_manifest_free(m);
    }
    *body = json_dumps(req, JSON_COMPACT);
    if (!*body) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
done:
    json_decref(req);
    return rc;
}

static const char *const lists[] = {"mismatched", "missing", "unexpected", "replica_mismatch"};
static const ws_status list_status[] = {WS_MISMATCH, WS_MISSING, WS_UNEXPECTED,
                                        WS_REPLICA_MISMATCH};

/* The status an item names; one this version does not know: its list's. */
static ws_status status_of(json_t *it, size_t list) {
    const char *name = json_string_value(json_object_get(it, "status"));
    for (int s = 1; name && s < WS_STATUS__COUNT; s++)
        if (strcmp(name, ws_status_name((ws_status)s)) == 0) return (ws_status)s;
    return list_status[list];
}

/* One item of a check list as a finding: tensor, local, rank, rows, detail; its ranks as
 * holders (the engine tensor on each). */
static ws_err add_item(ws_report *r, json_t *it, size_t list, ws_error *err) {
    json_t *rank = json_object_get(it, "rank"), *ranks = json_object_get(it, "ranks");
    json_t *rows = json_object_get(it, "rows");
    const char *tensor = json_string_value(json_object_get(it, "tensor"));
    const char *local = json_string_value(json_object_get(it, "local"));
    const char *detail = json_string_value(json_object_get(it, "detail"));
    ws_finding f = {.status = status_of(it, list), .tensor = tensor ? tensor : "", .local = local,
                    .rank = -1, .row0 = -1, .row1 = -1, .detail = detail ? detail : ""};
    if (json_is_integer(rank) && json_integer_value(rank) >= 0 && json_integer_value(rank) <= INT32_MAX)
        f.rank = (int)json_integer_value(rank);
    if (json_array_size(rows) == 2 && json_is_integer(json_array_get(rows, 0)) &&
        json_is_integer(json_array_get(rows, 1))) {
        f.row0 = json_integer_value(json_array_get(rows, 0));
        f.row1 = json_integer_value(json_array_get(rows, 1));
    }
    size_t n = json_array_size(ranks), k = 0;
    ws_holder *h = n ? calloc(n, sizeof *h) : NULL;
    if (n && !h) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(ranks, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            continue;
        h[k++] = (ws_holder){.local = local, .rank = (int)json_integer_value(v), .row0 = f.row0,
                             .row1 = f.row1};
    }
    f.holders = h;
    f.nholders = k;
    ws_err rc = ws_report_add(r, &f);
    free(h);
    return rc == WS_OK ? WS_OK : wsi_fail(err, rc, NULL, NULL, -1, "out of memory");
}

ws_err ws_compare_judge(const char *answer, size_t len, int http_status, ws_report *r,
                        ws_error *err) {
    if (!r || (!answer && len)) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    json_error_t je;
    json_t *ans = answer ? json_loadb(answer, len, 0, &je) : NULL;
    json_t *ok = json_object_get(ans, "success");
    const char *msg = json_string_value(json_object_get(ans, "message"));
    ws_err rc = WS_OK;
    if (!json_is_object(ans) || !json_is_boolean(ok)) {
        char snip[121];
        size_t i = 0;
        for (; answer && i < len && i < 120; i++)
            snip[i] = answer[i] >= 32 && answer[i] < 127 ? answer[i] : ' ';
        snip[i] = 0;
        rc = wsi_fail(err, WS_ERR_JSON, NULL, NULL, -1,
                      "HTTP %d: not a weights_checker answer: %s", http_status, snip);
        json_decref(ans);
        return rc;
    }
    bool checked = true;
    for (size_t k = 0; k < 4; k++) checked &= json_is_array(json_object_get(ans, lists[k]));
    json_t *m = json_object_get(ans, "matched");
    if (json_is_true(ok) && http_status >= 200 && http_status < 300) {
        /* a match: nothing to name */
    } else if (json_is_true(ok)) {
        rc = wsi_fail(err, WS_ERR_REMOTE, NULL, NULL, -1, "HTTP %d with success true: %s",
                      http_status, msg ? msg : "");
    } else if (!checked) { /* the engine did not run the check: a request or engine problem */
        rc = wsi_fail(err, WS_ERR_REMOTE, NULL, NULL, -1, "HTTP %d: %s", http_status,
                      msg ? msg : "(no message)");
    } else {
        for (size_t k = 0; k < 4 && rc == WS_OK; k++) {
            json_t *arr = json_object_get(ans, lists[k]), *it;
            size_t i;
            json_array_foreach(arr, i, it) {
                if (rc == WS_OK) rc = add_item(r, it, k, err);
            }
        }
        if (rc == WS_OK && ws_report_ok(r)) { /* success false, yet not one finding: no pass */
            json_t *it = json_pack("{s:s,s:s}", "status", "mismatch", "detail",
                                   msg ? msg : "the engine reports a failed check");
            rc = it ? add_item(r, it, 0, err) : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
            json_decref(it);
        }
    }
    if (rc == WS_OK && json_is_integer(m) && json_integer_value(m) > 0)
        ws_report_count_match(r, (uint64_t)json_integer_value(m));
    json_decref(ans);
    return rc;
}
