/* The dtype table and the canonical casts, checked against PyTorch's own casts
 * (tests/vectors/casts.txt, made by tests/vectors/gen_cast_vectors.py on CPU and CUDA). */
#include "check.h"
#include "weightsum_experimental.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_traits(void) {
    for (int i = 0; i < WS_DTYPE__COUNT; i++) {
        const char *n = ws_dtype_name((ws_dtype)i);
        ws_dtype back;
        CHECK(n != NULL);
        CHECK(ws_dtype_from_name(n, &back) == WS_OK && back == (ws_dtype)i);
        size_t s = ws_dtype_size((ws_dtype)i);
        CHECK(s == 1 || s == 2 || s == 4 || s == 8);
        CHECK(ws_dtype_units((ws_dtype)i) == (s <= 2 ? 1u : s / 2));
        /* integers are never cast; floats become bf16 under the bf16 policy */
        ws_dtype c = ws_canonical_dtype((ws_dtype)i, WS_CANON_BF16);
        CHECK(c == (ws_dtype_is_float((ws_dtype)i) ? WS_BF16 : (ws_dtype)i));
        CHECK(ws_canonical_dtype((ws_dtype)i, WS_CANON_NATIVE) == (ws_dtype)i);
    }
    CHECK(ws_dtype_name(WS_DTYPE__COUNT) == NULL);
    CHECK(ws_dtype_size((ws_dtype)-1) == 0);
    CHECK(ws_dtype_from_name("F128", NULL) == WS_ERR_DTYPE);
    CHECK(ws_dtype_from_name("f32", NULL) == WS_ERR_DTYPE); /* case-sensitive as safetensors */
}

static int is_nan_input(const char *dt, uint64_t v) {
    if (!strcmp(dt, "F32")) return (v & 0x7fffffffu) > 0x7f800000u;
    if (!strcmp(dt, "F64")) return (v & 0x7fffffffffffffffull) > 0x7ff0000000000000ull;
    if (!strcmp(dt, "F16")) return (v & 0x7fffu) > 0x7c00u;
    if (!strcmp(dt, "F8_E4M3")) return (v & 0x7fu) == 0x7fu;
    return (v & 0x7fu) > 0x7cu; /* F8_E5M2 */
}

static void test_torch_vectors(void) {
    FILE *f = fopen(WS_SOURCE_DIR "/tests/vectors/casts.txt", "r");
    CHECK(f != NULL);
    if (!f) return;
    char line[256], dt[16], src[32], cpu[8], cuda[8];
    long n = 0, nan_inputs = 0, cuda_checked = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        if (sscanf(line, "%15s %31s %7s %7s", dt, src, cpu, cuda) != 4) continue;
        ws_dtype t;
        CHECK(ws_dtype_from_name(dt, &t) == WS_OK);
        uint64_t v = strtoull(src, NULL, 16);
        uint16_t want = (uint16_t)strtoul(cpu, NULL, 16), got;
        uint8_t raw[8];
        memcpy(raw, &v, 8); /* little-endian host: the low bytes are the element */
        ws_value_stats st = {0};
        CHECK_OK(ws_cast_to_canonical(t, WS_CANON_BF16, raw, 1, &got, &st, &e_));
        if (is_nan_input(dt, v)) {
            /* our policy: every NaN -> 0x7FC0 (PyTorch differs by path, see docs) */
            nan_inputs++;
            CHECK(got == 0x7FC0);
            CHECK(st.nan == 1);
            continue;
        }
        if (got != want) fprintf(stderr, "%s %s: got %04x, PyTorch CPU %s\n", dt, src, got, cpu);
        CHECK(got == want);
        if (cuda[0] != '-') {
            cuda_checked++;
            CHECK(got == (uint16_t)strtoul(cuda, NULL, 16));
        }
        n++;
    }
    fclose(f);
    CHECK(n > 70000);
    CHECK(nan_inputs > 2000);
    printf("cast vectors: %ld values equal to PyTorch CPU (%ld also CUDA), %ld NaN inputs\n", n,
           cuda_checked, nan_inputs);
}

static void test_specials_counted(void) {
    float v[6] = {1.0f, INFINITY, -INFINITY, NAN, -0.0f, 3.0f};
    uint16_t out[6];
    ws_value_stats st = {0};
    CHECK_OK(ws_cast_to_canonical(WS_F32, WS_CANON_BF16, v, 6, out, &st, &e_));
    CHECK(st.nan == 1 && st.inf == 2);
    CHECK(out[1] == 0x7f80 && out[2] == 0xff80 && out[4] == 0x8000);
    /* native policy copies bytes but still counts */
    uint16_t b[3] = {0x7fc1, 0x7f80, 0x3f80}, o[3];
    ws_value_stats s2 = {0};
    CHECK_OK(ws_cast_to_canonical(WS_BF16, WS_CANON_BF16, b, 3, o, &s2, &e_));
    CHECK(memcmp(b, o, 6) == 0 && s2.nan == 1 && s2.inf == 1);
    /* bad input is an error that leaves dst and stats alone, never silently skipped */
    ws_error err;
    uint16_t keep[3] = {1, 2, 3};
    ws_value_stats s3 = {0};
    CHECK(ws_cast_to_canonical(WS_DTYPE__COUNT, WS_CANON_BF16, v, 3, keep, &s3, &err) ==
          WS_ERR_DTYPE);
    CHECK(err.code == WS_ERR_DTYPE && strstr(err.what, "dtype"));
    CHECK(ws_cast_to_canonical((ws_dtype)-1, WS_CANON_BF16, v, 3, keep, &s3, &err) == WS_ERR_DTYPE);
    CHECK(ws_cast_to_canonical(WS_F32, (ws_canon)7, v, 3, keep, &s3, &err) == WS_ERR_ARG);
    CHECK(ws_cast_to_canonical(WS_F32, WS_CANON_BF16, NULL, 3, keep, &s3, &err) == WS_ERR_ARG);
    CHECK(ws_cast_to_canonical(WS_F32, WS_CANON_BF16, v, 3, NULL, &s3, &err) == WS_ERR_ARG);
    CHECK(ws_cast_to_canonical(WS_F32, WS_CANON_BF16, NULL, 0, NULL, NULL, &err) == WS_OK);
    CHECK(keep[0] == 1 && keep[1] == 2 && keep[2] == 3 && s3.nan == 0 && s3.inf == 0);
    CHECK(ws_canonical_dtype(WS_DTYPE__COUNT, WS_CANON_BF16) == WS_DTYPE__COUNT);
    CHECK(ws_canonical_dtype(WS_F32, (ws_canon)7) == WS_DTYPE__COUNT);
    CHECK(isnan(ws_element_as_double(WS_DTYPE__COUNT, v, 0)));
    CHECK(isnan(ws_element_as_double(WS_F32, NULL, 0)));
}

/* One NaN (and, where the format has one, one Inf) at every position of a buffer long enough
 * for the prefilter's wide loop (128 bytes of running maxima) and its tail: each is counted
 * once, in every lane, whatever the offset. */
static void test_special_at_every_position(void) {
    enum { N = 700 };
    static const struct {
        ws_dtype t;
        uint64_t one, nan, inf; /* inf 0: none */
    } f[] = {{WS_F32, 0x3f800000u, 0x7fc00001u, 0xff800000u},
             {WS_F64, 0x3ff0000000000000ull, 0xfff8000000000000ull, 0x7ff0000000000000ull},
             {WS_F16, 0x3c00u, 0x7e01u, 0xfc00u},
             {WS_BF16, 0x3f80u, 0xffc1u, 0x7f80u},
             {WS_F8_E4M3, 0x38u, 0xffu, 0},
             {WS_F8_E5M2, 0x3cu, 0x7du, 0xfcu}};
    static uint8_t buf[N * 8], out[N * 8];
    for (size_t d = 0; d < sizeof f / sizeof *f; d++) {
        size_t es = ws_dtype_size(f[d].t);
        for (size_t at = 0; at < N; at++)
            for (int which = 0; which < (f[d].inf ? 2 : 1); which++) {
                for (size_t i = 0; i < N; i++) memcpy(buf + i * es, &f[d].one, es);
                memcpy(buf + at * es, which ? &f[d].inf : &f[d].nan, es); /* little-endian */
                ws_value_stats st = {0};
                CHECK_OK(ws_cast_to_canonical(f[d].t, WS_CANON_NATIVE, buf, N, out, &st, &e_));
                CHECK(st.nan == (uint64_t)!which && st.inf == (uint64_t)which);
            }
        ws_value_stats none = {0};
        for (size_t i = 0; i < N; i++) memcpy(buf + i * es, &f[d].one, es);
        CHECK_OK(ws_cast_to_canonical(f[d].t, WS_CANON_NATIVE, buf, N, out, &none, &e_));
        CHECK(none.nan == 0 && none.inf == 0);
    }
}

static void test_element_values(void) {
    int64_t i64 = -5;
    CHECK(ws_element_as_double(WS_I64, &i64, 0) == -5.0);
    uint8_t e4 = 0x38; /* 1.0 in e4m3fn */
    CHECK(ws_element_as_double(WS_F8_E4M3, &e4, 0) == 1.0);
    uint8_t e5 = 0x3c; /* 1.0 in e5m2 */
    CHECK(ws_element_as_double(WS_F8_E5M2, &e5, 0) == 1.0);
    uint16_t h = 0x0001; /* smallest f16 subnormal */
    CHECK(ws_element_as_double(WS_F16, &h, 0) == ldexp(1.0, -24));
}

int main(void) {
    test_special_at_every_position();
    test_traits();
    test_torch_vectors();
    test_specials_counted();
    test_element_values();
    return check_report("test_dtype");
}
