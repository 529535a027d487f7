/*
 * weightsum — prove, bit for bit, that the weights an inference engine holds are the weights a
 * trainer meant it to hold, however each side shards, fuses, pads or casts them.
 *
 * This header is the stable public C API; weightsum_experimental.h adds test hooks, kernel
 * forcing, the fast digest's raw algebra, the layout's piece table and scalar casts, with no
 * stability promise. Conventions:
 *   - every symbol starts with ws_ / WS_; nothing else is exported;
 *   - every call that can fail returns ws_err and, when given a non-NULL ws_error*, fills it
 *     with the file, tensor, byte offset and what was expected (one line, see ws_error_format);
 *     a bad argument (NULL where an object is needed, an invalid enum value) is WS_ERR_ARG
 *     (WS_ERR_DTYPE for a dtype), never a silent return that leaves an output looking valid.
 *     Only getters return plain values: on a NULL object they give NULL / 0 / -1 as documented;
 *     name lookups (ws_dtype_from_name, ws_canon_from_name) return a code and no detail;
 *   - handles are opaque; every *_free accepts NULL; memory the library allocates and hands
 *     over (JSON and line texts, checker responses) is released with ws_free;
 *   - the library never prints, exits or aborts; it never writes to the weights it checks.
 */
#ifndef WEIGHTSUM_H
#define WEIGHTSUM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(WS_BUILDING) && defined(__GNUC__)
#define WS_API __attribute__((visibility("default")))
#else
#define WS_API
#endif

/* The version of this header. CMake's project() version is read from these three lines (one
 * place to bump); the shared library's SONAME follows it (libweightsum.so.0.MINOR while the
 * major version is 0). WS_VERSION_NUMBER is MAJOR * 10000 + MINOR * 100 + PATCH. */
#define WS_VERSION_MAJOR 0
#define WS_VERSION_MINOR 2
#define WS_VERSION_PATCH 0
#define WS_VERSION_NUMBER (WS_VERSION_MAJOR * 10000 + WS_VERSION_MINOR * 100 + WS_VERSION_PATCH)
#define WS_VERSION_STR_(x) #x
#define WS_VERSION_STR(x) WS_VERSION_STR_(x)
#define WS_VERSION_STRING                                                                      \
    WS_VERSION_STR(WS_VERSION_MAJOR) "." WS_VERSION_STR(WS_VERSION_MINOR) "." WS_VERSION_STR( \
        WS_VERSION_PATCH)
/* The library's version string ("0.2.0"): the one it was built with, which may differ from
 * WS_VERSION_STRING of the header a program was compiled against. */
WS_API const char *ws_version(void);
/* The library's WS_VERSION_NUMBER. */
WS_API unsigned ws_version_number(void);

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* Stable numbers: never renumber, only append. */
typedef enum ws_err {
    WS_OK = 0,
    WS_ERR_NOMEM = 1,     /* allocation failed */
    WS_ERR_IO = 2,        /* open/read/write/mmap/rename failed */
    WS_ERR_FORMAT = 3,    /* a file is malformed (safetensors header, manifest, dump) */
    WS_ERR_DTYPE = 4,     /* unknown or unsupported dtype / cast */
    WS_ERR_JSON = 5,      /* text is not valid JSON, or JSON of the wrong shape */
    WS_ERR_ARG = 6,       /* invalid argument from the caller */
    WS_ERR_NOTFOUND = 7,  /* a named tensor, file or key does not exist */
    WS_ERR_CRYPTO = 8,    /* libcrypto failed */
    WS_ERR_LAYOUT = 9,    /* a layout cannot describe this model/config/parallel size */
    WS_ERR_COVERAGE = 10, /* pieces leave a gap or overlap in a canonical tensor */
    WS_ERR_LIMIT = 11,    /* a size limit was exceeded (header size, body size, dims) */
    WS_ERR_THREAD = 12,   /* a thread could not be started */
    WS_ERR_SHAPE = 13,    /* shapes disagree */
    WS_ERR_REMOTE = 14,   /* an engine answered with an error (its message in ws_error.what) */
    WS_ERR__COUNT
} ws_err;

/* Detail of an error; any string may be empty, offset is -1 when not meaningful. */
typedef struct ws_error {
    ws_err code;
    char file[512];
    char tensor[256];
    int64_t offset;
    char what[512];
} ws_error;

/* "WS_ERR_FORMAT" etc.; never NULL. */
WS_API const char *ws_err_name(ws_err e);
/* Reset *err to WS_OK with empty fields. NULL is fine. */
WS_API void ws_error_clear(ws_error *err);
/* One line: "FILE: tensor 'T': offset N: WHAT" (absent parts left out). Returns chars needed. */
WS_API int ws_error_format(const ws_error *err, char *buf, size_t size);

/* Release memory the library allocated and handed to the caller: the texts of
 * ws_manifest_to_json, ws_manifest_to_lines and ws_report_to_json, and the response of
 * ws_checker_handle. NULL is fine. (Objects with a *_free of their own are freed with it.) */
WS_API void ws_free(void *p);

/* ------------------------------------------------------------------------------------------ */
/* Dtypes and canonical casts                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* Every safetensors dtype. The numbering is ours and stable. */
typedef enum ws_dtype {
    WS_BOOL = 0, WS_U8, WS_I8, WS_I16, WS_U16, WS_I32, WS_U32, WS_I64, WS_U64,
    WS_F16, WS_BF16, WS_F32, WS_F64, WS_F8_E4M3, WS_F8_E5M2,
    WS_DTYPE__COUNT
} ws_dtype;

/* Safetensors name ("F32", "BF16", "F8_E4M3", ...); NULL for an invalid value. */
WS_API const char *ws_dtype_name(ws_dtype t);
/* Parse a safetensors dtype name (case-sensitive, as safetensors writes them). */
WS_API ws_err ws_dtype_from_name(const char *name, ws_dtype *out);
/* Bytes per element (1, 2, 4 or 8); 0 for an invalid value. */
WS_API size_t ws_dtype_size(ws_dtype t);
/* 1 for floating-point dtypes (F16, BF16, F32, F64, F8_*). */
WS_API int ws_dtype_is_float(ws_dtype t);

/*
 * Canonical policy. WS_CANON_BF16 casts every floating dtype to bf16 exactly as PyTorch's
 * CPU `Tensor.to(torch.bfloat16)` does (F32/F16: round to nearest even; F64: to F32 first, then
 * to BF16, as PyTorch does; F8: exact; every NaN becomes 0x7FC0, the sign dropped — PyTorch's
 * CPU result; its CUDA cast gives 0x7FFF, see docs/canonical.md). Integer and bool tensors
 * are never cast: a cast would lose information and no engine casts them.
 * WS_CANON_NATIVE hashes the stored bytes as they are.
 */
typedef enum ws_canon { WS_CANON_BF16 = 0, WS_CANON_NATIVE = 1 } ws_canon;

WS_API const char *ws_canon_name(ws_canon c);                 /* "bf16" / "native" */
WS_API ws_err ws_canon_from_name(const char *name, ws_canon *out);
/* The dtype a tensor of dtype t has after the canonical cast c; WS_DTYPE__COUNT when t or c
 * is not a valid value. */
WS_API ws_dtype ws_canonical_dtype(ws_dtype t, ws_canon c);

/* Counts of special values met while casting (in the source dtype). */
typedef struct ws_value_stats {
    uint64_t nan;
    uint64_t inf;
} ws_value_stats;

/*
 * Cast n elements of dtype t at src into canonical dtype ws_canonical_dtype(t, c) at dst
 * (dst may not overlap src; unaligned pointers are fine). stats (may be NULL) is incremented.
 * WS_ERR_DTYPE for an invalid t, WS_ERR_ARG for an invalid c or a NULL src / dst with n > 0
 * (dst and stats untouched); WS_ERR_LIMIT when n elements do not fit in the address range.
 */
WS_API ws_err ws_cast_to_canonical(ws_dtype t, ws_canon c, const void *src, size_t n,
                                   void *dst, ws_value_stats *stats, ws_error *err);
/* Value of element i of a tensor of dtype t, as double (for reports); NaN for an invalid t
 * or a NULL data. */
WS_API double ws_element_as_double(ws_dtype t, const void *data, uint64_t i);

/* ------------------------------------------------------------------------------------------ */
/* Safetensors checkpoints (read through mmap, validated)                                      */
/* ------------------------------------------------------------------------------------------ */

#define WS_MAX_DIMS 8
/* Headers larger than this are rejected as absurd (the reference implementation uses 100 MB). */
#define WS_MAX_HEADER_BYTES (100u * 1024u * 1024u)

/* One stored tensor. Pointers stay valid until its checkpoint is freed. */
typedef struct ws_tensor {
    const char *name;
    ws_dtype dtype;
    int ndim;
    uint64_t shape[WS_MAX_DIMS];
    uint64_t numel;
    uint64_t nbytes;
    const void *data;     /* read-only mapping of the tensor's bytes */
    const char *file;     /* path of the file that holds it */
    uint64_t file_offset; /* byte offset of data in that file */
} ws_tensor;

typedef struct ws_ckpt ws_ckpt;

/*
 * Open a checkpoint: a .safetensors file, a model.safetensors.index.json, or a directory
 * holding either (index first, else every *.safetensors in name order). Every header is fully
 * validated (README.md, "Safetensors validation"); a tensor name present twice across files
 * is an error.
 */
WS_API ws_err ws_ckpt_open(const char *path, ws_ckpt **out, ws_error *err);
/* Open an explicit list of safetensors files as one checkpoint. */
WS_API ws_err ws_ckpt_open_files(const char *const *paths, size_t n, ws_ckpt **out,
                                 ws_error *err);
/* Parse one safetensors image held in memory (the fuzzing entry point); buf must outlive it. */
WS_API ws_err ws_ckpt_from_memory(const void *buf, size_t len, const char *label, ws_ckpt **out,
                                  ws_error *err);
WS_API void ws_ckpt_free(ws_ckpt *c);
/* Tensors in name order. */
WS_API size_t ws_ckpt_count(const ws_ckpt *c);
WS_API const ws_tensor *ws_ckpt_tensor(const ws_ckpt *c, size_t i);
WS_API const ws_tensor *ws_ckpt_find(const ws_ckpt *c, const char *name);
/* The "__metadata__" object of the first file as JSON text, or NULL. */
WS_API const char *ws_ckpt_metadata(const ws_ckpt *c);

/* A tensor to write. */
typedef struct ws_tensor_spec {
    const char *name;
    ws_dtype dtype;
    int ndim;
    uint64_t shape[WS_MAX_DIMS];
    const void *data; /* numel * dtype size bytes */
} ws_tensor_spec;

/*
 * Write a safetensors file atomically (a temporary in the same directory, fsync, rename).
 * Tensors are stored in the given order; metadata_json (may be NULL) is a JSON object of
 * string values stored as "__metadata__".
 */
WS_API ws_err ws_safetensors_write(const char *path, const ws_tensor_spec *tensors, size_t n,
                                   const char *metadata_json, ws_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Digests                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Which digests to compute. */
enum { WS_ALGO_SHA256 = 1, WS_ALGO_FAST = 2 };

/* Fast digest: 3 lanes mod p = 2^61-1 (docs/fast-digest.md). Fixed byte form: each lane as
 * 16 lowercase hex digits, big-endian, lane 0 first: 48 hex characters. */
#define WS_FAST_LANES 3
typedef struct ws_fast {
    uint64_t lane[WS_FAST_LANES];
} ws_fast;

typedef struct ws_digest {
    unsigned algos;        /* WS_ALGO_* present */
    uint8_t sha256[32];
    ws_fast fast;
} ws_digest;

/* Lowercase hex of a SHA-256 (65 bytes with NUL) / fast digest (49 bytes with NUL).
 * WS_ERR_ARG when d or out is NULL (out, if given, becomes ""). */
WS_API ws_err ws_sha256_hex(const uint8_t d[32], char out[65]);
WS_API ws_err ws_fast_hex(const ws_fast *d, char out[49]);
/* Parse the 48-digit byte form (either case). WS_ERR_FORMAT (out untouched) for any other
 * length, a non-hex character or a lane >= p; WS_ERR_ARG for a NULL argument. */
WS_API ws_err ws_fast_from_hex(const char *hex, ws_fast *out);
/* Parse a digest's hex: 64 digits are a SHA-256, 48 the fast digest. Sets that digest and its
 * bit in out->algos, leaving the other algorithm's fields as they are (parsing both digests of
 * a tensor into one ws_digest collects both). WS_ERR_FORMAT (out untouched) for anything else. */
WS_API ws_err ws_digest_from_hex(const char *hex, ws_digest *out);

/* Keys of the fast digest, derived from a seed (docs/fast-digest.md). */
typedef struct ws_fastkey ws_fastkey;
/* The public default seed that makes manifests comparable. */
#define WS_FAST_DEFAULT_SEED "weightsum-fast-digest-v1"
WS_API ws_err ws_fastkey_create(const void *seed, size_t seed_len, ws_fastkey **out,
                                ws_error *err);
WS_API void ws_fastkey_free(ws_fastkey *k);
/* Short identifier of the key: first 16 hex digits of SHA-256(seed). */
WS_API const char *ws_fastkey_id(const ws_fastkey *k);

/* The fast digest's raw algebra (accumulating runs of units at global indices, adding
 * partial digests) and kernel forcing are in weightsum_experimental.h. */

/* Digest one whole tensor's canonical bytes. key may be NULL when algos lacks WS_ALGO_FAST.
 * stats (may be NULL) receives NaN/Inf counts of the source. */
WS_API ws_err ws_digest_tensor(const ws_tensor *t, ws_canon c, unsigned algos,
                               const ws_fastkey *key, ws_digest *out, ws_value_stats *stats,
                               ws_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Manifests                                                                                   */
/* ------------------------------------------------------------------------------------------ */

typedef struct ws_manifest_entry {
    char *name;
    ws_dtype dtype;           /* stored dtype of the source; WS_DTYPE__COUNT when unknown */
    ws_dtype canonical_dtype; /* dtype after the canonical cast; WS_DTYPE__COUNT when unknown */
    int ndim;                 /* -1 when unknown (sha256sum-style lines carry no shape) */
    uint64_t shape[WS_MAX_DIMS];
    ws_digest digest;
    ws_value_stats stats;
} ws_manifest_entry;

typedef struct ws_manifest ws_manifest;

WS_API ws_manifest *ws_manifest_new(ws_canon c, unsigned algos, const char *key_id,
                                    const char *source);
WS_API void ws_manifest_free(ws_manifest *m);
/* Copies e (its name too). Entries are kept sorted by name; a duplicate name is WS_ERR_ARG. */
WS_API ws_err ws_manifest_add(ws_manifest *m, const ws_manifest_entry *e);
WS_API size_t ws_manifest_count(const ws_manifest *m);
WS_API const ws_manifest_entry *ws_manifest_entry_at(const ws_manifest *m, size_t i);
WS_API const ws_manifest_entry *ws_manifest_find(const ws_manifest *m, const char *name);
WS_API ws_canon ws_manifest_canon(const ws_manifest *m);
WS_API unsigned ws_manifest_algos(const ws_manifest *m);
WS_API const char *ws_manifest_key_id(const ws_manifest *m); /* NULL when no fast digest */
WS_API const char *ws_manifest_source(const ws_manifest *m);
/* 0 for a manifest parsed from sha256sum-style lines, which name no canonical policy; such a
 * manifest takes one with ws_manifest_set_canon (the default is bf16). */
WS_API int ws_manifest_declares_canon(const ws_manifest *m);
/* WS_ERR_ARG for a NULL manifest or an invalid policy (the manifest untouched). */
WS_API ws_err ws_manifest_set_canon(ws_manifest *m, ws_canon c, ws_error *err);

/* JSON text (NUL-terminated; free with ws_free). */
WS_API ws_err ws_manifest_to_json(const ws_manifest *m, char **out, ws_error *err);
/* Lines "HEX  NAME\n" as sha256sum prints them, one per digest an entry holds (sha256 first),
 * names holding a newline, CR or backslash escaped as coreutils does; the first line is the
 * comment "# weightsum-manifest 2 canonical=P [key_id=K]" (version, policy, fast key).
 * Free with ws_free. */
WS_API ws_err ws_manifest_to_lines(const ws_manifest *m, char **out, ws_error *err);
/* The same as BSD-style lines (sha256sum --tag): "SHA256 (NAME) = HEX", "FAST (NAME) = HEX". */
WS_API ws_err ws_manifest_to_bsd_lines(const ws_manifest *m, char **out, ws_error *err);
/* Parse a manifest from JSON or from sha256sum-style lines (detected by the first byte): GNU
 * or BSD lines, one or two spaces, escaped names, the header comment line. Refused
 * (WS_ERR_FORMAT, one line): an unknown version; fast digests of a manifest older than
 * version 2 (not bound to the shape); digests missing for a declared algorithm; sha256sum
 * output over *.safetensors files (whole-file digests). */
WS_API ws_err ws_manifest_parse(const char *text, size_t len, const char *label,
                                ws_manifest **out, ws_error *err);
WS_API ws_err ws_manifest_load(const char *path, ws_manifest **out, ws_error *err);
/* Write text to path atomically (temporary file, fsync, rename). */
WS_API ws_err ws_write_file_atomic(const char *path, const void *data, size_t len,
                                   ws_error *err);

/* Progress callback: done/total in bytes of source data; called from worker threads, serialised. */
typedef void (*ws_progress_fn)(void *user, uint64_t done, uint64_t total);

/*
 * How to hash: canonical policy, algorithms, fast-digest key, threads, progress. Opaque, so it
 * can grow; a new one hashes SHA-256 under bf16 on all cores, with no key and no progress.
 */
typedef struct ws_hash_options ws_hash_options;
typedef enum ws_hash_key {
    WS_HASH_CANON = 0, /* a ws_canon (default WS_CANON_BF16) */
    WS_HASH_ALGOS,     /* WS_ALGO_* bits, at least one (default WS_ALGO_SHA256) */
    WS_HASH_THREADS,   /* <= 0: all cores (default 0) */
    WS_HASH__COUNT
} ws_hash_key;
/* New options with every key at its default; free with ws_hash_options_free. */
WS_API ws_err ws_hash_options_create(ws_hash_options **out, ws_error *err);
WS_API void ws_hash_options_free(ws_hash_options *o);
/* Set one key; WS_ERR_ARG for a NULL o, an unknown key or a value out of range (an invalid
 * policy, no or unknown algorithm bits). */
WS_API ws_err ws_hash_options_set(ws_hash_options *o, ws_hash_key key, long value, ws_error *err);
/* A key's value; -1 for a NULL o or an unknown key. */
WS_API long ws_hash_options_get(const ws_hash_options *o, ws_hash_key key);
/* The fast digest's key (not copied: it must outlive every use of o; NULL removes it).
 * Hashing with WS_ALGO_FAST and no key is WS_ERR_ARG. */
WS_API ws_err ws_hash_options_set_key(ws_hash_options *o, const ws_fastkey *key, ws_error *err);
/* The key given, or NULL. */
WS_API const ws_fastkey *ws_hash_options_key(const ws_hash_options *o);
/* Progress callback (NULL: none) and its first argument. WS_ERR_ARG for a NULL o. */
WS_API ws_err ws_hash_options_set_progress(ws_hash_options *o, ws_progress_fn progress,
                                           void *user, ws_error *err);

/* Digest every tensor of a checkpoint into a new manifest, tensors spread over threads. */
WS_API ws_err ws_hash_checkpoint(const ws_ckpt *c, const ws_hash_options *opt,
                                 const char *source, ws_manifest **out, ws_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Model config and layouts: the pieces model (docs/layouts.md)                                */
/* ------------------------------------------------------------------------------------------ */

/*
 * What a layout needs from a HF config.json. Opaque, so it can grow with the families: parsed
 * from a config.json, or built key by key (ws_model_config_create, then the setters) for a
 * model whose config is not at hand. ws_layout_create checks it (WS_ERR_ARG naming the key).
 */
typedef struct ws_model_config ws_model_config;
typedef enum ws_cfg_key {
    WS_CFG_HIDDEN_SIZE = 0,
    WS_CFG_INTERMEDIATE_SIZE,
    WS_CFG_VOCAB_SIZE,
    WS_CFG_NUM_LAYERS,            /* num_hidden_layers */
    WS_CFG_NUM_HEADS,             /* num_attention_heads */
    WS_CFG_NUM_KV_HEADS,          /* num_key_value_heads (parsed: defaults to num_heads) */
    WS_CFG_HEAD_DIM,              /* head_dim (parsed: defaults to hidden_size / num_heads) */
    WS_CFG_TIE_WORD_EMBEDDINGS,   /* flag */
    WS_CFG_ATTENTION_BIAS,        /* flag: q/k/v biases (qwen2 always; else
                                     config.attention_bias); o_proj has one too, except qwen2 */
    WS_CFG_QK_NORM,               /* flag: q_norm / k_norm per layer (qwen3; glm4_moe
                                     use_qk_norm) */
    /* Mixture of experts (docs/layouts.md, "MoE models"); all 0 for a dense model. */
    WS_CFG_NUM_EXPERTS,           /* routed experts: num_experts / n_routed_experts */
    WS_CFG_MOE_INTERMEDIATE_SIZE,
    WS_CFG_SHARED_EXPERT_INTERMEDIATE_SIZE, /* qwen2_moe: one gated shared expert */
    WS_CFG_N_SHARED_EXPERTS,      /* glm4_moe: shared experts fused into one MLP */
    WS_CFG_FIRST_K_DENSE_REPLACE, /* glm4_moe: layers [0, k) are dense */
    WS_CFG_DECODER_SPARSE_STEP,   /* qwen*_moe: layer i is MoE when (i + 1) % step == 0 */
    WS_CFG_ROUTER_BIAS,           /* flag: glm4_moe mlp.gate.e_score_correction_bias [E] */
    /* Block FP8 (quantization_config: quant_method "fp8", weight_block_size [bn, bk]); 0: none */
    WS_CFG_FP8_BLOCK_N,
    WS_CFG_FP8_BLOCK_K,
    /* Multi-head latent attention (deepseek_v2, deepseek_v3: docs/layouts.md, "MLA"); 0 otherwise.
     * Appended after the keys above so their values stay. */
    WS_CFG_Q_LORA_RANK,           /* 0 when null: q_proj instead of q_a_proj / q_b_proj */
    WS_CFG_KV_LORA_RANK,          /* set: MLA attention, and the four keys below are required */
    WS_CFG_QK_NOPE_HEAD_DIM,
    WS_CFG_QK_ROPE_HEAD_DIM,
    WS_CFG_V_HEAD_DIM,
    WS_CFG_MOE_LAYER_FREQ,        /* deepseek: layer i >= first_k_dense_replace is MoE when
                                     i % moe_layer_freq == 0 (0 is read as 1) */
    WS_CFG__COUNT
} ws_cfg_key;
/* The most layers mlp_only_layers may list. */
#define WS_CFG_MAX_MLP_ONLY_LAYERS 64

/* An empty config (model_type "", every key 0), to fill with the setters. */
WS_API ws_err ws_model_config_create(ws_model_config **out, ws_error *err);
/* Parse a HF config.json held in memory / in a file into a new config (*out, free with
 * ws_model_config_free). Missing required keys are WS_ERR_JSON naming the key and label. */
WS_API ws_err ws_model_config_parse(const char *json, size_t len, const char *label,
                                    ws_model_config **out, ws_error *err);
WS_API ws_err ws_model_config_load(const char *path, ws_model_config **out, ws_error *err);
WS_API void ws_model_config_free(ws_model_config *c);
/* Set one key; WS_ERR_ARG for a NULL c, an unknown key, a negative value, a flag other than
 * 0/1, or a value over the key's limit (docs/layouts.md). */
WS_API ws_err ws_model_config_set(ws_model_config *c, ws_cfg_key key, long value, ws_error *err);
/* A key's value; -1 for a NULL c or an unknown key. */
WS_API long ws_model_config_get(const ws_model_config *c, ws_cfg_key key);
/* model_type ("llama", "mistral", "qwen2", "qwen3", "qwen3_moe", ...): 1..63 bytes, else
 * WS_ERR_ARG. The getter gives NULL for a NULL c. */
WS_API ws_err ws_model_config_set_model_type(ws_model_config *c, const char *model_type,
                                             ws_error *err);
WS_API const char *ws_model_config_model_type(const ws_model_config *c);
/* qwen*_moe's mlp_only_layers: layers kept dense (n <= WS_CFG_MAX_MLP_ONLY_LAYERS, else
 * WS_ERR_ARG); the getter gives them and their count (NULL, 0 for a NULL c). */
WS_API ws_err ws_model_config_set_mlp_only_layers(ws_model_config *c, const uint32_t *layers,
                                                  size_t n, ws_error *err);
WS_API const uint32_t *ws_model_config_mlp_only_layers(const ws_model_config *c, size_t *n);

/* A canonical (HF) tensor as a layout sees it. */
typedef struct ws_hf_desc {
    const char *name;
    int ndim;
    uint64_t shape[WS_MAX_DIMS];
    const char *tied_to; /* non-NULL: no local copy; must equal this other HF tensor */
} ws_hf_desc;

/* A tensor one rank holds, under the engine's name. */
typedef struct ws_local_desc {
    const char *name;
    int rank;
    int ndim;
    uint64_t shape[WS_MAX_DIMS];
} ws_local_desc;

typedef struct ws_layout ws_layout;

/* Families: "hf", "sglang", "vllm", "megatron", "transformers" (HF transformers' own tp_plan
 * shards). tp >= 1. WS_ERR_LAYOUT when the family cannot
 * shard this config over tp ranks (heads not divisible, ...), naming the reason.
 * The tp-only form of ws_layout_create_parallel (ep = pp = 1). */
WS_API ws_err ws_layout_create(const char *family, const ws_model_config *cfg, int tp,
                               ws_layout **out, ws_error *err);

/*
 * A parallel configuration: sizes and engine options a layout is built for. Opaque, so it can
 * grow; every key starts at its default (sizes 1, options 0). docs/layouts.md says what each
 * family makes of each key and how global ranks are numbered.
 */
typedef struct ws_parallel ws_parallel;
typedef enum ws_par_key {
    WS_PAR_TP = 0,          /* tensor-parallel size (attention and dense layers) */
    WS_PAR_EP,              /* expert-parallel size (sglang: divides tp; vllm: 1 or tp;
                               megatron: the data-parallel size that EP is carved from) */
    WS_PAR_PP,              /* pipeline stages */
    WS_PAR_MOE_TP,          /* read-only: expert tensor-parallel size the family derives */
    WS_PAR_EXPERT_PLACEMENT,/* vllm: WS_EXPERTS_LINEAR (default) or WS_EXPERTS_ROUND_ROBIN */
    WS_PAR_W13_UP_FIRST,    /* 1: w13 = [up ; gate] (SGLang load_up_proj_weight_first backends) */
    WS_PAR_FUSED_SHARED,    /* sglang: shared experts fused as extra expert slots (1) */
    WS_PAR_MEGATRON_SEQUENTIAL, /* megatron: SequentialMLP names (local_experts.{e}) */
    WS_PAR_REDUNDANT_EXPERTS, /* sglang/vllm EPLB: physical expert slots beyond the routed
                                 experts (--ep-num-redundant-experts / num_redundant_experts);
                                 without an expert map slot p holds logical expert p % E */
    WS_PAR_ATTN_DP,         /* sglang DP attention (--attn-dp-size, formerly --dp-size with
                               --enable-dp-attention): attention is tensor-parallel over
                               groups of tp / attn_dp ranks and replicated across the attn_dp
                               groups; MoE and dense MLP layers keep tp. As a rank coordinate:
                               the attention-DP rank (tp_rank / (tp / attn_dp)) */
    WS_PAR_DP_LM_HEAD,      /* sglang --enable-dp-lm-head (1): lm_head vocab-parallel over the
                               attention-TP group, not tp (needs attn_dp > 1) */
    WS_PAR_MOE_DENSE_TP,    /* sglang --moe-dense-tp-size: 0 (unset) or tp: the dense MLP layers
                               of deepseek_v2/v3 and glm4_moe over tp; 1: replicated */
    WS_PAR__COUNT
} ws_par_key;
enum { WS_EXPERTS_LINEAR = 0, WS_EXPERTS_ROUND_ROBIN = 1 };

/* A new configuration with every key at its default. */
WS_API ws_err ws_parallel_create(ws_parallel **out, ws_error *err);
WS_API void ws_parallel_free(ws_parallel *p);
/* Set one key; WS_ERR_ARG for an unknown or read-only key or a value out of range (sizes
 * 1..4096, flags 0/1, placement one of the WS_EXPERTS_* values, WS_PAR_MOE_DENSE_TP >= 0). */
WS_API ws_err ws_parallel_set(ws_parallel *p, ws_par_key key, long value, ws_error *err);
/* A key's value; -1 for a NULL p or an unknown key. */
WS_API long ws_parallel_get(const ws_parallel *p, ws_par_key key);
/*
 * sglang/vllm EPLB: the logical expert of each of `physical` expert slots, map[r * physical + p]
 * for row r of `rows` (docs/layouts.md, "Expert maps"): 1 row for every MoE layer, one per
 * layer (num_hidden_layers rows, SGLang's physical_to_logical_map) or one per MoE layer (vLLM's
 * EplbState). Copied; rows 0 clears it. WS_ERR_ARG for sizes past 2^16 slots / 2^16 rows or a
 * negative entry; the layout checks it against the model (WS_ERR_LAYOUT).
 */
WS_API ws_err ws_parallel_set_expert_map(ws_parallel *p, size_t rows, size_t physical,
                                         const int32_t *map, ws_error *err);
/* The same from JSON text: {"physical_to_logical_map": ROWS} (SGLang's --init-expert-location
 * file), or ROWS itself, ROWS a list of slots' logical experts or a list of such lists.
 * WS_ERR_JSON naming what is wrong. */
WS_API ws_err ws_parallel_parse_expert_map(ws_parallel *p, const char *json, size_t len,
                                           const char *label, ws_error *err);
/* The map set on p (NULL when none), its rows and slots per row. */
WS_API const int32_t *ws_parallel_expert_map(const ws_parallel *p, size_t *rows,
                                             size_t *physical);
/* Build a layout for a parallel configuration (NULL: tp = ep = pp = 1). Same contract as
 * ws_layout_create; WS_ERR_LAYOUT for sizes the family cannot use, naming the reason. */
WS_API ws_err ws_layout_create_parallel(const char *family, const ws_model_config *cfg,
                                        const ws_parallel *par, ws_layout **out,
                                        ws_error *err);
WS_API void ws_layout_free(ws_layout *l);
WS_API const char *ws_layout_family(const ws_layout *l);
WS_API int ws_layout_tp(const ws_layout *l);
/* The layout's sizes (WS_PAR_TP, _EP, _PP, _MOE_TP) or options; -1 for NULL or a bad key. */
WS_API long ws_layout_parallel(const ws_layout *l, ws_par_key key);
/* The physical-to-logical expert map the layout was built with (the one given, or p % E for
 * WS_PAR_REDUNDANT_EXPERTS alone), rows x physical as given; NULL when each expert has one slot. */
WS_API const int32_t *ws_layout_expert_map(const ws_layout *l, size_t *rows, size_t *physical);
/* Global ranks: tp * pp for sglang/vllm, tp * ep * pp for megatron, tp otherwise. Ranks are
 * 0 .. count-1 and name the dump's model-rank-R files. */
WS_API int ws_layout_rank_count(const ws_layout *l);
/* Coordinate of a global rank along WS_PAR_TP, _EP, _PP, _MOE_TP or _ATTN_DP (tp_rank, ep_rank,
 * pp_rank, moe_tp_rank, attention-DP rank); -1 for a bad rank or key. */
WS_API int ws_layout_rank_coord(const ws_layout *l, int rank, ws_par_key key);
/* 1 when this family's engine zeroes the padding rows no piece covers (sglang, vllm: verify
 * then reports non-zero padding); 0 for megatron, whose padded vocab rows are trained weights. */
WS_API int ws_layout_zero_padding(const ws_layout *l);
WS_API size_t ws_layout_hf_count(const ws_layout *l);
WS_API const ws_hf_desc *ws_layout_hf(const ws_layout *l, size_t i);
WS_API size_t ws_layout_local_count(const ws_layout *l);
WS_API const ws_local_desc *ws_layout_local(const ws_layout *l, size_t i);
/* The pieces themselves (ws_piece, ws_layout_piece) are in weightsum_experimental.h. */
/* Index of a HF / local tensor by name (and rank), or -1. find_local also answers an engine's
 * alias of a tied tensor (sglang/vllm: "lm_head.weight" -> the local model.embed_tokens.weight,
 * the name their sharded_state saver keeps). */
WS_API long ws_layout_find_hf(const ws_layout *l, const char *name);
WS_API long ws_layout_find_local(const ws_layout *l, int rank, const char *name);
/* Family names, NULL-terminated. */
WS_API const char *const *ws_layout_families(void);

/*
 * The per-tensor canonical policy: `policy`, except for tensors whose exact values matter and
 * that no engine casts — block-FP8 scales (`*weight_scale_inv`, `*weight_scale`,
 * `*input_scale`) and fp32 router buffers (`*e_score_correction_bias`, `*expert_bias`) — which
 * are hashed native (a bf16 cast would let two different fp32 scales hash equal). Meant for
 * every place that picks a tensor's canonical dtype; see docs/layouts.md for what uses it yet.
 */
WS_API ws_canon ws_canon_for_tensor(const char *name, ws_dtype dtype, ws_canon policy);

/*
 * Dequantise rows [row0, row0 + nrows) of a block-FP8 weight as SGLang's block_quant_dequant
 * (the dequantisation its weight checker hashes): element (i, j) of the rows x cols e4m3 matrix
 * q becomes bf16(f32(q[i][j]) * s[i / block_n][j / block_k]): the product rounded once in fp32,
 * then to bf16 as ws_f32_to_bf16 (round to nearest even; NaN -> 0x7FC0, the canonical NaN:
 * PyTorch's own NaN pattern differs by device and release, docs/canonical.md).
 * s is fp32 [s_rows, s_cols], row-major. block_n = block_k = 0: infer both as SGLang does,
 * cols / s_cols (WS_ERR_SHAPE when it does not divide). Writes nrows * cols bf16 to out;
 * stats (may be NULL) counts NaN / Inf products. WS_ERR_SHAPE when s does not cover q.
 */
WS_API ws_err ws_fp8_block_dequant_bf16(const uint8_t *q, const float *s, uint64_t rows,
                                        uint64_t cols, uint64_t s_rows, uint64_t s_cols,
                                        uint32_t block_n, uint32_t block_k, uint64_t row0,
                                        uint64_t nrows, uint16_t *out, ws_value_stats *stats,
                                        ws_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Comparison reports                                                                          */
/* ------------------------------------------------------------------------------------------ */

typedef enum ws_status {
    WS_MATCH = 0,
    WS_MISMATCH,          /* digests differ */
    WS_MISSING,           /* expected tensor absent */
    WS_UNEXPECTED,        /* tensor present that nothing expects */
    WS_SHAPE_DIFFERS,
    WS_DTYPE_DIFFERS,     /* canonical dtypes differ */
    WS_REPLICA_MISMATCH,  /* a replica differs from replica 0 */
    WS_PADDING_NONZERO,   /* padding rows hold non-zero bytes */
    WS_COVERAGE_GAP,      /* pieces leave part of a tensor uncovered, or overlap */
    WS_NOT_COMPARABLE,    /* no digest algorithm in common */
    WS_STATUS__COUNT
} ws_status;

/* "match", "mismatch", "missing", ... */
WS_API const char *ws_status_name(ws_status s);

/* Where an engine holds a part of a HF tensor: rows [row0, row1) of local tensor `local` on
 * `rank` (rows of its 2-D view, see ws_piece). */
typedef struct ws_holder {
    const char *local;
    int rank;
    int64_t row0, row1;
} ws_holder;

/* One problem found. Strings live as long as the report. */
typedef struct ws_finding {
    ws_status status;
    const char *tensor; /* HF tensor name */
    const char *local;  /* engine tensor name, or NULL */
    int rank;           /* -1 when not about one rank */
    int64_t row0, row1; /* rows [row0, row1) of the HF tensor, or -1 */
    const char *detail; /* one human-readable line */
    /* The values the detail line speaks of, as fields (appended: code that leaves them out of
     * a designated initialiser gets "absent"; every one is optional). */
    const char *algorithm;      /* "sha256" / "fast": the digests below, or NULL */
    const char *expected;       /* expected digest (hex), or NULL */
    const char *found;          /* found digest (hex), or NULL */
    int has_element;            /* 1: element, coords, the two values hold */
    uint64_t element;           /* flat index (in the HF tensor) of the first differing element */
    int ndim;                   /* its coordinates coords[0..ndim) */
    uint64_t coords[WS_MAX_DIMS];
    double expected_value, found_value; /* the element's canonical values on each side */
    uint64_t differ;            /* elements that differ (0: not counted) */
    size_t nholders;            /* the engine tensors that hold the HF tensor (replica 0) */
    const ws_holder *holders;
} ws_finding;


typedef struct ws_report ws_report;

WS_API ws_report *ws_report_new(void);
WS_API void ws_report_free(ws_report *r);
/* Copies the strings and holders of f. */
WS_API ws_err ws_report_add(ws_report *r, const ws_finding *f);
/* Count n more tensors that matched (saturating). WS_ERR_ARG for a NULL report. */
WS_API ws_err ws_report_count_match(ws_report *r, uint64_t n);
WS_API size_t ws_report_count(const ws_report *r);
WS_API const ws_finding *ws_report_at(const ws_report *r, size_t i);
WS_API uint64_t ws_report_matched(const ws_report *r);
/* 1 when the report holds no finding. */
WS_API int ws_report_ok(const ws_report *r);
/* A caveat about a check that is no finding (the verdict and exit code stay as they are):
 * kind names the class ("ignored_rank_files", "low_bits_unchecked"), detail is one line,
 * names the files or tensors it is about (count of them: nnames). */
typedef struct ws_warning {
    const char *kind;
    const char *detail;
    size_t nnames;
    const char *const *names;
} ws_warning;
/* Copies w; WS_ERR_ARG for a NULL argument or a warning without kind or detail. */
WS_API ws_err ws_report_warn(ws_report *r, const ws_warning *w);
WS_API size_t ws_report_warning_count(const ws_report *r);
WS_API const ws_warning *ws_report_warning_at(const ws_report *r, size_t i);
/* {"format":"weightsum-report","version":1,"ok":bool,"matched":n,"counts":{status:n},
 *  "findings":[{status,tensor,local,rank,rows,detail, and the values present: algorithm,
 *  expected,found, element:{index,coords,expected,found}, differ, held_by:[{local,rank,rows}],
 *  ranks}], and when there are any "warnings":[{kind,detail,count,names}]} (docs/json.md;
 *  fields are only ever added within a version). */
WS_API ws_err ws_report_to_json(const ws_report *r, char **out, ws_error *err);
/*
 * The report as one self-contained HTML page (inline CSS; no script, nothing fetched): a grid
 * of layers x kinds of tensor (q, k, v, o, gate, up, down, norms, embed, lm_head, experts,
 * router where they exist), each cell (id "cell-L<layer>-<kind>", "cell-model-<kind>" outside
 * the layers) coloured by the worst verdict of its tensors, the findings listed under it with
 * engine tensor, rank and rows. expected (may be NULL) lists every tensor, so that matched
 * cells show too; title heads the page (NULL: "weightsum report"). *out: free with free().
 */
WS_API ws_err ws_report_to_html(const ws_report *r, const ws_manifest *expected,
                                const char *title, char **out, ws_error *err);

/*
 * Compare an expected manifest (the trainer's) with an actual one (this side's): per tensor
 * match / mismatch / missing / unexpected / shape / dtype, appended to r. Digests are compared
 * on every algorithm both have (fast digests only under the same key id). Different canonical
 * policies are WS_ERR_ARG: their digests are not comparable at all.
 */
WS_API ws_err ws_compare_manifests(const ws_manifest *expected, const ws_manifest *actual,
                                   ws_report *r, ws_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Element-level differences                                                                  */
/* ------------------------------------------------------------------------------------------ */

typedef struct ws_diff {
    uint64_t compared;  /* elements compared */
    uint64_t differ;    /* elements whose bits differ */
    uint64_t first;     /* flat index of the first differing element (when differ > 0) */
    double first_a, first_b;
    double max_abs;     /* largest |a - b| over differing pairs with no NaN */
    uint64_t max_ulp;   /* largest distance in units in the last place (ordered bit patterns) */
} ws_diff;

/* Start an empty diff (no difference, first = UINT64_MAX). NULL is a no-op. */
WS_API void ws_diff_init(ws_diff *d);
/* Compare n elements of dtype t that sit at flat index `at` of both tensors; feed in any order.
 * WS_ERR_DTYPE for an invalid t, WS_ERR_ARG for a NULL d (or a / b with n > 0), WS_ERR_LIMIT
 * when n elements do not fit in the address range; d is untouched then. */
WS_API ws_err ws_diff_update(ws_diff *d, ws_dtype t, uint64_t at, const void *a, const void *b,
                             uint64_t n, ws_error *err);
/* Element-level diff of two tensors of one shape: native bits when dtypes agree, otherwise the
 * canonical bf16 values. WS_ERR_SHAPE / WS_ERR_DTYPE when not comparable. */
WS_API ws_err ws_diff_tensors(const ws_tensor *a, const ws_tensor *b, ws_diff *out,
                              ws_error *err);
/* Coordinates of flat index i in a row-major tensor of this shape (a dimension of size 0
 * counts as 1). WS_ERR_ARG for ndim outside [0, WS_MAX_DIMS] or a NULL shape / coords. */
WS_API ws_err ws_unravel(uint64_t i, int ndim, const uint64_t *shape, uint64_t *coords,
                         ws_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Engine dumps: shard, hash and verify sharded weights without gathering (docs/layouts.md)    */
/* ------------------------------------------------------------------------------------------ */

/* A directory of model-rank-{rank}-part-{part}.safetensors files (the sharded_state format of
 * vLLM and SGLang; weightsum writes Megatron ranks the same way), engine tensor names. */
typedef struct ws_dump ws_dump;

/* 1 when dir holds at least one model-rank-{rank}-part-*.safetensors file, or a file that
 * only looks like one (ws_dump_ignored; ws_dump_open then says why it holds no rank file). */
WS_API int ws_dump_detect(const char *dir);
/* Open every rank file (each validated as a checkpoint). A rank with no file is allowed here
 * (ws_dump_rank gives NULL) so that verify can name it. */
WS_API ws_err ws_dump_open(const char *dir, ws_dump **out, ws_error *err);
WS_API void ws_dump_free(ws_dump *d);
/* 1 + the highest rank that has a file. */
WS_API int ws_dump_rank_count(const ws_dump *d);
WS_API const ws_ckpt *ws_dump_rank(const ws_dump *d, int rank);
/* The layout recorded in DIR/weightsum-layout.json by `weightsum shard`, or NULL / 0. */
WS_API const char *ws_dump_family(const ws_dump *d);
WS_API int ws_dump_tp(const ws_dump *d);
/* weightsum-layout.json's "ep" / "pp", or 0 when it names none. */
WS_API int ws_dump_ep(const ws_dump *d);
WS_API int ws_dump_pp(const ws_dump *d);
/* weightsum-layout.json's value of an engine option it records (WS_PAR_ATTN_DP,
 * WS_PAR_DP_LM_HEAD, WS_PAR_MOE_DENSE_TP, WS_PAR_FUSED_SHARED; written by shard when not the
 * default), or 0 when it names none or for another key. */
WS_API long ws_dump_parallel(const ws_dump *d, ws_par_key key);
/* weightsum-layout.json's "expert_map" (rows x physical, see ws_parallel_set_expert_map), or
 * NULL when it has none. */
WS_API const int32_t *ws_dump_expert_map(const ws_dump *d, size_t *rows, size_t *physical);
/* Files of the directory that look like rank files (they start "model-rank-") but that
 * vLLM's and SGLang's loaders, globbing model-rank-{rank}-part-*.safetensors, never load
 * ("model-rank-00-part-0.safetensors"): not read; sorted; i in [0, count). */
WS_API size_t ws_dump_ignored_count(const ws_dump *d);
WS_API const char *ws_dump_ignored(const ws_dump *d, size_t i);

/* Flags of ws_dump_layout_open / ws_dump_fits_layout. */
#define WS_LAYOUT_FORCE 1u /* family / tp given win over a disagreeing weightsum-layout.json */
#define WS_FIT_TP_GIVEN 2u /* tp was said by the caller: rank files beyond it are a mistake */
/* ws_checker_create_parallel: this size of par is not the caller's word (a CLI flag left out);
 * with a dump on disk it comes from weightsum-layout.json (else the rank files), without one
 * par's value is used. Sizes not flagged so are the caller's, 1 included. */
#define WS_LAYOUT_DUMP_TP 4u
#define WS_LAYOUT_DUMP_EP 8u
#define WS_LAYOUT_DUMP_PP 16u

/*
 * The layout of dump d (in dir) from family (NULL: dir/weightsum-layout.json), tp (0: that
 * file, else the rank files' count) and config (NULL: dir/config.json), checked to describe
 * the dump at all (ws_dump_fits_layout). WS_ERR_LAYOUT, one line saying what would fit, when
 * family / tp disagree with weightsum-layout.json (unless flags has WS_LAYOUT_FORCE) or the
 * layout cannot describe the dump; WS_ERR_IO / WS_ERR_JSON for the config.
 */
WS_API ws_err ws_dump_layout_open(const ws_dump *d, const char *dir, const char *family, int tp,
                                  const char *config, unsigned flags, ws_layout **out,
                                  ws_error *err);
/* The same for a parallel configuration: ep, pp 0 take weightsum-layout.json's (else 1); a tp
 * of 0 without that file is the rank files' count / pp (/ ep for megatron). */
WS_API ws_err ws_dump_layout_open_parallel(const ws_dump *d, const char *dir, const char *family,
                                           int tp, int ep, int pp, const char *config,
                                           unsigned flags, ws_layout **out, ws_error *err);
/* The same with engine options (NULL: none): options' expert map, WS_PAR_REDUNDANT_EXPERTS,
 * placement and flags are used (its sizes are not: tp, ep, pp as above); with no map there,
 * weightsum-layout.json's "expert_map" is. A map that disagrees with that file's is a
 * WS_ERR_LAYOUT unless flags has WS_LAYOUT_FORCE. */
WS_API ws_err ws_dump_layout_open_options(const ws_dump *d, const char *dir, const char *family,
                                          int tp, int ep, int pp, const ws_parallel *options,
                                          const char *config, unsigned flags, ws_layout **out,
                                          ws_error *err);
/*
 * WS_OK when layout l (made from cfg) can describe dump d; else WS_ERR_LAYOUT naming the
 * mistake and what fits: most engine tensor names of another family ("say --layout megatron"),
 * most shapes of another tp ("say --tp 2", found by trying the rank files' count and 1..64) or
 * of another config; rank files beyond tp when flags has WS_FIT_TP_GIVEN. A few missing,
 * misnamed or misshapen tensors, or a missing rank file, are damage, left to verify's findings.
 */
WS_API ws_err ws_dump_fits_layout(const ws_layout *l, const ws_dump *d,
                                  const ws_model_config *cfg, const char *dir, unsigned flags,
                                  ws_error *err);

/*
 * Write what each rank of layout l holds after loading the HF checkpoint c, in the sharded
 * state format: dir/model-rank-{r}-part-0.safetensors under engine names, padding rows zero,
 * plus dir/weightsum-layout.json. Tensors keep their stored dtype. Files are written
 * atomically; dir must exist.
 */
WS_API ws_err ws_shard_checkpoint(const ws_ckpt *c, const ws_layout *l, const char *dir,
                                  ws_error *err);


/*
 * Digest every canonical tensor of l from the pieces the dump holds, never gathering a tensor:
 * SHA-256 streams the replica-0 pieces in canonical order (dim-1 shards row by row) through a
 * bounded chunk. Structural problems go to r (may be NULL only if none is expected): a
 * missing rank file or local tensor, a local tensor of the wrong shape or mixed dtypes, an
 * engine tensor that maps to nothing, a coverage gap, a replica that differs from replica 0
 * (first differing element named), non-zero padding rows. Tensors that cannot be rebuilt are
 * left out of the manifest (and named in r). A tied HF tensor gets the digest of its target.
 */
WS_API ws_err ws_hash_dump(const ws_layout *l, const ws_dump *d, const ws_hash_options *opt,
                           const char *source, ws_manifest **out, ws_report *r, ws_error *err);

/*
 * Verify a dump against the trainer's manifest: ws_hash_dump, then per HF tensor match /
 * mismatch / missing / shape / dtype into r. A mismatch names the engine tensors and ranks
 * that hold the tensor; given the reference checkpoint (may be NULL) it also names the first
 * differing element: its coordinates, both values, the rank, the engine tensor and its
 * coordinates there.
 */
WS_API ws_err ws_verify_dump(const ws_manifest *expected, const ws_layout *l, const ws_dump *d,
                             const ws_hash_options *opt, const ws_ckpt *reference,
                             ws_report *r, ws_error *err);

/* Element-level diff of a HF checkpoint against a dump of it (any layout): per canonical tensor
 * match, or a mismatch naming how many elements differ, the first (coordinates, both values,
 * the engine tensor, rank and coordinates there), max abs and max ULP difference; plus the
 * structural findings of ws_hash_dump and tensors only on one side. Values compare under the
 * canonical policy. progress (may be NULL) gets bytes: first of the replica pieces and their
 * replica-0 twins read from the dump, then of the reference compared. */
WS_API ws_err ws_diff_dump(const ws_ckpt *reference, const ws_layout *l, const ws_dump *d,
                           ws_canon canon, ws_progress_fn progress, void *progress_user,
                           ws_report *r, ws_error *err);
/* ws_diff_dump with both sides' files read in read_mode (WS_READ_*, as ws_source_dump's; the
 * reference too): a chunk at a time into reused buffers or through the mapping, never by
 * pointers into it, so memory stays bounded by a chunk and a file that shrinks while it is
 * read is WS_ERR_IO naming it. ws_diff_dump is this with WS_READ_DEFAULT. */
WS_API ws_err ws_diff_dump_read(const ws_ckpt *reference, const ws_layout *l, const ws_dump *d,
                                ws_canon canon, int read_mode, ws_progress_fn progress,
                                void *progress_user, ws_report *r, ws_error *err);

/* Element-level diff of two checkpoints (`weightsum diff A B`): per tensor of a, match, or a
 * mismatch naming how many elements differ, the first (flat index, coordinates, both values),
 * max abs and max ULP difference; shape / dtype findings; tensors only in a (missing) or only
 * in b (unexpected). Native bits when dtypes agree, canonical bf16 values otherwise. progress
 * (may be NULL) gets bytes of a done. */
WS_API ws_err ws_diff_checkpoints(const ws_ckpt *a, const ws_ckpt *b, ws_progress_fn progress,
                                  void *progress_user, ws_report *r, ws_error *err);
/* ws_diff_checkpoints with both files read in read_mode (as ws_diff_dump_read's). */
WS_API ws_err ws_diff_checkpoints_read(const ws_ckpt *a, const ws_ckpt *b, int read_mode,
                                       ws_progress_fn progress, void *progress_user,
                                       ws_report *r, ws_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Localisation by region digests (docs/fast-digest.md, "Localisation")                        */
/* ------------------------------------------------------------------------------------------ */

/*
 * A side of a check (the trainer's checkpoint, or an engine's dump through its layout) that
 * answers two questions about a canonical tensor without moving it: the fast digest of a range
 * of its canonical elements, and the value of one element. Two sides narrow a mismatch down to
 * elements by exchanging range digests only (ws_locate); the sides could sit on two machines.
 */
typedef struct ws_side ws_side;

/* key: the fast digest's key (both sides must use the same). The ckpt / layout / dump must
 * outlive the side. */
WS_API ws_err ws_side_checkpoint(const ws_ckpt *c, ws_canon canon, const ws_fastkey *key,
                                 ws_side **out, ws_error *err);
WS_API ws_err ws_side_dump(const ws_layout *l, const ws_dump *d, ws_canon canon,
                           const ws_fastkey *key, ws_side **out, ws_error *err);
WS_API void ws_side_free(ws_side *s);
/* Element count of a canonical tensor on this side (WS_ERR_NOTFOUND when it has none). */
WS_API ws_err ws_side_numel(const ws_side *s, const char *tensor, uint64_t *numel,
                            ws_error *err);
/* Fast digest of the canonical elements [begin, end) of tensor, at their global unit indices:
 * equal ranges of equal tensors give equal digests, however each side stores them. */
WS_API ws_err ws_side_range_digest(const ws_side *s, const char *tensor, uint64_t begin,
                                   uint64_t end, ws_fast *out, ws_error *err);
/* Canonical value of element i, and where this side holds it ("element [35, 5] of
 * model.layers.1.self_attn.qkv_proj.weight on rank 1", or "element [19, 5]"). */
WS_API ws_err ws_side_element(const ws_side *s, const char *tensor, uint64_t i, double *value,
                              char *where, size_t where_size, ws_error *err);

typedef struct ws_location {
    uint64_t numel;     /* elements of the tensor */
    uint64_t found;     /* differing elements located (at most the max asked for) */
    int more;           /* 1 when the search stopped at the max: more may differ */
    uint64_t first;     /* smallest differing element (when found > 0) */
    double value_a, value_b;
    char where_b[256];  /* where side b holds the first one */
    uint64_t rounds;    /* exchanges (each: a list of ranges out, their digests back) */
    uint64_t digests;   /* range digests computed per side */
} ws_location;

/*
 * Narrow a mismatch of tensor between sides a and b: split [0, numel) into `fanout` ranges,
 * compare their digests, recurse into the ranges that differ (at most max_elems of them per
 * round, smallest first) down to single elements. found == 0 means the digests agree.
 */
WS_API ws_err ws_locate(const ws_side *a, const ws_side *b, const char *tensor, unsigned fanout,
                        size_t max_elems, ws_location *out, ws_error *err);


/* ------------------------------------------------------------------------------------------ */
/* Sources, plans and partials: checks that run where the weights live (docs/partials.md)      */
/* ------------------------------------------------------------------------------------------ */

/* Where a rank's local tensors' bytes live: a dump rank's files, caller-provided host buffers,
 * or device memory. Every read goes through the source, so a file that shrinks while it is
 * read is an error naming it (WS_ERR_IO), never a crash. */
typedef struct ws_source ws_source;
enum { WS_READ_DEFAULT = 0, WS_READ_PREAD = 1, WS_READ_MMAP = 2 };
/* Rank `rank` of dump d (d must outlive the source), read by large sequential preads into
 * reused buffers (WS_READ_PREAD) or through the file mapping (WS_READ_MMAP, whose pages are
 * let go once read); WS_READ_DEFAULT: the process's mode (ws_set_read_mode). WS_ERR_NOTFOUND
 * when the rank has no file. In either mode a file source reads its files ahead of the reader
 * while it hashes: a helper thread, started on the first read of a cold file and joined by
 * ws_source_free, brings the next 32 MiB into the page cache (it never touches the bytes; a
 * second thread reading the source turns it off). */
WS_API ws_err ws_source_dump(const ws_dump *d, int rank, int read_mode, ws_source **out,
                             ws_error *err);
/*
 * The read mode WS_READ_DEFAULT stands for in this process, for every file source the library
 * makes (ws_hash_checkpoint, ws_hash_dump, ws_verify_dump, the diffs, the checker, locate):
 * WS_READ_PREAD until changed. Set it before work starts (a check already running keeps the
 * mode it began with); WS_READ_DEFAULT sets WS_READ_PREAD; another value is WS_ERR_ARG.
 *
 * The mapping skips the copy a pread makes, but a file cut after its size was checked (each
 * chunk of at most 8 MiB is checked with fstat just before its pages are touched) raises SIGBUS
 * on the touch. The library installs no signal handler: a program that sets WS_READ_MMAP
 * should install one that asks ws_mapped_read_current (the CLI does: cli/sigbus_guard.c).
 */
WS_API ws_err ws_set_read_mode(int mode, ws_error *err);
/* The mode set (WS_READ_PREAD or WS_READ_MMAP). */
WS_API int ws_read_mode(void);
/* The mapped bytes the calling thread is touching for a file source right now. */
typedef struct ws_mapped_read {
    const char *file;     /* the file's path, as the checkpoint or dump named it */
    const char *tensor;   /* the tensor being read */
    const void *begin;    /* the touched bytes: [begin, begin + len) of the mapping */
    size_t len;
    uint64_t file_offset; /* offset in the file of begin */
} ws_mapped_read;
/* 1 and *out filled while this thread reads through a mapping (WS_READ_MMAP), else 0 (nothing
 * written to out). For a SIGBUS handler (SA_SIGINFO): a fault whose si_addr lies in
 * [begin, begin + len) is that file shrinking under the read (say so, naming out->file, and
 * exit: the read cannot go on); any other SIGBUS is not the library's. Touches nest (a read
 * inside another's callback): the innermost is current, and the outer one is current again
 * when it ends. Async-signal-safe: it reads only this thread's own record (thread-local; in a
 * dlopen'ed copy of the library that record exists once the thread has read a file). */
WS_API int ws_mapped_read_current(ws_mapped_read *out);
/* An empty source of caller-provided buffers (filled with ws_source_add / _add_device). */
WS_API ws_err ws_source_host_create(ws_source **out, ws_error *err);
/* A named local tensor in host memory (not copied: it must outlive the source). strides in
 * elements (NULL: C-contiguous), any sign; a name given twice is WS_ERR_ARG. */
WS_API ws_err ws_source_add(ws_source *s, const char *name, ws_dtype dtype, int ndim,
                            const uint64_t *shape, const int64_t *strides, const void *data,
                            ws_error *err);
/* Same for device memory (a CUDA pointer; stream may be NULL): the CUDA backend is loaded on
 * first use; WS_ERR_NOTFOUND with a clear message when libweightsum_cuda.so is absent. */
WS_API ws_err ws_source_add_device(ws_source *s, const char *name, ws_dtype dtype, int ndim,
                                   const uint64_t *shape, const int64_t *strides,
                                   const void *ptr, void *stream, ws_error *err);
WS_API void ws_source_free(ws_source *s);

/* Plans: what a layout asks of each rank, built once per layout and reused for every check
 * (l must outlive the plan). */
typedef struct ws_plan ws_plan;
WS_API ws_err ws_plan_create(const ws_layout *l, ws_plan **out, ws_error *err);
WS_API void ws_plan_free(ws_plan *p);

/* Partials: per piece its fast digest at the piece's global unit indices (a raw sum, not
 * sealed), NaN/Inf counts, and the shape facts of the local tensor it came from; merged
 * anywhere, judged once. */
typedef struct ws_partials ws_partials;
/* The partials of every piece rank `rank` holds, read from src (local tensors by the layout's
 * local names; key must be given). Missing, ill-shaped and unexpected local tensors and
 * non-zero padding rows are recorded for ws_partials_judge, not returned as errors. */
WS_API ws_err ws_partials_compute(const ws_plan *p, int rank, const ws_source *src,
                                  const ws_fastkey *key, ws_canon canon, ws_partials **out,
                                  ws_error *err);
/* A few bytes per piece in a fixed host-independent byte form (little-endian); free with
 * ws_free. deserialize refuses anything malformed (WS_ERR_FORMAT), never trusting lengths. */
WS_API ws_err ws_partials_serialize(const ws_partials *pa, void **buf, size_t *len,
                                    ws_error *err);
WS_API ws_err ws_partials_deserialize(const void *buf, size_t len, ws_partials **out,
                                      ws_error *err);
/* into += from: disjoint ranks of the same plan, canon and key (WS_ERR_ARG otherwise; a rank
 * present in both is WS_ERR_ARG). */
WS_API ws_err ws_partials_merge(ws_partials *into, const ws_partials *from, ws_error *err);
/* Verdicts from merged partials against the trainer's manifest (fast digests under the same
 * key): mismatch, coverage, replica (each replica piece against replica 0's), padding,
 * missing (a rank without partials too), unexpected, shape, dtype; each finding names the HF
 * tensor, engine tensor, rank and rows, appended to r. */
WS_API ws_err ws_partials_judge(const ws_plan *p, const ws_partials *merged,
                                const ws_manifest *expected, ws_report *r, ws_error *err);
/* HF-level fast digests from merged partials (the Megatron-native trainer path): a manifest
 * of every tensor that can be rebuilt; structural findings go to r (may be NULL). */
WS_API ws_err ws_partials_manifest(const ws_plan *p, const ws_partials *merged,
                                   const char *source, ws_manifest **out, ws_report *r,
                                   ws_error *err);
/* Ranks present (1 + highest) and whether rank r is in these partials. */
WS_API int ws_partials_rank_count(const ws_partials *pa);
WS_API int ws_partials_has_rank(const ws_partials *pa, int rank);
WS_API void ws_partials_free(ws_partials *pa);

/* Public incremental hasher: canonical SHA-256 (elements must arrive in canonical order,
 * element_offset = elements fed so far, else WS_ERR_ARG) and the fast digest (elements placed
 * at any global element offset, in any order) of the tensor of dtype and shape [ndim]: the
 * digests ws_digest_buffer gives it (the fast one sealed with the shape; elements past the
 * shape's count are WS_ERR_ARG). algos: WS_ALGO_*; key needed for the fast one.
 * data is in dtype (cast on the way); final may be called once; stats may be NULL. */
typedef struct ws_hasher ws_hasher;
WS_API ws_err ws_hasher_create(ws_dtype dtype, int ndim, const uint64_t *shape, ws_canon canon,
                               unsigned algos, const ws_fastkey *key, ws_hasher **out,
                               ws_error *err);
WS_API ws_err ws_hasher_update(ws_hasher *h, uint64_t element_offset, const void *data,
                               uint64_t n_elements, ws_error *err);
WS_API ws_err ws_hasher_final(ws_hasher *h, ws_digest *out, ws_value_stats *stats,
                              ws_error *err);
WS_API void ws_hasher_free(ws_hasher *h);

/* ------------------------------------------------------------------------------------------ */
/* SGLang's tensor hash: the 64-bit values of /weights_checker's "checksum" (docs/http.md)      */
/* ------------------------------------------------------------------------------------------ */

/* Which of SGLang's two paths (sglang.srt.managers.mm_utils.tensor_hash): a tensor on a CUDA
 * device gets gpu_tensor_hash (SGLang's Triton kernel: per-word fmix32 terms summed per tile
 * of 8192 words, tiles summed, splitmix64), one in host memory the first 8 bytes of SHA-256
 * read big-endian. The bytes are the tensor's own, in its own dtype, C-contiguous. */
typedef enum ws_sglang_path { WS_SGLANG_CUDA = 0, WS_SGLANG_CPU = 1 } ws_sglang_path;

/* The hash of nbytes bytes at data, bit for bit what SGLang 0.5.x computes. */
WS_API ws_err ws_sglang_hash(ws_sglang_path path, const void *data, uint64_t nbytes,
                             uint64_t *out, ws_error *err);

/* Streaming form, for a tensor held in pieces (a rank's fused, padded local tensor described
 * as pieces of HF tensors): create with the tensor's size in bytes, give bytes [offset,
 * offset + n) with update, final once. WS_SGLANG_CUDA takes pieces in any order; WS_SGLANG_CPU
 * in increasing offsets. Bytes never given are zero; a byte given twice, or past total_bytes,
 * is WS_ERR_ARG. Memory: 8 bytes per 32 KiB of tensor plus a few per piece boundary. */
typedef struct ws_sglang_hasher ws_sglang_hasher;
WS_API ws_err ws_sglang_hasher_create(ws_sglang_path path, uint64_t total_bytes,
                                      ws_sglang_hasher **out, ws_error *err);
WS_API ws_err ws_sglang_hasher_update(ws_sglang_hasher *h, uint64_t offset, const void *data,
                                      size_t n, ws_error *err);
WS_API ws_err ws_sglang_hasher_final(ws_sglang_hasher *h, uint64_t *out, ws_error *err);
WS_API void ws_sglang_hasher_free(ws_sglang_hasher *h);
/* SGLang's text form of a value: 16 lowercase hex digits ("%016x"); parse accepts either case. */
WS_API void ws_sglang_hex(uint64_t v, char out[17]);
WS_API ws_err ws_sglang_from_hex(const char *hex, uint64_t *out);
/* (The kernel forcing hook, ws_sglang_set_kernel, is in weightsum_experimental.h.) */

/* ------------------------------------------------------------------------------------------ */
/* The weights_checker protocol: an engine's check, transport-free (docs/http.md)              */
/* ------------------------------------------------------------------------------------------ */

/* Digest the tensor of dtype t and shape [ndim] at data (C-contiguous, little-endian, any
 * alignment) after the canonical cast c: the digest ws_digest_tensor gives a tensor holding
 * these bytes (the fast digest sealed with the shape). key may be NULL when algos lacks
 * WS_ALGO_FAST; stats (may be NULL) gets NaN/Inf counts. WS_ERR_ARG for an invalid dtype or
 * shape, a NULL data with elements or a missing key; WS_ERR_LIMIT when the elements do not
 * fit in memory's address range. */
WS_API ws_err ws_digest_buffer(ws_dtype t, ws_canon c, const void *data, int ndim,
                               const uint64_t *shape, unsigned algos, const ws_fastkey *key,
                               ws_digest *out, ws_value_stats *stats, ws_error *err);

/* Largest request body ws_checker_handle accepts (a transport should refuse larger ones first,
 * HTTP 413), and the deepest nesting of arrays/objects a request may have. */
#define WS_CHECKER_MAX_BODY (64u * 1024u * 1024u)
#define WS_CHECKER_MAX_DEPTH 32

/*
 * The engine side of POST /weights_checker for the engine dump in a directory. A checker holds
 * the layout; every request re-opens the dump, so what the next weight sync wrote is what the
 * next request sees. One checker may serve many threads at once.
 */
typedef struct ws_checker ws_checker;

/*
 * Create a checker for the dump in dir. family (NULL: from dir/weightsum-layout.json), tp (0:
 * from weightsum-layout.json, else the dump's rank count) and config (NULL: dir/config.json)
 * give the layout, as for `weightsum verify`; canon is the policy of requests that name none;
 * key_seed the fast digest's seed (NULL: WS_FAST_DEFAULT_SEED); threads per request (<= 0: all
 * cores). The dump is opened here only when family or tp must be read from it. Without a dump
 * on disk the layout is tp-only (ep = pp = 1): ws_checker_create_parallel says more.
 */
WS_API ws_err ws_checker_create(const char *dir, const char *family, int tp, const char *config,
                                ws_canon canon, const char *key_seed, int threads,
                                ws_checker **out, ws_error *err);
/* The same with flags of ws_dump_layout_open: WS_LAYOUT_FORCE lets family / tp win over a
 * disagreeing weightsum-layout.json (`serve --force`); the layout must still fit the dump. */
WS_API ws_err ws_checker_create_flags(const char *dir, const char *family, int tp,
                                      const char *config, unsigned flags, ws_canon canon,
                                      const char *key_seed, int threads, ws_checker **out,
                                      ws_error *err);
/*
 * The same for a parallel configuration (tp, ep, pp and the engine options: expert placement,
 * w13 order, fused shared experts). No dump on disk: the layout is built from family, config
 * and par alone. A dump on disk: its layout as `weightsum verify --tp --ep --pp` finds it, par's
 * sizes (1 included) checked against weightsum-layout.json and the rank files (WS_ERR_LAYOUT on
 * a disagreement, naming it; with WS_LAYOUT_FORCE par's sizes are used as said), except the
 * sizes flags marks WS_LAYOUT_DUMP_TP / _EP / _PP, taken from that file. par NULL: every size
 * from weightsum-layout.json (as tp 0).
 */
WS_API ws_err ws_checker_create_parallel(const char *dir, const char *family,
                                         const ws_parallel *par, const char *config,
                                         unsigned flags, ws_canon canon, const char *key_seed,
                                         int threads, ws_checker **out, ws_error *err);
WS_API void ws_checker_free(ws_checker *c);
/* Identifier of the checker's fast-digest key (ws_fastkey_id). */
WS_API const char *ws_checker_key_id(const ws_checker *c);

/*
 * Answer one request body (JSON; need not be NUL-terminated). Always sets *response_json (a
 * JSON object {"success": bool, "message": str, ...}, NUL-terminated, free with ws_free) and
 * *http_status: 200 when success is true; 400 when the request is malformed (not JSON, not an
 * object, a field of the wrong type, an unknown action, nesting deeper than
 * WS_CHECKER_MAX_DEPTH) or when the check ran and found a problem (the response then carries
 * the lists "mismatched", "missing", "unexpected", "replica_mismatch"); 413 for a body over
 * WS_CHECKER_MAX_BODY; 500 when the dump cannot be read. Actions: "checksum" (this side's
 * digests per HF tensor and per rank) and "compare_checksum" ("checksums": {HF name: hex} of
 * full tensors, or a list of per-rank {engine name: hex} dicts where engine rank r reads
 * element "rank_offset" + r; hex is SHA-256 (64 digits) or the fast digest (48); optional
 * "canonical": "bf16"|"native"). Returns WS_OK, or WS_ERR_NOMEM when not even a response
 * could be built (*response_json NULL, *http_status 500). Never reports a match it did not
 * establish.
 */
WS_API ws_err ws_checker_handle(ws_checker *c, const char *body, size_t len,
                                char **response_json, int *http_status);

/* The client half of compare_checksum: the request body (JSON, free with ws_free) for what a
 * trainer holds, text of len bytes named label: a weightsum manifest or sha256sum lines (full HF
 * tensors; canon applies to lines, and must agree with a manifest's own when canon_given;
 * algo WS_ALGO_SHA256 or WS_ALGO_FAST picks one when it holds both), a JSON list of per-rank
 * {engine name: digest} dicts indexed by tp_rank, or a saved "checksum" answer with "ranks".
 * rank_offset is passed through (always for a list, else when offset_given): the NCCL rank base
 * of the weight-update group, never an index. Errors name label. */
WS_API ws_err ws_compare_request(const char *text, size_t len, const char *label, ws_canon canon,
                                 int canon_given, unsigned algo, long rank_offset,
                                 int offset_given, char **body, ws_error *err);

/* Judge an engine's answer (len bytes, its HTTP status) to compare_checksum: every item of its
 * four lists into r as a finding (ranks as holders) and its matched count. WS_ERR_REMOTE when the
 * engine ran no check (its message in err), WS_ERR_JSON when it is no weights_checker answer. */
WS_API ws_err ws_compare_judge(const char *answer, size_t len, int http_status, ws_report *r,
                               ws_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Tensors in place: host or CUDA memory, any strides (docs/cuda.md)                            */
/* ------------------------------------------------------------------------------------------ */

/* A tensor where it lies: element (i0, ..., ik) at data + sum(i_d * strides[d]) * dtype size.
 * strides in elements (NULL: C-contiguous; negative strides are refused); device -1 for host
 * memory, >= 0 for memory of that CUDA device (read through libweightsum_cuda.so, loaded on
 * first use; WS_ERR_NOTFOUND naming what was tried when it is absent). */
typedef struct ws_view {
    const char *name; /* for messages; may be NULL */
    ws_dtype dtype;
    int ndim;         /* 0 .. WS_MAX_DIMS */
    const uint64_t *shape;
    const int64_t *strides;
    const void *data;
    int device;
} ws_view;

/* Digests (algos) of n tensors' canonical bytes in C order, as ws_digest_buffer gives for the
 * contiguous copy, without copying: CUDA tensors' fast digests in one launch, their SHA-256
 * through pinned staging on `threads` CPU threads (<= 0: all cores); host tensors read in
 * place. stream: the cudaStream_t the data is ready on (NULL: the legacy default stream).
 * out[i], stats[i] (stats may be NULL) for v[i]. */
WS_API ws_err ws_digest_views(const ws_view *v, size_t n, ws_canon c, unsigned algos,
                              const ws_fastkey *key, void *stream, int threads, ws_digest *out,
                              ws_value_stats *stats, ws_error *err);
/* SGLang's gpu_tensor_hash (ws_sglang_hash, WS_SGLANG_CUDA) of n tensors' bytes in C order,
 * without copying; CUDA tensors in one launch. */
WS_API ws_err ws_sglang_hash_views(const ws_view *v, size_t n, void *stream, uint64_t *out,
                                   ws_error *err);
/* The values SGLang's gpu_tensor_hash gives for rank `rank`'s local tensors of layout l, from
 * the HF tensors alone (hf[i] is HF tensor i of the layout, C-contiguous, on one CUDA device or
 * all on the host; unused ones may have NULL data), without building the shards: the local
 * tensors hold engine_dtype (HF floats cast to it canonically when it is BF16; WS_DTYPE__COUNT:
 * each holds its HF tensors' own dtype, as ws_expect_create assumes), padding zero.
 * out[k] for the rank's k-th local tensor in ws_layout_local order; n_out must be their count. */
WS_API ws_err ws_sglang_expect_views(const ws_layout *l, int rank, const ws_view *hf,
                                     size_t n_hf, ws_dtype engine_dtype, void *stream,
                                     uint64_t *out, size_t n_out, ws_error *err);
/* The same for several ranks at once, from one description of the HF tensors and, on the GPU,
 * in one launch: out holds ranks[0]'s answers (its local tensors in ws_layout_local order), then
 * ranks[1]'s, ...; n_out must be their total count. A rank asked twice is WS_ERR_ARG. */
WS_API ws_err ws_sglang_expect_views_ranks(const ws_layout *l, const int *ranks, size_t n_ranks,
                                           const ws_view *hf, size_t n_hf, ws_dtype engine_dtype,
                                           void *stream, uint64_t *out, size_t n_out,
                                           ws_error *err);
/* Bytes the CUDA backend holds between calls (staging buffers, descriptors); 0, 0 when it was
 * never loaded. */
WS_API ws_err ws_device_memory(uint64_t *device_bytes, uint64_t *host_bytes, ws_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Checking an unmodified engine: predict every rank's "checksum" answer (docs/http.md)        */
/* ------------------------------------------------------------------------------------------ */

/* The engine dialect: SGLang's POST /weights_checker {"action": "checksum"} (per rank,
 * SGLang's tensor hash of every local tensor), or vLLM's proposed POST /weight_checker
 * (RFC #52689, PR #51350: {"checksums": {"<tp_rank>:<name>": SHA-256 of the local shard}}). */
typedef enum ws_engine { WS_ENGINE_SGLANG = 0, WS_ENGINE_VLLM = 1 } ws_engine;
WS_API const char *ws_engine_name(ws_engine e);               /* "sglang" / "vllm" */
WS_API ws_err ws_engine_from_name(const char *name, ws_engine *out);

/* What every rank of an engine must answer. */
typedef struct ws_expect ws_expect;

/*
 * Predict the answer from the trainer's HF tensors (tensors[i].name/dtype/ndim/shape/numel/
 * nbytes/data; C-contiguous host memory, not copied, used only during the call) laid out by l:
 * each rank's local tensors as the engine holds them (fused, zero-padded, replicated, in the
 * HF tensors' dtype) hashed as the engine hashes them (path: where SGLang holds the weights;
 * ignored for vLLM), never built beyond a chunk. source names the tensors in the result.
 * threads <= 0: all cores. WS_ERR_NOTFOUND / WS_ERR_SHAPE / WS_ERR_DTYPE name the tensor when
 * the tensors do not fit the layout.
 */
WS_API ws_err ws_expect_create(const ws_layout *l, const ws_tensor *tensors, size_t n,
                               ws_engine engine, ws_sglang_path path, const char *source,
                               int threads, ws_expect **out, ws_error *err);
/* The same from tensors where they lie (ws_view, named, C-contiguous): all in host memory (as
 * ws_expect_create), or all on one CUDA device, read in place after the data is ready on
 * `stream`: SGLang's gpu_tensor_hash answers on the GPU, one launch per rank; the SHA-256
 * answers (vLLM, SGLang's CPU path) by streaming each local tensor's image, gathered from the HF
 * tensors on the GPU, through the CUDA backend's pinned staging buffers (bounded memory) to
 * `threads` CPU threads. The local tensors are never built; the answers equal ws_expect_create's. */
WS_API ws_err ws_expect_create_views(const ws_layout *l, const ws_view *tensors, size_t n,
                                     ws_engine engine, ws_sglang_path path, const char *source,
                                     void *stream, int threads, ws_expect **out,
                                     ws_error *err);
/* The same from a checkpoint's tensors. */
WS_API ws_err ws_expect_checkpoint(const ws_layout *l, const ws_ckpt *c, ws_engine engine,
                                   ws_sglang_path path, const char *source, int threads,
                                   ws_expect **out, ws_error *err);
/* The same with progress (may be NULL): bytes of the local tensors hashed so far, of all. */
WS_API ws_err ws_expect_checkpoint_progress(const ws_layout *l, const ws_ckpt *c,
                                            ws_engine engine, ws_sglang_path path,
                                            const char *source, int threads,
                                            ws_progress_fn progress, void *progress_user,
                                            ws_expect **out, ws_error *err);
/* The expectation as JSON text (the engine's own answer shape plus weightsum's fields:
 * format, engine, hash, layout, tp, source, holds); free with ws_free. */
WS_API ws_err ws_expect_to_json(const ws_expect *e, char **out, ws_error *err);
/* Read an expectation written by ws_expect_to_json (WS_ERR_JSON / WS_ERR_FORMAT naming label). */
WS_API ws_err ws_expect_parse(const char *json, size_t len, const char *label, ws_expect **out,
                              ws_error *err);
WS_API void ws_expect_free(ws_expect *e);
WS_API ws_engine ws_expect_engine(const ws_expect *e);
WS_API int ws_expect_tp(const ws_expect *e);
/* The route the engine answers on ("/weights_checker" for SGLang, "/weight_checker" vLLM). */
WS_API const char *ws_expect_route(const ws_expect *e);

/* The request body that asks the engine for its checksums (free with ws_free): for SGLang
 * {"action": "checksum"} plus "skip_tensor_list" (substrings, may be NULL/0) and "selector"
 * ("target", "draft", "all"; NULL: leave it out) passed through. */
WS_API ws_err ws_expect_request(const ws_expect *e, const char *const *skip, size_t nskip,
                                const char *selector, char **body, ws_error *err);

/*
 * Judge an engine's answer (JSON text of len bytes, its HTTP status) against e, rank by rank:
 * ranks are matched by parallelism_info.tp_rank (one dict, or a list of role dicts), in any
 * order; names prefixed by a draft role ("draft.") belong to the draft model and are not
 * judged. Into r: a mismatch, a missing or extra tensor, a missing rank, a tp_size that
 * disagrees; each names the engine tensor, the rank, and the HF tensors and rows it holds.
 * Names containing one of skip (the skip_tensor_list sent) are not expected. WS_ERR_REMOTE
 * (the engine's message in err) when the engine answered an error (success false, an
 * unsupported action, an HTTP error) or something that is no checksum answer.
 */
WS_API ws_err ws_expect_judge(const ws_expect *e, const char *answer, size_t len,
                              int http_status, const char *const *skip, size_t nskip,
                              ws_report *r, ws_error *err);

#ifdef __cplusplus
}
#endif
#endif /* WEIGHTSUM_H */
