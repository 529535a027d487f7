/*
 * Device side of the canonical cast (src/core/dtype.c, bit for bit): every float dtype to
 * bf16 by round-to-nearest-even on the f32 bits, every NaN to 0x7FC0, F64 through f32 first,
 * F16/F8 exactly through f32. Not PyTorch's CUDA .to(), whose NaN handling differs. Also the
 * NaN/Inf classification of stored elements.
 */
#ifndef WS_DEVICE_CAST_CUH
#define WS_DEVICE_CAST_CUH
#include <stdint.h>

/* Dtype numbers as in weightsum.h (ws_dtype), repeated for device code. */
enum : uint32_t {
    DT_BOOL = 0, DT_U8, DT_I8, DT_I16, DT_U16, DT_I32, DT_U32, DT_I64, DT_U64,
    DT_F16, DT_BF16, DT_F32, DT_F64, DT_F8_E4M3, DT_F8_E5M2
};

__device__ __forceinline__ uint32_t bf16_from_f32_bits(uint32_t u) {
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7FC0u;
    return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}

/* Exact: f16 -> f32 bits, NaN payloads shifted into place, subnormals normalised. */
__device__ __forceinline__ uint32_t f16_to_f32_bits(uint32_t h) {
    uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return sign | 0x7f800000u | (man << 13);
    if (exp == 0) {
        if (man == 0) return sign;
        /* man < 2^10: shift its top bit to bit 10 */
        int sh = __clz(man) - 21; /* leading zeros within the 11-bit field */
        man = (man << sh) & 0x3ffu;
        return sign | ((uint32_t)(127 - 15 + 1 - sh) << 23) | (man << 13);
    }
    return sign | ((exp + 127 - 15) << 23) | (man << 13);
}

__device__ __forceinline__ uint32_t f8e4m3_to_f32_bits(uint32_t v) {
    uint32_t sign = (v & 0x80u) << 24, exp = (v >> 3) & 0xfu, man = v & 0x7u;
    if (exp == 0xf && man == 0x7) return sign | 0x7fc00000u;
    if (exp == 0) {
        float f = (float)man * (1.0f / 512.0f);
        return __float_as_uint(sign ? -f : f);
    }
    return sign | ((exp + 127 - 7) << 23) | (man << 20);
}

/* bf16 of one stored element given as raw bits (lo: the low 64 bits). */
__device__ __forceinline__ uint32_t to_bf16(uint32_t dt, uint64_t bits) {
    switch (dt) {
    case DT_F32: return bf16_from_f32_bits((uint32_t)bits);
    case DT_F64: return bf16_from_f32_bits(__float_as_uint(__double2float_rn(__longlong_as_double((long long)bits))));
    case DT_F16: return bf16_from_f32_bits(f16_to_f32_bits((uint32_t)bits & 0xffffu));
    case DT_F8_E4M3: return bf16_from_f32_bits(f8e4m3_to_f32_bits((uint32_t)bits & 0xffu));
    case DT_F8_E5M2: return bf16_from_f32_bits(f16_to_f32_bits(((uint32_t)bits & 0xffu) << 8));
    default: return (uint32_t)bits & 0xffffu; /* DT_BF16 */
    }
}

/* NaN / Inf of one stored float element (raw bits): adds to nan / inf. */
__device__ __forceinline__ void classify(uint32_t dt, uint64_t bits, uint32_t &nan, uint32_t &inf) {
    switch (dt) {
    case DT_F32: {
        uint32_t m = (uint32_t)bits & 0x7fffffffu;
        nan += m > 0x7f800000u;
        inf += m == 0x7f800000u;
        break;
    }
    case DT_F64: {
        uint64_t m = bits & 0x7fffffffffffffffull;
        nan += m > 0x7ff0000000000000ull;
        inf += m == 0x7ff0000000000000ull;
        break;
    }
    case DT_F16: {
        uint32_t m = (uint32_t)bits & 0x7fffu;
        nan += m > 0x7c00u;
        inf += m == 0x7c00u;
        break;
    }
    case DT_BF16: {
        uint32_t m = (uint32_t)bits & 0x7fffu;
        nan += m > 0x7f80u;
        inf += m == 0x7f80u;
        break;
    }
    case DT_F8_E4M3: nan += ((uint32_t)bits & 0x7fu) == 0x7fu; break;
    case DT_F8_E5M2: {
        uint32_t m = (uint32_t)bits & 0x7fu;
        nan += m > 0x7cu;
        inf += m == 0x7cu;
        break;
    }
    default: break;
    }
}

__device__ __forceinline__ bool dt_is_float(uint32_t dt) {
    return dt == DT_F16 || dt == DT_BF16 || dt == DT_F32 || dt == DT_F64 || dt == DT_F8_E4M3 ||
           dt == DT_F8_E5M2;
}

/* Raw bits of the element at p (size es bytes; any alignment of es). */
__device__ __forceinline__ uint64_t load_bits(const uint8_t *p, uint32_t es) {
    switch (es) {
    case 1: return *p;
    case 2: return *(const uint16_t *)p;
    case 4: return *(const uint32_t *)p;
    default: return *(const uint64_t *)p;
    }
}
#endif
