/*
 * Manifests: per HF tensor its shape, dtype, canonical dtype and digests, plus the algorithm,
 * the canonical policy, the key id and the tool version. Two text forms: JSON (complete) and
 * sha256sum-style "HEX  NAME" lines (digests only). Entries are kept sorted by name.
 */
#include "internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ws_manifest {
    ws_canon canon;
    bool canon_declared;
    unsigned algos;
    char *key_id;
    char *source;
    ws_manifest_entry *entries;
    size_t count, cap;
};

ws_manifest *ws_manifest_new(ws_canon c, unsigned algos, const char *key_id,
                             const char *source) {
    ws_manifest *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->canon = c;
    m->canon_declared = true;
    m->algos = algos ? algos : WS_ALGO_SHA256;
    m->key_id = wsi_strdup(key_id);
    m->source = wsi_strdup(source ? source : "");
    if (!m->source || (key_id && !m->key_id)) {
        ws_manifest_free(m);
        return NULL;
    }
    return m;
}

void ws_manifest_free(ws_manifest *m) {
    if (!m) return;
    for (size_t i = 0; i < m->count; i++) free(m->entries[i].name);
    free(m->entries);
    free(m->key_id);
    free(m->source);
    free(m);
}

size_t ws_manifest_count(const ws_manifest *m) { return m ? m->count : 0; }
const ws_manifest_entry *ws_manifest_entry_at(const ws_manifest *m, size_t i) {
    return m && i < m->count ? &m->entries[i] : NULL;
}
ws_canon ws_manifest_canon(const ws_manifest *m) { return m->canon; }
unsigned ws_manifest_algos(const ws_manifest *m) { return m->algos; }
const char *ws_manifest_key_id(const ws_manifest *m) { return m->key_id; }
const char *ws_manifest_source(const ws_manifest *m) { return m->source; }
int ws_manifest_declares_canon(const ws_manifest *m) { return m->canon_declared; }
ws_err ws_manifest_set_canon(ws_manifest *m, ws_canon c, ws_error *err) {
    if (!m) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL manifest");
    if (c != WS_CANON_BF16 && c != WS_CANON_NATIVE)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "invalid canonical policy %d", (int)c);
    m->canon = c;
    return WS_OK;
}

/* Index of the first entry with name >= key. */
static size_t lower_bound(const ws_manifest *m, const char *name) {
    size_t lo = 0, hi = m->count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (strcmp(m->entries[mid].name, name) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

const ws_manifest_entry *ws_manifest_find(const ws_manifest *m, const char *name) {
    if (!m || !name) return NULL;
    size_t i = lower_bound(m, name);
    return i < m->count && strcmp(m->entries[i].name, name) == 0 ? &m->entries[i] : NULL;
}

ws_err ws_manifest_add(ws_manifest *m, const ws_manifest_entry *e) {
    if (!m || !e || !e->name) return WS_ERR_ARG;
    size_t i = lower_bound(m, e->name);
    if (i < m->count && strcmp(m->entries[i].name, e->name) == 0) return WS_ERR_ARG;
    if (m->count == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 64;
        ws_manifest_entry *g = realloc(m->entries, cap * sizeof *g);
        if (!g) return WS_ERR_NOMEM;
        m->entries = g;
        m->cap = cap;
    }
    char *name = wsi_strdup(e->name);
    if (!name) return WS_ERR_NOMEM;
    memmove(&m->entries[i + 1], &m->entries[i], (m->count - i) * sizeof *m->entries);
    m->entries[i] = *e;
    m->entries[i].name = name;
    m->count++;
    return WS_OK;
}

/* ---- JSON ---- */

ws_err ws_manifest_to_json(const ws_manifest *m, char **out, ws_error *err) {
    json_t *root = json_object(), *algos = json_array(), *tensors = json_object();
    json_object_set_new(root, "format", json_string("weightsum-manifest"));
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "tool", json_string("weightsum " WS_VERSION_STRING));
    if (m->algos & WS_ALGO_SHA256) json_array_append_new(algos, json_string("sha256"));
    if (m->algos & WS_ALGO_FAST) json_array_append_new(algos, json_string("fast"));
    json_object_set_new(root, "algorithms", algos);
    json_object_set_new(root, "canonical", json_string(ws_canon_name(m->canon)));
    if (m->key_id) json_object_set_new(root, "key_id", json_string(m->key_id));
    json_object_set_new(root, "source", json_string(m->source));
    for (size_t i = 0; i < m->count; i++) {
        const ws_manifest_entry *e = &m->entries[i];
        json_t *t = json_object();
        if (e->ndim >= 0) {
            json_t *shape = json_array();
            for (int d = 0; d < e->ndim; d++)
                json_array_append_new(shape, json_integer((json_int_t)e->shape[d]));
            json_object_set_new(t, "shape", shape);
        }
        if (ws_dtype_name(e->dtype)) {
            json_object_set_new(t, "dtype", json_string(ws_dtype_name(e->dtype)));
            json_object_set_new(t, "canonical_dtype",
                                json_string(ws_dtype_name(e->canonical_dtype)));
        }
        if (e->digest.algos & WS_ALGO_SHA256) {
            char hex[65];
            ws_sha256_hex(e->digest.sha256, hex);
            json_object_set_new(t, "sha256", json_string(hex));
        }
        if (e->digest.algos & WS_ALGO_FAST) {
            char hex[49];
            ws_fast_hex(&e->digest.fast, hex);
            json_object_set_new(t, "fast", json_string(hex));
        }
        json_object_set_new(t, "nan", json_integer((json_int_t)e->stats.nan));
        json_object_set_new(t, "inf", json_integer((json_int_t)e->stats.inf));
        /* never a JSON form that silently lacks a tensor (jansson refuses non-UTF-8 keys) */
        if (json_object_set_new(tensors, e->name, t) != 0) {
            json_decref(tensors);
            json_decref(root);
            *out = NULL;
            return wsi_fail(err, WS_ERR_FORMAT, m->source, e->name, -1,
                            "tensor name is not valid UTF-8: no JSON form");
        }
    }
    json_object_set_new(root, "tensors", tensors);
    *out = json_dumps(root, JSON_INDENT(1));
    json_decref(root);
    if (!*out) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    size_t n = strlen(*out);
    char *g = realloc(*out, n + 2);
    if (!g) {
        free(*out);
        *out = NULL;
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    g[n] = '\n';
    g[n + 1] = 0;
    *out = g;
    return WS_OK;
}

ws_err ws_manifest_to_lines(const ws_manifest *m, char **out, ws_error *err) {
    size_t cap = 1, len = 0;
    for (size_t i = 0; i < m->count; i++) cap += strlen(m->entries[i].name) + 70;
    char *buf = malloc(cap);
    if (!buf) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    buf[0] = 0;
    for (size_t i = 0; i < m->count; i++) {
        const ws_manifest_entry *e = &m->entries[i];
        char hex[65];
        if (e->digest.algos & WS_ALGO_SHA256) ws_sha256_hex(e->digest.sha256, hex);
        else ws_fast_hex(&e->digest.fast, hex);
        len += (size_t)snprintf(buf + len, cap - len, "%s  %s\n", hex, e->name);
    }
    *out = buf;
    return WS_OK;
}

/* Parse a digest string: 64 hex digits are SHA-256, 48 the fast digest. */
static ws_err parse_digest(const char *hex, ws_digest *d) { return ws_digest_from_hex(hex, d); }

static ws_err parse_json(const char *text, size_t len, const char *label, ws_manifest **out,
                         ws_error *err) {
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return wsi_fail(err, WS_ERR_JSON, label, NULL, jerr.position, "invalid JSON: %s",
                        jerr.text);
    ws_err rc = WS_OK;
    ws_manifest *m = NULL;
    json_t *tensors = json_object_get(root, "tensors");
    const char *canon = json_string_value(json_object_get(root, "canonical"));
    ws_canon c = WS_CANON_BF16;
    if (!json_is_object(root) ||
        !json_string_value(json_object_get(root, "format")) ||
        strcmp(json_string_value(json_object_get(root, "format")), "weightsum-manifest") != 0 ||
        !json_is_object(tensors)) {
        rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, -1,
                      "not a weightsum manifest (needs \"format\": \"weightsum-manifest\" and a "
                      "\"tensors\" object)");
        goto done;
    }
    if (canon && ws_canon_from_name(canon, &c) != WS_OK) {
        rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, -1, "unknown canonical policy \"%s\"",
                      canon);
        goto done;
    }
    unsigned algos = 0;
    json_t *al = json_object_get(root, "algorithms"), *v;
    size_t i;
    json_array_foreach(al, i, v) {
        const char *a = json_string_value(v);
        if (a && strcmp(a, "sha256") == 0) algos |= WS_ALGO_SHA256;
        else if (a && strcmp(a, "fast") == 0) algos |= WS_ALGO_FAST;
        else {
            rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, -1, "unknown algorithm in manifest");
            goto done;
        }
    }
    m = ws_manifest_new(c, algos, json_string_value(json_object_get(root, "key_id")),
                        json_string_value(json_object_get(root, "source")));
    if (!m) {
        rc = wsi_fail(err, WS_ERR_NOMEM, label, NULL, -1, "out of memory");
        goto done;
    }
    const char *name;
    json_t *t;
    json_object_foreach(tensors, name, t) {
        ws_manifest_entry e;
        memset(&e, 0, sizeof e);
        e.name = (char *)name;
        e.ndim = -1;
        e.dtype = e.canonical_dtype = WS_DTYPE__COUNT;
        json_t *shape = json_object_get(t, "shape");
        if (!json_is_object(t)) {
            rc = wsi_fail(err, WS_ERR_FORMAT, label, name, -1, "entry is not an object");
            break;
        }
        if (shape) {
            if (!json_is_array(shape) || json_array_size(shape) > WS_MAX_DIMS) {
                rc = wsi_fail(err, WS_ERR_FORMAT, label, name, -1, "bad \"shape\"");
                break;
            }
            e.ndim = (int)json_array_size(shape);
            json_array_foreach(shape, i, v) {
                if (!json_is_integer(v) || json_integer_value(v) < 0) {
                    rc = wsi_fail(err, WS_ERR_FORMAT, label, name, -1, "bad \"shape\"");
                    break;
                }
                e.shape[i] = (uint64_t)json_integer_value(v);
            }
            if (rc != WS_OK) break;
        }
        const char *dt = json_string_value(json_object_get(t, "dtype"));
        const char *cdt = json_string_value(json_object_get(t, "canonical_dtype"));
        if ((dt && ws_dtype_from_name(dt, &e.dtype) != WS_OK) ||
            (cdt && ws_dtype_from_name(cdt, &e.canonical_dtype) != WS_OK)) {
            rc = wsi_fail(err, WS_ERR_FORMAT, label, name, -1, "unknown dtype");
            break;
        }
        const char *sha = json_string_value(json_object_get(t, "sha256"));
        const char *fast = json_string_value(json_object_get(t, "fast"));
        if ((sha && (strlen(sha) != 64 || parse_digest(sha, &e.digest) != WS_OK)) ||
            (fast && (strlen(fast) != 48 || parse_digest(fast, &e.digest) != WS_OK)) ||
            (!sha && !fast)) {
            rc = wsi_fail(err, WS_ERR_FORMAT, label, name, -1,
                          "needs a \"sha256\" (64 hex digits) or \"fast\" (48 hex digits) digest");
            break;
        }
        json_t *nan = json_object_get(t, "nan"), *inf = json_object_get(t, "inf");
        if (json_is_integer(nan)) e.stats.nan = (uint64_t)json_integer_value(nan);
        if (json_is_integer(inf)) e.stats.inf = (uint64_t)json_integer_value(inf);
        m->algos |= e.digest.algos;
        if (ws_manifest_add(m, &e) != WS_OK) {
            rc = wsi_fail(err, WS_ERR_NOMEM, label, name, -1, "out of memory");
            break;
        }
    }
done:
    json_decref(root);
    if (rc != WS_OK) ws_manifest_free(m);
    else *out = m;
    return rc;
}

static ws_err parse_lines(const char *text, size_t len, const char *label, ws_manifest **out,
                          ws_error *err) {
    ws_manifest *m = ws_manifest_new(WS_CANON_BF16, 0, NULL, label);
    if (!m) return wsi_fail(err, WS_ERR_NOMEM, label, NULL, -1, "out of memory");
    m->algos = 0;
    m->canon_declared = false;
    size_t pos = 0;
    long lineno = 0;
    char *line = malloc(len + 1);
    if (!line) {
        ws_manifest_free(m);
        return wsi_fail(err, WS_ERR_NOMEM, label, NULL, -1, "out of memory");
    }
    ws_err rc = WS_OK;
    while (pos < len && rc == WS_OK) {
        size_t start = pos;
        while (pos < len && text[pos] != '\n') pos++;
        size_t n = pos - start;
        pos++;
        lineno++;
        memcpy(line, text + start, n);
        line[n] = 0;
        if (n && line[n - 1] == '\r') line[--n] = 0;
        if (n == 0 || line[0] == '#') continue;
        char *sep = strstr(line, "  ");
        if (!sep && (sep = strstr(line, " *"))) { /* binary-mode marker of sha256sum */ }
        if (!sep || sep[2] == 0) {
            rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, (int64_t)start,
                          "line %ld: expected \"HEX  NAME\"", lineno);
            break;
        }
        *sep = 0;
        ws_manifest_entry e;
        memset(&e, 0, sizeof e);
        e.name = sep + 2;
        e.ndim = -1;
        e.dtype = e.canonical_dtype = WS_DTYPE__COUNT;
        if (parse_digest(line, &e.digest) != WS_OK) {
            rc = wsi_fail(err, WS_ERR_FORMAT, label, e.name, (int64_t)start,
                          "line %ld: digest must be 64 (sha256) or 48 (fast) hex digits", lineno);
            break;
        }
        json_t *utf8 = json_string(e.name); /* NULL unless valid UTF-8, as every safetensors name is */
        if (!utf8) {
            rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, (int64_t)start,
                          "line %ld: tensor name is not valid UTF-8", lineno);
            break;
        }
        json_decref(utf8);
        m->algos |= e.digest.algos;
        ws_err a = ws_manifest_add(m, &e);
        if (a == WS_ERR_ARG)
            rc = wsi_fail(err, WS_ERR_FORMAT, label, e.name, (int64_t)start,
                          "line %ld: tensor listed twice", lineno);
        else if (a != WS_OK)
            rc = wsi_fail(err, WS_ERR_NOMEM, label, NULL, -1, "out of memory");
    }
    free(line);
    if (rc == WS_OK && m->count == 0) /* an empty or truncated file is no manifest */
        rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, 0, "no \"HEX  NAME\" lines: not a manifest");
    if (rc != WS_OK) {
        ws_manifest_free(m);
        return rc;
    }
    *out = m;
    return WS_OK;
}

ws_err ws_manifest_parse(const char *text, size_t len, const char *label, ws_manifest **out,
                         ws_error *err) {
    *out = NULL;
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r'))
        i++;
    if (i < len && text[i] == '{') return parse_json(text, len, label, out, err);
    return parse_lines(text, len, label, out, err);
}

ws_err ws_manifest_load(const char *path, ws_manifest **out, ws_error *err) {
    if (!path || !out)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "ws_manifest_load: NULL %s",
                        path ? "out" : "path");
    *out = NULL;
    char *buf;
    size_t len;
    ws_err rc = wsi_read_file(path, true, (size_t)1 << 31, "a manifest", &buf, &len, err);
    if (rc != WS_OK) return rc;
    rc = ws_manifest_parse(buf, len, path, out, err);
    free(buf);
    return rc;
}
