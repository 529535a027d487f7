/*
 * The client half of compare_checksum (docs/http.md), shared by `weightsum push` and Python:
 * the request body built from what a trainer holds — a weightsum manifest (full HF tensors), a
 * JSON list of per-rank {engine name: digest} dicts, or a saved "checksum" answer holding
 * "ranks". The transport (libcurl) stays in the CLI.
 */
#include "protocol.h"

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
