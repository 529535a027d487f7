/* SGLang's tensor hash: every kernel (scalar, AVX2, AVX-512) and both paths against the vectors
 * SGLang's own Triton kernel produced (tests/vectors/sglang_hash.txt), the streaming hasher fed
 * in pieces (in order, out of order, with zero gaps left out), and its refusals. */
#include "check.h"
#include "sglang_hash.h"
#include "weightsum.h"
#include "weightsum_experimental.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char *const kernel_names[] = {"scalar", "avx2", "avx512"};
enum { NKERNELS = 3 };

/* The vectors' byte recipe (documented at the top of the vectors file). */
static uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= UINT64_C(0xBF58476D1CE4E5B9);
    x ^= x >> 27;
    x *= UINT64_C(0x94D049BB133111EB);
    return x ^ (x >> 31);
}

/* Bytes [at, at + n) of the pattern. */
static void make(const char *pattern, uint64_t seed, uint64_t at, uint8_t *p, size_t n) {
    if (strcmp(pattern, "zero") == 0) { memset(p, 0, n); return; }
    if (strcmp(pattern, "ones") == 0) { memset(p, 0xFF, n); return; }
    bool boolean = strcmp(pattern, "bool") == 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t b = at + i;
        uint8_t v = (uint8_t)(mix(seed + (b / 8 + 1) * UINT64_C(0x9E3779B97F4A7C15)) >> (8 * (b % 8)));
        p[i] = boolean ? v & 1 : v;
    }
}

static uint64_t rng = 12345;
static uint64_t rnd(void) { return mix(rng += UINT64_C(0x9E3779B97F4A7C15)); }

static uint64_t hash_pieces(ws_sglang_path path, const uint8_t *data, size_t n, int mode) {
    /* mode 0: in order, random piece sizes; 1: shuffled pieces; 2: shuffled, zero pieces left out */
    size_t cuts[40], nc = 0;
    cuts[nc++] = 0;
    while (nc < 39 && n) {
        size_t c = (size_t)(rnd() % (n + 1));
        cuts[nc++] = c;
    }
    cuts[nc++] = n;
    for (size_t i = 1; i < nc; i++) /* sort */
        for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
            size_t t = cuts[j]; cuts[j] = cuts[j - 1]; cuts[j - 1] = t;
        }
    size_t order[40];
    for (size_t i = 0; i + 1 < nc; i++) order[i] = i;
    if (mode >= 1)
        for (size_t i = nc - 1; i-- > 1;) {
            size_t j = (size_t)(rnd() % (i + 1)), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
    ws_sglang_hasher *h = NULL;
    uint64_t v = 0;
    CHECK_OK(ws_sglang_hasher_create(path, n, &h, NULL));
    for (size_t k = 0; h && k + 1 < nc; k++) {
        size_t i = order[k], a = cuts[i], b = cuts[i + 1];
        bool all_zero = true;
        for (size_t j = a; j < b && all_zero; j++) all_zero = data[j] == 0;
        if (mode == 2 && all_zero) continue;
        CHECK_OK(ws_sglang_hasher_update(h, a, data + a, b - a, NULL));
    }
    CHECK_OK(ws_sglang_hasher_final(h, &v, NULL));
    ws_sglang_hasher_free(h);
    return v;
}

static void test_vectors(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/vectors/sglang_hash.txt", WS_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    if (!f) return;
    char line[512];
    int n = 0, big = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char name[128], dtype[32], pattern[16], gpu_hex[32], cpu_hex[32];
        unsigned long long nbytes, seed;
        if (sscanf(line, "%127s %31s %llu %15s %llx %31s %31s", name, dtype, &nbytes, pattern, &seed,
                   gpu_hex, cpu_hex) != 7) {
            CHECK(!"malformed vector line");
            continue;
        }
        uint64_t gpu, cpu, got;
        CHECK(ws_sglang_from_hex(gpu_hex, &gpu) == WS_OK);
        CHECK(ws_sglang_from_hex(cpu_hex, &cpu) == WS_OK);
        n++;
        if (nbytes > (64u << 20)) { /* the 1 GiB one: streamed in 8 MiB chunks, memory bounded */
            big++;
            size_t chunk = 8u << 20;
            uint8_t *buf = malloc(chunk);
            CHECK(buf != NULL);
            ws_sglang_hasher *hg = NULL, *hc = NULL;
            CHECK_OK(ws_sglang_hasher_create(WS_SGLANG_CUDA, nbytes, &hg, NULL));
            CHECK_OK(ws_sglang_hasher_create(WS_SGLANG_CPU, nbytes, &hc, NULL));
            for (uint64_t at = 0; buf && hg && hc && at < nbytes; at += chunk) {
                size_t k = nbytes - at < chunk ? (size_t)(nbytes - at) : chunk;
                make(pattern, seed, at, buf, k);
                CHECK_OK(ws_sglang_hasher_update(hg, at, buf, k, NULL));
                CHECK_OK(ws_sglang_hasher_update(hc, at, buf, k, NULL));
            }
            uint64_t vg = 0, vc = 0;
            CHECK_OK(ws_sglang_hasher_final(hg, &vg, NULL));
            CHECK_OK(ws_sglang_hasher_final(hc, &vc, NULL));
            CHECK(vg == gpu);
            CHECK(vc == cpu);
            if (vg != gpu) fprintf(stderr, "%s (%s kernel): %016" PRIx64 " != %s\n", name, ws_sglang_kernel(), vg, gpu_hex);
            ws_sglang_hasher_free(hg);
            ws_sglang_hasher_free(hc);
            free(buf);
            continue;
        }
        uint8_t *buf = malloc(nbytes + 1);
        CHECK(buf != NULL);
        if (!buf) continue;
        make(pattern, seed, 0, buf, (size_t)nbytes);
        for (int k = 0; k < NKERNELS; k++) {
            if (ws_sglang_set_kernel(kernel_names[k]) != WS_OK) continue;
            CHECK_OK(ws_sglang_hash(WS_SGLANG_CUDA, buf, nbytes, &got, NULL));
            CHECK(got == gpu);
            if (got != gpu) fprintf(stderr, "%s (%s): %016" PRIx64 " != %s\n", name, kernel_names[k], got, gpu_hex);
            if (nbytes <= (1u << 20)) /* odd alignment: the kernels read unaligned words */
                for (int shift = 1; shift < 4; shift++) {
                    uint8_t *u = malloc(nbytes + 4);
                    if (!u) break;
                    memcpy(u + shift, buf, nbytes);
                    CHECK_OK(ws_sglang_hash(WS_SGLANG_CUDA, u + shift, nbytes, &got, NULL));
                    CHECK(got == gpu);
                    free(u);
                }
            for (int mode = 0; mode < 3; mode++) CHECK(hash_pieces(WS_SGLANG_CUDA, buf, nbytes, mode) == gpu);
        }
        ws_sglang_set_kernel("auto");
        CHECK_OK(ws_sglang_hash(WS_SGLANG_CPU, buf, nbytes, &got, NULL));
        CHECK(got == cpu);
        CHECK(hash_pieces(WS_SGLANG_CPU, buf, nbytes, 0) == cpu);
        free(buf);
    }
    fclose(f);
    CHECK(n >= 300);
    CHECK(big == 1);
}

/* Zero pieces left out equal zeros given; a flipped bit anywhere changes the hash. */
static void test_gaps_and_sensitivity(void) {
    size_t n = 3 * 32768 + 6;
    uint8_t *a = calloc(n, 1);
    CHECK(a != NULL);
    if (!a) return;
    for (size_t i = 1000; i < 2000; i++) a[i] = (uint8_t)rnd();
    for (size_t i = 70001; i < 70003; i++) a[i] = (uint8_t)rnd() | 1;
    uint64_t whole, sparse;
    CHECK_OK(ws_sglang_hash(WS_SGLANG_CUDA, a, n, &whole, NULL));
    ws_sglang_hasher *h = NULL;
    CHECK_OK(ws_sglang_hasher_create(WS_SGLANG_CUDA, n, &h, NULL));
    CHECK_OK(ws_sglang_hasher_update(h, 70001, a + 70001, 2, NULL)); /* out of order, mid-word */
    CHECK_OK(ws_sglang_hasher_update(h, 1000, a + 1000, 1000, NULL));
    CHECK_OK(ws_sglang_hasher_final(h, &sparse, NULL));
    ws_sglang_hasher_free(h);
    CHECK(whole == sparse);
    CHECK(whole != 0);
    for (int k = 0; k < 200; k++) {
        size_t i = (size_t)(rnd() % n);
        uint8_t bit = (uint8_t)(1u << (rnd() % 8));
        a[i] ^= bit;
        uint64_t v;
        CHECK_OK(ws_sglang_hash(WS_SGLANG_CUDA, a, n, &v, NULL));
        CHECK(v != whole);
        CHECK_OK(ws_sglang_hash(WS_SGLANG_CPU, a, n, &v, NULL));
        a[i] ^= bit;
    }
    /* the length matters even when the extra bytes are zero (SGLang xors the byte count in) */
    uint64_t shorter;
    CHECK_OK(ws_sglang_hash(WS_SGLANG_CUDA, a, n - 4, &shorter, NULL));
    CHECK(shorter != whole);
    free(a);
}

static void test_refusals(void) {
    ws_sglang_hasher *h = NULL;
    ws_error e;
    uint8_t b[16] = {1, 2, 3};
    uint64_t v;
    CHECK(ws_sglang_hasher_create((ws_sglang_path)7, 4, &h, &e) == WS_ERR_ARG);
    CHECK(ws_sglang_hasher_create(WS_SGLANG_CUDA, 4, NULL, &e) == WS_ERR_ARG);
    CHECK_OK(ws_sglang_hasher_create(WS_SGLANG_CUDA, 10, &h, &e));
    CHECK(ws_sglang_hasher_update(h, 8, b, 3, &e) == WS_ERR_ARG); /* past the end */
    CHECK_OK(ws_sglang_hasher_update(h, 2, b, 4, &e));
    CHECK(ws_sglang_hasher_update(h, 5, b, 2, &e) == WS_ERR_ARG); /* byte 5 twice */
    CHECK(strstr(e.what, "twice") != NULL);
    CHECK(ws_sglang_hasher_update(h, 0, b, 3, &e) == WS_ERR_ARG); /* byte 2 twice */
    CHECK(ws_sglang_hasher_update(h, 0, NULL, 2, &e) == WS_ERR_ARG);
    CHECK_OK(ws_sglang_hasher_final(h, &v, &e));
    CHECK(ws_sglang_hasher_final(h, &v, &e) == WS_ERR_ARG);
    CHECK(ws_sglang_hasher_update(h, 0, b, 1, &e) == WS_ERR_ARG);
    ws_sglang_hasher_free(h);
    CHECK_OK(ws_sglang_hasher_create(WS_SGLANG_CPU, 10, &h, &e));
    CHECK_OK(ws_sglang_hasher_update(h, 4, b, 2, &e));
    CHECK(ws_sglang_hasher_update(h, 1, b, 2, &e) == WS_ERR_ARG); /* SHA-256 is in order */
    ws_sglang_hasher_free(h);
    ws_sglang_hasher_free(NULL);
    CHECK(ws_sglang_hash(WS_SGLANG_CUDA, NULL, 3, &v, &e) == WS_ERR_ARG);
    CHECK(ws_sglang_set_kernel("bogus") == WS_ERR_ARG);
    CHECK(ws_sglang_set_kernel(NULL) == WS_ERR_ARG);
    CHECK(ws_sglang_set_kernel("scalar") == WS_OK);
    CHECK(strcmp(ws_sglang_kernel(), "scalar") == 0);
    CHECK(ws_sglang_set_kernel("auto") == WS_OK);
    char hex[17];
    ws_sglang_hex(UINT64_C(0x00ab00cd00ef0012), hex);
    CHECK(strcmp(hex, "00ab00cd00ef0012") == 0);
    CHECK(ws_sglang_from_hex("00AB00CD00EF0012", &v) == WS_OK && v == UINT64_C(0x00ab00cd00ef0012));
    CHECK(ws_sglang_from_hex("00ab00cd00ef001", &v) == WS_ERR_ARG);
    CHECK(ws_sglang_from_hex("00ab00cd00ef001g", &v) == WS_ERR_ARG);
}

int main(void) {
    test_vectors();
    test_gaps_and_sensitivity();
    test_refusals();
    return check_report("test_sglang_hash");
}
