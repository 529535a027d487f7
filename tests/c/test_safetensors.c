/* The safetensors reader rejects every malformed file with a located error, never crashes;
 * the writer round-trips every dtype. */
#include "check.h"
#include "weightsum.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A file image: 8-byte length, header text, data_len bytes of data. */
static uint8_t *image(const char *hdr, uint64_t claimed_len, size_t data_len, size_t *len) {
    size_t h = strlen(hdr);
    *len = 8 + h + data_len;
    uint8_t *b = calloc(1, *len + 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(claimed_len >> (8 * i));
    memcpy(b + 8, hdr, h);
    for (size_t i = 0; i < data_len; i++) b[8 + h + i] = (uint8_t)i;
    return b;
}

static void expect_bad(const char *label, const char *hdr, long claimed, size_t data_len,
                       ws_err code, const char *text) {
    size_t len;
    uint8_t *b = image(hdr, claimed < 0 ? strlen(hdr) : (uint64_t)claimed, data_len, &len);
    ws_ckpt *c = (ws_ckpt *)1;
    ws_error err;
    ws_err rc = ws_ckpt_from_memory(b, len, label, &c, &err);
    char line[1024];
    ws_error_format(&err, line, sizeof line);
    if (rc != code || !strstr(line, text))
        fprintf(stderr, "%s: got %s '%s', want %s containing '%s'\n", label, ws_err_name(rc), line,
                ws_err_name(code), text);
    CHECK(rc == code);
    CHECK(strstr(line, text) != NULL);
    CHECK(c == NULL);
    CHECK(strstr(line, label) == line); /* the line starts with the file */
    free(b);
}

static void test_malformed(void) {
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    expect_bad("emptyhdr", "", 0, 0, WS_ERR_FORMAT, "start with '{'");
    { /* truncated: 4 bytes of a file */
        ws_ckpt *c;
        ws_error err;
        CHECK(ws_ckpt_from_memory("\x10\0\0\0", 4, "trunc", &c, &err) == WS_ERR_FORMAT);
        CHECK(strstr(err.what, "too short") != NULL);
    }
    expect_bad("absurd", ok, (long)1 << 40, 8, WS_ERR_LIMIT, "exceeds");
    expect_bad("pastend", ok, 4096, 8, WS_ERR_FORMAT, "runs past the end");
    expect_bad("notjson", "{\"a\": nope}", -1, 0, WS_ERR_FORMAT, "invalid JSON");
    expect_bad("notobj", "[1,2]   ", -1, 0, WS_ERR_FORMAT, "start with '{'");
    expect_bad("dup",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               -1, 8, WS_ERR_FORMAT, "duplicate");
    expect_bad("dtype", "{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}", -1,
               16, WS_ERR_DTYPE, "unknown dtype \"F128\"");
    expect_bad("size", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", -1, 8,
               WS_ERR_FORMAT, "need 12 bytes");
    expect_bad("beyond", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", -1, 8,
               WS_ERR_FORMAT, "past the data section");
    expect_bad("overlap",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               -1, 12, WS_ERR_FORMAT, "overlaps");
    expect_bad("hole", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", -1, 8,
               WS_ERR_FORMAT, "hole");
    expect_bad("tail", ok, -1, 12, WS_ERR_FORMAT, "tensors end at 8");
    expect_bad("reversed", "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,0]}}", -1, 8,
               WS_ERR_FORMAT, "begin 8 > end 0");
    expect_bad("negshape", "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", -1, 0,
               WS_ERR_FORMAT, "non-negative");
    expect_bad("overflow",
               "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}",
               -1, 0, WS_ERR_FORMAT, "overflows");
    expect_bad("dims", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
               -1, 1, WS_ERR_LIMIT, "dimensions");
    expect_bad("meta", "{\"__metadata__\":{\"k\":1}}", -1, 0, WS_ERR_FORMAT, "not a string");
    expect_bad("entry", "{\"a\":5}", -1, 0, WS_ERR_FORMAT, "not an object");
    expect_bad("offsets", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", -1, 1,
               WS_ERR_FORMAT, "data_offsets");
}

/* Random mutations of a valid image: whatever happens, no crash, and a success is consistent. */
static void test_mutations(void) {
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[12,24]}}";
    size_t len;
    uint8_t *base = image(hdr, strlen(hdr), 24, &len);
    uint64_t s = 12345;
    int accepted = 0;
    for (int iter = 0; iter < 20000; iter++) {
        uint8_t *b = malloc(len);
        memcpy(b, base, len);
        int flips = 1 + iter % 4;
        for (int k = 0; k < flips; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(s >> 33) % len;
            b[at] = (uint8_t)(s >> 17);
        }
        size_t cut = iter % 7 == 0 ? (size_t)(s >> 40) % (len + 1) : len;
        ws_ckpt *c = NULL;
        ws_error err;
        if (ws_ckpt_from_memory(b, cut, "mut", &c, &err) == WS_OK) {
            accepted++;
            for (size_t i = 0; i < ws_ckpt_count(c); i++) {
                const ws_tensor *t = ws_ckpt_tensor(c, i);
                CHECK(t->file_offset + t->nbytes <= cut);
                CHECK(t->numel * ws_dtype_size(t->dtype) == t->nbytes);
            }
        }
        ws_ckpt_free(c);
        free(b);
    }
    printf("mutations: %d of 20000 still valid\n", accepted);
    free(base);
}

static void test_roundtrip(void) {
    char dir[] = "/tmp/ws-test-st-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/all.safetensors", dir);
    ws_tensor_spec specs[WS_DTYPE__COUNT + 2];
    uint8_t *bufs[WS_DTYPE__COUNT + 2];
    char names[WS_DTYPE__COUNT + 2][32];
    size_t n = 0;
    for (int i = 0; i < WS_DTYPE__COUNT; i++, n++) {
        snprintf(names[n], 32, "t.%s", ws_dtype_name((ws_dtype)i));
        size_t bytes = 3 * 5 * ws_dtype_size((ws_dtype)i);
        bufs[n] = malloc(bytes);
        for (size_t k = 0; k < bytes; k++) bufs[n][k] = (uint8_t)(k * 7 + (size_t)i);
        specs[n] = (ws_tensor_spec){.name = names[n], .dtype = (ws_dtype)i, .ndim = 2,
                                    .shape = {3, 5}, .data = bufs[n]};
    }
    float scalar = 2.5f;
    snprintf(names[n], 32, "scalar");
    bufs[n] = NULL;
    specs[n++] = (ws_tensor_spec){.name = names[n - 1], .dtype = WS_F32, .ndim = 0, .data = &scalar};
    snprintf(names[n], 32, "empty");
    bufs[n] = NULL;
    specs[n++] = (ws_tensor_spec){.name = names[n - 1], .dtype = WS_F16, .ndim = 2,
                                  .shape = {0, 4}, .data = ""};
    ws_error err;
    CHECK_OK(ws_safetensors_write(path, specs, n, "{\"format\":\"pt\"}", &err));
    ws_ckpt *c = NULL;
    CHECK_OK(ws_ckpt_open(path, &c, &err));
    CHECK(ws_ckpt_count(c) == n);
    for (size_t i = 0; i < n && c; i++) {
        const ws_tensor *t = ws_ckpt_find(c, specs[i].name);
        CHECK(t && t->dtype == specs[i].dtype && t->ndim == specs[i].ndim);
        if (t && t->nbytes) CHECK(memcmp(t->data, specs[i].data, t->nbytes) == 0);
        if (t && t->ndim == 0) CHECK(t->numel == 1);
    }
    CHECK(ws_ckpt_metadata(c) && strstr(ws_ckpt_metadata(c), "\"pt\""));
    /* a sharded checkpoint with an index; a tensor in two files is an error */
    char p2[256], idx[256];
    snprintf(p2, sizeof p2, "%s/two.safetensors", dir);
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    CHECK_OK(ws_safetensors_write(p2, specs + n - 2, 1, NULL, &err));
    const char *both[] = {path, p2};
    ws_ckpt *c2 = NULL;
    CHECK(ws_ckpt_open_files(both, 2, &c2, &err) == WS_ERR_FORMAT);
    CHECK(strstr(err.what, "also present") != NULL);
    ws_ckpt_free(c2);
    ws_ckpt_free(c);
    for (size_t i = 0; i < n; i++) free(bufs[i]);
    unlink(path);
    unlink(p2);
    rmdir(dir);
}

int main(void) {
    test_malformed();
    test_mutations();
    test_roundtrip();
    return check_report("test_safetensors");
}
