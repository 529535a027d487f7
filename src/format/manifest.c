/*
 * Manifests: per HF tensor its shape, dtype, canonical dtype and digests, plus the algorithm,
 * the canonical policy, the key id and the tool version. Two text forms: JSON (complete) and
 * sha256sum-style lines (digests only: GNU "HEX  NAME" or BSD "ALGO (NAME) = HEX", names
 * escaped as coreutils does), headed by a comment line that records the manifest version, the
 * canonical policy and the fast digest's key id. Entries are kept sorted by name.
 *
 * Version 2: fast digests are sealed with the tensor's canonical dtype and shape
 * (docs/fast-digest.md, "Sealing"). Version 1 fast digests were not, so a version-1 manifest
 * holding fast digests is refused (it could match a tensor of another shape), as is any
 * version this tool does not know.
 */
#include "internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WSI_MANIFEST_VERSION 2
/* The comment line that heads line-form manifests; sha256sum-style checkers skip it. */
#define LINES_HEADER "# weightsum-manifest"

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
    json_object_set_new(root, "version", json_integer(WSI_MANIFEST_VERSION));
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

/* coreutils' rule: a name holding a newline, a carriage return or a backslash is written
 * with those escaped (\n, \r, \\) and the line starts with a backslash. */
static bool needs_escape(const char *name) { return strpbrk(name, "\n\r\\") != NULL; }

static size_t put_name(char *buf, const char *name) {
    size_t n = 0;
    for (const char *c = name; *c; c++) {
        if (*c == '\n' || *c == '\r' || *c == '\\') {
            buf[n++] = '\\';
            buf[n++] = *c == '\n' ? 'n' : *c == '\r' ? 'r' : '\\';
        } else {
            buf[n++] = *c;
        }
    }
    return n;
}

/* One line per digest an entry holds (sha256 first), GNU or BSD form, after the header. */
static ws_err to_lines(const ws_manifest *m, bool bsd, char **out, ws_error *err) {
    size_t cap = 256;
    for (size_t i = 0; i < m->count; i++) cap += 2 * (2 * strlen(m->entries[i].name) + 90);
    char *buf = malloc(cap);
    if (!buf) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    size_t len = (size_t)snprintf(buf, cap, LINES_HEADER " %d canonical=%s", WSI_MANIFEST_VERSION,
                                  ws_canon_name(m->canon));
    if (m->key_id && (m->algos & WS_ALGO_FAST))
        len += (size_t)snprintf(buf + len, cap - len, " key_id=%.64s", m->key_id);
    buf[len++] = '\n';
    for (size_t i = 0; i < m->count; i++) {
        const ws_manifest_entry *e = &m->entries[i];
        for (int a = 0; a < 2; a++) {
            unsigned algo = a == 0 ? WS_ALGO_SHA256 : WS_ALGO_FAST;
            if (!(e->digest.algos & algo)) continue;
            char hex[65];
            if (algo == WS_ALGO_SHA256) ws_sha256_hex(e->digest.sha256, hex);
            else ws_fast_hex(&e->digest.fast, hex);
            if (needs_escape(e->name)) buf[len++] = '\\';
            if (bsd) {
                len += (size_t)snprintf(buf + len, cap - len, "%s (",
                                        algo == WS_ALGO_SHA256 ? "SHA256" : "FAST");
                len += put_name(buf + len, e->name);
                len += (size_t)snprintf(buf + len, cap - len, ") = %s\n", hex);
            } else {
                len += (size_t)snprintf(buf + len, cap - len, "%s  ", hex);
                len += put_name(buf + len, e->name);
                buf[len++] = '\n';
            }
        }
    }
    buf[len] = 0;
    *out = buf;
    return WS_OK;
}

ws_err ws_manifest_to_lines(const ws_manifest *m, char **out, ws_error *err) {
    return to_lines(m, false, out, err);
}

ws_err ws_manifest_to_bsd_lines(const ws_manifest *m, char **out, ws_error *err) {
    return to_lines(m, true, out, err);
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
    json_t *ver = json_object_get(root, "version");
    /* no "version": the first manifests (version 1) */
    json_int_t version = ver ? (json_is_integer(ver) ? json_integer_value(ver) : -1) : 1;
    if (version != 1 && version != WSI_MANIFEST_VERSION) {
        rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, -1,
                      "unknown manifest \"version\" (this weightsum reads 1 and 2)");
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
    if (al && (!json_is_array(al) || !algos)) {
        rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, -1,
                      "\"algorithms\" must be a non-empty list of \"sha256\", \"fast\"");
        goto done;
    }
    m = ws_manifest_new(c, algos, json_string_value(json_object_get(root, "key_id")),
                        json_string_value(json_object_get(root, "source")));
    if (!m) {
        rc = wsi_fail(err, WS_ERR_NOMEM, label, NULL, -1, "out of memory");
        goto done;
    }
    m->algos = 0; /* what the entries hold, each the same set (checked below) */
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
        if ((e.digest.algos & WS_ALGO_FAST) && version < 2) {
            rc = wsi_fail(err, WS_ERR_FORMAT, label, name, -1,
                          "a version-1 manifest's fast digests do not bind the shape (made by "
                          "an older weightsum): re-run 'weightsum hash --algo fast'");
            break;
        }
        if (algos && e.digest.algos != algos) {
            rc = wsi_fail(err, WS_ERR_FORMAT, label, name, -1,
                          "\"algorithms\" declares %s but this tensor has %s",
                          algos == (WS_ALGO_SHA256 | WS_ALGO_FAST) ? "sha256 and fast"
                          : algos == WS_ALGO_FAST ? "fast only" : "sha256 only",
                          e.digest.algos == (WS_ALGO_SHA256 | WS_ALGO_FAST) ? "both"
                          : e.digest.algos == WS_ALGO_FAST ? "only a fast digest"
                                                           : "only a sha256 digest");
            break;
        }
        m->algos |= e.digest.algos;
        if (ws_manifest_add(m, &e) != WS_OK) {
            rc = wsi_fail(err, WS_ERR_NOMEM, label, name, -1, "out of memory");
            break;
        }
    }
    for (size_t k = 0; rc == WS_OK && k < m->count; k++)
        if (m->entries[k].digest.algos != m->algos)
            rc = wsi_fail(err, WS_ERR_FORMAT, label, m->entries[k].name, -1,
                          "has %s digest only, other tensors have both: a manifest holds the "
                          "same digests for every tensor",
                          m->entries[k].digest.algos == WS_ALGO_FAST ? "a fast" : "a sha256");
    if (rc == WS_OK && !m->count) m->algos = algos ? algos : WS_ALGO_SHA256;
done:
    json_decref(root);
    if (rc != WS_OK) ws_manifest_free(m);
    else *out = m;
    return rc;
}

/* Undo put_name in place; false for an unknown escape or a trailing backslash. */
static bool unescape(char *name) {
    char *w = name;
    for (char *r = name; *r; r++) {
        if (*r != '\\') {
            *w++ = *r;
            continue;
        }
        r++;
        if (*r == 'n') *w++ = '\n';
        else if (*r == 'r') *w++ = '\r';
        else if (*r == '\\') *w++ = '\\';
        else return false;
    }
    *w = 0;
    return true;
}

/* The header comment "# weightsum-manifest V canonical=P key_id=K"; false (with why) when
 * it names a version or policy this tool does not know. */
static bool parse_header(ws_manifest *m, char *line, int *version, const char **why) {
    char *save = NULL;
    strtok_r(line, " ", &save); /* "#" */
    strtok_r(NULL, " ", &save); /* "weightsum-manifest" */
    const char *v = strtok_r(NULL, " ", &save);
    char *end = NULL;
    long ver = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || ver != WSI_MANIFEST_VERSION) {
        *why = "unknown manifest version in the \"" LINES_HEADER "\" line (this weightsum "
               "reads version 2)";
        return false;
    }
    *version = (int)ver;
    for (char *t; (t = strtok_r(NULL, " ", &save));) {
        if (strncmp(t, "canonical=", 10) == 0) {
            if (ws_canon_from_name(t + 10, &m->canon) != WS_OK) {
                *why = "unknown canonical policy in the \"" LINES_HEADER "\" line";
                return false;
            }
            m->canon_declared = true;
        } else if (strncmp(t, "key_id=", 7) == 0) {
            free(m->key_id);
            m->key_id = wsi_strdup(t + 7);
            if (!m->key_id) {
                *why = "out of memory";
                return false;
            }
        } /* other fields: from a later tool, ignored */
    }
    return true;
}

/* Split one digest line into its hex and name (in place): GNU "HEX  NAME", "HEX *NAME" or
 * "HEX NAME" (one space, as coreutils accepts), or BSD "SHA256 (NAME) = HEX" /
 * "FAST (NAME) = HEX"; a leading backslash marks an escaped name. *tag gets the BSD algorithm
 * (0 for the GNU form). */
static bool split_line(char *line, char **hex, char **name, unsigned *tag) {
    bool escaped = line[0] == '\\';
    if (escaped) line++;
    *tag = 0;
    if (strncmp(line, "SHA256 (", 8) == 0) *tag = WS_ALGO_SHA256;
    else if (strncmp(line, "FAST (", 6) == 0) *tag = WS_ALGO_FAST;
    if (*tag) {
        char *open = strchr(line, '('), *close = NULL;
        for (char *p = strstr(open, ") = "); p; p = strstr(p + 1, ") = ")) close = p;
        if (!close || close == open + 1) return false;
        *close = 0;
        *name = open + 1;
        *hex = close + 4;
    } else {
        char *sp = strchr(line, ' ');
        if (!sp) return false;
        *sp = 0;
        *hex = line;
        *name = sp + 1;
        if (**name == ' ' || **name == '*') (*name)++; /* text / binary mode marker */
        if (!**name) return false;
    }
    return !escaped || unescape(*name);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static ws_err parse_lines(const char *text, size_t len, const char *label, ws_manifest **out,
                          ws_error *err) {
    ws_manifest *m = ws_manifest_new(WS_CANON_BF16, 0, NULL, label);
    if (!m) return wsi_fail(err, WS_ERR_NOMEM, label, NULL, -1, "out of memory");
    m->algos = 0;
    m->canon_declared = false;
    size_t pos = 0;
    long lineno = 0, fast_line = 0;
    int version = 0; /* 0: no header line */
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
        if (strlen(line) != n) {
            rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, (int64_t)start,
                          "line %ld: holds a NUL byte", lineno);
            break;
        }
        if (strncmp(line, LINES_HEADER " ", sizeof LINES_HEADER) == 0) {
            const char *why = NULL;
            if (lineno != 1 && version == 0 && m->count) why = "the \"" LINES_HEADER "\" line "
                                                              "must come before the digests";
            else if (version) why = "a second \"" LINES_HEADER "\" line";
            if (why || !parse_header(m, line, &version, &why)) {
                rc = wsi_fail(err, strcmp(why, "out of memory") ? WS_ERR_FORMAT : WS_ERR_NOMEM,
                              label, NULL, (int64_t)start, "line %ld: %s", lineno, why);
                break;
            }
            continue;
        }
        if (n == 0 || line[0] == '#') continue;
        char *hex = NULL, *name = NULL;
        unsigned tag = 0;
        if (!split_line(line, &hex, &name, &tag)) {
            rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, (int64_t)start,
                          "line %ld: expected \"HEX  NAME\" or \"ALGO (NAME) = HEX\"", lineno);
            break;
        }
        ws_manifest_entry e;
        memset(&e, 0, sizeof e);
        e.name = name;
        e.ndim = -1;
        e.dtype = e.canonical_dtype = WS_DTYPE__COUNT;
        if (parse_digest(hex, &e.digest) != WS_OK || (tag && tag != e.digest.algos)) {
            rc = wsi_fail(err, WS_ERR_FORMAT, label, e.name, (int64_t)start,
                          tag ? "line %ld: a %s digest must be %s hex digits"
                              : "line %ld: digest must be 64 (sha256) or 48 (fast) hex digits",
                          lineno, tag == WS_ALGO_SHA256 ? "SHA256" : "FAST",
                          tag == WS_ALGO_SHA256 ? "64" : "48");
            break;
        }
        json_t *utf8 = json_string(e.name); /* NULL unless valid UTF-8, as every safetensors name is */
        if (!utf8) {
            rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, (int64_t)start,
                          "line %ld: tensor name is not valid UTF-8", lineno);
            break;
        }
        json_decref(utf8);
        if ((e.digest.algos & WS_ALGO_SHA256) && ends_with(name, ".safetensors")) {
            rc = wsi_fail(err, WS_ERR_FORMAT, label, e.name, (int64_t)start,
                          "line %ld: these are whole-file digests (sha256sum of %s), not "
                          "per-tensor digests: make the manifest with 'weightsum hash'",
                          lineno, name);
            break;
        }
        if ((e.digest.algos & WS_ALGO_FAST) && !fast_line) fast_line = lineno;
        m->algos |= e.digest.algos;
        /* the same tensor again is its other digest ('hash --algo both' prints both) */
        size_t at = lower_bound(m, e.name);
        if (at < m->count && strcmp(m->entries[at].name, e.name) == 0) {
            ws_digest *have = &m->entries[at].digest;
            if (have->algos & e.digest.algos) {
                rc = wsi_fail(err, WS_ERR_FORMAT, label, e.name, (int64_t)start,
                              "line %ld: tensor listed twice", lineno);
                break;
            }
            if (e.digest.algos & WS_ALGO_SHA256) memcpy(have->sha256, e.digest.sha256, 32);
            else have->fast = e.digest.fast;
            have->algos |= e.digest.algos;
            continue;
        }
        if (ws_manifest_add(m, &e) != WS_OK)
            rc = wsi_fail(err, WS_ERR_NOMEM, label, NULL, -1, "out of memory");
    }
    free(line);
    if (rc == WS_OK && m->count == 0) /* an empty or truncated file is no manifest */
        rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, 0, "no \"HEX  NAME\" lines: not a manifest");
    if (rc == WS_OK && fast_line && version == 0)
        rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, 0,
                      "line %ld: fast digests without the \"" LINES_HEADER " 2\" line: made by "
                      "an older weightsum, whose fast digests do not bind the shape; re-run "
                      "'weightsum hash --algo fast'", fast_line);
    for (size_t i = 0; rc == WS_OK && version && i < m->count; i++)
        if (m->entries[i].digest.algos != m->algos)
            rc = wsi_fail(err, WS_ERR_FORMAT, label, m->entries[i].name, -1,
                          "has %s digest only, other tensors have both: a manifest holds the "
                          "same digests for every tensor",
                          m->entries[i].digest.algos == WS_ALGO_FAST ? "a fast" : "a sha256");
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
