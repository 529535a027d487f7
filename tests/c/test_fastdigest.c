/* Fast digest: kernels against the scalar reference, the algebra (split invariance),
 * sensitivity, the byte form, and the shared test vectors (tests/vectors/fast_digest.json). */
#include "check.h"
#include "fastdigest.h"
#include "weightsum_experimental.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define B WSI_FAST_B
#define P WSI_FAST_P

static const char *const kernel_names[] = {"scalar", "avx2", "avx512", "avx512vnni"};
enum { NKERNELS = 4 };
static bool have_kernel[NKERNELS];

static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}
static uint64_t rnd_below(uint64_t n) { return n ? rnd() % n : 0; }

static void fill_random(uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)rnd();
}

static int cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

static bool fast_eq(const ws_fast *a, const ws_fast *b) {
    for (int l = 0; l < WS_FAST_LANES; l++)
        if (a->lane[l] != b->lane[l]) return false;
    return true;
}
static bool fast_all_lanes_differ(const ws_fast *a, const ws_fast *b) {
    for (int l = 0; l < WS_FAST_LANES; l++)
        if (a->lane[l] == b->lane[l]) return false;
    return true;
}

static ws_fast digest_with(const char *kernel, const ws_fastkey *k, uint64_t start,
                           const void *data, size_t n, int ub) {
    ws_fast d = {{0, 0, 0}};
    CHECK(ws_fast_set_kernel(kernel) == WS_OK);
    CHECK(ws_fast_accumulate(k, &d, start, data, n, ub, NULL) == WS_OK);
    ws_fast_set_kernel("auto");
    return d;
}

static void test_kernel_selection(void) {
    CHECK(ws_fast_set_kernel("scalar") == WS_OK);
    CHECK(strcmp(ws_fast_kernel(), "scalar") == 0);
    CHECK(ws_fast_set_kernel("bogus") == WS_ERR_ARG);
    CHECK(ws_fast_set_kernel(NULL) == WS_ERR_ARG);
    CHECK(strcmp(ws_fast_kernel(), "scalar") == 0); /* a failed call changes nothing */
    for (int i = 0; i < NKERNELS; i++) {
        ws_err r = ws_fast_set_kernel(kernel_names[i]);
        CHECK(r == WS_OK || r == WS_ERR_NOTFOUND);
        have_kernel[i] = r == WS_OK;
        if (r == WS_OK) CHECK(strcmp(ws_fast_kernel(), kernel_names[i]) == 0);
    }
    CHECK(have_kernel[0]);
    CHECK(ws_fast_set_kernel("auto") == WS_OK);
    printf("fast digest kernels:");
    for (int i = 0; i < NKERNELS; i++)
        if (have_kernel[i]) printf(" %s", kernel_names[i]);
    printf("; auto picks %s\n", ws_fast_kernel());
}

/* The kernels in kernel_names order, scalar first (NULL where not compiled in). */
static const wsi_fast_run_fn runs[NKERNELS] = {wsi_fast_run_scalar,
#ifdef WSI_FAST_HAVE_X86
                                               wsi_fast_run_avx2, wsi_fast_run_avx512,
                                               wsi_fast_run_avx512vnni
#else
                                               NULL, NULL, NULL
#endif
};

/* Each SIMD kernel equals the scalar one on every (offset, length) inside a block. */
static void test_kernels_direct(const ws_fastkey *k) {
    uint8_t *buf = malloc(2 * B + 64);
    fill_random(buf, 2 * B + 64);
    for (int ub = 1; ub <= 2; ub++)
        for (size_t off = 0; off <= B; off += (off < 40 || off > B - 40) ? 1 : 37)
            for (size_t n = 0; off + n <= B; n += (n < 70 || off + n > B - 70) ? 1 : 53) {
                const uint8_t *data = buf + (off * 7 + n) % 61; /* odd alignments */
                uint64_t want[3], got[3];
                runs[0](k, off, data, n, ub, want);
                for (int i = 1; i < NKERNELS; i++) {
                    if (!have_kernel[i] || !runs[i]) continue;
                    runs[i](k, off, data, n, ub, got);
                    CHECK(memcmp(want, got, sizeof want) == 0);
                }
            }
    /* the largest inner sums: all units at their maximum */
    memset(buf, 0xFF, 2 * B);
    for (int ub = 1; ub <= 2; ub++) {
        uint64_t want[3], got[3];
        runs[0](k, 0, buf, B, ub, want);
        for (int l = 0; l < WS_FAST_LANES; l++) {
            uint64_t s = 0;
            for (size_t i = 0; i < B; i++) s += k->k[l][i] * (ub == 1 ? 0xFFu : 0xFFFFu);
            CHECK(want[l] == s);
        }
        for (int i = 1; i < NKERNELS; i++) {
            if (!have_kernel[i] || !runs[i]) continue;
            runs[i](k, 0, buf, B, ub, got);
            CHECK(memcmp(want, got, sizeof want) == 0);
        }
    }
    free(buf);
}

/* Extreme keys and units: the largest inner sums, the largest 32-bit partial sums of the
 * avx512vnni kernel (keys whose pieces are all 2047 against units 0 and 0xFFFF). */
static void test_kernels_extremes(const ws_fastkey *real) {
    ws_fastkey *k = aligned_alloc(64, (sizeof *k + 63) / 64 * 64);
    memcpy(k, real, sizeof *k);
    static const uint64_t fills[] = {UINT32_MAX, (UINT64_C(1) << 22) - 1, 1};
    uint8_t *buf = malloc(2 * B);
    for (size_t f = 0; f < sizeof fills / sizeof fills[0]; f++) {
        for (int l = 0; l < WS_FAST_LANES; l++)
            for (size_t i = 0; i < B; i++) k->k[l][i] = fills[f];
        wsi_fastkey_expand(k);
        for (int pattern = 0; pattern < 3; pattern++) {
            for (size_t i = 0; i < 2 * B; i++)
                buf[i] = pattern == 0 ? 0 : pattern == 1 ? 0xFF : (i & 2 ? 0xFF : 0);
            for (int ub = 1; ub <= 2; ub++)
                for (size_t n = B - 33; n <= B; n++) {
                    uint64_t want[3], got[3];
                    runs[0](k, B - n, buf, n, ub, want);
                    uint64_t u = pattern == 1 ? (ub == 1 ? 0xFF : 0xFFFF) : 0;
                    if (pattern < 2) CHECK(want[0] == fills[f] * u * n);
                    for (int i = 1; i < NKERNELS; i++) {
                        if (!have_kernel[i] || !runs[i]) continue;
                        runs[i](k, B - n, buf, n, ub, got);
                        CHECK(memcmp(want, got, sizeof want) == 0);
                    }
                }
        }
    }
    free(buf);
    free(k);
}

/* Through the public API: every kernel equals scalar at odd lengths, starts and alignments. */
static void test_kernels_equal_scalar(const ws_fastkey *k) {
    static const size_t lens[] = {0,  1,     2, 7,     8,         15,   16,    31,    32,
                                  33, B - 1, B, B + 1, 2 * B + 5, 3000, 65536, 200003};
    static const uint64_t starts[] = {0,     1, 5, B - 1, B, B + 1,
                                      12345, (UINT64_C(1) << 40) + 3,
                                      UINT64_MAX - (UINT64_C(1) << 20)};
    static const size_t aligns[] = {0, 1, 3, 7};
    size_t maxbytes = 2 * 200003 + 16;
    uint8_t *buf = malloc(maxbytes);
    fill_random(buf, maxbytes);
    int mismatches = 0;
    for (int ub = 1; ub <= 2; ub++)
        for (size_t a = 0; a < sizeof lens / sizeof lens[0]; a++)
            for (size_t s = 0; s < sizeof starts / sizeof starts[0]; s++)
                for (size_t al = 0; al < sizeof aligns / sizeof aligns[0]; al++) {
                    const uint8_t *data = buf + aligns[al];
                    ws_fast want = digest_with("scalar", k, starts[s], data, lens[a], ub);
                    if (lens[a] == 0)
                        CHECK(want.lane[0] == 0 && want.lane[1] == 0 && want.lane[2] == 0);
                    for (int i = 1; i < NKERNELS; i++) {
                        if (!have_kernel[i]) continue;
                        ws_fast got = digest_with(kernel_names[i], k, starts[s], data, lens[a], ub);
                        if (!fast_eq(&want, &got)) {
                            mismatches++;
                            fprintf(stderr, "kernel %s: ub %d len %zu start %llu align %zu\n",
                                    kernel_names[i], ub, lens[a], (unsigned long long)starts[s],
                                    aligns[al]);
                        }
                    }
                }
    CHECK(mismatches == 0);
    free(buf);
}

/* A buffer accumulated whole equals the sum of random splits accumulated in any order. */
static void test_split_invariance(const ws_fastkey *k) {
    const size_t n = 300001;
    uint8_t *buf = malloc(2 * n);
    fill_random(buf, 2 * n);
    for (int kern = 0; kern < NKERNELS; kern++) {
        if (!have_kernel[kern]) continue;
        for (int ub = 1; ub <= 2; ub++)
            for (int round = 0; round < 4; round++) {
                uint64_t start = round == 0 ? 0 : rnd_below(UINT64_C(1) << (12 * round));
                ws_fast whole = digest_with(kernel_names[kern], k, start, buf, n, ub);
                /* cut points: some anywhere, some close to the previous one (tiny pieces) */
                enum { MAXCUT = 64 };
                size_t cuts[MAXCUT + 2];
                size_t ncuts = 1 + rnd_below(MAXCUT);
                cuts[0] = 0;
                for (size_t i = 1; i <= ncuts; i++) {
                    size_t c = rnd() & 1 ? rnd_below(n + 1) : cuts[i - 1] + rnd_below(3 * B);
                    cuts[i] = c > n ? n : c;
                }
                cuts[ncuts + 1] = n;
                qsort(cuts, ncuts + 2, sizeof cuts[0], cmp_size);
                size_t order[MAXCUT + 1];
                for (size_t i = 0; i <= ncuts; i++) order[i] = i;
                for (size_t i = ncuts; i > 0; i--) { /* shuffle */
                    size_t j = rnd_below(i + 1), t = order[i];
                    order[i] = order[j];
                    order[j] = t;
                }
                ws_fast sum = {{0, 0, 0}}, direct = {{0, 0, 0}};
                CHECK(ws_fast_set_kernel(kernel_names[kern]) == WS_OK);
                for (size_t i = 0; i <= ncuts; i++) {
                    size_t a = cuts[order[i]], b = cuts[order[i] + 1];
                    ws_fast part = {{0, 0, 0}};
                    CHECK(ws_fast_accumulate(k, &part, start + a, buf + a * ub, b - a, ub, NULL) == WS_OK);
                    CHECK(ws_fast_add(&sum, &part, NULL) == WS_OK);
                    /* accumulating into a running total is the same as adding parts */
                    CHECK(ws_fast_accumulate(k, &direct, start + a, buf + a * ub, b - a, ub, NULL) == WS_OK);
                }
                ws_fast_set_kernel("auto");
                CHECK(fast_eq(&whole, &sum));
                CHECK(fast_eq(&whole, &direct));
            }
    }
    /* a run equals its units given one at a time */
    ws_fast whole = {{0, 0, 0}}, ones = {{0, 0, 0}};
    CHECK(ws_fast_accumulate(k, &whole, 999, buf, 3000, 2, NULL) == WS_OK);
    for (size_t i = 0; i < 3000; i++) CHECK(ws_fast_accumulate(k, &ones, 999 + i, buf + 2 * i, 1, 2, NULL) == WS_OK);
    CHECK(fast_eq(&whole, &ones));
    free(buf);
}

/* The use the digest exists for: a [rows, cols] tensor sharded by columns over tp ranks (each
 * rank holds a [rows, cols/tp] slice, contiguous in its own memory) digests to the same value
 * as the whole tensor, and row-band digests add up to it. */
static void test_shards_and_bands(const ws_fastkey *k) {
    const size_t rows = 97, cols = 1536; /* a row is 1.5 blocks: bands straddle blocks */
    uint16_t *t = malloc(rows * cols * 2);
    fill_random((uint8_t *)t, rows * cols * 2);
    ws_fast whole = {{0, 0, 0}};
    CHECK(ws_fast_accumulate(k, &whole, 0, t, rows * cols, 2, NULL) == WS_OK);
    for (size_t tp = 2; tp <= 8; tp *= 2) {
        size_t sc = cols / tp;
        uint16_t *shard = malloc(rows * sc * 2);
        ws_fast total = {{0, 0, 0}};
        for (size_t r = tp; r-- > 0;) { /* ranks in reverse order */
            for (size_t i = 0; i < rows; i++) memcpy(shard + i * sc, t + i * cols + r * sc, sc * 2);
            ws_fast part = {{0, 0, 0}};
            for (size_t i = 0; i < rows; i++)
                CHECK(ws_fast_accumulate(k, &part, i * cols + r * sc, shard + i * sc, sc, 2, NULL) == WS_OK);
            CHECK(ws_fast_add(&total, &part, NULL) == WS_OK);
        }
        CHECK(fast_eq(&whole, &total));
        free(shard);
    }
    ws_fast bands = {{0, 0, 0}};
    for (size_t r0 = 0; r0 < rows; r0 += 10) {
        size_t r1 = r0 + 10 < rows ? r0 + 10 : rows;
        ws_fast band = {{0, 0, 0}};
        CHECK(ws_fast_accumulate(k, &band, r0 * cols, t + r0 * cols, (r1 - r0) * cols, 2, NULL) == WS_OK);
        CHECK(ws_fast_add(&bands, &band, NULL) == WS_OK);
    }
    CHECK(fast_eq(&whole, &bands));
    free(t);
}

/* Every single-bit flip changes every lane (a nonzero K*d*y^m, |K*d| < p); swaps change it. */
static void test_sensitivity(const ws_fastkey *k) {
    const size_t nbytes = 64 * 1024;
    uint8_t *buf = malloc(nbytes);
    fill_random(buf, nbytes);
    for (int ub = 1; ub <= 2; ub++) {
        size_t n = nbytes / ub;
        ws_fast base = {{0, 0, 0}};
        CHECK(ws_fast_accumulate(k, &base, 77, buf, n, ub, NULL) == WS_OK);
        int missed = 0;
        for (int t = 0; t < 5000; t++) {
            size_t byte = rnd_below(nbytes);
            uint8_t bit = (uint8_t)(1u << rnd_below(8));
            buf[byte] ^= bit;
            ws_fast d = {{0, 0, 0}};
            CHECK(ws_fast_accumulate(k, &d, 77, buf, n, ub, NULL) == WS_OK);
            buf[byte] ^= bit;
            if (!fast_all_lanes_differ(&base, &d)) missed++;
        }
        CHECK(missed == 0);
        missed = 0;
        for (int t = 0; t < 200; t++) {
            size_t a = rnd_below(n), b = t & 1 ? rnd_below(n) : (a / B) * B + rnd_below(B);
            if (b >= n) b = n - 1;
            if (memcmp(buf + a * ub, buf + b * ub, ub) == 0) continue; /* equal units */
            uint8_t tmp[2];
            memcpy(tmp, buf + a * ub, ub);
            memcpy(buf + a * ub, buf + b * ub, ub);
            memcpy(buf + b * ub, tmp, ub);
            ws_fast d = {{0, 0, 0}};
            CHECK(ws_fast_accumulate(k, &d, 77, buf, n, ub, NULL) == WS_OK);
            memcpy(buf + b * ub, buf + a * ub, ub);
            memcpy(buf + a * ub, tmp, ub);
            if (fast_eq(&base, &d)) missed++;
        }
        CHECK(missed == 0);
        /* the same bytes at another global index give another digest */
        ws_fast moved = {{0, 0, 0}};
        CHECK(ws_fast_accumulate(k, &moved, 78, buf, n, ub, NULL) == WS_OK);
        CHECK(!fast_eq(&base, &moved));
    }
    free(buf);
}

/* An independent check of the outer polynomial: a lone unit u at index j contributes
 * K[j mod B] * u * y^(j / B), here with a plain square-and-multiply. */
static uint64_t test_mulmod(uint64_t a, uint64_t b) {
    return (uint64_t)(((unsigned __int128)a * b) % P);
}
static void test_single_units(const ws_fastkey *k) {
    static const uint64_t idx[] = {0, 1, B - 1, B, 5 * B + 17, (UINT64_C(1) << 32) + 99,
                                   UINT64_MAX - 7, UINT64_MAX};
    for (size_t t = 0; t < sizeof idx / sizeof idx[0]; t++)
        for (int ub = 1; ub <= 2; ub++) {
            uint8_t data[2] = {0xA7, ub == 2 ? 0xC3 : 0};
            uint64_t u = data[0] | (uint64_t)data[1] << 8, j = idx[t];
            ws_fast d = {{0, 0, 0}};
            CHECK(ws_fast_accumulate(k, &d, j, data, 1, ub, NULL) == WS_OK);
            for (int l = 0; l < WS_FAST_LANES; l++) {
                uint64_t r = 1, y = k->y[l];
                for (uint64_t e = j / B; e; e >>= 1, y = test_mulmod(y, y))
                    if (e & 1) r = test_mulmod(r, y);
                CHECK(d.lane[l] == test_mulmod(r, k->k[l][j % B] * u % P));
            }
        }
}

static void test_hex(void) {
    ws_fast d = {{0, 1, P - 1}}, e;
    char hex[49];
    ws_fast_hex(&d, hex);
    CHECK(strcmp(hex, "0000000000000000" "0000000000000001" "1ffffffffffffffe") == 0);
    CHECK(ws_fast_from_hex(hex, &e) == WS_OK && fast_eq(&d, &e));
    for (int t = 0; t < 1000; t++) {
        for (int l = 0; l < WS_FAST_LANES; l++) d.lane[l] = rnd() % P;
        ws_fast_hex(&d, hex);
        CHECK(strlen(hex) == 48);
        CHECK(ws_fast_from_hex(hex, &e) == WS_OK && fast_eq(&d, &e));
    }
    static const char good[] = "0123456789abcdef" "0000000000000000" "1ffffffffffffffe";
    CHECK(ws_fast_from_hex(good, &e) == WS_OK && e.lane[0] == UINT64_C(0x0123456789abcdef));
    CHECK(ws_fast_from_hex("0123456789ABCDEF" "0000000000000000" "1FFFFFFFFFFFFFFE", &e) == WS_OK);
    CHECK(e.lane[0] == UINT64_C(0x0123456789abcdef) && e.lane[2] == P - 1);
    const char *bad[] = {
        "",
        "0123456789abcdef0000000000000000",                      /* 32 */
        "0123456789abcdef" "0000000000000000" "1ffffffffffffff",  /* 47 */
        "0123456789abcdef" "0000000000000000" "1ffffffffffffffe0", /* 49 */
        "0123456789abcdeg" "0000000000000000" "1ffffffffffffffe", /* non-hex */
        "0123456789abcdef" "00000000 0000000" "1ffffffffffffffe", /* space */
        "0123456789abcdef" "000000000000000-" "1ffffffffffffffe",
        "1fffffffffffffff" "0000000000000000" "0000000000000000", /* lane 0 = p */
        "0000000000000000" "2000000000000000" "0000000000000000", /* lane 1 > p */
        "0000000000000000" "0000000000000000" "ffffffffffffffff", /* lane 2 > p */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ws_fast keep = {{7, 8, 9}};
        CHECK(ws_fast_from_hex(bad[i], &keep) == WS_ERR_FORMAT);
        CHECK(keep.lane[0] == 7 && keep.lane[1] == 8 && keep.lane[2] == 9); /* untouched */
    }
    CHECK(ws_fast_from_hex(NULL, &e) == WS_ERR_ARG);
    CHECK(ws_fast_from_hex(good, NULL) == WS_ERR_ARG);
}

static void test_add_and_args(const ws_fastkey *k) {
    ws_fast a = {{P - 1, 5, 0}}, b = {{1, P - 5, 0}}, z = {{0, 0, 0}};
    CHECK(ws_fast_add(&a, &b, NULL) == WS_OK);
    CHECK(a.lane[0] == 0 && a.lane[1] == 0 && a.lane[2] == 0);
    ws_fast c = {{3, 4, 5}};
    CHECK(ws_fast_add(&c, &z, NULL) == WS_OK);
    CHECK(c.lane[0] == 3 && c.lane[1] == 4 && c.lane[2] == 5);
    /* invalid arguments are errors (named in err) and leave the accumulator alone: a NULL
     * key must never leave a zero accumulator that looks like a digest */
    ws_error e;
    CHECK(ws_fast_add(&c, NULL, &e) == WS_ERR_ARG && e.code == WS_ERR_ARG);
    CHECK(ws_fast_add(NULL, &c, &e) == WS_ERR_ARG && strstr(e.what, "accumulator"));
    uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK(ws_fast_accumulate(k, &c, 0, data, 4, 3, &e) == WS_ERR_ARG && strstr(e.what, "unit_bytes"));
    CHECK(ws_fast_accumulate(k, &c, 0, NULL, 4, 2, &e) == WS_ERR_ARG && strstr(e.what, "data"));
    CHECK(ws_fast_accumulate(NULL, &c, 0, data, 4, 2, &e) == WS_ERR_ARG && strstr(e.what, "key"));
    CHECK(ws_fast_accumulate(k, &c, UINT64_MAX - 2, data, 4, 2, &e) == WS_ERR_LIMIT);
    CHECK(ws_fast_accumulate(k, &c, 0, data, 0, 2, NULL) == WS_OK); /* empty run: a no-op */
    CHECK(ws_fast_accumulate(k, &c, 0, NULL, 0, 2, NULL) == WS_OK);
    CHECK(c.lane[0] == 3 && c.lane[1] == 4 && c.lane[2] == 5);
    CHECK(ws_fast_accumulate(k, NULL, 0, data, 4, 2, &e) == WS_ERR_ARG);
    ws_fast zero = {{0, 0, 0}};
    CHECK(ws_fast_accumulate(NULL, &zero, 0, data, 4, 2, NULL) == WS_ERR_ARG);

    ws_fastkey *k2 = NULL;
    ws_error err;
    CHECK(ws_fastkey_create(NULL, 3, &k2, &err) == WS_ERR_ARG && k2 == NULL);
    CHECK(err.code == WS_ERR_ARG);
    CHECK(ws_fastkey_create("x", 1, NULL, NULL) == WS_ERR_ARG);
    CHECK_OK(ws_fastkey_create(NULL, 0, &k2, NULL)); /* the empty seed is a seed */
    CHECK(k2 && strlen(ws_fastkey_id(k2)) == 16);
    /* SHA-256("") = e3b0c44298fc1c14... */
    CHECK(k2 && strcmp(ws_fastkey_id(k2), "e3b0c44298fc1c14") == 0);
    ws_fastkey_free(k2);
    ws_fastkey_free(NULL);
    CHECK(ws_fastkey_id(NULL) == NULL);
    CHECK(((uintptr_t)k & 63) == 0);
    for (int l = 0; l < WS_FAST_LANES; l++) {
        CHECK(k->y[l] > 0 && k->y[l] < P);
        for (size_t i = 0; i < B; i++) CHECK(k->k[l][i] > 0 && k->k[l][i] <= UINT32_MAX);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Shared vectors                                                                              */
/* ------------------------------------------------------------------------------------------ */

static size_t unhex(const char *s, uint8_t *out, size_t cap) {
    size_t n = strlen(s) / 2;
    if (n > cap) return (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) return (size_t)-1;
        out[i] = (uint8_t)v;
    }
    return n;
}

static ws_fastkey *key_for(const char *seed_hex) {
    uint8_t seed[256];
    size_t len = unhex(seed_hex, seed, sizeof seed);
    ws_fastkey *k = NULL;
    if (len == (size_t)-1 || ws_fastkey_create(seed, len, &k, NULL) != WS_OK) return NULL;
    return k;
}

/* Sealed tensor digests: through ws_digest_buffer (the whole path, native policy) and as a raw
 * sum of two pieces sealed with ws_fast_seal; every expected value differs from the others
 * (the same data reshaped, zero-extended or of another dtype never shares a digest). */
static void test_tensor_vectors(json_t *tens) {
    CHECK(json_array_size(tens) >= 20);
    size_t i;
    json_t *e;
    json_array_foreach(tens, i, e) {
        ws_fastkey *k = key_for(json_string_value(json_object_get(e, "seed")));
        ws_dtype dt = WS_DTYPE__COUNT;
        CHECK(k && ws_dtype_from_name(json_string_value(json_object_get(e, "canonical_dtype")),
                                      &dt) == WS_OK);
        if (!k) continue;
        json_t *r = json_object_get(e, "recipe"), *sh = json_object_get(e, "shape");
        uint64_t mult = (uint64_t)json_integer_value(json_object_get(r, "mult"));
        uint64_t add = (uint64_t)json_integer_value(json_object_get(r, "add"));
        unsigned shift = (unsigned)json_integer_value(json_object_get(r, "shift"));
        const char *expected = json_string_value(json_object_get(e, "expected"));
        int ndim = (int)json_array_size(sh);
        uint64_t shape[WS_MAX_DIMS], numel = 1;
        for (int d = 0; d < ndim; d++) {
            shape[d] = (uint64_t)json_integer_value(json_array_get(sh, (size_t)d));
            numel *= shape[d];
        }
        int ub = ws_dtype_size(dt) == 1 ? 1 : 2;
        size_t n = (size_t)(numel * ws_dtype_units(dt));
        uint8_t *data = malloc(2 * n + 8);
        for (size_t j = 0; j < n; j++) {
            uint64_t u = ((((uint64_t)j * mult + add) & 0xFFFFFFFFu) >> shift);
            data[j * ub] = (uint8_t)u;
            if (ub == 2) data[j * ub + 1] = (uint8_t)(u >> 8);
        }
        ws_digest d;
        ws_error err;
        CHECK_OK(ws_digest_buffer(dt, WS_CANON_NATIVE, data, ndim, shape, WS_ALGO_FAST, k, &d,
                                  NULL, &err));
        char hex[49];
        ws_fast_hex(&d.fast, hex);
        if (!expected || strcmp(hex, expected) != 0) {
            check_failures++;
            fprintf(stderr, "tensor vector %zu (%s): got %s\n", i,
                    json_string_value(json_object_get(e, "canonical_dtype")), hex);
        }
        check_count++;
        ws_fast a = {{0, 0, 0}}, b = {{0, 0, 0}};
        size_t cut = n / 2;
        CHECK_OK(ws_fast_accumulate(k, &b, cut, data + cut * ub, n - cut, ub, &err));
        CHECK_OK(ws_fast_accumulate(k, &a, 0, data, cut, ub, &err));
        CHECK_OK(ws_fast_add(&a, &b, &err));
        CHECK(ws_fast_seal(k, &a, dt, ndim, shape) == WS_OK && fast_eq(&a, &d.fast));
        for (size_t q = 0; q < i; q++) {
            json_t *o = json_array_get(tens, q);
            if (strcmp(json_string_value(json_object_get(o, "seed")),
                       json_string_value(json_object_get(e, "seed"))) == 0)
                CHECK(strcmp(json_string_value(json_object_get(o, "expected")), expected) != 0);
        }
        free(data);
        ws_fastkey_free(k);
    }
    /* bad arguments of the seal */
    ws_fastkey *k = key_for("00");
    ws_fast z = {{0, 0, 0}};
    uint64_t big[2] = {UINT64_MAX / 2, 3}, one[1] = {1};
    CHECK(ws_fast_seal(NULL, &z, WS_BF16, 1, one) == WS_ERR_ARG);
    CHECK(ws_fast_seal(k, NULL, WS_BF16, 1, one) == WS_ERR_ARG);
    CHECK(ws_fast_seal(k, &z, WS_DTYPE__COUNT, 1, one) == WS_ERR_ARG);
    CHECK(ws_fast_seal(k, &z, WS_BF16, WS_MAX_DIMS + 1, one) == WS_ERR_ARG);
    CHECK(ws_fast_seal(k, &z, WS_BF16, 1, NULL) == WS_ERR_ARG);
    CHECK(ws_fast_seal(k, &z, WS_F32, 2, big) == WS_ERR_LIMIT);
    CHECK(z.lane[0] == 0 && z.lane[1] == 0 && z.lane[2] == 0); /* untouched on failure */
    ws_fastkey_free(k);
    printf("fast digest tensor vectors: %zu checked\n", json_array_size(tens));
}

static void test_vectors(void) {
    json_error_t jerr;
    json_t *doc = json_load_file(WS_SOURCE_DIR "/tests/vectors/fast_digest.json", 0, &jerr);
    CHECK(doc != NULL);
    if (!doc) {
        fprintf(stderr, "fast_digest.json: %s (line %d)\n", jerr.text, jerr.line);
        return;
    }
    json_t *keys = json_object_get(doc, "keys"), *vecs = json_object_get(doc, "vectors");
    CHECK(json_array_size(keys) >= 2 && json_array_size(vecs) >= 20);
    size_t i;
    json_t *e;
    json_array_foreach(keys, i, e) {
        ws_fastkey *k = key_for(json_string_value(json_object_get(e, "seed")));
        CHECK(k != NULL);
        if (!k) continue;
        CHECK(strcmp(ws_fastkey_id(k), json_string_value(json_object_get(e, "key_id"))) == 0);
        for (int l = 0; l < WS_FAST_LANES; l++) {
            json_t *y = json_array_get(json_object_get(e, "y"), l);
            CHECK(strtoull(json_string_value(y), NULL, 16) == k->y[l]);
            json_t *head = json_array_get(json_object_get(e, "k_head"), l);
            for (size_t j = 0; j < json_array_size(head); j++)
                CHECK((uint64_t)json_integer_value(json_array_get(head, j)) == k->k[l][j]);
            json_t *last = json_array_get(json_object_get(e, "k_last"), l);
            CHECK((uint64_t)json_integer_value(last) == k->k[l][B - 1]);
        }
        ws_fastkey_free(k);
    }
    size_t checked = 0;
    json_array_foreach(vecs, i, e) {
        ws_fastkey *k = key_for(json_string_value(json_object_get(e, "seed")));
        CHECK(k != NULL);
        if (!k) continue;
        json_t *r = json_object_get(e, "recipe");
        uint64_t mult = (uint64_t)json_integer_value(json_object_get(r, "mult"));
        uint64_t add = (uint64_t)json_integer_value(json_object_get(r, "add"));
        unsigned shift = (unsigned)json_integer_value(json_object_get(r, "shift"));
        size_t n = (size_t)json_integer_value(json_object_get(e, "n"));
        int ub = (int)json_integer_value(json_object_get(e, "unit_bytes"));
        uint64_t start = (uint64_t)json_integer_value(json_object_get(e, "start"));
        const char *expected = json_string_value(json_object_get(e, "expected"));
        CHECK(expected && (ub == 1 || ub == 2));
        uint8_t *buf = malloc(2 * n + 8);
        uint8_t *data = buf + 1; /* deliberately misaligned */
        for (size_t j = 0; j < n; j++) {
            uint64_t u = ((((uint64_t)j * mult + add) & 0xFFFFFFFFu) >> shift);
            data[j * ub] = (uint8_t)u;
            if (ub == 2) data[j * ub + 1] = (uint8_t)(u >> 8);
        }
        for (int kern = 0; kern < NKERNELS; kern++) {
            if (!have_kernel[kern]) continue;
            ws_fast d = digest_with(kernel_names[kern], k, start, data, n, ub);
            char hex[49];
            ws_fast_hex(&d, hex);
            if (!expected || strcmp(hex, expected) != 0) {
                check_failures++;
                fprintf(stderr, "vector %zu (%s, n %zu, ub %d, start %llu): kernel %s got %s\n",
                        i, json_string_value(json_object_get(e, "recipe_text")), n, ub,
                        (unsigned long long)start, kernel_names[kern], hex);
            }
            check_count++;
            /* and split in two at an odd point */
            size_t cut = n / 3 + 1 > n ? n : n / 3 + 1;
            ws_fast a = {{0, 0, 0}}, b = {{0, 0, 0}};
            ws_fast_set_kernel(kernel_names[kern]);
            CHECK(ws_fast_accumulate(k, &b, start + cut, data + cut * ub, n - cut, ub, NULL) == WS_OK);
            CHECK(ws_fast_accumulate(k, &a, start, data, cut, ub, NULL) == WS_OK);
            ws_fast_set_kernel("auto");
            CHECK(ws_fast_add(&a, &b, NULL) == WS_OK);
            CHECK(fast_eq(&a, &d));
        }
        checked++;
        free(buf);
        ws_fastkey_free(k);
    }
    CHECK(checked == json_array_size(vecs));
    printf("fast digest vectors: %zu checked with every kernel\n", checked);
    test_tensor_vectors(json_object_get(doc, "tensors"));
    json_decref(doc);
}

/* wsi_fast_accumulate_scan: the digest of wsi_fast_accumulate, and a NaN/Inf candidate found
 * wherever it sits (first, last, inside any block; either sign), none reported without one. */
static void test_accumulate_scan(const ws_fastkey *k) {
    const size_t n = 3 * B + 77;
    uint16_t *u = malloc(n * 2);
    static const struct { uint16_t mask, finite, special; } fmt[] = {
        {0x7f80u, 0x7f7fu, 0x7f80u}, /* bf16: largest finite, +Inf */
        {0x7f80u, 0x7f7fu, 0x7fc1u}, /* bf16 NaN */
        {0x7c00u, 0x7bffu, 0x7c00u}, /* f16 */
        {0x7c00u, 0x7bffu, 0x7e00u},
    };
    static const size_t at[] = {0, 1, B - 1, B, 2 * B + 5, 3 * B + 76};
    for (size_t f = 0; f < sizeof fmt / sizeof fmt[0]; f++)
        for (uint64_t start = 0; start < 2 * B; start += B - 3) {
            for (size_t i = 0; i < n; i++) u[i] = (uint16_t)(rnd() % (fmt[f].finite + 1u));
            u[n / 2] = fmt[f].finite | 0x8000u; /* finite with the sign set: not a candidate */
            ws_fast want = {{0, 0, 0}}, got = {{0, 0, 0}};
            wsi_fast_accumulate(k, &want, start, u, n, 2);
            CHECK(!wsi_fast_accumulate_scan(k, &got, start, u, n, fmt[f].mask));
            CHECK(fast_eq(&want, &got));
            for (size_t a = 0; a < sizeof at / sizeof at[0]; a++)
                for (int sign = 0; sign < 2; sign++) {
                    uint16_t keep = u[at[a]];
                    u[at[a]] = (uint16_t)(fmt[f].special | (sign ? 0x8000u : 0));
                    ws_fast w = {{0, 0, 0}}, g = {{0, 0, 0}};
                    wsi_fast_accumulate(k, &w, start, u, n, 2);
                    CHECK(wsi_fast_accumulate_scan(k, &g, start, u, n, fmt[f].mask));
                    CHECK(fast_eq(&w, &g));
                    u[at[a]] = keep;
                }
        }
    free(u);
}

int main(void) {
    ws_fastkey *k = NULL;
    CHECK_OK(ws_fastkey_create(WS_FAST_DEFAULT_SEED, strlen(WS_FAST_DEFAULT_SEED), &k, NULL));
    if (!k) return check_report("test_fastdigest");
    test_kernel_selection();
    test_kernels_direct(k);
    test_kernels_extremes(k);
    test_kernels_equal_scalar(k);
    test_split_invariance(k);
    test_shards_and_bands(k);
    test_sensitivity(k);
    test_single_units(k);
    test_accumulate_scan(k);
    test_hex();
    test_add_and_args(k);
    test_vectors();
    ws_fastkey_free(k);
    return check_report("test_fastdigest");
}
