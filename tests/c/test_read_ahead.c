/*
 * The read-ahead helper of file sources (src/io/read_ahead.c): after a hint it brings the
 * WSI_READ_AHEAD bytes after the reader's position into the page cache, and no further; it
 * follows the reader to another position, and stops when a second thread reads; a file cut
 * under it is no crash (its madvise fails,
 * it never touches the bytes). Residency is read with mincore, which for a file mapping says
 * what the page cache holds; where the test cannot evict the file first (tmpfs), the
 * residency checks are skipped and said so.
 */
#include "check.h"
#include "read_ahead.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB (1u << 20)
#define FILE_LEN (96u * MIB)

static char path[] = "/tmp/ws_read_ahead.XXXXXX";
static size_t page;

/* How many pages of [a, b) of map the page cache holds. */
static size_t resident(const uint8_t *map, uint64_t a, uint64_t b) {
    size_t n = (size_t)((b - a) / page), count = 0;
    unsigned char *v = malloc(n);
    CHECK(v && mincore((void *)(map + a), (size_t)(b - a), v) == 0);
    for (size_t i = 0; v && i < n; i++) count += v[i] & 1;
    free(v);
    return count;
}

/* Poll (up to 20 s) until [a, b) is wholly resident. */
static bool wait_resident(const uint8_t *map, uint64_t a, uint64_t b) {
    for (int i = 0; i < 2000; i++) {
        if (resident(map, a, b) == (b - a) / page) return true;
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    return false;
}

static int make_file(void) {
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    uint8_t *block = malloc(MIB);
    for (size_t i = 0; i < MIB; i++) block[i] = (uint8_t)(i * 7 + 1);
    for (unsigned k = 0; k < FILE_LEN / MIB; k++) CHECK(write(fd, block, MIB) == (ssize_t)MIB);
    free(block);
    CHECK(fsync(fd) == 0);
    return fd;
}

/* Evict the file from the page cache; false where it stays (tmpfs). */
static bool evict(int fd, const uint8_t *map) {
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    return resident(map, 0, FILE_LEN) < FILE_LEN / page / 8;
}

static void test_reads_ahead_and_no_further(int fd, const uint8_t *map) {
    if (!evict(fd, map)) {
        printf("read-ahead residency: skipped (the file system keeps the file resident)\n");
        return;
    }
    wsi_read_ahead *ra = wsi_read_ahead_new();
    CHECK(ra != NULL);
    wsi_read_ahead_hint(ra, map, FILE_LEN, 4 * MIB);
    CHECK(wait_resident(map, 4 * MIB, 4 * MIB + WSI_READ_AHEAD));
    /* nothing far past what it was asked for: given the time to read the whole file, its last
     * 32 MiB stay out */
    nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
    CHECK(resident(map, FILE_LEN - 32 * MIB, FILE_LEN) == 0);
    /* the reader moved on: the helper follows it to the file's end */
    wsi_read_ahead_hint(ra, map, FILE_LEN, FILE_LEN - 8 * MIB);
    CHECK(wait_resident(map, FILE_LEN - 8 * MIB, FILE_LEN));
    /* and back to the start, further back than it runs ahead */
    CHECK(evict(fd, map));
    wsi_read_ahead_hint(ra, map, FILE_LEN, 0);
    CHECK(wait_resident(map, 0, WSI_READ_AHEAD));
    wsi_read_ahead_free(ra);
}

static const uint8_t *shared_map;
static void *hint_from_another_thread(void *ra) {
    wsi_read_ahead_hint(ra, shared_map, FILE_LEN, 48 * MIB);
    return NULL;
}

/* Threads that read one source at once keep the disk busy themselves: the helper follows the
 * first and stops when a second one hints. */
static void test_second_reader_turns_it_off(int fd, const uint8_t *map) {
    if (!evict(fd, map)) return; /* said by the test above */
    wsi_read_ahead *ra = wsi_read_ahead_new();
    CHECK(ra != NULL);
    wsi_read_ahead_hint(ra, map, FILE_LEN, 0);
    CHECK(wait_resident(map, 0, WSI_READ_AHEAD));
    CHECK(evict(fd, map));
    shared_map = map;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, hint_from_another_thread, ra) == 0);
    pthread_join(th, NULL);
    wsi_read_ahead_hint(ra, map, FILE_LEN, 8 * MIB);
    nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
    CHECK(resident(map, 8 * MIB, FILE_LEN) == 0);
    wsi_read_ahead_free(ra);
}

static void test_cut_file_is_no_crash(int fd, const uint8_t *map) {
    bool evicted = evict(fd, map);
    wsi_read_ahead *ra = wsi_read_ahead_new();
    CHECK(ra != NULL);
    CHECK(ftruncate(fd, MIB) == 0); /* pages past 1 MiB now SIGBUS when touched */
    wsi_read_ahead_hint(ra, map, FILE_LEN, 0);
    /* what the file still holds is read in, and the rest is no crash */
    if (evicted) CHECK(wait_resident(map, 0, MIB));
    wsi_read_ahead_hint(ra, map, FILE_LEN, 40 * MIB);
    nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    wsi_read_ahead_free(ra);
}

static void test_arguments(const uint8_t *map) {
    wsi_read_ahead_free(NULL);
    wsi_read_ahead_hint(NULL, map, FILE_LEN, 0);
    wsi_read_ahead *ra = wsi_read_ahead_new();
    wsi_read_ahead_hint(ra, NULL, FILE_LEN, 0);
    wsi_read_ahead_hint(ra, map, FILE_LEN, FILE_LEN); /* at the end: nothing ahead */
    wsi_read_ahead_free(ra); /* never started a thread */
}

int main(void) {
    page = (size_t)sysconf(_SC_PAGESIZE);
    int fd = make_file();
    const uint8_t *map = mmap(NULL, FILE_LEN, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(map != MAP_FAILED);
    test_arguments(map);
    test_reads_ahead_and_no_further(fd, map);
    test_second_reader_turns_it_off(fd, map);
    test_cut_file_is_no_crash(fd, map);
    munmap((void *)map, FILE_LEN);
    close(fd);
    unlink(path);
    return check_report("test_read_ahead");
}
