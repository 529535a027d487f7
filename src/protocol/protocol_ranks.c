/*
 * The per-rank side of the weights_checker protocol: every engine tensor digested as its rank
 * holds it (after the canonical cast, under the engine's name), which is how the seed
 * protocol's engine hashes its local parameters. Used to answer "checksum" per rank and to
 * compare "compare_checksum" requests that carry per-rank dicts of local digests.
 */
#include "protocol.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool wsp_parse_hex(const char *hex, ws_digest *d) {
    memset(d, 0, sizeof *d);
    return ws_digest_from_hex(hex, d) == WS_OK;
}

/* One engine tensor to digest. */
typedef struct item {
    const ws_tensor *t;
    int rank;
    const wsp_expect *expect; /* NULL for the checksum action */
    unsigned algos;
    ws_digest got;
    ws_err rc;
    ws_error err;
} item;

typedef struct work {
    item *items;
    size_t *order; /* largest first, so that the last item to start is a small one */
    ws_canon canon;
    const ws_fastkey *key;
} work;

static void digest_one(void *arg, size_t k) {
    work *w = arg;
    item *it = &w->items[w->order[k]];
    /* the per-tensor rule on the engine's own name (its scales end as the HF ones do) */
    ws_canon canon = ws_canon_for_tensor(it->t->name, it->t->dtype, w->canon);
    it->rc = ws_digest_tensor(it->t, canon, it->algos, w->key, &it->got, NULL, &it->err);
}

typedef struct sized {
    uint64_t bytes;
    size_t i;
} sized;

static int larger_first(const void *a, const void *b) {
    const sized *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes > y->bytes ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Digest every item on the checker's threads; the first failure wins. */
static ws_err digest_all(const ws_checker *c, ws_canon canon, item *items, size_t n, ws_error *err) {
    if (n == 0) return WS_OK;
    work w = {.items = items, .canon = canon, .key = c->key};
    sized *s = malloc(n * sizeof *s);
    w.order = malloc(n * sizeof *w.order);
    if (!s || !w.order) {
        free(s);
        free(w.order);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    for (size_t i = 0; i < n; i++) s[i] = (sized){items[i].t->nbytes, i};
    qsort(s, n, sizeof *s, larger_first);
    for (size_t i = 0; i < n; i++) w.order[i] = s[i].i;
    free(s);
    wsi_parallel_for(n, c->threads, digest_one, &w);
    free(w.order);
    for (size_t i = 0; i < n; i++)
        if (items[i].rc != WS_OK) {
            if (err) *err = items[i].err;
            return items[i].rc;
        }
    return WS_OK;
}

static void hex_of(const ws_digest *d, unsigned algo, char out[65]) {
    if (algo == WS_ALGO_SHA256) ws_sha256_hex(d->sha256, out);
    else ws_fast_hex(&d->fast, out);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* SHA-256 over name || hex for every entry of an object, in name order (as SGLang's
 * per_gpu_checksum). */
bool wsp_per_gpu_checksum(json_t *sums, char out[65]) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    const char **keys = NULL;
    size_t n = json_object_size(sums), i = 0;
    if (ok && n && !(keys = malloc(n * sizeof *keys))) ok = false;
    const char *k;
    json_t *v;
    if (ok) json_object_foreach(sums, k, v) keys[i++] = k;
    if (ok && n) qsort(keys, n, sizeof *keys, cmp_str);
    for (i = 0; ok && i < n; i++) {
        const char *h = json_string_value(json_object_get(sums, keys[i]));
        ok = EVP_DigestUpdate(ctx, keys[i], strlen(keys[i])) == 1 &&
             EVP_DigestUpdate(ctx, h, strlen(h)) == 1;
    }
    uint8_t md[32];
    unsigned int len = 0;
    ok = ok && EVP_DigestFinal_ex(ctx, md, &len) == 1 && len == 32;
    if (ok) ws_sha256_hex(md, out);
    free(keys);
    EVP_MD_CTX_free(ctx);
    return ok;
}

json_t *wsp_parallelism_info(const ws_layout *l, int g, bool with_role) {
    int n = ws_layout_rank_count(l), tp = ws_layout_tp(l);
    int pp = (int)ws_layout_parallel(l, WS_PAR_PP);
    if (pp < 1) pp = 1;
    int dp = n / (tp * pp); /* data-parallel copies of a stage: megatron's ep, else 1 */
    /* SGLang DP attention: its weight checker reports dp_rank = the attention-DP rank (the DP
     * controller's tp_rank / attn_tp_size) and dp_size = attn_dp_size */
    long adp = ws_layout_parallel(l, WS_PAR_ATTN_DP);
    int dp_rank = dp > 1 ? (g / tp) % dp : 0;
    if (adp > 1) {
        dp = (int)adp;
        dp_rank = ws_layout_rank_coord(l, g, WS_PAR_ATTN_DP);
    }
    json_t *o = json_object(); /* keys in SGLang's order */
    if (o && with_role) json_object_set_new(o, "role", json_string("target"));
    const char *keys[] = {"tp_rank", "tp_size", "dp_rank", "dp_size", "pp_rank", "pp_size", "rank",
                          "size"};
    int vals[] = {ws_layout_rank_coord(l, g, WS_PAR_TP), tp, dp_rank, dp,
                  ws_layout_rank_coord(l, g, WS_PAR_PP), pp, g, n};
    for (size_t i = 0; o && i < sizeof keys / sizeof *keys; i++)
        if (json_object_set_new(o, keys[i], json_integer(vals[i])) != 0) {
            json_decref(o);
            o = NULL;
        }
    return o;
}

ws_err wsp_rank_checksums(const ws_checker *c, const ws_dump *d, ws_canon canon, unsigned algos,
                          ws_digest *const *known, json_t **out, ws_error *err) {
    *out = NULL;
    int tp = ws_layout_rank_count(c->l); /* global ranks: tp x pp (x ep for megatron) */
    size_t n = 0;
    for (int r = 0; r < tp; r++) n += ws_ckpt_count(ws_dump_rank(d, r));
    item *items = calloc(n + 1, sizeof *items);
    if (!items) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    size_t k = 0, m = 0;
    item **todo = calloc(n + 1, sizeof *todo);
    if (!todo) {
        free(items);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    for (int r = 0; r < tp; r++) {
        const ws_ckpt *ck = ws_dump_rank(d, r);
        for (size_t i = 0; i < ws_ckpt_count(ck); i++) {
            items[k] = (item){.t = ws_ckpt_tensor(ck, i), .rank = r, .algos = algos};
            if (known && known[r] && known[r][i].algos == algos) items[k].got = known[r][i];
            else todo[m++] = &items[k];
            k++;
        }
    }
    /* what the one pass over the dump did not give (tensors no layout tensor binds) */
    item *rest = calloc(m + 1, sizeof *rest);
    ws_err rc = rest ? WS_OK : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; rc == WS_OK && i < m; i++) rest[i] = *todo[i];
    if (rc == WS_OK) rc = digest_all(c, canon, rest, m, err);
    for (size_t i = 0; rc == WS_OK && i < m; i++) todo[i]->got = rest[i].got;
    free(rest);
    free(todo);
    json_t *ranks = json_array();
    unsigned primary = algos & WS_ALGO_SHA256 ? WS_ALGO_SHA256 : WS_ALGO_FAST;
    bool both = (algos & WS_ALGO_SHA256) && (algos & WS_ALGO_FAST);
    k = 0;
    for (int r = 0; rc == WS_OK && r < tp; r++) {
        json_t *sums = json_object(), *fast = both ? json_object() : NULL;
        char hex[65];
        for (; k < n && items[k].rank == r; k++) {
            hex_of(&items[k].got, primary, hex);
            json_object_set_new(sums, items[k].t->name, json_string(hex));
            if (fast) {
                hex_of(&items[k].got, WS_ALGO_FAST, hex);
                json_object_set_new(fast, items[k].t->name, json_string(hex));
            }
        }
        json_t *info = wsp_parallelism_info(c->l, r, false);
        json_t *o = json_object();
        if (!wsp_per_gpu_checksum(sums, hex)) rc = wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "SHA-256 failed");
        json_object_set_new(o, "checksums", sums);
        if (fast) json_object_set_new(o, "fast_checksums", fast);
        json_object_set_new(o, "per_gpu_checksum", json_string(hex));
        json_object_set_new(o, "parallelism_info", info);
        json_object_set_new(o, "file", json_boolean(ws_dump_rank(d, r) != NULL));
        if (json_array_append_new(ranks, o) != 0) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    free(items);
    if (rc != WS_OK || !ranks) {
        json_decref(ranks);
        return rc != WS_OK ? rc : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    *out = ranks;
    return WS_OK;
}

/* Index of t within its checkpoint (they are one array in name order). */
static size_t index_in(const ws_ckpt *ck, const ws_tensor *t) {
    const ws_tensor *first = ws_ckpt_tensor(ck, 0);
    size_t i = (size_t)(t - first);
    if (i < ws_ckpt_count(ck) && ws_ckpt_tensor(ck, i) == t) return i;
    for (i = 0; i < ws_ckpt_count(ck); i++)
        if (ws_ckpt_tensor(ck, i) == t) break;
    return i;
}

static ws_err add(ws_report *r, ws_status s, const char *tensor, const char *local, int rank,
                  ws_error *err, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static ws_err add(ws_report *r, ws_status s, const char *tensor, const char *local, int rank,
                  ws_error *err, const char *fmt, ...) {
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return wsi_report_add(r, s, tensor, local, rank, -1, -1, detail, err);
}

ws_err wsp_compare_ranks(const ws_checker *c, const ws_dump *d, ws_canon canon,
                         const wsp_rank_expect *exp, size_t n, ws_report *r, ws_error *err) {
    int tp = ws_layout_rank_count(c->l); /* global ranks: tp x pp (x ep for megatron) */
    ws_err rc = WS_OK;
    size_t total = 0;
    for (int k = 0; k < tp; k++)
        if ((size_t)k < n) total += exp[k].n;
    item *items = calloc(total + 1, sizeof *items);
    if (!items) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    size_t m = 0;
    /* Resolve every listed name to the tensor its rank holds; say what cannot be. */
    for (int k = 0; rc == WS_OK && k < tp; k++) {
        size_t idx = (size_t)k; /* the list is indexed by global rank (= tp_rank when pp = 1;
                                 * rank_offset is no index) */
        const ws_ckpt *ck = ws_dump_rank(d, k);
        if (idx >= n) {
            rc = add(r, WS_MISSING, "", NULL, k, err,
                     "the request holds no checksums for rank %d (a list of %zu per-rank dicts, "
                     "indexed by global rank)",
                     k, n);
            continue;
        }
        if (!ck) {
            rc = add(r, WS_MISSING, "", NULL, k, err,
                     "no model-rank-%d-part-*.safetensors file: rank %d's tensors are missing", k, k);
            continue;
        }
        for (size_t i = 0; rc == WS_OK && i < exp[idx].n; i++) {
            const wsp_expect *e = &exp[idx].items[i];
            const ws_tensor *t = ws_ckpt_find(ck, e->name);
            if (!t) { /* an engine's alias of a tied tensor names its twin */
                long li = ws_layout_find_local(c->l, k, e->name);
                if (li >= 0) t = ws_ckpt_find(ck, ws_layout_local(c->l, (size_t)li)->name);
            }
            if (!t)
                rc = add(r, WS_MISSING, e->name, e->name, k, err,
                         "rank %d's files hold no tensor of this name", k);
            else
                items[m++] = (item){.t = t, .rank = k, .expect = e, .algos = e->digest.algos};
        }
    }
    if (rc == WS_OK) rc = digest_all(c, canon, items, m, err);
    /* Verdicts, in request order per rank; then what each rank holds that nobody listed. */
    size_t j = 0;
    for (int k = 0; rc == WS_OK && k < tp; k++) {
        const ws_ckpt *ck = ws_dump_rank(d, k);
        bool *seen = calloc(ws_ckpt_count(ck) + 1, 1);
        if (!seen) {
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
            break;
        }
        for (; j < m && items[j].rank == k && rc == WS_OK; j++) {
            const item *it = &items[j];
            seen[index_in(ck, it->t)] = true;
            unsigned a = it->expect->digest.algos;
            bool same = a == WS_ALGO_SHA256
                            ? memcmp(it->got.sha256, it->expect->digest.sha256, 32) == 0
                            : memcmp(&it->got.fast, &it->expect->digest.fast, sizeof it->got.fast) == 0;
            if (same) {
                ws_report_count_match(r, 1);
                continue;
            }
            char he[65], hg[65];
            hex_of(&it->expect->digest, a, he);
            hex_of(&it->got, a, hg);
            rc = add(r, WS_MISMATCH, it->expect->name, it->t->name, k, err,
                     "%s %s expected, %s found on rank %d (%s, canonical %s)",
                     a == WS_ALGO_SHA256 ? "sha256" : "fast digest", he, hg, k,
                     ws_dtype_name(it->t->dtype), ws_canon_name(canon));
        }
        for (size_t i = 0; rc == WS_OK && ck && (size_t)k < n && i < ws_ckpt_count(ck); i++)
            if (!seen[i])
                rc = add(r, WS_UNEXPECTED, ws_ckpt_tensor(ck, i)->name, ws_ckpt_tensor(ck, i)->name,
                         k, err, "rank %d holds it but the request lists no digest for it", k);
        free(seen);
    }
    for (int k = tp; rc == WS_OK && k < ws_dump_rank_count(d); k++)
        if (ws_dump_rank(d, k))
            rc = add(r, WS_UNEXPECTED, "", NULL, k, err,
                     "a file for rank %d, but the layout has only %d ranks", k, tp);
    free(items);
    return rc;
}
