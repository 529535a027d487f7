/* A progress bar on stderr, only when asked or when stderr is a terminal; redrawn at most
 * ten times a second. */
#include "cli.h"

#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_progress_init(cli_progress *p, int mode) {
    p->on = mode == 1 || (mode == -1 && isatty(STDERR_FILENO));
    p->start = now();
    p->last = 0;
}

void cli_progress_cb(void *user, uint64_t done, uint64_t total) {
    cli_progress *p = user;
    if (!p->on) return;
    double t = now();
    if (t - p->last < 0.1 && done < total) return;
    p->last = t;
    double frac = total ? (double)done / (double)total : 1.0;
    int w = 30, fill = (int)(frac * w);
    double rate = (double)done / 1e9 / (t - p->start + 1e-9);
    fprintf(stderr, "\r[");
    for (int i = 0; i < w; i++) fputc(i < fill ? '#' : ' ', stderr);
    fprintf(stderr, "] %5.1f%%  %.2f GB/s ", 100.0 * frac, rate);
}

void cli_progress_end(cli_progress *p) {
    if (p->on) fprintf(stderr, "\r%60s\r", "");
}
