/* Read-ahead of cold files by a helper thread (see read_ahead.h). */
#include "read_ahead.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

struct wsi_read_ahead {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool started, stop;
    pthread_t reader;    /* the thread whose hints it follows */
    bool has_reader;
    atomic_bool off;     /* no read-ahead: the thread could not start, or a second one reads */
    const uint8_t *map;  /* the file being read ahead */
    uint64_t next, want; /* [next, want): still to read in */
};

wsi_read_ahead *wsi_read_ahead_new(void) {
    wsi_read_ahead *ra = calloc(1, sizeof *ra);
    if (!ra) return NULL;
    if (pthread_mutex_init(&ra->mu, NULL) != 0) {
        free(ra);
        return NULL;
    }
    if (pthread_cond_init(&ra->cv, NULL) != 0) {
        pthread_mutex_destroy(&ra->mu);
        free(ra);
        return NULL;
    }
    return ra;
}

/* Whether the page cache holds all of [pa, pb) (page-aligned, at most one step). */
static bool cached(uintptr_t pa, uintptr_t pb, uintptr_t page) {
    unsigned char v[WSI_READ_AHEAD_STEP / 4096 + 1];
    size_t n = (pb - pa) / page;
    if (n > sizeof v || mincore((void *)pa, pb - pa, v) != 0) return false;
    for (size_t i = 0; i < n; i++)
        if (!(v[i] & 1)) return false;
    return true;
}

/* Read [a, b) of map in (at most one step): whole pages, through the fault path, so that a
 * cold file comes in as the reader's own faults would bring it (huge folios where the mapping
 * asks for them), then let go of this process's mapping of them: the page cache keeps them,
 * and pages the reader never reads (it skipped them, or stopped) do not stay resident. The
 * reader maps them again when it gets there (one call per chunk, an entry per 2 MiB folio).
 * A step the page cache holds already is left alone: mapping and unmapping warm pages costs
 * CPU and saves no disk time (a first build without this check ran a warm TP=2 fast hash at
 * 5.7 GB/s on the H200 host, against 7.2 for the tree before it, a round earlier). */
static void read_in(const uint8_t *map, uint64_t a, uint64_t b) {
#ifdef MADV_POPULATE_READ
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t pa = (uintptr_t)(map + a) & ~(page - 1);
    uintptr_t pb = ((uintptr_t)(map + b) + page - 1) & ~(page - 1);
    if (cached(pa, pb, page)) return;
    if (madvise((void *)pa, pb - pa, MADV_POPULATE_READ) != 0) return; /* advice: the reader
                                                                          reports what failed */
    madvise((void *)pa, pb - pa, MADV_DONTNEED);
#else
    (void)map, (void)a, (void)b;
#endif
}

static void *helper(void *arg) {
    wsi_read_ahead *ra = arg;
    pthread_setname_np(pthread_self(), "ws-read-ahead"); /* what top and gdb show */
    pthread_mutex_lock(&ra->mu);
    for (;;) {
        while (!ra->stop && ra->next >= ra->want) pthread_cond_wait(&ra->cv, &ra->mu);
        if (ra->stop) break;
        const uint8_t *map = ra->map;
        uint64_t a = ra->next, b = ra->want - a > WSI_READ_AHEAD_STEP ? a + WSI_READ_AHEAD_STEP
                                                                      : ra->want;
        ra->next = b;
        pthread_mutex_unlock(&ra->mu);
        read_in(map, a, b);
        pthread_mutex_lock(&ra->mu);
    }
    pthread_mutex_unlock(&ra->mu);
    return NULL;
}

/* Whether the page cache holds the page at p. */
static bool page_cached(const uint8_t *p) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), pa = (uintptr_t)p & ~(page - 1);
    return cached(pa, pa + page, page);
}

void wsi_read_ahead_hint(wsi_read_ahead *ra, const uint8_t *map, uint64_t len, uint64_t pos) {
    if (!ra || !map || pos >= len || atomic_load_explicit(&ra->off, memory_order_relaxed)) return;
    uint64_t want = len - pos > WSI_READ_AHEAD ? pos + WSI_READ_AHEAD : len;
    pthread_mutex_lock(&ra->mu);
    /* Several threads reading one source at once keep the disk busy by themselves, and a
     * helper chasing each in turn cost them (warm `hash -j 2 --read pread` 2.09 -> 1.75 GB/s
     * on the VM): it follows one thread only. */
    if (!ra->has_reader) {
        ra->reader = pthread_self();
        ra->has_reader = true;
    } else if (!pthread_equal(ra->reader, pthread_self())) {
        atomic_store(&ra->off, true);
        ra->want = ra->next; /* and what it was doing for the first is dropped */
        pthread_mutex_unlock(&ra->mu);
        return;
    }
    /* another file, a reader past the helper, or one that went back further than the helper
     * runs ahead: start again where the reader is */
    if (map != ra->map || pos > ra->next || pos + WSI_READ_AHEAD < ra->next) {
        ra->map = map;
        ra->next = ra->want = pos;
    }
    /* The window moves on in batches. A warm file must cost the reader next to nothing (on
     * the 2-vCPU VM even a helper that only woke and asked mincore per 2 MiB slowed a warm
     * `verify -j 1` by a sixth): one look at the batch's last page, and a batch the page
     * cache holds is passed over without waking the helper. */
    bool due = want >= ra->want + WSI_READ_AHEAD_BATCH || (want == len && ra->want < len);
    if (due && page_cached(map + want - 1)) {
        ra->want = want;
        if (ra->next < want) ra->next = want;
        due = false;
    }
    if (due) {
        ra->want = want;
        if (!ra->started) {
            ra->started = pthread_create(&ra->thread, NULL, helper, ra) == 0;
            if (!ra->started) atomic_store(&ra->off, true); /* reads go on without read-ahead */
        }
        if (ra->started) pthread_cond_signal(&ra->cv);
    }
    pthread_mutex_unlock(&ra->mu);
}

void wsi_read_ahead_free(wsi_read_ahead *ra) {
    if (!ra) return;
    pthread_mutex_lock(&ra->mu);
    ra->stop = true;
    pthread_cond_signal(&ra->cv);
    pthread_mutex_unlock(&ra->mu);
    if (ra->started) pthread_join(ra->thread, NULL);
    pthread_cond_destroy(&ra->cv);
    pthread_mutex_destroy(&ra->mu);
    free(ra);
}
