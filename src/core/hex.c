/* Hexadecimal: the one parser and the one formatter every digest's byte form goes through
 * (SHA-256, the fast digest's lanes, key ids). Lowercase out; either case in. */
#include "internal.h"

static const char hex_digits[] = "0123456789abcdef";

int wsi_hex_value(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void wsi_hex_encode(const uint8_t *bytes, size_t n, char *out) {
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_digits[bytes[i] >> 4];
        out[2 * i + 1] = hex_digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

bool wsi_hex_decode(const char *hex, size_t n, uint8_t *out) {
    for (size_t i = 0; i < n; i++) {
        int a = wsi_hex_value((unsigned char)hex[2 * i]);
        int b = a < 0 ? -1 : wsi_hex_value((unsigned char)hex[2 * i + 1]);
        if (b < 0) return false;
        out[i] = (uint8_t)(a << 4 | b);
    }
    return true;
}
