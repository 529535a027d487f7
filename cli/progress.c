/* A progress line on stderr, only when asked or when stderr is a terminal: bytes done / total,
 * rate and time left, redrawn at most ten times a second. The line is wiped before an error
 * is printed (cli_fail), when the work ends, and on Ctrl-C / SIGTERM, so no half-drawn bar is
 * left on the terminal. */
#include "cli.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char wipe[] = "\r\033[K";
/* Drawing, wiping and dying take this lock, so a wipe never lands before a line that another
 * thread was still drawing. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bool drawn;  /* a line is on the terminal */
static bool dying;  /* a signal came: draw nothing more */
static bool watching;
static sigset_t stop_signals;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Ctrl-C / SIGTERM are blocked in every thread and taken here, in a thread of their own, so
 * that the wipe can wait for a line being drawn (a handler could not take the lock); then the
 * process dies of the signal as it would have. */
static void *watch_signals(void *arg) {
    (void)arg;
    int sig = 0;
    if (sigwait(&stop_signals, &sig) != 0) return NULL;
    pthread_mutex_lock(&lock);
    dying = true;
    if (drawn) {
        ssize_t n = write(STDERR_FILENO, wipe, sizeof wipe - 1);
        (void)n;
    }
    signal(sig, SIG_DFL);
    pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL);
    raise(sig);
    return NULL;
}

void cli_progress_wipe(void) {
    pthread_mutex_lock(&lock);
    if (drawn) {
        fputs(wipe, stderr);
        fflush(stderr);
        drawn = false;
    }
    pthread_mutex_unlock(&lock);
}

void cli_progress_init(cli_progress *p, int mode) {
    p->on = mode == 1 || (mode == -1 && isatty(STDERR_FILENO));
    p->start = now();
    p->last = 0;
    if (p->on && !watching) { /* before the work starts its threads: they inherit the mask */
        sigemptyset(&stop_signals);
        sigaddset(&stop_signals, SIGINT);
        sigaddset(&stop_signals, SIGTERM);
        pthread_t t;
        pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
        if (pthread_create(&t, NULL, watch_signals, NULL) == 0) {
            pthread_detach(t);
            watching = true;
        } else {
            pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL);
        }
    }
}

/* 1.23 GB, 812 MB, 4.0 kB */
static void bytes(char *out, size_t n, double b) {
    const char *unit[] = {"B", "kB", "MB", "GB", "TB"};
    int u = 0;
    while (b >= 1000 && u < 4) {
        b /= 1000;
        u++;
    }
    if (u == 0) snprintf(out, n, "%.0f B", b);
    else snprintf(out, n, "%.*f %s", b < 10 ? 2 : b < 100 ? 1 : 0, b, unit[u]);
}

void cli_progress_cb(void *user, uint64_t done, uint64_t total) {
    cli_progress *p = user;
    if (!p || !p->on) return;
    double t = now();
    if (t - p->last < 0.1 && done < total) return;
    p->last = t;
    double el = t - p->start, frac = total ? (double)done / (double)total : 1.0;
    if (frac > 1) frac = 1;
    double rate = el > 0 ? (double)done / el : 0;
    char d[32], tot[32], r[32], eta[32] = "--:--";
    bytes(d, sizeof d, (double)done);
    bytes(tot, sizeof tot, (double)total);
    bytes(r, sizeof r, rate);
    if (rate > 0 && total >= done) {
        double left = (double)(total - done) / rate;
        unsigned s = left > 359999 ? 359999u : (unsigned)(left + 0.5);
        if (s >= 3600) snprintf(eta, sizeof eta, "%u:%02u:%02u", s / 3600, s / 60 % 60, s % 60);
        else snprintf(eta, sizeof eta, "%u:%02u", s / 60, s % 60);
    }
    int w = 24, fill = (int)(frac * w);
    char bar[32];
    for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
    bar[w] = 0;
    pthread_mutex_lock(&lock);
    if (!dying) {
        fprintf(stderr, "\r[%s] %5.1f%%  %s / %s  %s/s  ETA %s\033[K", bar, 100.0 * frac, d, tot,
                r, eta);
        fflush(stderr);
        drawn = true;
    }
    pthread_mutex_unlock(&lock);
}

void cli_progress_end(cli_progress *p) {
    if (p && p->on) cli_progress_wipe();
}
