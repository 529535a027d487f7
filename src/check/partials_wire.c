/*
 * Partials on the wire (ws_partials_serialize / _deserialize) and merging them. The byte form
 * is fixed and host-independent, every integer little-endian:
 *   "WSPART01", fingerprint[16], u32 pieces, u32 locals, u32 ranks, u8 canon, key id[16],
 *   ranks bytes (1 = computed);
 *   u32 n, then n x (u32 piece, u64 lane[3], u64 nan, u64 inf);
 *   u32 n, then n x (u32 local, u8 state, u8 dtype, u8 ndim, u64 shape[ndim],
 *                    u64 pad_bad, pad_first, pad0, pad1);
 *   u32 n, then n x (u8 status, i32 rank, u32 local, u32 len, name, u32 len, other)
 *   (status WS_UNEXPECTED, WS_REPLICA_MISMATCH, or WS_MATCH: local was read under name;
 *   WS_MISMATCH / WS_SHAPE_DIFFERS: an engine buffer's wrong values, other the detail).
 * About 44 bytes per piece. Deserialising trusts no count or length.
 */
#include "partials.h"

#include <stdlib.h>
#include <string.h>

#define MAGIC "WSPART01"

typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
    bool nomem;
} wbuf;

static void put(wbuf *b, const void *src, size_t n) {
    if (b->nomem) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *g = realloc(b->p, cap);
        if (!g) {
            b->nomem = true;
            return;
        }
        b->p = g;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put_u64(wbuf *b, uint64_t v) {
    uint8_t x[8];
    for (int i = 0; i < 8; i++) x[i] = (uint8_t)(v >> (8 * i));
    put(b, x, 8);
}
static void put_u32(wbuf *b, uint32_t v) {
    uint8_t x[4];
    for (int i = 0; i < 4; i++) x[i] = (uint8_t)(v >> (8 * i));
    put(b, x, 4);
}
static void put_u8(wbuf *b, uint8_t v) { put(b, &v, 1); }
static void put_str(wbuf *b, const char *s) {
    size_t n = strlen(s);
    put_u32(b, (uint32_t)n);
    put(b, s, n);
}

ws_err ws_partials_serialize(const ws_partials *pa, void **buf, size_t *len, ws_error *err) {
    if (!pa || !buf || !len) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *buf = NULL;
    *len = 0;
    wbuf b = {0};
    put(&b, MAGIC, 8);
    put(&b, pa->fp, WSI_FP_BYTES);
    put_u32(&b, pa->np);
    put_u32(&b, pa->nl);
    put_u32(&b, pa->tp);
    put_u8(&b, pa->canon);
    char kid[16] = {0};
    memcpy(kid, pa->key_id, strnlen(pa->key_id, 16));
    put(&b, kid, 16);
    put(&b, pa->ranks, pa->tp);
    uint32_t n = 0;
    for (uint32_t i = 0; i < pa->np; i++) n += pa->pieces[i].done;
    put_u32(&b, n);
    for (uint32_t i = 0; i < pa->np; i++) {
        const wsi_piece_part *pp = &pa->pieces[i];
        if (!pp->done) continue;
        put_u32(&b, i);
        for (int k = 0; k < WS_FAST_LANES; k++) put_u64(&b, pp->fast.lane[k]);
        put_u64(&b, pp->stats.nan);
        put_u64(&b, pp->stats.inf);
    }
    n = 0;
    for (uint32_t i = 0; i < pa->nl; i++) n += pa->locals[i].state != WSI_LOCAL_UNSEEN;
    put_u32(&b, n);
    for (uint32_t i = 0; i < pa->nl; i++) {
        const wsi_local_fact *f = &pa->locals[i];
        if (f->state == WSI_LOCAL_UNSEEN) continue;
        put_u32(&b, i);
        put_u8(&b, f->state);
        put_u8(&b, f->dtype);
        put_u8(&b, f->ndim);
        for (int d = 0; d < f->ndim; d++) put_u64(&b, f->shape[d]);
        put_u64(&b, f->pad_bad);
        put_u64(&b, f->pad_first);
        put_u64(&b, f->pad0);
        put_u64(&b, f->pad1);
    }
    put_u32(&b, (uint32_t)pa->nextras);
    for (size_t i = 0; i < pa->nextras; i++) {
        const wsi_extra *e = &pa->extras[i];
        put_u8(&b, e->status);
        put_u32(&b, (uint32_t)e->rank);
        put_u32(&b, e->local);
        put_str(&b, e->name);
        put_str(&b, e->other);
    }
    if (b.nomem) {
        free(b.p);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    *buf = b.p;
    *len = b.n;
    return WS_OK;
}

typedef struct rbuf {
    const uint8_t *p;
    size_t n, at;
    bool bad;
} rbuf;

static const uint8_t *take(rbuf *b, size_t n) {
    if (b->bad || b->n - b->at < n) {
        b->bad = true;
        return NULL;
    }
    const uint8_t *p = b->p + b->at;
    b->at += n;
    return p;
}
static uint64_t get_u64(rbuf *b) {
    const uint8_t *p = take(b, 8);
    uint64_t v = 0;
    for (int i = 0; p && i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static uint32_t get_u32(rbuf *b) {
    const uint8_t *p = take(b, 4);
    uint32_t v = 0;
    for (int i = 0; p && i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint8_t get_u8(rbuf *b) {
    const uint8_t *p = take(b, 1);
    return p ? *p : 0;
}
static char *get_str(rbuf *b) {
    uint32_t n = get_u32(b);
    const uint8_t *p = take(b, n);
    if (!p) return NULL;
    if (memchr(p, 0, n)) {
        b->bad = true;
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = 0;
    }
    return s;
}

static ws_err malformed(ws_error *err, size_t at, const char *what) {
    return wsi_fail(err, WS_ERR_FORMAT, "<partials>", NULL, (int64_t)at, "malformed partials: %s",
                    what);
}

ws_err ws_partials_deserialize(const void *buf, size_t len, ws_partials **out, ws_error *err) {
    if (!buf || !out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    rbuf b = {buf, len, 0, false};
    const uint8_t *m = take(&b, 8);
    if (!m || memcmp(m, MAGIC, 8) != 0) return malformed(err, 0, "not weightsum partials");
    const uint8_t *fp = take(&b, WSI_FP_BYTES);
    uint32_t np = get_u32(&b), nl = get_u32(&b), tp = get_u32(&b);
    uint8_t canon = get_u8(&b);
    const uint8_t *kid = take(&b, 16);
    /* every piece, local and rank costs bytes in a well-formed buffer: bound them by len */
    if (b.bad || tp == 0 || tp > len || np > (uint32_t)(len * 64) || nl > (uint32_t)(len * 64) ||
        canon > WS_CANON_NATIVE)
        return malformed(err, b.at, "bad header");
    const uint8_t *ranks = take(&b, tp);
    if (!ranks) return malformed(err, b.at, "truncated");
    ws_partials *pa = NULL;
    ws_err rc = wsi_partials_alloc(np, nl, tp, &pa, err);
    if (rc != WS_OK) return rc;
    memcpy(pa->fp, fp, WSI_FP_BYTES);
    pa->canon = canon;
    memcpy(pa->key_id, kid, 16);
    pa->key_id[16] = 0;
    for (uint32_t r = 0; r < tp; r++) {
        if (ranks[r] > 1) b.bad = true;
        pa->ranks[r] = ranks[r];
    }
    uint32_t n = get_u32(&b);
    for (uint32_t k = 0; k < n && !b.bad; k++) {
        uint32_t i = get_u32(&b);
        if (i >= np || pa->pieces[i].done) {
            b.bad = true;
            break;
        }
        wsi_piece_part *pp = &pa->pieces[i];
        pp->done = 1;
        for (int l = 0; l < WS_FAST_LANES; l++) pp->fast.lane[l] = get_u64(&b);
        pp->stats.nan = get_u64(&b);
        pp->stats.inf = get_u64(&b);
    }
    n = get_u32(&b);
    for (uint32_t k = 0; k < n && !b.bad; k++) {
        uint32_t i = get_u32(&b);
        if (i >= nl || pa->locals[i].state != WSI_LOCAL_UNSEEN) {
            b.bad = true;
            break;
        }
        wsi_local_fact *f = &pa->locals[i];
        f->state = get_u8(&b);
        f->dtype = get_u8(&b);
        f->ndim = get_u8(&b);
        if (f->state == WSI_LOCAL_UNSEEN || f->state > WSI_LOCAL_BAD_SHAPE ||
            f->dtype >= WS_DTYPE__COUNT || f->ndim > WS_MAX_DIMS) {
            b.bad = true;
            break;
        }
        for (int d = 0; d < f->ndim; d++) f->shape[d] = get_u64(&b);
        f->pad_bad = get_u64(&b);
        f->pad_first = get_u64(&b);
        f->pad0 = get_u64(&b);
        f->pad1 = get_u64(&b);
    }
    n = get_u32(&b);
    if (!b.bad && n > len) b.bad = true;
    for (uint32_t k = 0; k < n && !b.bad && rc == WS_OK; k++) {
        uint8_t st = get_u8(&b);
        int32_t rank = (int32_t)get_u32(&b);
        uint32_t local = get_u32(&b);
        char *name = get_str(&b), *other = get_str(&b);
        /* WS_MISMATCH / WS_SHAPE_DIFFERS: an engine buffer (vLLM's _expert_map) with the
         * wrong values or shape; `other` is the detail, `local` unused */
        bool buffer = st == WS_MISMATCH || st == WS_SHAPE_DIFFERS;
        if (b.bad ||
            (st != WS_UNEXPECTED && st != WS_REPLICA_MISMATCH && st != WS_MATCH && !buffer) ||
            rank < 0 || (uint32_t)rank >= tp || (st != WS_UNEXPECTED && !buffer && local >= nl))
            b.bad = true;
        else if (!name || !other)
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
        else
            rc = wsi_partials_add_extra(pa, (ws_status)st, rank, local, name, other, err);
        free(name);
        free(other);
    }
    if (rc == WS_OK && (b.bad || b.at != len)) rc = malformed(err, b.at, b.bad ? "truncated or invalid field" : "trailing bytes");
    if (rc != WS_OK) {
        ws_partials_free(pa);
        return rc;
    }
    *out = pa;
    return WS_OK;
}

ws_err ws_partials_merge(ws_partials *into, const ws_partials *from, ws_error *err) {
    if (!into || !from) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    if (memcmp(into->fp, from->fp, WSI_FP_BYTES) != 0 || into->np != from->np ||
        into->nl != from->nl || into->tp != from->tp)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "partials of another layout (family, tp or config differ)");
    if (into->canon != from->canon)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "partials under different canonical policies (%s vs %s)",
                        ws_canon_name((ws_canon)into->canon), ws_canon_name((ws_canon)from->canon));
    if (strcmp(into->key_id, from->key_id) != 0)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "partials under different fast-digest keys (%s vs %s)", into->key_id,
                        from->key_id);
    for (uint32_t r = 0; r < into->tp; r++)
        if (into->ranks[r] && from->ranks[r])
            return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                            "rank %u is in both partials: merge disjoint ranks", r);
    for (uint32_t i = 0; i < into->np; i++)
        if (into->pieces[i].done && from->pieces[i].done)
            return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "piece %u is in both partials", i);
    for (uint32_t i = 0; i < into->nl; i++)
        if (into->locals[i].state && from->locals[i].state)
            return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                            "local tensor %u is in both partials", i);
    for (size_t i = 0; i < from->nextras; i++) {
        const wsi_extra *e = &from->extras[i];
        ws_err rc = wsi_partials_add_extra(into, (ws_status)e->status, e->rank, e->local, e->name,
                                           e->other, err);
        if (rc != WS_OK) return rc;
    }
    for (uint32_t r = 0; r < into->tp; r++) into->ranks[r] |= from->ranks[r];
    for (uint32_t i = 0; i < into->np; i++)
        if (from->pieces[i].done) into->pieces[i] = from->pieces[i];
    for (uint32_t i = 0; i < into->nl; i++)
        if (from->locals[i].state) into->locals[i] = from->locals[i];
    return WS_OK;
}
