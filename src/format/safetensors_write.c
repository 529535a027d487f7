/* Safetensors writer: header (padded with spaces to 8 bytes, as the reference does), then the
 * tensors' bytes in the given order, written atomically. */
#include "atomic_file.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

ws_err ws_safetensors_write(const char *path, const ws_tensor_spec *tensors, size_t n,
                            const char *metadata_json, ws_error *err) {
    json_t *root = json_object();
    if (!root) return wsi_fail(err, WS_ERR_NOMEM, path, NULL, -1, "out of memory");
    ws_err rc = WS_OK;
    if (metadata_json) {
        json_error_t jerr;
        json_t *meta = json_loads(metadata_json, 0, &jerr);
        if (!json_is_object(meta)) {
            json_decref(meta);
            json_decref(root);
            return wsi_fail(err, WS_ERR_ARG, path, NULL, -1, "metadata is not a JSON object");
        }
        json_object_set_new(root, "__metadata__", meta);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n && rc == WS_OK; i++) {
        const ws_tensor_spec *t = &tensors[i];
        if (!t->name || ws_dtype_size(t->dtype) == 0 || t->ndim < 0 || t->ndim > WS_MAX_DIMS) {
            rc = wsi_fail(err, WS_ERR_ARG, path, t->name, -1, "invalid tensor spec");
            break;
        }
        if (json_object_get(root, t->name)) {
            rc = wsi_fail(err, WS_ERR_ARG, path, t->name, -1, "duplicate tensor name");
            break;
        }
        uint64_t numel = 1, nbytes;
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++) {
            json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
            if (!wsi_mul_u64(numel, t->shape[d], &numel)) rc = WS_ERR_ARG;
        }
        if (rc != WS_OK || !wsi_mul_u64(numel, ws_dtype_size(t->dtype), &nbytes)) {
            json_decref(shape);
            rc = wsi_fail(err, WS_ERR_ARG, path, t->name, -1, "shape overflows");
            break;
        }
        json_t *e = json_object();
        json_object_set_new(e, "dtype", json_string(ws_dtype_name(t->dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets",
                            json_pack("[II]", (json_int_t)off, (json_int_t)(off + nbytes)));
        json_object_set_new(root, t->name, e);
        off += nbytes;
    }
    char *hdr = rc == WS_OK ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (rc != WS_OK) return rc;
    if (!hdr) return wsi_fail(err, WS_ERR_NOMEM, path, NULL, -1, "out of memory");
    size_t hlen = strlen(hdr), padded = (hlen + 7) & ~(size_t)7;
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    wsi_atomic a;
    rc = wsi_atomic_open(&a, path, err);
    if (rc != WS_OK) {
        free(hdr);
        return rc;
    }
    static const char spaces[8] = "        ";
    rc = wsi_atomic_write(&a, lenbuf, 8, err);
    if (rc == WS_OK) rc = wsi_atomic_write(&a, hdr, hlen, err);
    if (rc == WS_OK) rc = wsi_atomic_write(&a, spaces, padded - hlen, err);
    free(hdr);
    for (size_t i = 0; i < n && rc == WS_OK; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < tensors[i].ndim; d++) numel *= tensors[i].shape[d];
        rc = wsi_atomic_write(&a, tensors[i].data, numel * ws_dtype_size(tensors[i].dtype), err);
    }
    if (rc != WS_OK) {
        wsi_atomic_abort(&a);
        return rc;
    }
    return wsi_atomic_commit(&a, err);
}
