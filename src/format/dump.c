/*
 * Engine dumps in the sharded_state format that vLLM and SGLang save and load: one or more
 * model-rank-{rank}-part-{part}.safetensors files per rank, engine tensor names, each rank's
 * final local tensors. weightsum adds weightsum-layout.json ({"family", "tp"}, and "ep", "pp" when above 1) and config.json
 * when it writes one (weightsum shard), so verify can find the layout by itself.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_RANKS 4096

struct ws_dump {
    int nranks;
    ws_ckpt **ranks; /* NULL where a rank has no file */
    char family[32];
    int tp;          /* from weightsum-layout.json, 0 when absent */
    int ep, pp;      /* from weightsum-layout.json ("ep", "pp"), 0 when absent */
};

/* "model-rank-R-part-P.safetensors" -> R, P; false for other names. */
static bool parse_name(const char *s, long *rank, long *part) {
    int n = 0;
    if (sscanf(s, "model-rank-%ld-part-%ld.safetensors%n", rank, part, &n) != 2) return false;
    return s[n] == 0 && *rank >= 0 && *part >= 0;
}

int ws_dump_detect(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *de;
    int found = 0;
    long r, p;
    while (!found && (de = readdir(d))) found = parse_name(de->d_name, &r, &p);
    closedir(d);
    return found;
}

void ws_dump_free(ws_dump *d) {
    if (!d) return;
    for (int r = 0; r < d->nranks; r++) ws_ckpt_free(d->ranks[r]);
    free(d->ranks);
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

typedef struct entry {
    long rank, part;
    char *path;
} entry;

static int cmp_entry(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    return x->part < y->part ? -1 : x->part > y->part;
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
    while ((de = readdir(dh)) && rc == WS_OK) {
        long r, p;
        if (!parse_name(de->d_name, &r, &p)) continue;
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
        ents[n].part = p;
        n++;
    }
    closedir(dh);
    ws_dump *d = NULL;
    if (rc == WS_OK && n == 0)
        rc = wsi_fail(err, WS_ERR_NOTFOUND, dir, NULL, -1,
                      "no model-rank-{rank}-part-{part}.safetensors files");
    if (rc == WS_OK) {
        qsort(ents, n, sizeof *ents, cmp_entry);
        d = calloc(1, sizeof *d);
        if (d) {
            d->nranks = (int)ents[n - 1].rank + 1;
            d->ranks = calloc((size_t)d->nranks, sizeof *d->ranks);
        }
        if (!d || !d->ranks) rc = wsi_fail(err, WS_ERR_NOMEM, dir, NULL, -1, "out of memory");
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
    if (rc != WS_OK) {
        ws_dump_free(d);
        return rc;
    }
    *out = d;
    return WS_OK;
}
