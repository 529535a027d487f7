/* weightsum synth: write a deterministic synthetic HF checkpoint for a model config (for
 * benchmarks and tests; the values are small pseudo-random numbers). */
#include "cli.h"
#include "synth.h"

#include <getopt.h>
#include <string.h>

static const char usage[] =
    "usage: weightsum synth CONFIG.json -o FILE.safetensors [--dtype f32|bf16] [--seed N]\n"
    "                       [--[no-]progress]\n"
    "\n"
    "Write every HF tensor of the model that CONFIG.json describes (llama, mistral, qwen2,\n"
    "qwen3) with deterministic pseudo-random values. Tied lm_head is left out, as\n"
    "save_pretrained does.\n";

int cmd_synth(int argc, char **argv) {
    static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                         {"dtype", required_argument, 0, 'd'},
                                         {"seed", required_argument, 0, 's'},
                                         {"progress", no_argument, 0, 'P'},
                                         {"no-progress", no_argument, 0, 'N'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *out = NULL;
    int progress = -1;
    ws_dtype dt = WS_F32;
    long seed = 1;
    int ch;
    while ((ch = cli_getopt("synth", argc, argv, "o:h", opts)) != -1) {
        switch (ch) {
        case 'o': out = optarg; break;
        case 'd':
            if (!strcmp(optarg, "f32")) dt = WS_F32;
            else if (!strcmp(optarg, "bf16")) dt = WS_BF16;
            else return cli_usage("synth", "--dtype must be f32 or bf16, not '%s'", optarg);
            break;
        case 's':
            if (!cli_parse_int(optarg, 0, 1L << 62, &seed))
                return cli_usage("synth", "--seed needs a non-negative integer, not '%s'", optarg);
            break;
        case 'P': progress = 1; break;
        case 'N': progress = 0; break;
        case 'h': fputs(usage, stdout); return EXIT_MATCH;
        default: return EXIT_TROUBLE; /* said by cli_getopt */
        }
    }
    if (optind == argc) return cli_usage("synth", "no config named");
    if (optind + 1 != argc) return cli_usage("synth", "one config at a time, not %d", argc - optind);
    if (!out) return cli_usage("synth", "say where to write: -o FILE");
    if (strcmp(out, "-") == 0) /* the file is written atomically (renamed into place) */
        return cli_usage("synth", "-o - is stdout, but synth writes a file in place: -o FILE");
    ws_model_config *cfg = NULL;
    ws_error err;
    if (ws_model_config_load(argv[optind], &cfg, &err) != WS_OK) return cli_fail(&err);
    cli_progress prog;
    cli_progress_init(&prog, progress);
    ws_err rc = synth_checkpoint(cfg, dt, (uint64_t)seed, out, cli_progress_cb, &prog, &err);
    ws_model_config_free(cfg);
    cli_progress_end(&prog);
    if (rc != WS_OK) return cli_fail(&err);
    return EXIT_MATCH;
}
