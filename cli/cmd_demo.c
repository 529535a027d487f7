/* weightsum demo: the whole job on a small built-in model, offline, in seconds. */
#include "cli.h"
#include "synth.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
    "usage: weightsum demo [--dir DIR] [--keep]\n"
    "\n"
    "The main job on a small built-in Qwen2-style model, offline: the trainer's manifest,\n"
    "a TP=2 SGLang layout of the weights (fused qkv_proj/gate_up_proj, padded vocab), verify\n"
    "(all match), then one bit flipped in the k slice of rank 1's qkv_proj and the report\n"
    "that names k_proj, rank 1 and the element. Files go to DIR, and stay there (default:\n"
    "a new directory under $TMPDIR or /tmp, removed at the end unless --keep). Exit 0 when\n"
    "every step behaved as expected.\n";

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

/* Copy src to dst, flipping bit `bit` of byte `offset` (offset UINT64_MAX: plain copy). */
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

/* What the demo writes in its own directory (only those files), in the order they are
 * removed: each dump's files then the dump, the top files, the directory. Built before the
 * first file is written, so that Ctrl-C (SIGINT, SIGTERM, SIGHUP) removes them too: the
 * handler only calls unlink, rmdir and write, which are async-signal-safe. */
static char demo_paths[16][4096];
static size_t ndemo_paths;
static char demo_gone_line[4200];

static void demo_paths_of(const char *dir, const char *const *files, size_t nfiles) {
    static const char *const dumps[] = {"sglang-tp2", "sglang-tp2-corrupted"};
    static const char *const top[] = {"config.json", "model.safetensors", "manifest.json"};
    ndemo_paths = 0;
    for (size_t d = 0; d < 2; d++) {
        for (size_t i = 0; i < nfiles; i++)
            snprintf(demo_paths[ndemo_paths++], sizeof demo_paths[0], "%s/%s/%s", dir, dumps[d],
                     files[i]);
        snprintf(demo_paths[ndemo_paths++], sizeof demo_paths[0], "%s/%s", dir, dumps[d]);
    }
    for (size_t i = 0; i < 3; i++)
        snprintf(demo_paths[ndemo_paths++], sizeof demo_paths[0], "%s/%s", dir, top[i]);
    snprintf(demo_paths[ndemo_paths++], sizeof demo_paths[0], "%s", dir);
    snprintf(demo_gone_line, sizeof demo_gone_line,
             "\nweightsum: demo interrupted; its files in %s are removed\n", dir);
}

static void remove_demo(void) {
    for (size_t i = 0; i < ndemo_paths; i++)
        if (unlink(demo_paths[i]) != 0) rmdir(demo_paths[i]);
}

static void on_interrupt(int sig) {
    remove_demo();
    ssize_t w = write(2, demo_gone_line, strlen(demo_gone_line));
    (void)w;
    signal(sig, SIG_DFL);
    raise(sig); /* the exit status still says which signal ended it */
}

int cmd_demo(int argc, char **argv) {
    static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
                                         {"keep", no_argument, 0, 'k'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *dir = NULL;
    bool keep = false;
    int ch;
    while ((ch = cli_getopt("demo", argc, argv, "h", opts)) != -1) {
        switch (ch) {
        case 'd': dir = optarg; break;
        case 'k': keep = true; break;
        case 'h': fputs(usage, stdout); return EXIT_MATCH;
        default: return EXIT_TROUBLE; /* said by cli_getopt */
        }
    }
    const char *tmp = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/weightsum-demo-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    bool own_dir = !dir; /* a directory of our own is removed at the end, unless --keep */
    if (!dir && !(dir = mkdtemp(tmpl)))
        return cli_failf("cannot create a demo directory in %s", tmp && *tmp ? tmp : "/tmp");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return cli_failf("cannot create %s", dir);
    const char *files[] = {"model-rank-0-part-0.safetensors", "model-rank-1-part-0.safetensors",
                           "config.json", "weightsum-layout.json"};
    if (own_dir && !keep) { /* interrupted, the demo still removes what it wrote */
        demo_paths_of(dir, files, sizeof files / sizeof files[0]);
        struct sigaction sa = {.sa_handler = on_interrupt};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
    }
    char *cfg_path = path_in(dir, "config.json"), *ckpt = path_in(dir, "model.safetensors"),
         *manifest = path_in(dir, "manifest.json"), *dump = path_in(dir, "sglang-tp2"),
         *bad = path_in(dir, "sglang-tp2-corrupted");
    ws_error err;
    ws_model_config *cfg = NULL;
    int rc = EXIT_TROUBLE;
    ws_ckpt *c = NULL;
    printf("weightsum demo, in %s\n"
           "The trainer holds a small Qwen2-style model (2 layers, 4 heads, 2 kv heads, q/k/v\n"
           "biases, vocab 1000) in HF layout; the engine holds it as SGLang does at TP=2.\n",
           dir);
    if (ws_write_file_atomic(cfg_path, demo_config, strlen(demo_config), &err) != WS_OK ||
        ws_model_config_parse(demo_config, strlen(demo_config), "demo", &cfg, &err) != WS_OK ||
        synth_checkpoint(cfg, WS_F32, 1, ckpt, NULL, NULL, &err) != WS_OK) {
        rc = cli_fail(&err);
        goto done;
    }
    char *hash_argv[] = {"hash", ckpt, "-o", manifest, "--no-progress", NULL};
    char *shard_argv[] = {"shard", ckpt, "--layout", "sglang", "--tp", "2", "-o", dump, NULL};
    char *verify_ok[] = {"verify", manifest, dump, "--no-progress", NULL};
    printf("\n1. The trainer's manifest: SHA-256 of every HF tensor after the cast to bf16.");
    if (run(cmd_hash, 5, hash_argv) != EXIT_MATCH) goto done;
    printf("\n2. What SGLang's two ranks hold after the weight sync (sharded_state files).");
    if (run(cmd_shard, 8, shard_argv) != EXIT_MATCH) goto done;
    printf("\n3. Verify: each HF tensor rebuilt by streaming its shards, replicas and padding "
           "checked.");
    if (run(cmd_verify, 4, verify_ok) != EXIT_MATCH) goto done;
    /* Plant one flipped bit: an exponent bit of element (35, 5) of rank 1's fused qkv_proj of
     * layer 1. Rows 0..31 are rank 1's q heads, rows 32..47 its k head (kv head 1): this is
     * k_proj row 16 + 3, column 5. */
    const char *victim = "model.layers.1.self_attn.qkv_proj.weight";
    mkdir(bad, 0755);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *src = path_in(dump, files[i]), *dst = path_in(bad, files[i]);
        uint64_t off = UINT64_MAX;
        if (i == 1) {
            if (ws_ckpt_open(src, &c, &err) != WS_OK || !ws_ckpt_find(c, victim)) {
                free(src);
                free(dst);
                rc = cli_failf("demo dump lacks %s", victim);
                goto done;
            }
            off = ws_ckpt_find(c, victim)->file_offset + (35 * 64 + 5) * 4 + 2;
        }
        int e = copy_flipped(src, dst, off, 7);
        free(src);
        free(dst);
        if (e != 0) {
            rc = cli_failf("cannot copy the dump to %s", bad);
            goto done;
        }
    }
    printf("\n4. A broken sync: one bit flipped in element (35, 5) of %s on rank 1\n"
           "   (its k slice). Verify names the HF tensor and the engine tensors that hold it;\n"
           "   --locate against the trainer's checkpoint names the rank and the element.\n",
           victim);
    char *verify_bad[] = {"verify", manifest, bad, "--no-progress", NULL};
    char *verify_loc[] = {"verify", manifest, bad, "--locate", ckpt, "--no-progress", NULL};
    int v = run(cmd_verify, 4, verify_bad), d = run(cmd_verify, 6, verify_loc);
    rc = v == EXIT_MISMATCH && d == EXIT_MISMATCH ? EXIT_MATCH : EXIT_TROUBLE;
    printf("\ndemo %s: the planted flip was %s\n", rc == EXIT_MATCH ? "OK" : "FAILED",
           rc == EXIT_MATCH ? "caught and located (k_proj of layer 1, rank 1, row 19, column 5)"
                            : "NOT caught");
done:
    ws_ckpt_free(c);
    ws_model_config_free(cfg);
    if (own_dir && !keep) {
        signal(SIGINT, SIG_IGN); /* the handler would remove the same files */
        signal(SIGTERM, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        remove_demo();
        printf("(the demo's files in %s are removed; --keep or --dir DIR keeps them)\n", dir);
    } else {
        printf("(the demo's files are in %s)\n", dir);
    }
    free(cfg_path);
    free(ckpt);
    free(manifest);
    free(dump);
    free(bad);
    return rc;
}
