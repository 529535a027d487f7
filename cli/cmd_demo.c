/* weightsum demo: the whole job on a small built-in model, offline, in seconds. */
#include "cli.h"
#include "synth.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A Qwen2-style model: GQA (4 heads, 2 kv heads), q/k/v biases, vocab not a multiple of 64. */
static const char demo_config[] =
    "{\n"
    "  \"architectures\": [\"Qwen2ForCausalLM\"],\n"
    "  \"model_type\": \"qwen2\",\n"
    "  \"hidden_size\": 64,\n"
    "  \"intermediate_size\": 128,\n"
    "  \"num_hidden_layers\": 2,\n"
    "  \"num_attention_heads\": 4,\n"
    "  \"num_key_value_heads\": 2,\n"
    "  \"vocab_size\": 1000,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"torch_dtype\": \"float32\"\n"
    "}\n";

static const char usage[] =
    "usage: weightsum demo [--dir DIR]\n"
    "\n"
    "Write a small Qwen2-style checkpoint, hash it, verify it, flip one bit and show verify\n"
    "and diff naming the tensor and the element. Files go to DIR (default: a new directory\n"
    "under /tmp). Exit 0 when every step behaved as expected.\n";

static char *path_in(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Run a subcommand as the user would type it, echoing the command line. */
static int run(int (*fn)(int, char **), int argc, char **argv) {
    printf("\n$ weightsum");
    for (int i = 0; i < argc; i++) printf(" %s", argv[i]);
    printf("\n");
    fflush(stdout);
    extern int optind;
    optind = 0; /* reset getopt for the next subcommand */
    int rc = fn(argc, argv);
    fflush(stdout);
    printf("(exit %d)\n", rc);
    return rc;
}

/* Copy src to dst with bit `bit` of byte `offset` flipped. */
static int copy_flipped(const char *src, const char *dst, uint64_t offset, int bit) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    int rc = in && out ? 0 : -1;
    uint64_t pos = 0;
    int c;
    while (rc == 0 && (c = fgetc(in)) != EOF) {
        if (pos++ == offset) c ^= 1 << bit;
        if (fputc(c, out) == EOF) rc = -1;
    }
    if (in) fclose(in);
    if (out && fclose(out) != 0) rc = -1;
    return rc;
}

int cmd_demo(int argc, char **argv) {
    static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *dir = NULL;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'd': dir = optarg; break;
        case 'h': fputs(usage, stdout); return EXIT_MATCH;
        default: fputs(usage, stderr); return EXIT_TROUBLE;
        }
    }
    char tmpl[] = "/tmp/weightsum-demo-XXXXXX";
    if (!dir && !(dir = mkdtemp(tmpl))) return cli_failf("cannot create a demo directory");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return cli_failf("cannot create %s", dir);
    char *cfg_path = path_in(dir, "config.json"), *ckpt = path_in(dir, "model.safetensors"),
         *manifest = path_in(dir, "manifest.json"), *bad_dir = path_in(dir, "corrupted"),
         *bad = path_in(dir, "corrupted/model.safetensors");
    ws_error err;
    ws_model_config cfg;
    int rc = EXIT_TROUBLE;
    ws_ckpt *c = NULL;
    printf("weightsum demo: a small Qwen2-style model (2 layers, GQA, q/k/v biases) in %s\n", dir);
    if (ws_write_file_atomic(cfg_path, demo_config, strlen(demo_config), &err) != WS_OK ||
        ws_model_config_parse(demo_config, strlen(demo_config), "demo", &cfg, &err) != WS_OK ||
        synth_checkpoint(&cfg, WS_F32, 1, ckpt, &err) != WS_OK) {
        rc = cli_fail(&err);
        goto done;
    }
    char *hash_argv[] = {"hash", ckpt, "-o", manifest, "--no-progress", NULL};
    char *verify_ok[] = {"verify", manifest, ckpt, "--no-progress", NULL};
    if (run(cmd_hash, 5, hash_argv) != EXIT_MATCH || run(cmd_verify, 4, verify_ok) != EXIT_MATCH)
        goto done;
    /* Plant one flipped bit: the exponent's low bit of element 37 of layer 1's k_proj. */
    const char *victim = "model.layers.1.self_attn.k_proj.weight";
    if (ws_ckpt_open(ckpt, &c, &err) != WS_OK) {
        rc = cli_fail(&err);
        goto done;
    }
    const ws_tensor *t = ws_ckpt_find(c, victim);
    if (!t) {
        rc = cli_failf("demo checkpoint lacks %s", victim);
        goto done;
    }
    uint64_t off = t->file_offset + 37 * 4 + 2;
    mkdir(bad_dir, 0755);
    if (copy_flipped(ckpt, bad, off, 7) != 0) {
        rc = cli_failf("cannot write %s", bad);
        goto done;
    }
    printf("\nplanted: one bit flipped in element 37 of %s (byte %llu of the file)\n", victim,
           (unsigned long long)off);
    char *verify_bad[] = {"verify", manifest, bad, "--no-progress", NULL};
    char *diff_argv[] = {"diff", ckpt, bad, NULL};
    int v = run(cmd_verify, 4, verify_bad), d = run(cmd_diff, 3, diff_argv);
    rc = v == EXIT_MISMATCH && d == EXIT_MISMATCH ? EXIT_MATCH : EXIT_TROUBLE;
    printf("\ndemo %s: the planted flip was %s\n", rc == EXIT_MATCH ? "OK" : "FAILED",
           rc == EXIT_MATCH ? "caught by verify and located by diff" : "NOT caught");
done:
    ws_ckpt_free(c);
    free(cfg_path);
    free(ckpt);
    free(manifest);
    free(bad_dir);
    free(bad);
    return rc;
}
