/* Minimal test harness shared by the C unit tests: CHECK records a failure and goes on. */
#ifndef WS_TEST_CHECK_H
#define WS_TEST_CHECK_H
#include "weightsum.h"

#include <stdio.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        check_count++;                                                               \
        if (!(cond)) {                                                               \
            check_failures++;                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

#define CHECK_OK(expr)                                                                       \
    do {                                                                                     \
        ws_error e_;                                                                         \
        (void)e_;                                                                            \
        check_count++;                                                                       \
        ws_err r_ = (expr);                                                                  \
        if (r_ != WS_OK) {                                                                   \
            check_failures++;                                                                \
            fprintf(stderr, "%s:%d: %s returned %s\n", __FILE__, __LINE__, #expr,            \
                    ws_err_name(r_));                                                        \
        }                                                                                    \
    } while (0)

/* Hash options with these keys (free with ws_hash_options_free); every set must succeed. */
static inline ws_hash_options *check_hash_options(ws_canon canon, unsigned algos,
                                                  const ws_fastkey *key, int threads) {
    ws_hash_options *o = NULL;
    CHECK_OK(ws_hash_options_create(&o, NULL));
    CHECK_OK(ws_hash_options_set(o, WS_HASH_CANON, canon, NULL));
    CHECK_OK(ws_hash_options_set(o, WS_HASH_ALGOS, (long)algos, NULL));
    CHECK_OK(ws_hash_options_set(o, WS_HASH_THREADS, threads, NULL));
    CHECK_OK(ws_hash_options_set_key(o, key, NULL));
    return o;
}

static int check_report(const char *name) {
    printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
    return check_failures ? 1 : 0;
}
#endif
