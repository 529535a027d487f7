/* weightsum serve DIR: answer POST /weights_checker for an engine dump over HTTP
 * (libmicrohttpd), so that a trainer can check the weights an engine holds after a sync. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char usage[] =
    "usage: weightsum serve DIR [--layout L] [--tp N] [--ep N] [--pp N] [--config F]\n"
    "                [--expert-map FILE] [--redundant-experts N] (EPLB expert slots)\n"
    CLI_DP_USAGE
    "                       [--host H] [--port P]\n"
    "                       [--canonical bf16|native] [--key SEED] [-j N] [--timeout S]\n"
    "                       [--max-body BYTES] [--max-connections N] [--verbose] [--force]\n"
    "                       [--read pread|mmap]\n"
    "\n"
    "Serve the weights_checker protocol (docs/http.md) for the engine dump in DIR: POST\n"
    "/weights_checker with {\"action\": \"checksum\"} or {\"action\": \"compare_checksum\",\n"
    "\"checksums\": ...}. The dump is re-read on every request, so the next sync is seen.\n"
    "Layout, tp, ep, pp and config come from the flags or from DIR, as for verify.\n"
    "  --host H           address to listen on (default 127.0.0.1)\n"
    "  --port P           port (default 30000; 0 picks a free one)\n"
    "  --canonical P      policy of requests that name none (default bf16)\n"
    "  --key SEED         seed of the fast digest (default: the public seed)\n"
    "  -j N               hashing threads per request (default: all cores)\n"
    "  --timeout S        drop a connection idle for S seconds, or whose request\n"
    "                     (headers and body) takes longer than 4 S to arrive (default 30)\n"
    "  --max-body BYTES   larger request bodies get 413 (default 64 MiB)\n"
    "  --max-connections  connections served at once (default 64)\n"
    "  --verbose          one line per request on stderr\n"
    "  --force            use --layout/--tp/--ep/--pp even where DIR's weightsum-layout.json\n"
    "                     differs\n"
    "  --read M           pread (default: the server outlives a dump re-saved under a\n"
    "                     request, which gets an error answer) or mmap (no copy; a file cut\n"
    "                     while read ends the server, exit 2 naming it)\n"
    "Prints 'listening on http://HOST:PORT' on stderr; stops cleanly on SIGINT/SIGTERM.\n";

#ifndef WS_HAVE_HTTP
int cmd_serve(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        fputs(usage, stdout);
        return EXIT_MATCH;
    }
    return cli_failf("serve: this weightsum was built without libmicrohttpd");
}
#else
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <time.h>

/* One client connection, from accept to close (MHD_OPTION_NOTIFY_CONNECTION). MHD's own
 * timeout is an idle one, reset by every byte: a client trickling its headers a byte a second
 * would hold its connection for ever, and --max-connections of them lock every real client
 * out. So each request (headers and body) must be in within request_ms of the connection's
 * start or the end of its previous request; a watchdog shuts the socket of one that is not
 * (MHD then closes the connection itself). Answering a request is never cut. */
typedef struct client {
    struct client *prev, *next;
    int fd;
    struct timespec start; /* accept, or the end of the previous request */
    bool answering;        /* the request is in: the deadline no longer applies */
    bool dropped;
} client;

typedef struct server {
    ws_checker *checker;
    size_t max_body;
    double request_ms; /* a request must be in within this, however it trickles */
    bool verbose;
    pthread_mutex_t lock; /* guards clients, stop */
    pthread_cond_t wake;
    client *clients;
    bool stop;
} server;

/* What one request has sent so far. */
typedef struct upload {
    char *buf;
    size_t len, cap;
    bool too_big;
    size_t discarded; /* bytes thrown away once the body was known to be too big */
    struct timespec start;
} upload;

static double since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

static client *client_of(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* MHD_CONNECTION_NOTIFY_STARTED / _CLOSED. CLOSED comes before MHD closes the socket, so a
 * client on the list always owns its fd: the watchdog never shuts another connection's. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        client *c = calloc(1, sizeof *c);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!c || !ci) { /* untracked: MHD's idle timeout alone bounds it */
            free(c);
            *socket_context = NULL;
            return;
        }
        c->fd = ci->connect_fd;
        clock_gettime(CLOCK_MONOTONIC, &c->start);
        pthread_mutex_lock(&s->lock);
        c->next = s->clients;
        if (s->clients) s->clients->prev = c;
        s->clients = c;
        pthread_mutex_unlock(&s->lock);
        *socket_context = c;
        return;
    }
    client *c = *socket_context;
    if (!c) return;
    pthread_mutex_lock(&s->lock);
    if (c->prev) c->prev->next = c->next;
    else s->clients = c->next;
    if (c->next) c->next->prev = c->prev;
    pthread_mutex_unlock(&s->lock);
    free(c);
    *socket_context = NULL;
}

/* Shut the sockets of clients whose request is late, every quarter second, until stop. */
static void *watchdog(void *arg) {
    server *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!s->stop) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_nsec += 250 * 1000 * 1000;
        if (t.tv_nsec >= 1000000000L) {
            t.tv_sec++;
            t.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->wake, &s->lock, &t);
        for (client *c = s->clients; c && !s->stop; c = c->next)
            if (!c->answering && !c->dropped && since(&c->start) > s->request_ms) {
                c->dropped = true;
                shutdown(c->fd, SHUT_RDWR);
                if (s->verbose)
                    fprintf(stderr, "weightsum: dropped a client whose request was not in "
                                    "after %.0f s\n", s->request_ms / 1e3);
            }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void set_answering(server *s, struct MHD_Connection *conn, bool answering) {
    client *c = client_of(conn);
    if (!c) return;
    pthread_mutex_lock(&s->lock);
    c->answering = answering;
    if (!answering) clock_gettime(CLOCK_MONOTONIC, &c->start); /* the next request's clock */
    pthread_mutex_unlock(&s->lock);
}

/* Content-Length headers: two that differ make the body's length ambiguous (RFC 9112 6.3:
 * an error), where MHD would take the first. */
typedef struct lengths {
    const char *first;
    bool differ;
} lengths;

static enum MHD_Result count_length(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value) {
    lengths *l = cls;
    (void)kind;
    if (!key || strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) != 0) return MHD_YES;
    if (!value) value = "";
    if (!l->first) l->first = value;
    else if (strcmp(l->first, value) != 0) l->differ = true;
    return MHD_YES;
}

/* Queue a JSON answer. text is copied: the caller still owns it. */
static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned status, const char *text,
                                 const char *allow) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (allow) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

/* A short error answer in the handler's own form: success false and a message (which holds
 * no character that JSON would need escaped). */
static enum MHD_Result send_error(struct MHD_Connection *conn, unsigned status, const char *allow,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(struct MHD_Connection *conn, unsigned status, const char *allow,
                                  const char *fmt, ...) {
    char msg[400], text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(text, sizeof text, "{\"success\":false,\"message\":\"%s\"}", msg);
    return send_json(conn, status, text, allow);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    server *s = cls;
    upload *up = *con_cls;
    (void)version;
    if (!up) { /* headers only: refuse what cannot succeed before reading any body */
        if (strcmp(url, "/weights_checker") != 0)
            return send_error(conn, MHD_HTTP_NOT_FOUND, NULL,
                              "no such route: POST /weights_checker is the only one");
        if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
            return send_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "POST",
                              "/weights_checker takes POST only");
        lengths ls = {0};
        MHD_get_connection_values(conn, MHD_HEADER_KIND, count_length, &ls);
        if (ls.differ)
            return send_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
                              "two different Content-Length headers: the body's length is "
                              "ambiguous");
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->max_body)
            return send_error(conn, 413 /* content too large */, NULL,
                              "request body over the limit of %zu bytes", s->max_body);
        if (!(up = calloc(1, sizeof *up))) return MHD_NO;
        clock_gettime(CLOCK_MONOTONIC, &up->start);
        *con_cls = up;
        return MHD_YES;
    }
    if (*upload_data_size) { /* a part of the body */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (since(&up->start) > s->request_ms) return MHD_NO; /* a trickle: drop it */
        if (up->too_big) { /* MHD answers only once the body is in: discard, within reason */
            up->discarded += n;
            return up->discarded > 2 * s->max_body ? MHD_NO : MHD_YES;
        }
        if (n > s->max_body - up->len) { /* a chunked body over the limit: 413 at its end */
            up->too_big = true;
            up->discarded = up->len + n;
            free(up->buf);
            up->buf = NULL;
            up->len = up->cap = 0;
            return MHD_YES;
        }
        if (up->len + n > up->cap) {
            size_t cap = up->cap ? up->cap : 4096;
            while (cap < up->len + n) cap *= 2;
            if (cap > s->max_body) cap = s->max_body;
            char *g = realloc(up->buf, cap);
            if (!g) return MHD_NO;
            up->buf = g;
            up->cap = cap;
        }
        memcpy(up->buf + up->len, upload_data, n);
        up->len += n;
        return MHD_YES;
    }
    set_answering(s, conn, true); /* the request is in: hashing may take its time */
    if (up->too_big)
        return send_error(conn, 413 /* content too large */, NULL,
                          "request body over the limit of %zu bytes", s->max_body);
    char *text = NULL;
    int status = 500;
    ws_checker_handle(s->checker, up->buf ? up->buf : "", up->len, &text, &status);
    if (s->verbose)
        fprintf(stderr, "weightsum: %s %s %d, %zu bytes in, %.1f ms\n", method, url, status,
                up->len, since(&up->start));
    if (!text) return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "out of memory");
    enum MHD_Result r = send_json(conn, (unsigned)status, text, NULL);
    ws_free(text);
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)toe;
    set_answering(cls, conn, false); /* keep-alive: the next request has its own deadline */
    upload *up = *con_cls;
    if (up) {
        free(up->buf);
        free(up);
        *con_cls = NULL;
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    if (!((server *)cls)->verbose) return;
    fputs("weightsum: microhttpd: ", stderr);
    vfprintf(stderr, fmt, ap);
}

static void stop_watchdog(server *s, pthread_t dog) {
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(dog, NULL);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
}

/* Resolve host:port into a socket address for MHD to bind. */
static bool resolve(const char *host, long port, struct sockaddr_storage *sa, socklen_t *len) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char ps[16];
    snprintf(ps, sizeof ps, "%ld", port);
    int e = getaddrinfo(host, ps, &hints, &res);
    if (e != 0 || !res) {
        cli_failf("serve: cannot resolve host '%s': %s", host, gai_strerror(e));
        return false;
    }
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return true;
}

int cmd_serve(int argc, char **argv) {
    static const struct option opts[] = {
        {"layout", required_argument, 0, 'L'}, {"tp", required_argument, 0, 't'},
        {"config", required_argument, 0, 'C'}, {"host", required_argument, 0, 'H'},
        {"port", required_argument, 0, 'p'}, {"canonical", required_argument, 0, 'c'},
        {"key", required_argument, 0, 'k'}, {"jobs", required_argument, 0, 'j'},
        {"timeout", required_argument, 0, 'T'}, {"max-body", required_argument, 0, 'B'},
        {"max-connections", required_argument, 0, 'M'}, {"verbose", no_argument, 0, 'v'},
        {"force", no_argument, 0, 'f'}, CLI_LAYOUT_PAR_OPTS, CLI_READ_OPT,
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    cli_common cc = CLI_COMMON_INIT;
    ws_set_read_mode(WS_READ_PREAD, NULL); /* --read mmap may change it */
    const char *host = "127.0.0.1";
    long port = 30000, timeout = 30, max_conns = 64;
    long max_body = (long)WS_CHECKER_MAX_BODY;
    bool verbose = false;
    int ch;
    while ((ch = cli_getopt("serve", argc, argv, "j:vh", opts)) != -1) {
        switch (ch) {
        case 'H': host = optarg; break;
        case 'p':
            if (!cli_parse_int(optarg, 0, 65535, &port))
                return cli_usage("serve", "--port needs 0..65535");
            break;
        case 'T':
            if (!cli_parse_int(optarg, 1, 86400, &timeout))
                return cli_usage("serve", "--timeout needs 1..86400 seconds");
            break;
        case 'B':
            if (!cli_parse_int(optarg, 1, (long)WS_CHECKER_MAX_BODY, &max_body))
                return cli_usage("serve", "--max-body needs 1..%u bytes", WS_CHECKER_MAX_BODY);
            break;
        case 'M':
            if (!cli_parse_int(optarg, 1, 10000, &max_conns))
                return cli_usage("serve", "--max-connections needs 1..10000");
            break;
        case 'v': verbose = true; break;
        case 'h': fputs(usage, stdout); return EXIT_MATCH;
        default:
            if (!cli_common_or_usage(ch, optarg, &cc, usage)) return EXIT_TROUBLE;
        }
    }
    if (optind + 1 != argc)
        return cli_usage("serve", "one dump directory, not %d arguments", argc - optind);
    const char *dir = argv[optind];
    ws_error err;
    /* the idle timeout drops a stalled client; a request (headers and body) that trickles
     * in a byte at a time is dropped once it has taken four timeouts */
    server s = {.max_body = (size_t)max_body, .request_ms = 4000.0 * (double)timeout,
                .verbose = verbose};
    unsigned lflags = cc.lo.force ? WS_LAYOUT_FORCE : 0;
    ws_err rc;
    if (cc.lo.ep || cc.lo.pp || cc.lo.expert_map || cc.lo.redundant || cc.lo.attn_dp ||
        cc.lo.dp_lm_head || cc.lo.moe_dense_tp || cc.lo.fused_shared) {
        /* the layout a dump not yet written will have: tp x ep x pp and the engine options */
        ws_parallel *par = NULL;
        if ((rc = ws_parallel_create(&par, &err)) == WS_OK &&
            (rc = ws_parallel_set(par, WS_PAR_TP, cc.lo.tp ? cc.lo.tp : 1, &err)) == WS_OK &&
            (rc = ws_parallel_set(par, WS_PAR_EP, cc.lo.ep ? cc.lo.ep : 1, &err)) == WS_OK &&
            (rc = ws_parallel_set(par, WS_PAR_PP, cc.lo.pp ? cc.lo.pp : 1, &err)) == WS_OK &&
            (rc = cli_set_par_options(par, &cc.lo, &err)) == WS_OK)
            rc = ws_checker_create_parallel(dir, cc.lo.family, par, cc.lo.config,
                                            lflags | (cc.lo.tp ? 0 : WS_LAYOUT_DUMP_TP) |
                                                (cc.lo.ep ? 0 : WS_LAYOUT_DUMP_EP) |
                                                (cc.lo.pp ? 0 : WS_LAYOUT_DUMP_PP),
                                            cc.canon, cc.seed, (int)cc.threads, &s.checker, &err);
        ws_parallel_free(par);
    } else {
        rc = ws_checker_create_flags(dir, cc.lo.family, (int)cc.lo.tp, cc.lo.config, lflags,
                                     cc.canon, cc.seed, (int)cc.threads, &s.checker, &err);
    }
    if (rc != WS_OK) return cli_fail(&err);
    struct sockaddr_storage sa;
    socklen_t salen = 0;
    if (!resolve(host, port, &sa, &salen)) {
        ws_checker_free(s.checker);
        return EXIT_TROUBLE;
    }
    /* SIGINT/SIGTERM are taken by sigwait below, in this thread only: block them before MHD
     * starts its threads, which inherit the mask. A client gone mid-answer is no signal. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    if (sa.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.wake, NULL);
    pthread_t dog;
    if (pthread_create(&dog, NULL, watchdog, &s) != 0) {
        ws_checker_free(s.checker);
        return cli_failf("serve: cannot start a thread");
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, &s, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT, (unsigned)max_conns,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)timeout, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, &s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, &s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, &s, MHD_OPTION_END);
    if (!d) {
        stop_watchdog(&s, dog);
        ws_checker_free(s.checker);
        return cli_failf("serve: cannot listen on %s port %ld (in use, or not an address here)",
                         host, port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    unsigned bound = info ? info->port : (unsigned)port;
    bool v6 = sa.ss_family == AF_INET6;
    fprintf(stderr, "listening on http://%s%s%s:%u\n", v6 ? "[" : "", host, v6 ? "]" : "", bound);
    fflush(stderr);
    int sig = 0;
    sigwait(&stop, &sig);
    /* stop accepting, let requests in flight finish, join every connection thread */
    MHD_stop_daemon(d);
    stop_watchdog(&s, dog);
    ws_checker_free(s.checker);
    fprintf(stderr, "weightsum: serve: stopped (%s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    return EXIT_MATCH;
}
#endif
