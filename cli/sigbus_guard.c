/*
 * The SIGBUS guard. The CLI reads files through their mapping (--read mmap, the default of the
 * commands that read weights): no copy, but a file cut after the library checked its size
 * faults on the next touch of its pages. The library records which mapped range the thread is
 * touching (ws_mapped_read_current); a fault inside it is that file shrinking, said as the
 * one-line error a pread would have given (exit 2). Any other SIGBUS is a bug and stays one:
 * the default action is restored and the signal delivered again (a core, as without us).
 *
 * Only async-signal-safe calls in the handler: write(2), _exit, sigaction, raise; the line is
 * built by hand (no stdio, no malloc). No temporary file can be left behind: the atomic writer
 * creates its file only after the hashing is done.
 */
#include "cli.h"

#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static bool err_tty; /* a progress line may be drawn: wipe it first */

typedef struct line {
    char buf[3072];
    size_t n;
} line;

static void put(line *l, const char *s) {
    for (; s && *s && l->n < sizeof l->buf - 2; s++) l->buf[l->n++] = *s;
}

static void put_u64(line *l, uint64_t v) {
    char d[24];
    int k = 0;
    do d[k++] = (char)('0' + v % 10), v /= 10;
    while (v);
    while (k > 0 && l->n < sizeof l->buf - 2) l->buf[l->n++] = d[--k];
}

/* s as a JSON string body (quotes, backslashes and control bytes escaped) */
static void put_json(line *l, const char *s) {
    static const char hex[] = "0123456789abcdef";
    for (; s && *s && l->n < sizeof l->buf - 8; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') l->buf[l->n++] = '\\', l->buf[l->n++] = (char)c;
        else if (c < 0x20) {
            put(l, "\\u00");
            l->buf[l->n++] = hex[c >> 4];
            l->buf[l->n++] = hex[c & 15];
        } else l->buf[l->n++] = (char)c;
    }
}

static void write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

static void on_sigbus(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    ws_mapped_read r;
    if (si && si->si_code > 0 && ws_mapped_read_current(&r) &&
        (uintptr_t)si->si_addr - (uintptr_t)r.begin < r.len) {
        uint64_t at = r.file_offset + ((uintptr_t)si->si_addr - (uintptr_t)r.begin);
        static const char what[] = "the file shrank while being read (changed on disk? a mapped "
                                   "page past its new end)";
        /* as cli_fail prints a WS_ERR_IO: "weightsum: FILE: tensor 'T': offset N: WHAT" */
        line msg = {.n = 0};
        put(&msg, r.file);
        put(&msg, ": tensor '");
        put(&msg, r.tensor);
        put(&msg, "': offset ");
        put_u64(&msg, at);
        put(&msg, ": ");
        put(&msg, what);
        line e = {.n = 0};
        if (err_tty) put(&e, "\r\033[K");
        put(&e, "weightsum: ");
        e.buf[e.n] = 0, msg.buf[msg.n] = 0;
        put(&e, msg.buf);
        put(&e, "\n");
        write_all(STDERR_FILENO, e.buf, e.n);
        if (cli_json_errors) { /* as util.c's json_error lays it out */
            line j = {.n = 0};
            put(&j, "{\n \"format\": \"weightsum-error\",\n \"version\": 1,\n \"ok\": false,\n"
                    " \"exit\": 2,\n \"error\": {\n  \"code\": \"");
            put(&j, ws_err_name(WS_ERR_IO));
            put(&j, "\",\n  \"message\": \"");
            put_json(&j, msg.buf);
            put(&j, "\",\n  \"file\": \"");
            put_json(&j, r.file);
            put(&j, "\",\n  \"tensor\": \"");
            put_json(&j, r.tensor);
            put(&j, "\",\n  \"offset\": ");
            put_u64(&j, at);
            put(&j, ",\n  \"what\": \"");
            put(&j, what);
            put(&j, "\"\n }\n}\n");
            write_all(STDOUT_FILENO, j.buf, j.n);
        }
        _exit(EXIT_TROUBLE);
    }
    /* not ours: die of it as if no handler were installed */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    if (!si || si->si_code <= 0) raise(sig); /* sent, not a fault: returning would not redo it */
    /* a fault: returning re-runs the faulting access, now under the default action */
}

void cli_sigbus_guard_install(void) {
    err_tty = isatty(STDERR_FILENO);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}
