/* The weightsum command line: shared helpers for the subcommands (cli/cmd_*.c). */
#ifndef WS_CLI_H
#define WS_CLI_H
#include "weightsum.h"

#include <stdbool.h>
#include <stdio.h>

/* Exit codes, as cmp(1) and diff(1): */
enum { EXIT_MATCH = 0, EXIT_MISMATCH = 1, EXIT_TROUBLE = 2 };

/* Print "weightsum: <one line>" for err on stderr and return EXIT_TROUBLE; in --json mode
 * (cli_json_errors) the error is also printed on stdout as a JSON object (docs/json.md). */
int cli_fail(const ws_error *err);
/* Print "weightsum: <printf>" on stderr and return EXIT_TROUBLE (JSON on stdout as above). */
int cli_failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Set by a command once it has parsed --json: errors are JSON on stdout too. */
extern bool cli_json_errors;

/* A usage mistake: "weightsum CMD: <printf> (see 'weightsum CMD --help')", EXIT_TROUBLE. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The subcommand being parsed (set by cli_getopt), for the shared options' messages. */
extern const char *cli_cmd;
/* getopt_long with getopt's own messages off: an unknown option or a missing argument is said
 * in one line by cli_usage and answered with CLI_BADOPT (the caller returns EXIT_TROUBLE). */
#define CLI_BADOPT (-2)
struct option;
int cli_getopt(const char *cmd, int argc, char **argv, const char *shortopts,
               const struct option *longopts);

/* Progress bar on stderr: on when `mode` is 1, off when 0, when stderr is a terminal if -1. */
typedef struct cli_progress {
    bool on;
    double start, last;
} cli_progress;
void cli_progress_init(cli_progress *p, int mode);
void cli_progress_cb(void *user, uint64_t done, uint64_t total);
void cli_progress_end(cli_progress *p);
/* Wipe a drawn progress line (before an error line; cli_fail does it). */
void cli_progress_wipe(void);
/* Hash options of a command (algos 0: SHA-256; progress through prog, may be NULL); NULL after
 * saying why (exit 2). Free with ws_hash_options_free. */
ws_hash_options *cli_hash_options(ws_canon canon, unsigned algos, const ws_fastkey *key,
                                  int threads, cli_progress *prog);

/* Parse "-j N" style integers; false on junk. */
bool cli_parse_int(const char *s, long lo, long hi, long *out);
/* Parse --algo sha256|fast|both into WS_ALGO_* bits. */
bool cli_parse_algo(const char *s, unsigned *out);
/* The key for the fast digest: --key SEED, or the public default. */
int cli_make_key(const char *seed, ws_fastkey **out);
/* "TENSOR: STATUS [LOCAL on rank R] rows A..B: DETAIL" */
void cli_print_finding(FILE *out, const ws_finding *f);
/* How much a judging command prints (sha256sum's --status, --quiet, default, -v). */
typedef enum cli_verbosity {
    CLI_STATUS = 0,  /* nothing: the exit code says it */
    CLI_QUIET = 1,   /* the failures only */
    CLI_NORMAL = 2,  /* the failures and a summary line */
    CLI_VERBOSE = 3, /* also one "NAME: OK" line per tensor that matched */
} cli_verbosity;
/* Print r: JSON (--json), or a line per finding and a summary as v says; expected (may be
 * NULL) names the tensors for the OK lines of CLI_VERBOSE. Returns the exit code. */
/* The report's warnings on stderr, one "weightsum: warning: WHAT: ..." line each. */
void cli_print_warnings(const ws_report *r, const char *what);
int cli_print_report(const ws_report *r, bool json, cli_verbosity v, const char *what,
                     const ws_manifest *expected);

/* Layout flags shared by shard, hash, verify and diff. */
typedef struct cli_layout_opts {
    const char *family; /* --layout */
    long tp;            /* --tp, 0 = from the dump */
    long ep, pp;        /* --ep, --pp, 0 = from the dump (else 1) */
    const char *config; /* --config, NULL = DIR/config.json */
    bool force;         /* --force: flags win over a disagreeing weightsum-layout.json */
    const char *expert_map; /* --expert-map FILE (EPLB physical-to-logical map), or NULL */
    long redundant;     /* --redundant-experts N, 0 = none */
    /* SGLang DP attention: --attn-dp-size N (0 = from the dump, else 1), --enable-dp-lm-head,
     * --moe-dense-tp-size N (0 = unset) */
    long attn_dp, moe_dense_tp;
    bool dp_lm_head;
    bool fused_shared; /* --fused-shared-experts (SGLang's shared expert as one more slot) */
} cli_layout_opts;
/* getopt values of the long-only layout options --ep N, --pp N, --expert-map FILE,
 * --redundant-experts N, --attn-dp-size N, --enable-dp-lm-head, --moe-dense-tp-size N and
 * --fused-shared-experts. */
#define CLI_OPT_EP 0x101
#define CLI_OPT_PP 0x102
#define CLI_OPT_EXPERT_MAP 0x103
#define CLI_OPT_REDUNDANT 0x104
/* --read pread|mmap (the commands that read weights through sources: hash, verify, diff, serve):
 * sets the process's read mode (ws_set_read_mode) as it is parsed. main sets WS_READ_MMAP
 * before a command runs and installs the SIGBUS guard (cli/sigbus_guard.c). */
#define CLI_OPT_READ 0x105
#define CLI_READ_OPT {"read", required_argument, 0, CLI_OPT_READ}
/* Install the SIGBUS handler that turns a fault in the mapped range being read into the
 * one-line error naming the file (exit 2); any other SIGBUS keeps its default action. */
void cli_sigbus_guard_install(void);
/* SGLang DP attention options (cli_parse_par). */
#define CLI_OPT_ATTN_DP 0x106
#define CLI_OPT_DP_LM_HEAD 0x107
#define CLI_OPT_MOE_DENSE_TP 0x108
#define CLI_OPT_FUSED_SHARED 0x109
#define CLI_LAYOUT_PAR_OPTS                                                                        \
    {"ep", required_argument, 0, CLI_OPT_EP}, {"pp", required_argument, 0, CLI_OPT_PP},            \
        {"expert-map", required_argument, 0, CLI_OPT_EXPERT_MAP},                                  \
        {"redundant-experts", required_argument, 0, CLI_OPT_REDUNDANT},                            \
        {"attn-dp-size", required_argument, 0, CLI_OPT_ATTN_DP},                                   \
        {"enable-dp-lm-head", no_argument, 0, CLI_OPT_DP_LM_HEAD},                                 \
        {"moe-dense-tp-size", required_argument, 0, CLI_OPT_MOE_DENSE_TP}, {                       \
        "fused-shared-experts", no_argument, 0, CLI_OPT_FUSED_SHARED                               \
    }
/* The usage lines of those SGLang options (every command that takes a layout names them). */
#define CLI_DP_USAGE                                                                               \
    "                [--attn-dp-size N] [--enable-dp-lm-head] [--moe-dense-tp-size N] (SGLang DP "  \
    "attention)\n"                                                                                 \
    "                [--fused-shared-experts] (SGLang: the shared expert as one more expert slot)\n"
/* Options several subcommands share, parsed in one place (cli_common_option). */
typedef struct cli_common {
    cli_layout_opts lo; /* --layout L (L), --tp N (t), --config F (C), --force (f) */
    ws_canon canon;     /* --canonical (c) */
    bool canon_given;
    const char *seed;   /* --key SEED (k) */
    long threads;       /* -j / --jobs N (j); 0 = all cores */
    int progress;       /* --progress (P) 1, --no-progress (N) 0; -1 = when stderr is a tty */
} cli_common;
#define CLI_COMMON_INIT {.canon = WS_CANON_BF16, .progress = -1}
/* Apply option ch (getopt's value) if it is a shared one: 1 applied, 0 not a shared option,
 * -1 a bad value (said on stderr). */
int cli_common_option(int ch, const char *arg, cli_common *c);
/* For a switch's default: a shared option is applied (true); a bad value is said, anything
 * else prints usage on stderr (false: exit with EXIT_TROUBLE). */
bool cli_common_or_usage(int ch, const char *arg, cli_common *c, const char *usage);

/* --ep / --pp / --expert-map / --redundant-experts / --attn-dp-size / --enable-dp-lm-head /
 * --moe-dense-tp-size value: 1 applied, -1 a bad value (said on stderr). */
int cli_parse_par(int ch, const char *arg, cli_layout_opts *o);
/* The engine options of o (expert map file, redundant experts, SGLang DP attention) onto par. */
ws_err cli_set_par_options(ws_parallel *par, const cli_layout_opts *o, ws_error *err);
/* Build a layout for family / config over tp x ep x pp (ep, pp 0: 1), with o's expert map and
 * redundant experts (o may be NULL); failures said. */
int cli_make_layout(const char *family, const ws_model_config *cfg, long tp, long ep, long pp,
                    const cli_layout_opts *o, ws_layout **out);
/* Build the layout of dump d in dir from the flags, weightsum-layout.json and config.json. */
int cli_open_layout(const cli_layout_opts *o, const char *dir, const ws_dump *d,
                    ws_layout **out);

/* Digest a checkpoint or an engine dump into a manifest (EXIT_MISMATCH when a dump has
 * structural problems, printed on stderr; *out is still set). */
int cli_hash_path(const char *path, const cli_layout_opts *lo, ws_canon canon, unsigned algos,
                  const ws_fastkey *key, int threads, int progress_mode, ws_manifest **out);
/* A path written lexically plain ("./a//b/../c/" -> "a/c"): the manifests' "source". */
void cli_normalize_path(const char *in, char *out, size_t n);
/* One line per differing tensor (diff, verify --locate). */
void cli_print_diff(FILE *f, const char *name, const ws_diff *d, int ndim, const uint64_t *shape);

/* Subcommands. */
int cmd_hash(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_diff(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_shard(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_push(int argc, char **argv);
int cmd_expect(int argc, char **argv);

/* The expectation of an engine that loaded the HF checkpoint ckpt under layout lo (--config or
 * the config.json beside ckpt), a progress line as progress says (cli_progress_init):
 * EXIT_MATCH, or EXIT_TROUBLE said on stderr. */
int cli_expect_build(const char *ckpt, const cli_layout_opts *lo, ws_engine engine,
                     ws_sglang_path path, int threads, int progress, ws_expect **out);
#endif
