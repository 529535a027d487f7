/*
 * Safetensors header parser. Reads from memory so fuzzers can feed it directly. Validates
 * everything the format promises: header length against the buffer, a size limit, JSON, known
 * dtypes, shapes, numel x dtype size == byte count, offsets inside the data section, tensors
 * tiling the data section with no overlap and no hole (as the reference implementation
 * requires), no duplicate names.
 */
#include "safetensors.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static int cmp_by_begin(const void *a, const void *b) {
    const wsi_st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : (x->end > y->end);
}

void wsi_st_header_free(wsi_st_header *h) {
    if (!h) return;
    for (size_t i = 0; i < h->count; i++) free(h->entries[i].name);
    free(h->entries);
    free(h->metadata);
    memset(h, 0, sizeof *h);
}

static bool json_u64(json_t *v, uint64_t *out) {
    if (!json_is_integer(v)) return false;
    json_int_t i = json_integer_value(v);
    if (i < 0) return false;
    *out = (uint64_t)i;
    return true;
}

static ws_err parse_entry(const char *label, const char *name, json_t *obj, uint64_t data_len,
                          wsi_st_entry *e, ws_error *err) {
    if (!json_is_object(obj))
        return wsi_fail(err, WS_ERR_FORMAT, label, name, -1, "header entry is not an object");
    json_t *dt = json_object_get(obj, "dtype");
    json_t *shape = json_object_get(obj, "shape");
    json_t *offs = json_object_get(obj, "data_offsets");
    if (!json_is_string(dt))
        return wsi_fail(err, WS_ERR_FORMAT, label, name, -1, "missing or non-string \"dtype\"");
    if (ws_dtype_from_name(json_string_value(dt), &e->dtype) != WS_OK)
        return wsi_fail(err, WS_ERR_DTYPE, label, name, -1, "unknown dtype \"%s\"",
                        json_string_value(dt));
    if (!json_is_array(shape))
        return wsi_fail(err, WS_ERR_FORMAT, label, name, -1, "missing or non-array \"shape\"");
    size_t nd = json_array_size(shape);
    if (nd > WS_MAX_DIMS)
        return wsi_fail(err, WS_ERR_LIMIT, label, name, -1, "%zu dimensions (at most %d)", nd,
                        WS_MAX_DIMS);
    e->ndim = (int)nd;
    uint64_t numel = 1;
    for (size_t d = 0; d < nd; d++) {
        if (!json_u64(json_array_get(shape, d), &e->shape[d]))
            return wsi_fail(err, WS_ERR_FORMAT, label, name, -1,
                            "shape[%zu] is not a non-negative integer", d);
        if (!wsi_mul_u64(numel, e->shape[d], &numel))
            return wsi_fail(err, WS_ERR_FORMAT, label, name, -1, "shape overflows 64 bits");
    }
    e->numel = numel;
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        !json_u64(json_array_get(offs, 0), &e->begin) ||
        !json_u64(json_array_get(offs, 1), &e->end))
        return wsi_fail(err, WS_ERR_FORMAT, label, name, -1,
                        "\"data_offsets\" must be [begin, end] of non-negative integers");
    if (e->begin > e->end)
        return wsi_fail(err, WS_ERR_FORMAT, label, name, (int64_t)e->begin,
                        "data_offsets begin %llu > end %llu", (unsigned long long)e->begin,
                        (unsigned long long)e->end);
    uint64_t nbytes;
    if (!wsi_mul_u64(numel, ws_dtype_size(e->dtype), &nbytes) || nbytes != e->end - e->begin)
        return wsi_fail(err, WS_ERR_FORMAT, label, name, (int64_t)e->begin,
                        "%llu elements of %s need %llu bytes but data_offsets span %llu",
                        (unsigned long long)numel, ws_dtype_name(e->dtype),
                        (unsigned long long)(numel * ws_dtype_size(e->dtype)),
                        (unsigned long long)(e->end - e->begin));
    if (e->end > data_len)
        return wsi_fail(err, WS_ERR_FORMAT, label, name, (int64_t)e->end,
                        "data_offsets end %llu is past the data section (%llu bytes)",
                        (unsigned long long)e->end, (unsigned long long)data_len);
    return WS_OK;
}

ws_err wsi_st_parse_header(const void *buf, size_t len, const char *label, wsi_st_header *out,
                           ws_error *err) {
    memset(out, 0, sizeof *out);
    const uint8_t *p = buf;
    if (len < 8)
        return wsi_fail(err, WS_ERR_FORMAT, label, NULL, 0,
                        "file is %zu bytes, too short for the 8-byte header length", len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | p[i];
    if (n > WS_MAX_HEADER_BYTES)
        return wsi_fail(err, WS_ERR_LIMIT, label, NULL, 0,
                        "header length %llu exceeds the %u-byte limit", (unsigned long long)n,
                        WS_MAX_HEADER_BYTES);
    if (n > len - 8)
        return wsi_fail(err, WS_ERR_FORMAT, label, NULL, 0,
                        "header length %llu runs past the end of the file (%zu bytes)",
                        (unsigned long long)n, len);
    if (n < 2 || p[8] != '{')
        return wsi_fail(err, WS_ERR_FORMAT, label, NULL, 8, "header does not start with '{'");
    json_error_t jerr;
    json_t *root = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        bool dup = strstr(jerr.text, "duplicate") != NULL;
        return wsi_fail(err, WS_ERR_FORMAT, label, NULL, 8 + (int64_t)jerr.position,
                        "%s in header: %s", dup ? "duplicate tensor name" : "invalid JSON",
                        jerr.text);
    }
    ws_err rc = WS_OK;
    if (!json_is_object(root)) {
        rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, 8, "header is not a JSON object");
        goto done;
    }
    uint64_t data_len = len - 8 - n;
    out->data_offset = 8 + n;
    out->data_len = data_len;
    size_t cap = json_object_size(root);
    out->entries = calloc(cap ? cap : 1, sizeof *out->entries);
    if (!out->entries) {
        rc = wsi_fail(err, WS_ERR_NOMEM, label, NULL, -1, "out of memory");
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) {
                rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, -1,
                              "\"__metadata__\" is not an object");
                goto done;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, -1,
                                  "\"__metadata__\" value for \"%s\" is not a string", mk);
                    goto done;
                }
            }
            out->metadata = json_dumps(val, JSON_COMPACT | JSON_SORT_KEYS);
            continue;
        }
        wsi_st_entry *e = &out->entries[out->count];
        rc = parse_entry(label, key, val, data_len, e, err);
        if (rc != WS_OK) goto done;
        e->name = wsi_strdup(key);
        if (!e->name) {
            rc = wsi_fail(err, WS_ERR_NOMEM, label, NULL, -1, "out of memory");
            goto done;
        }
        out->count++;
    }
    /* Tensors must tile the data section: sorted by offset, each begins where the last ended. */
    wsi_st_entry *sorted = malloc((out->count ? out->count : 1) * sizeof *sorted);
    if (!sorted) {
        rc = wsi_fail(err, WS_ERR_NOMEM, label, NULL, -1, "out of memory");
        goto done;
    }
    memcpy(sorted, out->entries, out->count * sizeof *sorted);
    qsort(sorted, out->count, sizeof *sorted, cmp_by_begin);
    uint64_t at = 0;
    for (size_t i = 0; i < out->count && rc == WS_OK; i++) {
        const wsi_st_entry *e = &sorted[i];
        if (e->begin < at)
            rc = wsi_fail(err, WS_ERR_FORMAT, label, e->name, (int64_t)(out->data_offset + e->begin),
                          "overlaps the previous tensor '%s' (begins at data offset %llu, "
                          "previous ends at %llu)", sorted[i - 1].name,
                          (unsigned long long)e->begin, (unsigned long long)at);
        else if (e->begin > at)
            rc = wsi_fail(err, WS_ERR_FORMAT, label, e->name, (int64_t)(out->data_offset + at),
                          "hole of %llu unaccounted bytes before this tensor",
                          (unsigned long long)(e->begin - at));
        at = e->end;
    }
    if (rc == WS_OK && at != data_len)
        rc = wsi_fail(err, WS_ERR_FORMAT, label, NULL, (int64_t)(out->data_offset + at),
                      "data section has %llu bytes but tensors end at %llu",
                      (unsigned long long)data_len, (unsigned long long)at);
    free(sorted);
done:
    json_decref(root);
    if (rc != WS_OK) wsi_st_header_free(out);
    return rc;
}
