/*
 * A checkpoint: one or more safetensors files mapped read-only (PROT_READ: we never write to
 * the weights we check), presented as one name-sorted list of tensors. Opens a single file, a
 * *.safetensors.index.json (whose weight_map must agree exactly with the files' contents), or a
 * directory holding either.
 */
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct mapped_file {
    char *path;
    void *map;      /* NULL for an empty mapping or a memory image */
    size_t len;
    bool owned_map; /* munmap on free */
    int fd;         /* kept open for the file sources (pread, size checks); -1 for memory */
    wsi_st_header hdr;
} mapped_file;

struct ws_ckpt {
    mapped_file *files;
    size_t nfiles;
    ws_tensor *tensors; /* sorted by name */
    size_t ntensors;
};

void ws_ckpt_free(ws_ckpt *c) {
    if (!c) return;
    for (size_t i = 0; i < c->nfiles; i++) {
        mapped_file *f = &c->files[i];
        if (f->owned_map && f->map) munmap(f->map, f->len);
        if (f->fd >= 0) close(f->fd);
        wsi_st_header_free(&f->hdr);
        free(f->path);
    }
    free(c->files);
    free(c->tensors);
    free(c);
}

size_t ws_ckpt_count(const ws_ckpt *c) { return c ? c->ntensors : 0; }
const ws_tensor *ws_ckpt_tensor(const ws_ckpt *c, size_t i) {
    return c && i < c->ntensors ? &c->tensors[i] : NULL;
}
/* Drop this process's mapping of pages already read, so resident memory stays bounded by the
 * work in flight rather than growing with the checkpoint. Only for our own read-only file
 * mappings: the pages stay in the page cache and fault back in if read again. */
void wsi_ckpt_release(const ws_ckpt *c, const void *p, size_t n) {
    bool mapped = false;
    for (size_t i = 0; i < c->nfiles && !mapped; i++)
        mapped = c->files[i].owned_map && (const uint8_t *)p >= (const uint8_t *)c->files[i].map &&
                 (const uint8_t *)p + n <= (const uint8_t *)c->files[i].map + c->files[i].len;
    if (!mapped) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    /* whole pages only; a page this range shares with its neighbours is left to the caller's
     * next call (which starts where this one ended) */
    uintptr_t a = (uintptr_t)p & ~(page - 1), b = ((uintptr_t)p + n) & ~(page - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

bool wsi_ckpt_file_at(const ws_ckpt *c, size_t i, wsi_ckpt_file *out) {
    if (!c || i >= c->nfiles) return false;
    const mapped_file *f = &c->files[i];
    out->path = f->path;
    out->fd = f->fd;
    out->map = f->map;
    out->len = f->len;
    return true;
}

bool wsi_ckpt_file_of(const ws_ckpt *c, const ws_tensor *t, wsi_ckpt_file *out) {
    for (size_t i = 0; c && i < c->nfiles; i++)
        if (c->files[i].path == t->file) return wsi_ckpt_file_at(c, i, out);
    return false;
}

const char *ws_ckpt_metadata(const ws_ckpt *c) {
    return c && c->nfiles ? c->files[0].hdr.metadata : NULL;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const ws_tensor *)a)->name, ((const ws_tensor *)b)->name);
}

const ws_tensor *ws_ckpt_find(const ws_ckpt *c, const char *name) {
    if (!c || !name) return NULL;
    ws_tensor key = {.name = name};
    return bsearch(&key, c->tensors, c->ntensors, sizeof key, cmp_tensor_name);
}

static ws_err map_file(const char *path, mapped_file *f, ws_error *err) {
    /* O_NONBLOCK: opening a FIFO without it blocks until a writer appears (forever, under
     * serve); it changes nothing for a regular file, and anything else is refused below */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return wsi_fail(err, WS_ERR_IO, path, NULL, -1, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return wsi_fail(err, WS_ERR_IO, path, NULL, -1,
                        "not a regular file (%s): refused without reading it",
                        S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISCHR(st.st_mode) ? "a device"
                        : S_ISDIR(st.st_mode) ? "a directory" : S_ISSOCK(st.st_mode) ? "a socket"
                                                                : "not a plain file");
    }
    f->len = (size_t)st.st_size;
    f->map = NULL;
    f->fd = -1;
    if (f->len > 0) {
        f->map = mmap(NULL, f->len, PROT_READ, MAP_SHARED, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            close(fd);
            return wsi_fail(err, WS_ERR_IO, path, NULL, -1, "mmap failed: %s", strerror(errno));
        }
        f->owned_map = true;
        madvise(f->map, f->len, MADV_SEQUENTIAL);
    }
    f->fd = fd; /* closed by ws_ckpt_free */
    return WS_OK;
}

/* Parse f's header and append its tensors to c (duplicates checked later). */
static ws_err add_tensors(ws_ckpt *c, mapped_file *f, ws_error *err) {
    ws_err rc = wsi_st_parse_header(f->map ? f->map : "", f->len, f->path, &f->hdr, err);
    if (rc != WS_OK) return rc;
    ws_tensor *grown = realloc(c->tensors, (c->ntensors + f->hdr.count + 1) * sizeof *grown);
    if (!grown) return wsi_fail(err, WS_ERR_NOMEM, f->path, NULL, -1, "out of memory");
    c->tensors = grown;
    for (size_t i = 0; i < f->hdr.count; i++) {
        const wsi_st_entry *e = &f->hdr.entries[i];
        ws_tensor *t = &c->tensors[c->ntensors++];
        memset(t, 0, sizeof *t);
        t->name = e->name;
        t->dtype = e->dtype;
        t->ndim = e->ndim;
        memcpy(t->shape, e->shape, sizeof t->shape);
        t->numel = e->numel;
        t->nbytes = e->end - e->begin;
        t->file = f->path;
        t->file_offset = f->hdr.data_offset + e->begin;
        t->data = (const uint8_t *)f->map + t->file_offset;
    }
    return WS_OK;
}

static ws_err finish(ws_ckpt *c, ws_error *err) {
    if (c->ntensors) qsort(c->tensors, c->ntensors, sizeof *c->tensors, cmp_tensor_name);
    for (size_t i = 1; i < c->ntensors; i++)
        if (strcmp(c->tensors[i - 1].name, c->tensors[i].name) == 0)
            return wsi_fail(err, WS_ERR_FORMAT, c->tensors[i].file, c->tensors[i].name, -1,
                            "tensor also present in %s", c->tensors[i - 1].file);
    return WS_OK;
}

ws_err ws_ckpt_open_files(const char *const *paths, size_t n, ws_ckpt **out, ws_error *err) {
    *out = NULL;
    ws_ckpt *c = calloc(1, sizeof *c);
    if (!c || !(c->files = calloc(n ? n : 1, sizeof *c->files))) {
        free(c);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    ws_err rc = WS_OK;
    for (size_t i = 0; i < n && rc == WS_OK; i++) {
        mapped_file *f = &c->files[c->nfiles];
        f->fd = -1;
        if (!(f->path = wsi_strdup(paths[i]))) {
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
            break;
        }
        c->nfiles++;
        rc = map_file(paths[i], f, err);
        if (rc == WS_OK) rc = add_tensors(c, f, err);
    }
    if (rc == WS_OK) rc = finish(c, err);
    if (rc != WS_OK) {
        ws_ckpt_free(c);
        return rc;
    }
    *out = c;
    return WS_OK;
}

ws_err ws_ckpt_from_memory(const void *buf, size_t len, const char *label, ws_ckpt **out,
                           ws_error *err) {
    *out = NULL;
    ws_ckpt *c = calloc(1, sizeof *c);
    if (!c || !(c->files = calloc(1, sizeof *c->files))) {
        free(c);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    c->nfiles = 1;
    mapped_file *f = &c->files[0];
    f->fd = -1;
    f->path = wsi_strdup(label ? label : "<memory>");
    f->map = (void *)buf; /* read only; not owned */
    f->len = len;
    ws_err rc = f->path ? add_tensors(c, f, err)
                        : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    if (rc == WS_OK) rc = finish(c, err);
    if (rc != WS_OK) {
        ws_ckpt_free(c);
        return rc;
    }
    *out = c;
    return WS_OK;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static char *join_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void free_list(char **v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Open an index: every file it names, then check weight_map against the files exactly. */
static ws_err open_index(const char *path, ws_ckpt **out, ws_error *err) {
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return wsi_fail(err, json_error_code(&jerr) == json_error_cannot_open_file ? WS_ERR_IO
                                                                                   : WS_ERR_JSON,
                        path, NULL, jerr.position, "%s", jerr.text);
    json_t *wm = json_object_get(root, "weight_map");
    ws_err rc = WS_OK;
    char **files = NULL;
    size_t nfiles = 0;
    if (!json_is_object(wm)) {
        rc = wsi_fail(err, WS_ERR_JSON, path, NULL, -1, "no \"weight_map\" object");
        goto done;
    }
    files = calloc(json_object_size(wm) + 1, sizeof *files);
    if (!files) {
        rc = wsi_fail(err, WS_ERR_NOMEM, path, NULL, -1, "out of memory");
        goto done;
    }
    char *dirbuf = wsi_strdup(path);
    if (!dirbuf) {
        rc = wsi_fail(err, WS_ERR_NOMEM, path, NULL, -1, "out of memory");
        goto done;
    }
    const char *dir = dirname(dirbuf);
    const char *name;
    json_t *v;
    json_object_foreach(wm, name, v) {
        const char *fn = json_string_value(v);
        if (!fn || !*fn || strchr(fn, '/') || strcmp(fn, "..") == 0) {
            rc = wsi_fail(err, WS_ERR_JSON, path, name, -1,
                          "weight_map value must be a plain file name");
            break;
        }
        char *full = join_path(dir, fn);
        bool seen = false;
        for (size_t i = 0; i < nfiles && full; i++)
            if (strcmp(files[i], full) == 0) seen = true;
        if (!full) rc = wsi_fail(err, WS_ERR_NOMEM, path, NULL, -1, "out of memory");
        else if (seen) free(full);
        else files[nfiles++] = full;
        if (rc != WS_OK) break;
    }
    free(dirbuf);
    if (rc != WS_OK) goto done;
    qsort(files, nfiles, sizeof *files, cmp_str);
    rc = ws_ckpt_open_files((const char *const *)files, nfiles, out, err);
    if (rc != WS_OK) goto done;
    /* The index must describe the files exactly: same names, each in the file it names. */
    json_object_foreach(wm, name, v) {
        const ws_tensor *t = ws_ckpt_find(*out, name);
        if (!t) {
            rc = wsi_fail(err, WS_ERR_FORMAT, path, name, -1, "listed in the index but not in %s",
                          json_string_value(v));
            break;
        }
        if (!ends_with(t->file, json_string_value(v))) {
            rc = wsi_fail(err, WS_ERR_FORMAT, path, name, -1, "index says %s but it is in %s",
                          json_string_value(v), t->file);
            break;
        }
    }
    if (rc == WS_OK && ws_ckpt_count(*out) != json_object_size(wm)) {
        for (size_t i = 0; i < ws_ckpt_count(*out); i++)
            if (!json_object_get(wm, (*out)->tensors[i].name)) {
                rc = wsi_fail(err, WS_ERR_FORMAT, (*out)->tensors[i].file, (*out)->tensors[i].name,
                              -1, "tensor not listed in the index %s", path);
                break;
            }
    }
    if (rc != WS_OK) {
        ws_ckpt_free(*out);
        *out = NULL;
    }
done:
    if (files) free_list(files, nfiles);
    json_decref(root);
    return rc;
}

static ws_err open_dir(const char *path, ws_ckpt **out, ws_error *err) {
    DIR *d = opendir(path);
    if (!d) return wsi_fail(err, WS_ERR_IO, path, NULL, -1, "cannot open: %s", strerror(errno));
    char **files = NULL, *index = NULL;
    size_t n = 0, cap = 0;
    ws_err rc = WS_OK;
    struct dirent *de;
    while ((de = readdir(d)) && rc == WS_OK) {
        if (de->d_name[0] == '.') continue;
        if (ends_with(de->d_name, ".safetensors.index.json")) {
            if (index) {
                rc = wsi_fail(err, WS_ERR_FORMAT, path, NULL, -1,
                              "more than one *.safetensors.index.json");
                break;
            }
            if (!(index = join_path(path, de->d_name)))
                rc = wsi_fail(err, WS_ERR_NOMEM, path, NULL, -1, "out of memory");
        } else if (ends_with(de->d_name, ".safetensors")) {
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                char **g = realloc(files, cap * sizeof *g);
                if (!g) {
                    rc = wsi_fail(err, WS_ERR_NOMEM, path, NULL, -1, "out of memory");
                    break;
                }
                files = g;
            }
            if (!(files[n] = join_path(path, de->d_name))) {
                rc = wsi_fail(err, WS_ERR_NOMEM, path, NULL, -1, "out of memory");
                break;
            }
            n++;
        }
    }
    closedir(d);
    if (rc == WS_OK) {
        if (index) rc = open_index(index, out, err);
        else if (n == 0)
            rc = wsi_fail(err, WS_ERR_NOTFOUND, path, NULL, -1,
                          "no *.safetensors files and no index in this directory");
        else {
            qsort(files, n, sizeof *files, cmp_str);
            rc = ws_ckpt_open_files((const char *const *)files, n, out, err);
        }
    }
    free(index);
    free_list(files, n);
    return rc;
}

ws_err ws_ckpt_open(const char *path, ws_ckpt **out, ws_error *err) {
    if (!path || !out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return wsi_fail(err, WS_ERR_IO, path, NULL, -1, "cannot open: %s", strerror(errno));
    if (S_ISDIR(st.st_mode)) return open_dir(path, out, err);
    if (ends_with(path, ".json")) return open_index(path, out, err);
    return ws_ckpt_open_files(&path, 1, out, err);
}
