/* Sensitivity of the fast digest through the whole tensor path (ws_digest_tensor): 10,000
 * random single-bit flips in random tensors of random dtypes are all caught; and ws_locate
 * finds planted differences by exchanging range digests only. */
#include "check.h"
#include "weightsum_experimental.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static ws_tensor make(ws_dtype dt, uint64_t rows, uint64_t cols, uint8_t *data) {
    ws_tensor t;
    memset(&t, 0, sizeof t);
    t.name = "t";
    t.dtype = dt;
    t.ndim = 2;
    t.shape[0] = rows;
    t.shape[1] = cols;
    t.numel = rows * cols;
    t.nbytes = t.numel * ws_dtype_size(dt);
    t.data = data;
    return t;
}

static void test_random_flips(const ws_fastkey *key) {
    static const ws_dtype dts[] = {WS_F32, WS_BF16, WS_F16, WS_F8_E4M3, WS_I32, WS_U8, WS_F64};
    int caught = 0, total = 10000;
    for (int i = 0; i < total; i++) {
        ws_dtype dt = dts[next() % (sizeof dts / sizeof dts[0])];
        uint64_t rows = 1 + next() % 64, cols = 1 + next() % 256;
        size_t bytes = rows * cols * ws_dtype_size(dt);
        uint8_t *a = malloc(bytes), *b = malloc(bytes);
        for (size_t k = 0; k < bytes; k++) a[k] = (uint8_t)next();
        memcpy(b, a, bytes);
        uint64_t bit = next() % (bytes * 8);
        b[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ws_tensor ta = make(dt, rows, cols, a), tb = make(dt, rows, cols, b);
        ws_digest da, db;
        ws_error err;
        CHECK_OK(ws_digest_tensor(&ta, WS_CANON_NATIVE, WS_ALGO_FAST, key, &da, NULL, &err));
        CHECK_OK(ws_digest_tensor(&tb, WS_CANON_NATIVE, WS_ALGO_FAST, key, &db, NULL, &err));
        caught += memcmp(&da.fast, &db.fast, sizeof da.fast) != 0;
        free(a);
        free(b);
    }
    printf("random single-bit flips caught by the fast digest: %d of %d\n", caught, total);
    CHECK(caught == total);
}

static void test_locate(const ws_fastkey *key) {
    const uint64_t rows = 300, cols = 77, n = rows * cols;
    float *a = malloc(n * 4), *b = malloc(n * 4);
    for (uint64_t i = 0; i < n; i++) a[i] = (float)(next() % 1000) * 0.001f;
    memcpy(b, a, n * 4);
    const uint64_t planted[] = {5, 4000, 4001, n - 1};
    for (size_t k = 0; k < 4; k++) b[planted[k]] += 1.0f;
    ws_tensor_spec sa = {.name = "w", .dtype = WS_F32, .ndim = 2, .shape = {rows, cols}, .data = a};
    ws_tensor_spec sb = sa;
    sb.data = b;
    char dir[] = "/tmp/ws-test-loc-XXXXXX", pa[128], pb[128];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(pa, sizeof pa, "%s/a.safetensors", dir);
    snprintf(pb, sizeof pb, "%s/b.safetensors", dir);
    ws_error err;
    CHECK_OK(ws_safetensors_write(pa, &sa, 1, NULL, &err));
    CHECK_OK(ws_safetensors_write(pb, &sb, 1, NULL, &err));
    ws_ckpt *ca = NULL, *cb = NULL;
    CHECK_OK(ws_ckpt_open(pa, &ca, &err));
    CHECK_OK(ws_ckpt_open(pb, &cb, &err));
    ws_side *x = NULL, *y = NULL;
    CHECK_OK(ws_side_checkpoint(ca, WS_CANON_NATIVE, key, &x, &err));
    CHECK_OK(ws_side_checkpoint(cb, WS_CANON_NATIVE, key, &y, &err));
    ws_location loc;
    CHECK_OK(ws_locate(x, y, "w", 16, 64, &loc, &err));
    CHECK(loc.found == 4 && !loc.more && loc.first == 5);
    CHECK(loc.value_b - loc.value_a > 0.99 && loc.value_b - loc.value_a < 1.01);
    CHECK(strcmp(loc.where_b, "element [0, 5]") == 0);
    CHECK(loc.rounds <= 5 && loc.digests < 400); /* digests, not the tensor, cross */
    /* capped search: says there may be more */
    CHECK_OK(ws_locate(x, y, "w", 16, 2, &loc, &err));
    CHECK(loc.found == 2 && loc.more && loc.first == 5);
    /* equal tensors: nothing found */
    CHECK_OK(ws_locate(x, x, "w", 4, 8, &loc, &err));
    CHECK(loc.found == 0);
    /* range digests add up: [0, n) = [0, k) + [k, n) */
    ws_fast whole, p1, p2;
    CHECK_OK(ws_side_range_digest(x, "w", 0, n, &whole, &err));
    CHECK_OK(ws_side_range_digest(x, "w", 0, 1234, &p1, &err));
    CHECK_OK(ws_side_range_digest(x, "w", 1234, n, &p2, &err));
    CHECK_OK(ws_fast_add(&p1, &p2, &err));
    CHECK(memcmp(&p1, &whole, sizeof whole) == 0);
    CHECK(ws_side_range_digest(x, "w", 5, n + 1, &p1, &err) == WS_ERR_ARG);
    CHECK(ws_locate(x, y, "nope", 16, 8, &loc, &err) == WS_ERR_NOTFOUND);
    ws_side_free(x);
    ws_side_free(y);
    ws_ckpt_free(ca);
    ws_ckpt_free(cb);
    remove(pa);
    remove(pb);
    remove(dir);
    free(a);
    free(b);
}

/* The NaN/Inf count the fast digest's scan gates (wsi_fast_accumulate_scan): one NaN or one
 * Inf planted in a 16-bit tensor of ones spanning several 16 KiB feeds and 2 KiB kernel blocks,
 * at their edges and at random places, is counted once, by the fast digest alone and with
 * SHA-256 beside it; none planted, none counted. */
static void test_specials_through_the_scan(const ws_fastkey *key) {
    enum { N = 40000 };
    static uint16_t v[N];
    static const struct {
        ws_dtype dt;
        uint16_t one, nan, inf;
    } f[] = {{WS_BF16, 0x3f80u, 0x7fc1u, 0xff80u}, {WS_F16, 0x3c00u, 0xfe01u, 0x7c00u}};
    uint64_t at[224] = {0, 1, 63, 64, 1023, 1024, 1025, 8191, 8192, 8193, 16383, 16384, 32767,
                        N - 2, N - 1};
    for (size_t i = 15; i < sizeof at / sizeof *at; i++) at[i] = next() % N;
    for (size_t d = 0; d < 2; d++)
        for (size_t i = 0; i <= sizeof at / sizeof *at; i++)
            for (int which = 0; which < 2; which++)
                for (int a = 0; a < 2; a++) {
                    unsigned algos = a ? WS_ALGO_FAST | WS_ALGO_SHA256 : WS_ALGO_FAST;
                    for (size_t k = 0; k < N; k++) v[k] = f[d].one;
                    bool planted = i < sizeof at / sizeof *at; /* the last round plants none */
                    if (planted) v[at[i]] = which ? f[d].inf : f[d].nan;
                    ws_tensor t = make(f[d].dt, 200, N / 200, (uint8_t *)v);
                    ws_digest dg;
                    ws_value_stats st = {0};
                    ws_error err;
                    CHECK_OK(ws_digest_tensor(&t, WS_CANON_NATIVE, algos, key, &dg, &st, &err));
                    CHECK(st.nan == (uint64_t)(planted && !which) && st.inf == (uint64_t)(planted && which));
                }
}

int main(void) {
    ws_fastkey *key = NULL;
    ws_error err;
    CHECK_OK(ws_fastkey_create(WS_FAST_DEFAULT_SEED, strlen(WS_FAST_DEFAULT_SEED), &key, &err));
    test_random_flips(key);
    test_locate(key);
    test_specials_through_the_scan(key);
    ws_fastkey_free(key);
    return check_report("test_sensitivity");
}
