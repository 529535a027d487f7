/* Manifests (JSON and line forms), comparison verdicts, element diffs. */
#include "check.h"
#include "weightsum.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static ws_manifest_entry entry(const char *name, uint8_t fill, uint64_t rows) {
    ws_manifest_entry e;
    memset(&e, 0, sizeof e);
    e.name = (char *)name;
    e.dtype = WS_F32;
    e.canonical_dtype = WS_BF16;
    e.ndim = 2;
    e.shape[0] = rows;
    e.shape[1] = 4;
    e.digest.algos = WS_ALGO_SHA256;
    memset(e.digest.sha256, fill, 32);
    return e;
}

static ws_status only_status(const ws_report *r, const char *name) {
    for (size_t i = 0; i < ws_report_count(r); i++)
        if (!strcmp(ws_report_at(r, i)->tensor, name)) return ws_report_at(r, i)->status;
    return WS_MATCH;
}

static void test_roundtrip_and_compare(void) {
    ws_manifest *a = ws_manifest_new(WS_CANON_BF16, WS_ALGO_SHA256, NULL, "a");
    ws_manifest_entry e1 = entry("z.w", 1, 3), e2 = entry("a.w", 2, 3), e3 = entry("m.w", 3, 3);
    CHECK_OK(ws_manifest_add(a, &e1));
    CHECK_OK(ws_manifest_add(a, &e2));
    CHECK_OK(ws_manifest_add(a, &e3));
    CHECK(ws_manifest_add(a, &e3) == WS_ERR_ARG); /* duplicate */
    CHECK(!strcmp(ws_manifest_entry_at(a, 0)->name, "a.w")); /* sorted */
    ws_error err;
    char *json = NULL, *lines = NULL;
    CHECK_OK(ws_manifest_to_json(a, &json, &err));
    CHECK_OK(ws_manifest_to_lines(a, &lines, &err));
    ws_manifest *b = NULL, *c = NULL;
    CHECK_OK(ws_manifest_parse(json, strlen(json), "j", &b, &err));
    CHECK_OK(ws_manifest_parse(lines, strlen(lines), "l", &c, &err));
    /* the line form records its policy in its header line */
    CHECK(ws_manifest_declares_canon(b) && ws_manifest_declares_canon(c));
    CHECK(ws_manifest_count(b) == 3 && ws_manifest_count(c) == 3);
    CHECK(ws_manifest_find(b, "m.w")->shape[0] == 3);
    CHECK(ws_manifest_find(c, "m.w")->ndim == -1);
    ws_report *r = ws_report_new();
    CHECK_OK(ws_compare_manifests(a, b, r, &err));
    CHECK(ws_report_ok(r) && ws_report_matched(r) == 3);
    ws_report_free(r);
    r = ws_report_new();
    CHECK_OK(ws_compare_manifests(a, c, r, &err));
    CHECK(ws_report_ok(r));
    ws_report_free(r);

    /* every verdict */
    ws_manifest *d = ws_manifest_new(WS_CANON_BF16, WS_ALGO_SHA256, NULL, "d");
    ws_manifest_entry m1 = entry("a.w", 9, 3);  /* digest differs */
    ws_manifest_entry m2 = entry("m.w", 3, 5);  /* shape differs */
    ws_manifest_entry m4 = entry("new.w", 1, 3); /* unexpected; z.w missing */
    CHECK_OK(ws_manifest_add(d, &m1));
    CHECK_OK(ws_manifest_add(d, &m2));
    CHECK_OK(ws_manifest_add(d, &m4));
    r = ws_report_new();
    CHECK_OK(ws_compare_manifests(a, d, r, &err));
    CHECK(only_status(r, "a.w") == WS_MISMATCH);
    CHECK(only_status(r, "m.w") == WS_SHAPE_DIFFERS);
    CHECK(only_status(r, "z.w") == WS_MISSING);
    CHECK(only_status(r, "new.w") == WS_UNEXPECTED);
    CHECK(!ws_report_ok(r) && ws_report_matched(r) == 0);
    char *rj = NULL;
    CHECK_OK(ws_report_to_json(r, &rj, &err));
    CHECK(rj && strstr(rj, "\"mismatch\"") && strstr(rj, "\"ok\": false"));
    free(rj);
    ws_report_free(r);
    /* different canonical policies are not comparable at all */
    ws_manifest *n = ws_manifest_new(WS_CANON_NATIVE, WS_ALGO_SHA256, NULL, "n");
    r = ws_report_new();
    CHECK(ws_compare_manifests(a, n, r, &err) == WS_ERR_ARG);
    ws_report_free(r);
    ws_manifest_free(n);
    free(json);
    free(lines);
    ws_manifest_free(a);
    ws_manifest_free(b);
    ws_manifest_free(c);
    ws_manifest_free(d);
}

static void test_parse_errors(void) {
    const char *bad[] = {
        "{\"format\":\"weightsum-manifest\"}",
        "{\"format\":\"other\",\"tensors\":{}}",
        "{\"format\":\"weightsum-manifest\",\"tensors\":{\"a\":{\"sha256\":\"zz\"}}}",
        "{\"format\":\"weightsum-manifest\",\"canonical\":\"fp4\",\"tensors\":{}}",
        "{\"format\":\"weightsum-manifest\",\"tensors\":{\"a\":{\"shape\":[-1],\"sha256\":"
        "\"0000000000000000000000000000000000000000000000000000000000000000\"}}}",
        "{ not json",
        "abcd  name\n",
        "0000000000000000000000000000000000000000000000000000000000000000 \n",
        "0000000000000000000000000000000000000000000000000000000000000000  x\n"
        "0000000000000000000000000000000000000000000000000000000000000000  x\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ws_manifest *m = (ws_manifest *)1;
        ws_error err;
        ws_err rc = ws_manifest_parse(bad[i], strlen(bad[i]), "bad", &m, &err);
        if (rc == WS_OK) fprintf(stderr, "accepted bad manifest %zu\n", i);
        CHECK(rc != WS_OK && m == NULL);
    }
}

#define Z64 "0000000000000000000000000000000000000000000000000000000000000000"
#define Z48 "000000000000000000000000000000000000000000000000"
#define F48 "0123456789abcdef0123456789abcdef0123456789abcdef"

static ws_err parse(const char *text, ws_manifest **m, ws_error *err) {
    *m = NULL;
    return ws_manifest_parse(text, strlen(text), "t", m, err);
}

/* Refused with one line whose text names the reason. */
static void refused(const char *text, const char *why) {
    ws_manifest *m = NULL;
    ws_error err;
    memset(&err, 0, sizeof err);
    ws_err rc = parse(text, &m, &err);
    CHECK(rc == WS_ERR_FORMAT && m == NULL && strstr(err.what, why));
    if (rc == WS_OK || !strstr(err.what, why))
        fprintf(stderr, "manifest %.60s...: %s (wanted \"%s\")\n", text, err.what, why);
    ws_manifest_free(m);
}

/* Line conventions of checksum tools: header line (version, policy, key), GNU and BSD forms,
 * both digests, escaped names, one space; refusals of what would mislead. */
static void test_line_conventions(void) {
    ws_manifest *a = ws_manifest_new(WS_CANON_NATIVE, WS_ALGO_SHA256 | WS_ALGO_FAST,
                                     "355a469159f36be0", "a");
    const char *names[] = {"plain.w", "new\nline", "back\\slash", "cr\rname", "sp ace", "x) = y"};
    for (size_t i = 0; i < 6; i++) {
        ws_manifest_entry e = entry(names[i], (uint8_t)(i + 1), 2);
        e.digest.algos = WS_ALGO_SHA256 | WS_ALGO_FAST;
        e.digest.fast.lane[0] = i + 7;
        e.digest.fast.lane[2] = 99;
        CHECK_OK(ws_manifest_add(a, &e));
    }
    ws_error err;
    for (int bsd = 0; bsd < 2; bsd++) {
        char *text = NULL;
        CHECK_OK(bsd ? ws_manifest_to_bsd_lines(a, &text, &err)
                     : ws_manifest_to_lines(a, &text, &err));
        if (!text) continue;
        CHECK(!strncmp(text, "# weightsum-manifest 2 canonical=native key_id=355a469159f36be0\n",
                       64));
        CHECK(strstr(text, bsd ? "\\SHA256 (new\\nline) = " : "  new\\nline\n"));
        CHECK(strstr(text, bsd ? "\\FAST (back\\\\slash) = " : "  back\\\\slash\n"));
        CHECK(strstr(text, bsd ? "\nSHA256 (plain.w) = " : "  plain.w\n"));
        size_t nl = 0;
        for (const char *c = text; *c; c++) nl += *c == '\n';
        CHECK(nl == 1 + 2 * 6); /* header, then both digests of every tensor */
        ws_manifest *b = NULL;
        CHECK_OK(parse(text, &b, &err));
        if (!b) {
            fprintf(stderr, "%s\n", err.what);
            free(text);
            continue;
        }
        CHECK(ws_manifest_count(b) == 6 && ws_manifest_canon(b) == WS_CANON_NATIVE &&
              ws_manifest_declares_canon(b));
        CHECK(ws_manifest_key_id(b) && !strcmp(ws_manifest_key_id(b), "355a469159f36be0"));
        CHECK(ws_manifest_algos(b) == (WS_ALGO_SHA256 | WS_ALGO_FAST));
        for (size_t i = 0; i < 6; i++) {
            const ws_manifest_entry *x = ws_manifest_find(a, names[i]), *y = ws_manifest_find(b, names[i]);
            CHECK(y && y->digest.algos == x->digest.algos &&
                  !memcmp(y->digest.sha256, x->digest.sha256, 32) &&
                  !memcmp(&y->digest.fast, &x->digest.fast, sizeof x->digest.fast));
        }
        ws_manifest_free(b);
        free(text);
    }
    ws_manifest_free(a);

    ws_manifest *m = NULL;
    /* coreutils' forms: one space, binary marker, escaped name, comments */
    CHECK_OK(parse("# made by hand\n" Z64 " one\n" Z64 " *two\n\\" Z64 "  th\\\\ree\n", &m, &err));
    CHECK(m && ws_manifest_find(m, "one") && ws_manifest_find(m, "two") &&
          ws_manifest_find(m, "th\\ree") && !ws_manifest_declares_canon(m));
    ws_manifest_free(m);
    CHECK_OK(parse("SHA256 (a (b)) = " Z64 "\n", &m, &err));
    CHECK(m && ws_manifest_find(m, "a (b)"));
    ws_manifest_free(m);

    /* whole-file digests, as plain sha256sum prints them over a checkpoint */
    refused(Z64 "  model-00001-of-00002.safetensors\n" Z64 "  model-00002-of-00002.safetensors\n",
            "whole-file digests");
    refused("SHA256 (model.safetensors) = " Z64 "\n", "whole-file digests");
    /* fast digests from before the seal (no header line), unknown versions */
    refused(Z48 "  a.w\n", "older weightsum");
    refused("FAST (a.w) = " F48 "\n", "older weightsum");
    refused("# weightsum-manifest 3 canonical=bf16\n" Z64 "  a.w\n", "unknown manifest version");
    refused("# weightsum-manifest 2 canonical=fp4\n" Z64 "  a.w\n", "unknown canonical");
    refused(Z64 "  a.w\n# weightsum-manifest 2 canonical=bf16\n", "before the digests");
    refused("SHA256 (a.w) = " Z48 "\n", "SHA256 digest must be 64");
    refused("\\" Z64 "  bad\\qescape\n", "expected");
    refused("# weightsum-manifest 2\n" Z64 "  a.w\n" Z64 "  a.w\n", "listed twice");
    refused("# weightsum-manifest 2\n" Z64 "  a.w\n" F48 "  a.w\n" Z64 "  b.w\n", "same digests");
    CHECK_OK(parse("# weightsum-manifest 2 canonical=bf16 key_id=x\n" F48 "  a.w\n", &m, &err));
    CHECK(m && ws_manifest_declares_canon(m) && !strcmp(ws_manifest_key_id(m), "x"));
    ws_manifest_free(m);

    /* JSON: versions, algorithms declared but not held */
    refused("{\"format\":\"weightsum-manifest\",\"version\":3,\"tensors\":{}}",
            "unknown manifest \"version\"");
    refused("{\"format\":\"weightsum-manifest\",\"version\":\"2\",\"tensors\":{}}",
            "unknown manifest \"version\"");
    refused("{\"format\":\"weightsum-manifest\",\"version\":1,\"algorithms\":[\"fast\"],"
            "\"tensors\":{\"a\":{\"fast\":\"" F48 "\"}}}", "version-1");
    refused("{\"format\":\"weightsum-manifest\",\"version\":2,\"algorithms\":[\"sha256\",\"fast\"],"
            "\"tensors\":{\"a\":{\"fast\":\"" F48 "\"}}}", "declares sha256 and fast");
    refused("{\"format\":\"weightsum-manifest\",\"version\":2,"
            "\"tensors\":{\"a\":{\"fast\":\"" F48 "\"},\"b\":{\"sha256\":\"" Z64 "\"}}}",
            "same digests");
    refused("{\"format\":\"weightsum-manifest\",\"version\":2,\"algorithms\":[],\"tensors\":{}}",
            "non-empty list");
    CHECK_OK(parse("{\"format\":\"weightsum-manifest\",\"version\":1,\"algorithms\":[\"sha256\"],"
                   "\"tensors\":{\"a\":{\"sha256\":\"" Z64 "\"}}}", &m, &err));
    CHECK(m && ws_manifest_algos(m) == WS_ALGO_SHA256);
    ws_manifest_free(m);
    CHECK_OK(parse("{\"format\":\"weightsum-manifest\",\"version\":2,"
                   "\"tensors\":{\"a\":{\"fast\":\"" F48 "\"}}}", &m, &err));
    CHECK(m && ws_manifest_algos(m) == WS_ALGO_FAST);
    ws_manifest_free(m);
}

static void test_diff(void) {
    float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {1, 2, 3, 4, 5, 6};
    b[4] = nextafterf(5.0f, 10.0f);
    b[5] = -6.0f;
    ws_diff d;
    ws_diff_init(&d);
    CHECK_OK(ws_diff_update(&d, WS_F32, 0, a, b, 6, &e_));
    CHECK(d.differ == 2 && d.first == 4 && d.first_a == 5.0 && d.compared == 6);
    CHECK(d.max_abs == 12.0);
    CHECK(d.max_ulp > 1); /* 6 vs -6 is far apart */
    ws_diff_init(&d);
    CHECK_OK(ws_diff_update(&d, WS_F32, 100, a + 4, b + 4, 1, &e_));
    CHECK(d.max_ulp == 1 && d.first == 100);
    int8_t x = -128, y = 127;
    ws_diff_init(&d);
    CHECK_OK(ws_diff_update(&d, WS_I8, 0, &x, &y, 1, &e_));
    CHECK(d.max_ulp == 255);
    uint16_t p0 = 0x0000, n0 = 0x8000; /* +0 and -0 differ in bits, by 0 ulp */
    ws_diff_init(&d);
    CHECK_OK(ws_diff_update(&d, WS_BF16, 0, &p0, &n0, 1, &e_));
    CHECK(d.differ == 1 && d.max_ulp == 0 && d.max_abs == 0);
    uint64_t shape[3] = {2, 3, 4}, co[3];
    CHECK_OK(ws_unravel(23, 3, shape, co, &e_));
    CHECK(co[0] == 1 && co[1] == 2 && co[2] == 3);
    CHECK_OK(ws_unravel(5, 3, shape, co, &e_));
    CHECK(co[0] == 0 && co[1] == 1 && co[2] == 1);
    /* bad input is an error, the diff untouched (never a silent "no difference") */
    ws_error err;
    ws_diff_init(&d);
    CHECK(ws_diff_update(&d, WS_DTYPE__COUNT, 0, a, b, 6, &err) == WS_ERR_DTYPE);
    CHECK(ws_diff_update(&d, WS_F32, 0, NULL, b, 6, &err) == WS_ERR_ARG);
    CHECK(ws_diff_update(NULL, WS_F32, 0, a, b, 6, &err) == WS_ERR_ARG);
    CHECK(ws_diff_update(&d, WS_F64, 0, a, b, UINT64_MAX / 4, &err) == WS_ERR_LIMIT);
    CHECK(d.compared == 0 && d.differ == 0);
    CHECK(ws_unravel(5, WS_MAX_DIMS + 1, shape, co, &err) == WS_ERR_ARG);
    CHECK(ws_unravel(5, 3, NULL, co, &err) == WS_ERR_ARG);
    CHECK(ws_unravel(5, 0, NULL, NULL, &err) == WS_OK);
}

/* Calls that cannot do what they are asked say so, and change nothing. */
static void test_bad_arguments(void) {
    ws_error err;
    const char lines[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  w\n";
    ws_manifest *m = NULL;
    CHECK_OK(ws_manifest_parse(lines, sizeof lines - 1, "lines", &m, &err));
    CHECK(!ws_manifest_declares_canon(m));
    CHECK(ws_manifest_set_canon(m, (ws_canon)9, &err) == WS_ERR_ARG && strstr(err.what, "policy"));
    CHECK(ws_manifest_canon(m) == WS_CANON_BF16);
    CHECK_OK(ws_manifest_set_canon(m, WS_CANON_NATIVE, &err));
    CHECK(ws_manifest_canon(m) == WS_CANON_NATIVE);
    CHECK(ws_manifest_set_canon(NULL, WS_CANON_BF16, &err) == WS_ERR_ARG);
    ws_manifest_free(m);
    CHECK(ws_report_count_match(NULL, 1) == WS_ERR_ARG);
    ws_report *r = ws_report_new();
    CHECK_OK(ws_report_count_match(r, 2));
    CHECK(ws_report_matched(r) == 2);
    ws_report_free(r);
    /* hex: NULL in is an error, and the output is the empty string, never a digest */
    char hex[65] = "x";
    CHECK(ws_sha256_hex(NULL, hex) == WS_ERR_ARG && hex[0] == '\0');
    CHECK(ws_fast_hex(NULL, hex) == WS_ERR_ARG && hex[0] == '\0');
    ws_digest d = {0};
    CHECK(ws_digest_from_hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", &d) == WS_OK);
    CHECK(d.algos == WS_ALGO_SHA256 && d.sha256[0] == 0xba && d.sha256[31] == 0xad);
    CHECK(ws_digest_from_hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a", &d) == WS_ERR_FORMAT);
    CHECK(ws_digest_from_hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ag", &d) == WS_ERR_FORMAT);
    CHECK(ws_digest_from_hex(NULL, &d) == WS_ERR_ARG && d.algos == WS_ALGO_SHA256);

    /* A tensor name that is not UTF-8 (no safetensors file can hold one) is refused in a line
     * manifest, and a manifest holding one has no JSON form: its JSON used to lack the tensor
     * silently (found by fuzz_manifest). */
    const char bad[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  ok\n"
                       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  w\xc6ight\n";
    m = NULL;
    CHECK(ws_manifest_parse(bad, sizeof bad - 1, "bad", &m, &err) == WS_ERR_FORMAT && m == NULL);
    CHECK(strstr(err.what, "line 2") && strstr(err.what, "UTF-8"));
    m = ws_manifest_new(WS_CANON_BF16, WS_ALGO_SHA256, NULL, "test");
    ws_manifest_entry e = {.name = "w\xc6ight", .ndim = -1, .dtype = WS_DTYPE__COUNT,
                           .canonical_dtype = WS_DTYPE__COUNT};
    e.digest.algos = WS_ALGO_SHA256;
    CHECK_OK(ws_manifest_add(m, &e));
    char *text = (char *)"unset";
    CHECK(ws_manifest_to_json(m, &text, &err) == WS_ERR_FORMAT && text == NULL);
    CHECK(strstr(err.what, "UTF-8") && strcmp(err.tensor, "w\xc6ight") == 0);
    ws_manifest_free(m);
}

int main(void) {
    test_bad_arguments();
    test_roundtrip_and_compare();
    test_parse_errors();
    test_line_conventions();
    test_diff();
    return check_report("test_manifest");
}
