/*
 * The dtype traits table and the canonical casts. Every size and type decision goes through
 * the table; the casts reproduce PyTorch's CPU `Tensor.to(torch.bfloat16)` bit for bit
 * (c10::BFloat16's round_to_nearest_even; NaN -> 0x7FC0), see docs/canonical.md.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

typedef struct dtype_traits {
    const char *name;
    uint8_t size;
    uint8_t is_float;
} dtype_traits;

static const dtype_traits traits[WS_DTYPE__COUNT] = {
    [WS_BOOL] = {"BOOL", 1, 0},       [WS_U8] = {"U8", 1, 0},     [WS_I8] = {"I8", 1, 0},
    [WS_I16] = {"I16", 2, 0},         [WS_U16] = {"U16", 2, 0},   [WS_I32] = {"I32", 4, 0},
    [WS_U32] = {"U32", 4, 0},         [WS_I64] = {"I64", 8, 0},   [WS_U64] = {"U64", 8, 0},
    [WS_F16] = {"F16", 2, 1},         [WS_BF16] = {"BF16", 2, 1}, [WS_F32] = {"F32", 4, 1},
    [WS_F64] = {"F64", 8, 1},         [WS_F8_E4M3] = {"F8_E4M3", 1, 1},
    [WS_F8_E5M2] = {"F8_E5M2", 1, 1},
};

static bool valid(ws_dtype t) { return (unsigned)t < WS_DTYPE__COUNT; }

const char *ws_dtype_name(ws_dtype t) { return valid(t) ? traits[t].name : NULL; }
size_t ws_dtype_size(ws_dtype t) { return valid(t) ? traits[t].size : 0; }
int ws_dtype_is_float(ws_dtype t) { return valid(t) ? traits[t].is_float : 0; }
unsigned ws_dtype_units(ws_dtype t) {
    size_t s = ws_dtype_size(t);
    return s <= 2 ? 1u : (unsigned)(s / 2);
}

ws_err ws_dtype_from_name(const char *name, ws_dtype *out) {
    if (!name) return WS_ERR_ARG;
    for (int i = 0; i < WS_DTYPE__COUNT; i++)
        if (strcmp(name, traits[i].name) == 0) {
            if (out) *out = (ws_dtype)i;
            return WS_OK;
        }
    return WS_ERR_DTYPE;
}

const char *ws_canon_name(ws_canon c) { return c == WS_CANON_NATIVE ? "native" : "bf16"; }

ws_err ws_canon_from_name(const char *name, ws_canon *out) {
    if (!name) return WS_ERR_ARG;
    if (strcmp(name, "bf16") == 0) *out = WS_CANON_BF16;
    else if (strcmp(name, "native") == 0) *out = WS_CANON_NATIVE;
    else return WS_ERR_ARG;
    return WS_OK;
}

ws_dtype ws_canonical_dtype(ws_dtype t, ws_canon c) {
    if (!valid(t) || (c != WS_CANON_BF16 && c != WS_CANON_NATIVE)) return WS_DTYPE__COUNT;
    if (c == WS_CANON_BF16 && ws_dtype_is_float(t)) return WS_BF16;
    return t;
}

/* ---- scalar conversions ---- */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even on the 16 dropped bits; every NaN becomes 0x7FC0 as in c10. */
static inline uint16_t bf16_from_bits(uint32_t u) {
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7FC0;
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

uint16_t ws_f32_to_bf16(float f) { return bf16_from_bits(f32_bits(f)); }

float ws_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

/* Exact: every f16 value is an f32 value; NaN payloads are kept (shifted into place). */
static inline uint32_t f16_to_f32_bits(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return sign | 0x7f800000u | (man << 13);
    if (exp == 0) {
        if (man == 0) return sign;
        /* subnormal: normalise */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400u));
        man &= 0x3ffu;
        return sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13);
    }
    return sign | ((exp + 127 - 15) << 23) | (man << 13);
}

float ws_f16_to_f32(uint16_t h) { return bits_f32(f16_to_f32_bits(h)); }

/* float8_e4m3fn: bias 7, no infinities, S.1111.111 is NaN. */
float ws_f8e4m3_to_f32(uint8_t v) {
    uint32_t sign = (uint32_t)(v & 0x80u) << 24;
    uint32_t exp = (v >> 3) & 0xf;
    uint32_t man = v & 0x7u;
    if (exp == 0xf && man == 0x7) return bits_f32(sign | 0x7fc00000u);
    if (exp == 0) {
        float f = (float)man * (1.0f / 512.0f); /* man/8 * 2^-6 */
        return sign ? -f : f;
    }
    return bits_f32(sign | ((exp + 127 - 7) << 23) | (man << 20));
}

/* float8_e5m2 is the top byte of an f16. */
float ws_f8e5m2_to_f32(uint8_t v) { return ws_f16_to_f32((uint16_t)((uint16_t)v << 8)); }

/* ---- loads with any alignment ---- */
#define DEFINE_LOAD(T)                                                   \
    static inline T load_##T(const void *p, uint64_t i) {                \
        T v;                                                             \
        memcpy(&v, (const char *)p + (size_t)i * sizeof(T), sizeof(T));  \
        return v;                                                        \
    }
DEFINE_LOAD(uint16_t)
DEFINE_LOAD(uint32_t)
DEFINE_LOAD(uint64_t)
DEFINE_LOAD(int16_t)
DEFINE_LOAD(int32_t)
DEFINE_LOAD(int64_t)
DEFINE_LOAD(float)
DEFINE_LOAD(double)
#define LOAD(T, p, i) load_##T((p), (i))


/* Whether any element has an all-ones exponent (NaN or Inf): with the sign shifted out, such an
 * element is one whose magnitude is at least the exponent mask (mask = the exponent field, or
 * for e4m3 the one NaN pattern), so the question is the largest shifted element: a branch-free
 * max reduction the compiler vectorises (vpsllw + vpmaxuw per 16 bf16 values), so the common
 * case (none) costs one fast pass. 128 bytes of running maxima (four vector registers) rather
 * than one: with one, every vpmaxuw waits on the one before, and this pass rides on every
 * SHA-256 block (perf: 2-3% of `hash -j 1` with one accumulator, about 1% with four). */
#define DEFINE_MAX_SHIFTED(T)                                                            \
    __attribute__((target_clones("avx2", "default")))                                   \
    static T max_shifted_##T(const void *src, size_t n) {                                \
        enum { LANES = 128 / sizeof(T) };                                                \
        const uint8_t *p = src;                                                          \
        T m[LANES] = {0}, r = 0;                                                         \
        size_t i = 0;                                                                    \
        for (; i + LANES <= n; i += LANES)                                               \
            for (size_t j = 0; j < LANES; j++) {                                         \
                T u;                                                                     \
                memcpy(&u, p + (i + j) * sizeof(T), sizeof(T));                          \
                u = (T)(u << 1);                                                         \
                m[j] = u > m[j] ? u : m[j];                                              \
            }                                                                            \
        for (; i < n; i++) {                                                             \
            T u;                                                                         \
            memcpy(&u, p + i * sizeof(T), sizeof(T));                                    \
            u = (T)(u << 1);                                                             \
            r = u > r ? u : r;                                                           \
        }                                                                                \
        for (size_t j = 0; j < LANES; j++) r = m[j] > r ? m[j] : r;                      \
        return r;                                                                        \
    }                                                                                    \
    static bool prefilter_##T(const void *src, size_t n, T mask) {                       \
        return max_shifted_##T(src, n) >= (T)(mask << 1);                                \
    }
DEFINE_MAX_SHIFTED(uint8_t)
DEFINE_MAX_SHIFTED(uint16_t)
DEFINE_MAX_SHIFTED(uint32_t)
DEFINE_MAX_SHIFTED(uint64_t)

uint16_t wsi_max_mag16(const void *src, size_t n) { return max_shifted_uint16_t(src, n); }

static bool may_have_specials(ws_dtype t, const void *src, size_t n) {
    switch (t) {
    case WS_F32: return prefilter_uint32_t(src, n, 0x7f800000u);
    case WS_F64: return prefilter_uint64_t(src, n, 0x7ff0000000000000ull);
    case WS_F16: return prefilter_uint16_t(src, n, 0x7c00u);
    case WS_BF16: return prefilter_uint16_t(src, n, 0x7f80u);
    case WS_F8_E4M3: return prefilter_uint8_t(src, n, 0x7fu);
    case WS_F8_E5M2: return prefilter_uint8_t(src, n, 0x7cu);
    default: return false;
    }
}

/* Exact NaN/Inf counts of a sign-magnitude float format whose exponent field is `exp`: with
 * the sign cleared, Inf is exactly `exp`, NaN anything above it. */
#define DEFINE_COUNT(T)                                                                  \
    static void count_##T(const void *src, size_t n, T exp, uint64_t *nan, uint64_t *inf) { \
        const T mag = (T)~((T)1 << (sizeof(T) * 8 - 1));                                 \
        for (size_t i = 0; i < n; i++) {                                                 \
            T u = (T)(LOAD(T, src, i) & mag);                                            \
            *nan += u > exp;                                                             \
            *inf += u == exp;                                                            \
        }                                                                                \
    }
DEFINE_COUNT(uint16_t)
DEFINE_COUNT(uint32_t)
DEFINE_COUNT(uint64_t)

void wsi_count_specials(ws_dtype t, const void *src, size_t n, ws_value_stats *st) {
    if (!may_have_specials(t, src, n)) return;
    uint64_t nan = 0, inf = 0;
    const uint8_t *b = src;
    switch (t) {
    case WS_F32: count_uint32_t(src, n, 0x7f800000u, &nan, &inf); break;
    case WS_F64: count_uint64_t(src, n, 0x7ff0000000000000ull, &nan, &inf); break;
    case WS_F16: count_uint16_t(src, n, 0x7c00u, &nan, &inf); break;
    case WS_BF16: count_uint16_t(src, n, 0x7f80u, &nan, &inf); break;
    case WS_F8_E4M3: /* e4m3fn: no infinities, S.1111.111 is NaN */
        for (size_t i = 0; i < n; i++) nan += (b[i] & 0x7fu) == 0x7fu;
        break;
    case WS_F8_E5M2:
        for (size_t i = 0; i < n; i++) {
            nan += (b[i] & 0x7fu) > 0x7cu;
            inf += (b[i] & 0x7fu) == 0x7cu;
        }
        break;
    default:
        break;
    }
    st->nan += nan;
    st->inf += inf;
}

ws_err ws_cast_to_canonical(ws_dtype t, ws_canon c, const void *src, size_t n, void *dst,
                            ws_value_stats *stats, ws_error *err) {
    if (!valid(t)) return wsi_fail(err, WS_ERR_DTYPE, NULL, NULL, -1, "invalid dtype %d", (int)t);
    if (c != WS_CANON_BF16 && c != WS_CANON_NATIVE)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "invalid canonical policy %d", (int)c);
    if (n && (!src || !dst))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL %s", src ? "dst" : "src");
    if (n > SIZE_MAX / 8)
        return wsi_fail(err, WS_ERR_LIMIT, NULL, NULL, -1, "%zu elements overflow a size", n);
    wsi_cast_to_canonical(t, c, src, n, dst, stats);
    return WS_OK;
}

void wsi_cast_to_canonical(ws_dtype t, ws_canon c, const void *src, size_t n, void *dst,
                           ws_value_stats *stats) {
    if (stats && ws_dtype_is_float(t)) wsi_count_specials(t, src, n, stats);
    uint8_t *out = dst;
    if (ws_canonical_dtype(t, c) == t) {
        memcpy(dst, src, n * ws_dtype_size(t));
        return;
    }
    switch (t) {
    case WS_F32:
        for (size_t i = 0; i < n; i++) {
            uint16_t b = bf16_from_bits(LOAD(uint32_t, src, i));
            memcpy(out + 2 * i, &b, 2);
        }
        break;
    case WS_F64: /* through f32 first, as PyTorch does */
        for (size_t i = 0; i < n; i++) {
            uint16_t b = ws_f32_to_bf16((float)LOAD(double, src, i));
            memcpy(out + 2 * i, &b, 2);
        }
        break;
    case WS_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t b = bf16_from_bits(f16_to_f32_bits(LOAD(uint16_t, src, i)));
            memcpy(out + 2 * i, &b, 2);
        }
        break;
    case WS_F8_E4M3:
        for (size_t i = 0; i < n; i++) {
            uint16_t b = ws_f32_to_bf16(ws_f8e4m3_to_f32(((const uint8_t *)src)[i]));
            memcpy(out + 2 * i, &b, 2);
        }
        break;
    case WS_F8_E5M2:
        for (size_t i = 0; i < n; i++) {
            uint16_t b = ws_f32_to_bf16(ws_f8e5m2_to_f32(((const uint8_t *)src)[i]));
            memcpy(out + 2 * i, &b, 2);
        }
        break;
    default: /* integers never reach here: their canonical dtype is themselves */
        break;
    }
}

double ws_element_as_double(ws_dtype t, const void *data, uint64_t i) {
    if (!data) return NAN;
    switch (t) {
    case WS_BOOL: return ((const uint8_t *)data)[i] != 0;
    case WS_U8: return ((const uint8_t *)data)[i];
    case WS_I8: return ((const int8_t *)data)[i];
    case WS_I16: return LOAD(int16_t, data, i);
    case WS_U16: return LOAD(uint16_t, data, i);
    case WS_I32: return LOAD(int32_t, data, i);
    case WS_U32: return LOAD(uint32_t, data, i);
    case WS_I64: return (double)LOAD(int64_t, data, i);
    case WS_U64: return (double)LOAD(uint64_t, data, i);
    case WS_F16: return ws_f16_to_f32(LOAD(uint16_t, data, i));
    case WS_BF16: return ws_bf16_to_f32(LOAD(uint16_t, data, i));
    case WS_F32: return LOAD(float, data, i);
    case WS_F64: return LOAD(double, data, i);
    case WS_F8_E4M3: return ws_f8e4m3_to_f32(((const uint8_t *)data)[i]);
    case WS_F8_E5M2: return ws_f8e5m2_to_f32(((const uint8_t *)data)[i]);
    default: return NAN;
    }
}
