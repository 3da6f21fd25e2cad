/* xlmr-engine C API: run XLM-RoBERTa-family encoders from C or any language
 * with a C FFI. A thin layer over the C++ API in engine.h.
 *
 * Usage:
 *
 *   #include <xlmr/engine_c.h>
 *
 *   xlmr_engine* e = xlmr_engine_create();
 *   xlmr_params p = xlmr_default_params();   // CPU, fused path, all cores
 *   if (xlmr_engine_load(e, "model.xlmr", &p) != XLMR_OK) {
 *     fprintf(stderr, "%s\n", xlmr_engine_last_error(e));
 *     xlmr_engine_destroy(e);
 *     return 1;
 *   }
 *   const char* texts[] = {"Hello world", "Bonjour"};
 *   int E = xlmr_engine_hidden_size(e);
 *   float* emb = malloc(sizeof(float) * 2 * E);
 *   xlmr_encode_params ep = xlmr_default_encode_params();
 *   xlmr_status s = xlmr_encode_texts(e, texts, 2, &ep, emb, NULL, NULL);
 *   ...
 *   xlmr_engine_destroy(e);
 *
 * Errors: every call returns a status; on failure xlmr_engine_last_error()
 * gives a one-line message, valid until the next call on that engine. No call
 * aborts or exits the process.
 *
 * Thread safety: encode and tokenize calls on one engine may come from several
 * threads; they are serialised on the engine's lock (last_error is then the
 * calling thread's only if no other thread used the engine in between).
 * xlmr_engine_load and xlmr_engine_destroy replace or free the model and must
 * not overlap any other call on that engine. For parallel throughput create
 * one engine per thread, each with threads = 1.
 */
#ifndef XLMR_ENGINE_C_H
#define XLMR_ENGINE_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  XLMR_OK = 0,
  XLMR_ERROR_INVALID_ARGUMENT = 1, /* a NULL pointer, a bad option or input */
  XLMR_ERROR_LOAD = 2,             /* the model file could not be used */
  XLMR_ERROR_NOT_LOADED = 3,       /* encode before a successful load */
  XLMR_ERROR_RUNTIME = 4,          /* anything else that went wrong in a call */
  XLMR_ERROR_OUT_OF_MEMORY = 5
} xlmr_status;

typedef enum { XLMR_DEVICE_CPU = 0, XLMR_DEVICE_CUDA = 1 } xlmr_device;
typedef enum { XLMR_PATH_FUSED = 0, XLMR_PATH_REFERENCE = 1 } xlmr_path;
typedef enum {
  XLMR_DTYPE_AUTO = 0,
  XLMR_DTYPE_F32 = 1,
  XLMR_DTYPE_BF16 = 2,
  XLMR_DTYPE_F16 = 3,
  XLMR_DTYPE_INT8 = 4 /* CPU GEMMs only: weights per channel, tokens per row, quantized at run time */
} xlmr_dtype;
typedef enum {
  XLMR_POOLING_DEFAULT = -1, /* the model's: cls for XLM-R, mean for BERT-arch */
  XLMR_POOLING_CLS = 0,
  XLMR_POOLING_MEAN = 1,
  XLMR_POOLING_POOLER = 2
} xlmr_pooling;

typedef struct {
  int device;           /* xlmr_device */
  int path;             /* xlmr_path */
  int dtype;            /* xlmr_dtype; AUTO: bf16 for a bf16 file, else f32 (CPU) / f16 (CUDA) */
  int threads;          /* 0: all cores */
  int max_batch_tokens; /* token budget of one batch (default 8192) */
  int max_length;       /* tokens per input incl. specials; 0: the model's maximum */
  int verify_checksums; /* 1 (default): check every tensor at load */
  int cuda_graphs;      /* CUDA: 1 (default) replays repeated batch shapes from captured graphs */
  int attention;        /* xlmr_dtype: precision of attention's products on the fused path. CPU with
                           bf16 or int8 GEMMs: BF16 (AMX or AVX512_BF16) or F32; AUTO (default):
                           with bf16 GEMMs BF16 on CPUs with AMX-BF16 or AVX512_BF16, with int8 F32.
                           CUDA: the GEMMs' type (tensor cores) or F32 (the plain kernel); AUTO:
                           tensor cores where the card and head size allow */
  int padded;           /* fused CPU path: 1 pads each batch to its longest input (comparison only) */
  const char* isa;      /* fused CPU path: NULL or "" (default, the best the CPU has), "avx512", "avx2" */
  int gpu;              /* CUDA: which GPU, 0-based among the visible ones (default 0) */
} xlmr_params;

typedef struct {
  int pooling;   /* xlmr_pooling */
  int normalize; /* -1: the model's default, 0: no, 1: L2-normalise the embedding */
} xlmr_encode_params;

xlmr_params xlmr_default_params(void);
xlmr_encode_params xlmr_default_encode_params(void);

/* The library version, e.g. "0.1.0". */
const char* xlmr_version(void);

/* An empty engine (NULL only when out of memory); load a model into it. */
typedef struct xlmr_engine xlmr_engine;
xlmr_engine* xlmr_engine_create(void);
void xlmr_engine_destroy(xlmr_engine* engine); /* NULL is fine */
xlmr_status xlmr_engine_load(xlmr_engine* engine, const char* path, const xlmr_params* params);
const char* xlmr_engine_last_error(const xlmr_engine* engine); /* "" when the last call succeeded */

/* Model facts (0 before a successful load). */
int xlmr_engine_hidden_size(const xlmr_engine* engine);
int xlmr_engine_num_labels(const xlmr_engine* engine); /* 0: no classification head */
int xlmr_engine_max_length(const xlmr_engine* engine);
int xlmr_engine_vocab_size(const xlmr_engine* engine);
int xlmr_engine_has_tokenizer(const xlmr_engine* engine);
/* One line: backend, instruction set, precision, layout, threads ("" before
 * a load); valid until the next load or destroy. */
const char* xlmr_engine_describe(const xlmr_engine* engine);
/* What a user should know about this load, one note per line, "" when none:
 * e.g. a bf16 file computing in f32 on a CPU without bf16 instructions.
 * Valid until the next load or destroy. */
const char* xlmr_engine_notes(const xlmr_engine* engine);

/* Encode n texts (UTF-8, NUL-terminated; invalid bytes are replaced, long
 * texts truncated to max_length). Outputs, each optional (NULL skips it):
 *   embeddings [n * hidden_size], logits [n * num_labels] (models with a
 *   head), n_tokens [n] (tokens run, after truncation). */
xlmr_status xlmr_encode_texts(xlmr_engine* engine, const char* const* texts, size_t n,
                              const xlmr_encode_params* params, float* embeddings, float* logits,
                              int32_t* n_tokens);

/* Encode n text pairs for cross-encoders (rerankers): pair i is
 * <s> first[i] </s></s> second[i] </s>, truncated to max_length by cutting
 * the longer text first. Same outputs as xlmr_encode_texts. */
xlmr_status xlmr_encode_pairs(xlmr_engine* engine, const char* const* first, const char* const* second, size_t n,
                              const xlmr_encode_params* params, float* embeddings, float* logits,
                              int32_t* n_tokens);

/* The model ids of one text, <s> and </s> included, truncated to max_length:
 * *n_ids receives their count (at most xlmr_engine_max_length(), which is
 * therefore a capacity that always suffices). With capacity < *n_ids nothing
 * is written and the call fails with XLMR_ERROR_INVALID_ARGUMENT. */
xlmr_status xlmr_tokenize(xlmr_engine* engine, const char* text, int32_t* ids, size_t capacity, size_t* n_ids);

/* Encode n sequences of model token ids: sequence i is
 * ids[offsets[i] .. offsets[i+1]), offsets has n + 1 entries, offsets[0] = 0.
 * Same outputs as xlmr_encode_texts. */
xlmr_status xlmr_encode_ids(xlmr_engine* engine, const int32_t* ids, const size_t* offsets, size_t n,
                            const xlmr_encode_params* params, float* embeddings, float* logits);

/* Every token's last-layer hidden state for the sequences of xlmr_encode_ids:
 * hidden [offsets[n] * hidden_size], token t of sequence i in row
 * offsets[i] + t. */
xlmr_status xlmr_encode_ids_hidden(xlmr_engine* engine, const int32_t* ids, const size_t* offsets, size_t n,
                                   float* hidden);

#ifdef __cplusplus
}
#endif

#endif /* XLMR_ENGINE_C_H */
