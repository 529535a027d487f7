/*
 * Internal: read-ahead of a file source's cold files by a helper thread (read_ahead.c).
 *
 * A reader that maps a chunk in, hashes it, then maps the next one leaves the disk idle while
 * it hashes, and the kernel's own read-ahead of a mapping reads only a few MiB around a fault.
 * The helper maps in (MADV_POPULATE_READ) the bytes just ahead of where the reader is, so the
 * disk reads chunk k + 1 while the reader hashes chunk k. It never touches the bytes: a page
 * the file lost makes its madvise fail (EFAULT), never a SIGBUS, and the reader's own
 * size check and populate still report it. It is advice only: a helper that cannot start
 * leaves reads as they were.
 */
#ifndef WS_READ_AHEAD_H
#define WS_READ_AHEAD_H
#include "internal.h"

/* How far (bytes) the helper keeps ahead of the reader, and the size of each of its calls. */
#ifndef WSI_READ_AHEAD
#define WSI_READ_AHEAD (32u << 20)
#endif
#define WSI_READ_AHEAD_STEP (2u << 20)
/* The window moves on when the reader has gone this far (bytes). */
#define WSI_READ_AHEAD_BATCH (8u << 20)

typedef struct wsi_read_ahead wsi_read_ahead;

/* A helper for one source (its thread starts on the first hint that gives it work); NULL
 * when out of memory, which means no read-ahead. */
WSI_HIDDEN wsi_read_ahead *wsi_read_ahead_new(void);
/* The reader is at byte pos of the file mapped at map (len bytes) and goes on from there:
 * read in up to WSI_READ_AHEAD bytes after pos, in batches of WSI_READ_AHEAD_BATCH, passing
 * over a batch whose last page the page cache holds. A hint in another file, or behind or past
 * the helper, moves it there; a hint from a second thread turns read-ahead off for good. */
WSI_HIDDEN void wsi_read_ahead_hint(wsi_read_ahead *ra, const uint8_t *map, uint64_t len,
                                    uint64_t pos);
/* Stop and join the helper; the mappings it was given may go after this. NULL is a no-op. */
WSI_HIDDEN void wsi_read_ahead_free(wsi_read_ahead *ra);
#endif
