/* Internal: the weights_checker handler (protocol.c) and the per-rank work it delegates
 * (protocol_ranks.c): digests of every engine tensor as each rank holds it, and the
 * comparison of per-rank dicts of engine-named digests. */
#ifndef WS_PROTOCOL_H
#define WS_PROTOCOL_H
#include "internal.h"

#include <jansson.h>

struct ws_checker {
    char *dir;
    ws_layout *l;
    ws_canon canon;     /* policy of requests that name none */
    ws_fastkey *key;
    int threads;
    int **hf_ranks;     /* per HF tensor: the ranks that hold a piece of it, ascending */
    size_t *hf_nranks;
};

/* The list of an answer ("mismatched", "missing", "unexpected", "replica_mismatch") that
 * holds findings of status s. */
WSI_HIDDEN const char *wsp_list_of(ws_status s);

/* One expected digest of a request: an engine tensor name and its digest. */
typedef struct wsp_expect {
    const char *name; /* points into the request's JSON */
    ws_digest digest;
} wsp_expect;

/* The expected digests of one engine rank. */
typedef struct wsp_rank_expect {
    wsp_expect *items;
    size_t n;
} wsp_rank_expect;

/* SHA-256 over name || value for every entry of {name: hex string}, in name order: SGLang's
 * per_gpu_checksum (weight_checker.overall_checksum). false when out of memory. */
WSI_HIDDEN bool wsp_per_gpu_checksum(json_t *sums, char out[65]);
/* SGLang's parallelism_info dict of global rank g of l (ws_layout_rank_count ranks: tp x pp,
 * and x ep for megatron, whose ep ranks are data-parallel ranks): tp_rank, tp_size, dp_rank,
 * dp_size, pp_rank, pp_size, rank (= g) and size (the rank count); role "target" when with_role. */
WSI_HIDDEN json_t *wsp_parallelism_info(const ws_layout *l, int g, bool with_role);

/* SGLang's skip rule: a non-persistent buffer name, or one containing an entry of skip_list
 * (a JSON array of strings, may be NULL). */
WSI_HIDDEN bool wsp_sglang_skips(const char *name, json_t *skip_list);
/* SGLang's own "checksum" answer for the dump (protocol_sglang.c): the whole response object. */
WSI_HIDDEN ws_err wsp_sglang_checksum(const ws_checker *c, const ws_dump *d, json_t *skip_list,
                                      bool draft_only, json_t **out, ws_error *err);

/* Parse a digest: 64 hex digits are SHA-256, 48 the fast digest. false for anything else. */
WSI_HIDDEN bool wsp_parse_hex(const char *hex, ws_digest *d);

/* For each rank 0..tp-1 of the layout, digest every tensor its files hold (algos, canon):
 * *out is the JSON array "ranks" of the checksum action. known (may be NULL): per rank, per
 * tensor index, digests already computed (those whose algos equal algos are taken as they are,
 * the others computed here). */
WSI_HIDDEN ws_err wsp_rank_checksums(const ws_checker *c, const ws_dump *d, ws_canon canon,
                                     unsigned algos, ws_digest *const *known, json_t **out,
                                     ws_error *err);

/* Compare per-rank expectations: rank r of the layout reads exp[r] (n of them; a request's
 * rank_offset is the NCCL rank base of the weight-update group, never an index).
 * Into r: a rank with no expectation, a missing rank file, a listed tensor the rank does not
 * hold (missing), a digest that differs (mismatch), a tensor the rank holds but the request
 * does not list (unexpected), a rank file beyond the layout's tp (unexpected). */
WSI_HIDDEN ws_err wsp_compare_ranks(const ws_checker *c, const ws_dump *d, ws_canon canon,
                                    const wsp_rank_expect *exp, size_t n, ws_report *r,
                                    ws_error *err);
#endif
