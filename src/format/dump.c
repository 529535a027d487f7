/*
 * Engine dumps in the sharded_state format that vLLM and SGLang save and load: one or more
 * model-rank-{rank}-part-{part}.safetensors files per rank, engine tensor names, each rank's
 * final local tensors. weightsum adds weightsum-layout.json ({"family", "tp"}, and "ep", "pp" when above 1,
 * "expert_map" when the layout has one) and config.json
 * when it writes one (weightsum shard), so verify can find the layout by itself.
 */
#include "internal.h"
#include "layout_internal.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define MAX_RANKS 4096

struct ws_dump {
    int nranks;
    ws_ckpt **ranks; /* NULL where a rank has no file */
    char **ignored;  /* names that look like rank files but that the engines never load */
    size_t nignored;
    char family[32];
    int tp;          /* from weightsum-layout.json, 0 when absent */
    int ep, pp;      /* from weightsum-layout.json ("ep", "pp"), 0 when absent */
    /* "attn_dp", "dp_lm_head", "moe_dense_tp", "fused_shared_experts", or 0 */
    long attn_dp, dp_lm_head, moe_dense_tp, fused_shared;
    int32_t *emap;   /* weightsum-layout.json's "expert_map" (rows x physical), or NULL */
    size_t emap_rows, emap_physical;
};

/* A rank file exactly as vLLM's and SGLang's ShardedStateLoader find rank r's files:
 * glob("model-rank-{r}-part-*.safetensors") with r formatted by Python ("%d": no sign, no
 * leading zero), '*' any run of characters, the empty one too. So "model-rank-00-part-0" is
 * no rank file and "model-rank-0-part-x" one of rank 0, part "x". *part points into s. */
static bool parse_name(const char *s, long *rank, const char **part, size_t *part_len) {
    static const char head[] = "model-rank-", mid[] = "-part-", tail[] = ".safetensors";
    if (strncmp(s, head, sizeof head - 1) != 0) return false;
    const char *p = s + sizeof head - 1, *q = p;
    while (*q >= '0' && *q <= '9') q++;
    size_t digits = (size_t)(q - p);
    if (digits == 0 || (digits > 1 && p[0] == '0')) return false;
    if (strncmp(q, mid, sizeof mid - 1) != 0) return false;
    const char *pt = q + sizeof mid - 1;
    size_t rest = strlen(pt);
    if (rest < sizeof tail - 1 || strcmp(pt + rest - (sizeof tail - 1), tail) != 0) return false;
    /* a rank this long is above any limit: keep it so, without overflow */
    *rank = digits > 9 ? LONG_MAX : strtol(p, NULL, 10);
    *part = pt;
    *part_len = rest - (sizeof tail - 1);
    return true;
}

/* A name a person (or a script) meant as a rank file, that the engines' glob never matches:
 * it starts like one, in any case ("model-rank-00-part-0.safetensors", "model-rank-1.safetensors",
 * "model-rank-0-part-0.safetensors.tmp"). */
static bool looks_like_rank_file(const char *s) {
    long r;
    const char *pt;
    size_t pl;
    return strncasecmp(s, "model-rank-", 11) == 0 && !parse_name(s, &r, &pt, &pl);
}

int ws_dump_detect(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *de;
    int found = 0;
    long r;
    const char *pt;
    size_t pl;
    /* a look-alike counts: opening the directory as a dump then says what the engines would
     * not load, where hashing it as a plain checkpoint would check what no engine holds */
    while (!found && (de = readdir(d)))
        found = parse_name(de->d_name, &r, &pt, &pl) || looks_like_rank_file(de->d_name);
    closedir(d);
    return found;
}

void ws_dump_free(ws_dump *d) {
    if (!d) return;
    for (int r = 0; r < d->nranks; r++) ws_ckpt_free(d->ranks[r]);
    for (size_t i = 0; i < d->nignored; i++) free(d->ignored[i]);
    free(d->ignored);
    free(d->ranks);
    free(d->emap);
    free(d);
}

int ws_dump_rank_count(const ws_dump *d) { return d ? d->nranks : 0; }
const ws_ckpt *ws_dump_rank(const ws_dump *d, int rank) {
    return d && rank >= 0 && rank < d->nranks ? d->ranks[rank] : NULL;
}
const char *ws_dump_family(const ws_dump *d) { return d && d->family[0] ? d->family : NULL; }
int ws_dump_tp(const ws_dump *d) { return d ? d->tp : 0; }
int ws_dump_ep(const ws_dump *d) { return d ? d->ep : 0; }
int ws_dump_pp(const ws_dump *d) { return d ? d->pp : 0; }
long ws_dump_parallel(const ws_dump *d, ws_par_key key) {
    if (!d) return 0;
    switch (key) {
    case WS_PAR_ATTN_DP: return d->attn_dp;
    case WS_PAR_DP_LM_HEAD: return d->dp_lm_head;
    case WS_PAR_MOE_DENSE_TP: return d->moe_dense_tp;
    case WS_PAR_FUSED_SHARED: return d->fused_shared;
    default: return 0;
    }
}
const int32_t *ws_dump_expert_map(const ws_dump *d, size_t *rows, size_t *physical) {
    if (rows) *rows = d ? d->emap_rows : 0;
    if (physical) *physical = d ? d->emap_physical : 0;
    return d ? d->emap : NULL;
}
size_t ws_dump_ignored_count(const ws_dump *d) { return d ? d->nignored : 0; }
const char *ws_dump_ignored(const ws_dump *d, size_t i) {
    return d && i < d->nignored ? d->ignored[i] : NULL;
}

typedef struct entry {
    long rank;
    const char *part; /* into path */
    size_t part_len;
    char *path;
} entry;

static bool all_digits(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return n > 0;
}

/* By rank, then part: numbers in numeric order first, then other parts by bytes. */
static int cmp_entry(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    bool nx = all_digits(x->part, x->part_len), ny = all_digits(y->part, y->part_len);
    if (nx != ny) return nx ? -1 : 1;
    if (nx) { /* "007" and "7" both: their value, then their spelling */
        const char *px = x->part, *py = y->part;
        size_t lx = x->part_len, ly = y->part_len;
        while (lx > 1 && *px == '0') px++, lx--;
        while (ly > 1 && *py == '0') py++, ly--;
        if (lx != ly) return lx < ly ? -1 : 1;
        int c = memcmp(px, py, lx);
        if (c) return c;
    }
    size_t m = x->part_len < y->part_len ? x->part_len : y->part_len;
    int c = memcmp(x->part, y->part, m);
    return c ? c : (x->part_len > y->part_len) - (x->part_len < y->part_len);
}

static ws_err note_ignored(ws_dump *d, const char *dir, const char *name, ws_error *err) {
    char **g = realloc(d->ignored, (d->nignored + 1) * sizeof *g);
    if (!g) return wsi_fail(err, WS_ERR_NOMEM, dir, NULL, -1, "out of memory");
    d->ignored = g;
    if (!(g[d->nignored] = wsi_strdup(name)))
        return wsi_fail(err, WS_ERR_NOMEM, dir, NULL, -1, "out of memory");
    d->nignored++;
    return WS_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static ws_err read_hint(ws_dump *d, const char *dir, ws_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/weightsum-layout.json", dir);
    struct stat st;
    if (stat(path, &st) != 0) return WS_OK;
    json_error_t jerr;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    const char *fam = json_string_value(json_object_get(j, "family"));
    json_t *tp = json_object_get(j, "tp");
    ws_err rc = WS_OK;
    if (!j || !fam || strlen(fam) >= sizeof d->family || !json_is_integer(tp) ||
        json_integer_value(tp) < 1 || json_integer_value(tp) > MAX_RANKS)
        rc = wsi_fail(err, WS_ERR_FORMAT, path, NULL, -1,
                      "expected {\"family\": NAME, \"tp\": N} with 1 <= N <= %d", MAX_RANKS);
    else {
        snprintf(d->family, sizeof d->family, "%s", fam);
        d->tp = (int)json_integer_value(tp);
        /* optional "ep" / "pp" (written when either is above 1) */
        static const char *const keys[2] = {"ep", "pp"};
        int *dst[2] = {&d->ep, &d->pp};
        for (int k = 0; k < 2 && rc == WS_OK; k++) {
            json_t *v = json_object_get(j, keys[k]);
            if (!v) continue;
            if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                json_integer_value(v) > MAX_RANKS)
                rc = wsi_fail(err, WS_ERR_FORMAT, path, NULL, -1,
                              "\"%s\" must be an integer from 1 to %d", keys[k], MAX_RANKS);
            else
                *dst[k] = (int)json_integer_value(v);
        }
        /* optional SGLang options (written when not the default) */
        static const char *const opt[4] = {"attn_dp", "dp_lm_head", "moe_dense_tp",
                                           "fused_shared_experts"};
        static const long hi[4] = {MAX_RANKS, 1, MAX_RANKS, 1};
        long *odst[4] = {&d->attn_dp, &d->dp_lm_head, &d->moe_dense_tp, &d->fused_shared};
        for (int k = 0; k < 4 && rc == WS_OK; k++) {
            json_t *v = json_object_get(j, opt[k]);
            if (!v) continue;
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > hi[k])
                rc = wsi_fail(err, WS_ERR_FORMAT, path, NULL, -1,
                              "\"%s\" must be an integer from 0 to %ld", opt[k], hi[k]);
            else
                *odst[k] = (long)json_integer_value(v);
        }
        /* optional "expert_map" (written when the layout has one) */
        json_t *em = json_object_get(j, "expert_map");
        if (em && rc == WS_OK)
            rc = wsl_expert_map_from_json(em, path, &d->emap, &d->emap_rows, &d->emap_physical,
                                          err);
    }
    json_decref(j);
    return rc;
}

ws_err ws_dump_open(const char *dir, ws_dump **out, ws_error *err) {
    *out = NULL;
    DIR *dh = opendir(dir);
    if (!dh) return wsi_fail(err, WS_ERR_IO, dir, NULL, -1, "cannot open: %s", strerror(errno));
    entry *ents = NULL;
    size_t n = 0, cap = 0;
    ws_err rc = WS_OK;
    struct dirent *de;
    ws_dump lookalikes = {0}; /* names the engines would ignore, kept for the warning */
    while ((de = readdir(dh)) && rc == WS_OK) {
        long r;
        const char *pt;
        size_t pl;
        if (!parse_name(de->d_name, &r, &pt, &pl)) {
            if (looks_like_rank_file(de->d_name))
                rc = note_ignored(&lookalikes, dir, de->d_name, err);
            continue;
        }
        if (r >= MAX_RANKS) {
            rc = wsi_fail(err, WS_ERR_LIMIT, dir, NULL, -1, "%s: rank above %d", de->d_name,
                          MAX_RANKS - 1);
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            entry *g = realloc(ents, cap * sizeof *g);
            if (!g) {
                rc = wsi_fail(err, WS_ERR_NOMEM, dir, NULL, -1, "out of memory");
                break;
            }
            ents = g;
        }
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        ents[n].path = malloc(len);
        if (!ents[n].path) {
            rc = wsi_fail(err, WS_ERR_NOMEM, dir, NULL, -1, "out of memory");
            break;
        }
        snprintf(ents[n].path, len, "%s/%s", dir, de->d_name);
        ents[n].rank = r;
        ents[n].part = ents[n].path + strlen(dir) + 1 + (size_t)(pt - de->d_name);
        ents[n].part_len = pl;
        n++;
    }
    closedir(dh);
    ws_dump *d = NULL;
    if (rc == WS_OK && n == 0)
        rc = lookalikes.nignored
                 ? wsi_fail(err, WS_ERR_NOTFOUND, dir, NULL, -1,
                            "no rank file as the engines find them (model-rank-{rank}-part-*"
                            ".safetensors, the rank without leading zeros): %s%s looks like "
                            "one but would never be loaded", lookalikes.ignored[0],
                            lookalikes.nignored > 1 ? " (and others)" : "")
                 : wsi_fail(err, WS_ERR_NOTFOUND, dir, NULL, -1,
                            "no model-rank-{rank}-part-{part}.safetensors files");
    if (rc == WS_OK) {
        qsort(ents, n, sizeof *ents, cmp_entry);
        d = calloc(1, sizeof *d);
        if (d) {
            d->nranks = (int)ents[n - 1].rank + 1;
            d->ranks = calloc((size_t)d->nranks, sizeof *d->ranks);
        }
        if (!d || !d->ranks) rc = wsi_fail(err, WS_ERR_NOMEM, dir, NULL, -1, "out of memory");
        if (rc == WS_OK) { /* readdir's order is the file system's: sort for stable output */
            if (lookalikes.nignored)
                qsort(lookalikes.ignored, lookalikes.nignored, sizeof *lookalikes.ignored,
                      cmp_str);
            d->ignored = lookalikes.ignored;
            d->nignored = lookalikes.nignored;
            lookalikes.ignored = NULL;
            lookalikes.nignored = 0;
        }
    }
    for (size_t i = 0; i < n && rc == WS_OK;) {
        size_t j = i;
        while (j < n && ents[j].rank == ents[i].rank) j++;
        const char **paths = malloc((j - i) * sizeof *paths);
        if (!paths) {
            rc = wsi_fail(err, WS_ERR_NOMEM, dir, NULL, -1, "out of memory");
            break;
        }
        for (size_t k = i; k < j; k++) paths[k - i] = ents[k].path;
        rc = ws_ckpt_open_files(paths, j - i, &d->ranks[ents[i].rank], err);
        free(paths);
        i = j;
    }
    if (rc == WS_OK) rc = read_hint(d, dir, err);
    for (size_t i = 0; i < n; i++) free(ents[i].path);
    free(ents);
    for (size_t i = 0; i < lookalikes.nignored; i++) free(lookalikes.ignored[i]);
    free(lookalikes.ignored);
    if (rc != WS_OK) {
        ws_dump_free(d);
        return rc;
    }
    *out = d;
    return WS_OK;
}
