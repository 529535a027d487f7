/*
 * File sources: a dump rank's safetensors files, read by large sequential preads into reused
 * buffers or through the checkpoint's read-only mapping. This is the one place that sets
 * page-cache policy (advise: sequential reads, huge pages for the mapping, so that the
 * kernel's own read-ahead overlaps a cold file's disk reads with the hashing; madvise to map a
 * chunk in one call and to let mapped pages go once read).
 *
 * A file that shrinks while it is read (an engine re-saving its dump in place) must be an
 * error naming it, never SIGBUS. preads simply come back short. The mapping is guarded by
 * fstat: before a chunk of pages is touched, the file must still hold all of it, and mapping
 * the chunk in (MADV_POPULATE_READ) fails rather than faults on a page it lost. A file cut
 * between that and the touch still faults; the library installs no signal handlers, so
 * it records, per thread, the mapped range it is touching (ws_mapped_read_current) and a
 * program that reads through the mapping (the CLI) turns a SIGBUS inside that range into the
 * same one-line error. Library callers get pread unless they ask (ws_set_read_mode).
 */
#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* What WS_READ_DEFAULT means in this process (ws_set_read_mode). */
static atomic_int default_mode = WS_READ_PREAD;

ws_err ws_set_read_mode(int mode, ws_error *err) {
    if (mode == WS_READ_DEFAULT) mode = WS_READ_PREAD;
    if (mode != WS_READ_PREAD && mode != WS_READ_MMAP)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "unknown read mode %d", mode);
    atomic_store(&default_mode, mode);
    return WS_OK;
}

int ws_read_mode(void) { return atomic_load(&default_mode); }

/* The mapped range this thread is touching (ws_mapped_read_current). A SIGBUS handler runs on
 * the faulting thread, between any two of these stores: len is written last when a touch
 * begins and first when it ends, and the handler trusts the rest only while len != 0.
 * Touches nest (a walk of one file whose callback reads another through its mapping: diff's
 * reference inside the dump's walk): each end restores the touch it interrupted. */
static _Thread_local volatile wsi_touch touching;

static void touch_set(const wsi_touch *t) {
    touching.len = 0;
    atomic_signal_fence(memory_order_seq_cst);
    touching.file = t->file;
    touching.tensor = t->tensor;
    touching.begin = t->begin;
    touching.file_offset = t->file_offset;
    atomic_signal_fence(memory_order_seq_cst);
    touching.len = t->len;
    atomic_signal_fence(memory_order_seq_cst);
}

/* The touch in progress (len 0: none). */
static wsi_touch touch_now(void) {
    return (wsi_touch){touching.file, touching.tensor, touching.begin, touching.file_offset,
                       touching.len};
}

/* Record [map_off, map_off + n) of t's mapping as touched; returns the touch it interrupts
 * (pass it to touch_end). */
static wsi_touch touch_begin(const wsi_src_tensor *t, uint64_t map_off, size_t n) {
    wsi_touch prev = touch_now();
    wsi_touch now = {t->file ? t->file : "", t->name ? t->name : "", t->map + map_off,
                     t->file_offset + map_off, n};
    touch_set(&now);
    return prev;
}

static void touch_end(const wsi_touch *prev) { touch_set(prev); }

int ws_mapped_read_current(ws_mapped_read *out) {
    if (!out) return 0;
    size_t len = touching.len;
    atomic_signal_fence(memory_order_seq_cst);
    if (len == 0) return 0; /* none, or one being set: its pages are not touched yet */
    out->file = touching.file;
    out->tensor = touching.tensor;
    out->begin = touching.begin;
    out->len = len;
    out->file_offset = touching.file_offset;
    return 1;
}

ws_err ws_source_dump(const ws_dump *d, int rank, int read_mode, ws_source **out,
                      ws_error *err) {
    if (!d || !out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    const ws_ckpt *c = ws_dump_rank(d, rank);
    if (!c)
        return wsi_fail(err, WS_ERR_NOTFOUND, NULL, NULL, -1,
                        "no model-rank-%d-part-*.safetensors file", rank);
    ws_err rc = wsi_source_ckpt(c, read_mode, out, err);
    if (rc == WS_OK) (*out)->rank = rank;
    return rc;
}

/* The page-cache policy of a walk of c's files, set once per source; true when c has a file
 * (not only memory images). Reads go through the file front to back: pread tells the kernel
 * the reads are sequential (a doubled read-ahead window); the mapping asks for huge pages
 * (MADV_HUGEPAGE), so that a fault on a cold page, the reader's or the read-ahead helper's
 * (read_ahead.h), reads the file in 2 MiB folios, each mapped by one page-table entry. Asking
 * for pages ahead with WILLNEED read them in 4 KiB pages instead: a warm `hash -j 1` after such
 * a read spent 0.26 s in the kernel mapping them, 0.02 s after a huge-page read (the VM,
 * 1.2 GB). Where the kernel gives no huge pages, a fault reads around the page as for any
 * mapping. */
static bool advise(const ws_ckpt *c) {
    wsi_ckpt_file f;
    bool files = false;
    for (size_t i = 0; wsi_ckpt_file_at(c, i, &f); i++) {
        if (f.fd < 0) continue; /* a memory image */
        madvise((void *)f.map, f.len, MADV_HUGEPAGE);
        posix_fadvise(f.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        files = true;
    }
    return files;
}

ws_err wsi_source_ckpt(const ws_ckpt *c, int read_mode, ws_source **out, ws_error *err) {
    *out = NULL;
    if (read_mode == WS_READ_DEFAULT) read_mode = ws_read_mode();
    if (read_mode != WS_READ_PREAD && read_mode != WS_READ_MMAP)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "unknown read mode %d", read_mode);
    ws_source *s = calloc(1, sizeof *s);
    if (!s) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    s->rank = INT32_MAX; /* a file source: takes no buffers */
    s->read_mode = read_mode;
    s->cap = ws_ckpt_count(c) + 1;
    s->t = calloc(s->cap, sizeof *s->t);
    if (!s->t) {
        free(s);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    for (size_t i = 0; i < ws_ckpt_count(c); i++) { /* a checkpoint lists its tensors by name */
        const ws_tensor *t = ws_ckpt_tensor(c, i);
        wsi_src_tensor *st = &s->t[s->n++];
        wsi_ckpt_file f = {0};
        wsi_ckpt_file_of(c, t, &f);
        st->name = t->name;
        st->dtype = t->dtype;
        st->ndim = t->ndim;
        memcpy(st->shape, t->shape, sizeof st->shape);
        st->numel = t->numel;
        st->kind = WSI_SRC_FILE;
        st->data = t->data;
        st->contiguous = true;
        st->file = t->file;
        st->fd = f.fd;
        st->file_offset = t->file_offset;
        st->file_len = f.len;
        st->map = t->data;
        st->ckpt = c;
    }
    if (advise(c)) s->ahead = wsi_read_ahead_new();
    *out = s;
    return WS_OK;
}

static ws_err shrank(const wsi_src_tensor *t, uint64_t size, uint64_t need, ws_error *err) {
    return wsi_fail(err, WS_ERR_IO, t->file, t->name, (int64_t)need,
                    "the file shrank to %llu bytes while being read (changed on disk? %llu "
                    "needed)",
                    (unsigned long long)size, (unsigned long long)need);
}

/* Read exactly n bytes at off into p. */
static ws_err read_at(const wsi_src_tensor *t, uint64_t off, void *p, size_t n, ws_error *err) {
    uint8_t *q = p;
    while (n > 0) {
        ssize_t k = pread(t->fd, q, n, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0)
            return wsi_fail(err, WS_ERR_IO, t->file, t->name, (int64_t)off, "read failed: %s",
                            strerror(errno));
        if (k == 0) {
            struct stat st;
            uint64_t size = fstat(t->fd, &st) == 0 ? (uint64_t)st.st_size : off;
            return shrank(t, size, off + n, err);
        }
        q += k;
        off += (uint64_t)k;
        n -= (size_t)k;
    }
    return WS_OK;
}

/* The mapping may be touched up to byte `end` of the file: it still holds that many bytes. */
static ws_err check_size(const wsi_src_tensor *t, uint64_t end, ws_error *err) {
    if (t->fd < 0) return WS_OK; /* a memory image cannot shrink */
    struct stat st;
    if (fstat(t->fd, &st) != 0)
        return wsi_fail(err, WS_ERR_IO, t->file, t->name, -1, "fstat failed: %s",
                        strerror(errno));
    if ((uint64_t)st.st_size < end) return shrank(t, (uint64_t)st.st_size, end, err);
    return WS_OK;
}

/* The reader of t goes on from byte `pos` of its file: the helper reads ahead of it. */
static void hint(const ws_source *s, const wsi_src_tensor *t, uint64_t pos) {
    if (s->ahead && t->fd >= 0)
        wsi_read_ahead_hint(s->ahead, t->map - t->file_offset, t->file_len, pos);
}

ws_err wsi_ckpt_touch_begin(const ws_ckpt *c, const ws_tensor *t, uint64_t off, uint64_t n,
                           wsi_touch *prev, ws_error *err) {
    *prev = touch_now();
    wsi_ckpt_file f = {0};
    if (!c || !t || n == 0 || !wsi_ckpt_file_of(c, t, &f) || f.fd < 0) return WS_OK;
    wsi_src_tensor st = {.name = t->name, .file = t->file, .fd = f.fd,
                         .file_offset = t->file_offset, .map = t->data};
    ws_err rc = check_size(&st, t->file_offset + off + n, err);
    if (rc == WS_OK) *prev = touch_begin(&st, off, (size_t)n);
    return rc;
}

void wsi_ckpt_touch_end(const wsi_touch *prev) { touch_end(prev); }

/* Map [map_off, map_off + n) of t's mapping in one call before it is read
 * (MADV_POPULATE_READ, Linux 5.14): the page tables of a warm chunk are filled without a fault
 * per fault-around block, and a page the file no longer holds is EFAULT here, said as the
 * error a pread gives, instead of SIGBUS on the touch. Where the kernel lacks it, the touch
 * faults the pages in as before. */
static ws_err populate(const wsi_src_tensor *t, uint64_t map_off, size_t n, ws_error *err) {
#ifdef MADV_POPULATE_READ
    static atomic_int unsupported;
    if (t->fd < 0 || n == 0 || atomic_load_explicit(&unsupported, memory_order_relaxed))
        return WS_OK;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)(t->map + map_off) & ~(page - 1);
    uintptr_t b = ((uintptr_t)(t->map + map_off + n) + page - 1) & ~(page - 1);
    if (madvise((void *)a, b - a, MADV_POPULATE_READ) == 0) return WS_OK;
    if (errno == EINVAL || errno == ENOSYS) atomic_store(&unsupported, 1);
    if (errno != EFAULT) return WS_OK; /* EINTR, ENOMEM, ...: the touch faults them in */
    return wsi_fail(err, WS_ERR_IO, t->file, t->name, (int64_t)(t->file_offset + map_off),
                    "the file shrank while being read (changed on disk? a mapped page past its "
                    "new end)"); /* the guard's words (cli/sigbus_guard.c): one cause, one line */
#else
    (void)t, (void)map_off, (void)n, (void)err;
    return WS_OK;
#endif
}

/* Read-ahead where the kernel cannot see it coming: a dim-1 shard read row by row skips the
 * other ranks' columns, so its next row's segment [a, b) (clipped at end) is asked for before
 * the current one is hashed. */
static void ahead(const wsi_src_tensor *t, uint64_t a, uint64_t b, uint64_t end) {
    if (t->fd < 0 || a >= end) return;
    if (b > end) b = end;
    posix_fadvise(t->fd, (off_t)a, (off_t)(b - a), POSIX_FADV_WILLNEED);
}

/* Mapped reads: chunks of at most WSI_READ_CHUNK bytes of file span, each size-checked and
 * mapped in one call (populate) before its pages are touched and let go of after. */
static ws_err mmap_rect(const ws_source *s, const wsi_src_tensor *t, uint64_t row0, uint64_t col0, uint64_t rows,
                        uint64_t cols, uint64_t l_cols, wsi_rect_fn fn, void *ctx,
                        ws_error *err) {
    size_t es = ws_dtype_size(t->dtype);
    ws_err rc = WS_OK;
    if (cols == l_cols || rows == 1) { /* contiguous: one run of bytes */
        uint64_t n = rows * cols, per = WSI_READ_CHUNK / es;
        uint64_t first = row0 * l_cols + col0;
        for (uint64_t k = 0; k < n && rc == WS_OK; k += per) {
            uint64_t m = n - k < per ? n - k : per;
            uint64_t off = t->file_offset + (first + k) * es;
            rc = check_size(t, off + m * es, err);
            if (rc == WS_OK) rc = populate(t, (first + k) * es, (size_t)(m * es), err);
            if (rc == WS_OK) {
                hint(s, t, off + m * es);
                wsi_touch prev = touch_begin(t, (first + k) * es, (size_t)(m * es));
                rc = fn(ctx, k, t->map + (first + k) * es, m);
                touch_end(&prev);
            }
            wsi_ckpt_release(t->ckpt, t->map + (first + k) * es, (size_t)(m * es));
        }
        return rc;
    }
    uint64_t rowbytes = l_cols * es;
    uint64_t band = rowbytes >= WSI_READ_CHUNK ? 1 : WSI_READ_CHUNK / rowbytes;
    for (uint64_t r = 0; r < rows && rc == WS_OK; r += band) {
        uint64_t nr = rows - r < band ? rows - r : band;
        uint64_t a = ((row0 + r) * l_cols + col0) * es;
        uint64_t b = ((row0 + r + nr - 1) * l_cols + col0 + cols) * es;
        rc = check_size(t, t->file_offset + b, err);
        if (rc == WS_OK) rc = populate(t, a, (size_t)(b - a), err);
        if (rc == WS_OK) {
            hint(s, t, t->file_offset + b);
            wsi_touch prev = touch_begin(t, a, (size_t)(b - a));
            for (uint64_t k = 0; k < nr && rc == WS_OK; k++)
                rc = fn(ctx, (r + k) * cols, t->map + ((row0 + r + k) * l_cols + col0) * es,
                        cols);
            touch_end(&prev);
        }
        wsi_ckpt_release(t->ckpt, t->map + a, (size_t)(b - a));
    }
    return rc;
}

/* Reads into the buffer: a contiguous rectangle in chunks; a dim-1 shard a band of rows per
 * read (the whole span, other ranks' columns included, when its own columns are a large part
 * of each row or each row is short), else each row's columns by one read. */
static ws_err pread_rect(const ws_source *s, const wsi_src_tensor *t, uint64_t row0, uint64_t col0, uint64_t rows,
                         uint64_t cols, uint64_t l_cols, wsi_readbuf *buf, wsi_rect_fn fn,
                         void *ctx, ws_error *err) {
    size_t es = ws_dtype_size(t->dtype);
    ws_err rc = wsi_readbuf_reserve(buf, WSI_READ_CHUNK, err);
    if (rc != WS_OK) return rc;
    uint64_t span0 = t->file_offset + (row0 * l_cols + col0) * es;
    uint64_t span1 = t->file_offset + ((row0 + rows - 1) * l_cols + col0 + cols) * es;
    if (cols == l_cols || rows == 1) { /* contiguous: one run of bytes */
        uint64_t n = rows * cols, small = WSI_PREAD_CHUNK / es ? WSI_PREAD_CHUNK / es : 1;
        for (uint64_t k = 0; k < n && rc == WS_OK; k += small) {
            uint64_t m = n - k < small ? n - k : small;
            hint(s, t, span0 + (k + m) * es);
            rc = read_at(t, span0 + k * es, buf->p, (size_t)(m * es), err);
            if (rc == WS_OK) rc = fn(ctx, k, buf->p, m);
        }
        return rc;
    }
    uint64_t rowbytes = l_cols * es, segbytes = cols * es;
    bool spans = rowbytes <= WSI_READ_CHUNK && (segbytes * 4 >= rowbytes || segbytes < (64u << 10));
    if (spans) {
        uint64_t band = WSI_READ_CHUNK / rowbytes;
        for (uint64_t r = 0; r < rows && rc == WS_OK; r += band) {
            uint64_t nr = rows - r < band ? rows - r : band;
            uint64_t a = ((row0 + r) * l_cols + col0) * es;
            uint64_t len = (nr - 1) * rowbytes + segbytes;
            hint(s, t, t->file_offset + a + len);
            rc = read_at(t, t->file_offset + a, buf->p, (size_t)len, err);
            for (uint64_t k = 0; k < nr && rc == WS_OK; k++)
                rc = fn(ctx, (r + k) * cols, buf->p + k * rowbytes, cols);
        }
        return rc;
    }
    uint64_t small = WSI_PREAD_CHUNK / es ? WSI_PREAD_CHUNK / es : 1;
    for (uint64_t r = 0; r < rows && rc == WS_OK; r++) {
        uint64_t next = t->file_offset + ((row0 + r + 1) * l_cols + col0) * es;
        ahead(t, next, next + segbytes, span1); /* the next row's segment */
        for (uint64_t c = 0; c < cols && rc == WS_OK; c += small) {
            uint64_t m = cols - c < small ? cols - c : small;
            rc = read_at(t, t->file_offset + ((row0 + r) * l_cols + col0 + c) * es, buf->p,
                         (size_t)(m * es), err);
            if (rc == WS_OK) rc = fn(ctx, r * cols + c, buf->p, m);
        }
    }
    return rc;
}

bool wsi_file_pread_mode(const ws_source *s, const wsi_src_tensor *t) {
    return t->kind == WSI_SRC_FILE && s->read_mode != WS_READ_MMAP && t->fd >= 0;
}

ws_err wsi_file_read(const ws_source *s, const wsi_src_tensor *t, uint64_t at, uint64_t n,
                     void *dst, ws_error *err) {
    size_t es = ws_dtype_size(t->dtype);
    uint64_t off = t->file_offset + at * es, len = n * es;
    ws_err rc = WS_OK;
    for (uint64_t k = 0; k < len && rc == WS_OK; k += WSI_READ_CHUNK) {
        uint64_t m = len - k < WSI_READ_CHUNK ? len - k : WSI_READ_CHUNK;
        hint(s, t, off + k + m);
        rc = read_at(t, off + k, (uint8_t *)dst + k, (size_t)m, err);
    }
    return rc;
}

ws_err wsi_file_rect(const ws_source *s, const wsi_src_tensor *t, uint64_t row0, uint64_t col0,
                     uint64_t rows, uint64_t cols, uint64_t l_cols, wsi_readbuf *buf,
                     wsi_rect_fn fn, void *ctx, ws_error *err) {
    if (s->read_mode == WS_READ_MMAP || t->fd < 0)
        return mmap_rect(s, t, row0, col0, rows, cols, l_cols, fn, ctx, err);
    return pread_rect(s, t, row0, col0, rows, cols, l_cols, buf, fn, ctx, err);
}
