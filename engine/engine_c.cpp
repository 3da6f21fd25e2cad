// The C API (engine_c.h) over the C++ Engine: every exception stops here and
// becomes a status plus the engine's last-error message.
#include "engine/engine_c.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "tokenizer/tokenizer.h"

struct xlmr_engine {
  std::unique_ptr<xlmr::Engine> engine;
  std::string notes;  // the engine's notes, one per line
  std::string last_error;
  std::mutex mu;  // guards last_error; the Engine serialises its own calls
};

namespace {

xlmr_status fail(xlmr_engine* e, xlmr_status s, const std::string& msg) {
  if (e) {
    std::lock_guard<std::mutex> lock(e->mu);
    e->last_error = msg;
  }
  return s;
}

xlmr_status ok(xlmr_engine* e) {
  std::lock_guard<std::mutex> lock(e->mu);
  e->last_error.clear();
  return XLMR_OK;
}

// Runs f, mapping exceptions onto statuses.
template <typename F>
xlmr_status guarded(xlmr_engine* e, xlmr_status on_error, F&& f) {
  try {
    f();
    return ok(e);
  } catch (const std::bad_alloc&) {
    return fail(e, XLMR_ERROR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& ex) {
    return fail(e, on_error, ex.what());
  } catch (...) {
    return fail(e, XLMR_ERROR_RUNTIME, "unknown error");
  }
}

xlmr_status make_encode_options(xlmr_engine* e, const xlmr_encode_params* p, xlmr::EncodeOptions* out) {
  const xlmr_encode_params d = xlmr_default_encode_params();
  if (!p) p = &d;
  switch (p->pooling) {
    case XLMR_POOLING_DEFAULT: break;
    case XLMR_POOLING_CLS: out->pooling = xlmr::Pooling::cls; break;
    case XLMR_POOLING_MEAN: out->pooling = xlmr::Pooling::mean; break;
    case XLMR_POOLING_POOLER: out->pooling = xlmr::Pooling::pooler; break;
    default: return fail(e, XLMR_ERROR_INVALID_ARGUMENT, "pooling must be one of the xlmr_pooling values");
  }
  if (p->normalize == 0 || p->normalize == 1) out->normalize = p->normalize == 1;
  else if (p->normalize != -1) return fail(e, XLMR_ERROR_INVALID_ARGUMENT, "normalize must be -1, 0 or 1");
  return XLMR_OK;
}

void copy_outputs(const xlmr::Engine& engine, const std::vector<xlmr::Result>& r, float* embeddings, float* logits,
                  int32_t* n_tokens) {
  const size_t E = size_t(engine.config().hidden), C = size_t(engine.config().num_labels);
  for (size_t i = 0; i < r.size(); ++i) {
    if (embeddings && r[i].embedding.size() == E) std::memcpy(embeddings + i * E, r[i].embedding.data(), E * 4);
    if (logits && C && r[i].logits.size() == C) std::memcpy(logits + i * C, r[i].logits.data(), C * 4);
    if (n_tokens) n_tokens[i] = r[i].n_tokens;
  }
}

xlmr_status check_offsets(xlmr_engine* e, const size_t* offsets, size_t n) {
  if (n && offsets[0] != 0) return fail(e, XLMR_ERROR_INVALID_ARGUMENT, "offsets[0] must be 0");
  for (size_t i = 0; i < n; ++i)
    if (offsets[i + 1] < offsets[i])
      return fail(e, XLMR_ERROR_INVALID_ARGUMENT, "offsets must not decrease (at " + std::to_string(i + 1) + ")");
  return XLMR_OK;
}

std::vector<std::vector<int32_t>> split_ids(const int32_t* ids, const size_t* offsets, size_t n) {
  std::vector<std::vector<int32_t>> seqs(n);
  for (size_t i = 0; i < n; ++i) seqs[i].assign(ids + offsets[i], ids + offsets[i + 1]);
  return seqs;
}

}  // namespace

extern "C" {

xlmr_params xlmr_default_params(void) {
  xlmr_params p;
  p.device = XLMR_DEVICE_CPU;
  p.path = XLMR_PATH_FUSED;
  p.dtype = XLMR_DTYPE_AUTO;
  p.threads = 0;
  p.max_batch_tokens = 8192;
  p.max_length = 0;
  p.verify_checksums = 1;
  p.cuda_graphs = 1;
  p.attention = XLMR_DTYPE_AUTO;
  p.padded = 0;
  p.isa = nullptr;
  p.gpu = 0;
  return p;
}

xlmr_encode_params xlmr_default_encode_params(void) {
  xlmr_encode_params p;
  p.pooling = XLMR_POOLING_DEFAULT;
  p.normalize = -1;
  return p;
}

const char* xlmr_version(void) { return XLMR_VERSION; }

xlmr_engine* xlmr_engine_create(void) { return new (std::nothrow) xlmr_engine(); }

void xlmr_engine_destroy(xlmr_engine* engine) { delete engine; }

const char* xlmr_engine_last_error(const xlmr_engine* engine) {
  return engine ? engine->last_error.c_str() : "no engine (NULL handle)";
}

xlmr_status xlmr_engine_load(xlmr_engine* e, const char* path, const xlmr_params* params) {
  if (!e) return XLMR_ERROR_INVALID_ARGUMENT;
  e->engine.reset();  // a failed load, bad arguments included, leaves no model
  if (!path) return fail(e, XLMR_ERROR_INVALID_ARGUMENT, "path is NULL");
  const xlmr_params d = xlmr_default_params();
  const xlmr_params& p = params ? *params : d;
  xlmr::EngineOptions o;
  if (p.device == XLMR_DEVICE_CUDA) o.device = xlmr::Device::cuda;
  else if (p.device != XLMR_DEVICE_CPU) return fail(e, XLMR_ERROR_INVALID_ARGUMENT, "device must be CPU or CUDA");
  if (p.path == XLMR_PATH_REFERENCE) o.path = xlmr::Path::reference;
  else if (p.path != XLMR_PATH_FUSED) return fail(e, XLMR_ERROR_INVALID_ARGUMENT, "path must be FUSED or REFERENCE");
  switch (p.dtype) {
    case XLMR_DTYPE_AUTO: break;
    case XLMR_DTYPE_F32: o.precision = xlmr::Precision::f32; break;
    case XLMR_DTYPE_BF16: o.precision = xlmr::Precision::bf16; break;
    case XLMR_DTYPE_F16: o.precision = xlmr::Precision::f16; break;
    case XLMR_DTYPE_INT8: o.precision = xlmr::Precision::int8; break;
    default: return fail(e, XLMR_ERROR_INVALID_ARGUMENT, "dtype must be one of the xlmr_dtype values");
  }
  switch (p.attention) {
    case XLMR_DTYPE_AUTO: break;
    case XLMR_DTYPE_F32: o.attention = xlmr::Precision::f32; break;
    case XLMR_DTYPE_BF16: o.attention = xlmr::Precision::bf16; break;
    case XLMR_DTYPE_F16: o.attention = xlmr::Precision::f16; break;
    default: return fail(e, XLMR_ERROR_INVALID_ARGUMENT, "attention must be AUTO, F32, BF16 or F16");
  }
  if (p.isa) o.isa = p.isa;
  o.padded = p.padded != 0;
  o.cuda_graphs = p.cuda_graphs != 0;
  o.gpu = p.gpu;
  o.threads = p.threads;
  o.max_batch_tokens = p.max_batch_tokens;
  o.max_length = p.max_length;
  o.verify_checksums = p.verify_checksums != 0;
  e->notes.clear();
  return guarded(e, XLMR_ERROR_LOAD, [&] {
    e->engine = xlmr::Engine::load(path, o);
    for (const std::string& n : e->engine->notes()) e->notes += (e->notes.empty() ? "" : "\n") + n;
  });
}

int xlmr_engine_hidden_size(const xlmr_engine* e) { return e && e->engine ? e->engine->config().hidden : 0; }
int xlmr_engine_num_labels(const xlmr_engine* e) { return e && e->engine ? e->engine->config().num_labels : 0; }
int xlmr_engine_max_length(const xlmr_engine* e) { return e && e->engine ? e->engine->max_length() : 0; }
int xlmr_engine_vocab_size(const xlmr_engine* e) { return e && e->engine ? e->engine->config().vocab_size : 0; }
int xlmr_engine_has_tokenizer(const xlmr_engine* e) { return e && e->engine && e->engine->has_tokenizer(); }
const char* xlmr_engine_describe(const xlmr_engine* e) {
  return e && e->engine ? e->engine->describe().c_str() : "";
}
const char* xlmr_engine_notes(const xlmr_engine* e) { return e && e->engine ? e->notes.c_str() : ""; }

xlmr_status xlmr_encode_texts(xlmr_engine* e, const char* const* texts, size_t n, const xlmr_encode_params* params,
                              float* embeddings, float* logits, int32_t* n_tokens) {
  if (!e) return XLMR_ERROR_INVALID_ARGUMENT;
  if (!e->engine) return fail(e, XLMR_ERROR_NOT_LOADED, "no model loaded");
  if (n && !texts) return fail(e, XLMR_ERROR_INVALID_ARGUMENT, "texts is NULL");
  xlmr::EncodeOptions eo;
  if (xlmr_status s = make_encode_options(e, params, &eo)) return s;
  return guarded(e, XLMR_ERROR_RUNTIME, [&] {
    std::vector<std::string> v(n);
    for (size_t i = 0; i < n; ++i) {
      if (!texts[i]) XLMR_THROW("text " + std::to_string(i) + " is NULL");
      v[i] = texts[i];
    }
    copy_outputs(*e->engine, e->engine->encode_texts(v, eo), embeddings, logits, n_tokens);
  });
}

xlmr_status xlmr_encode_pairs(xlmr_engine* e, const char* const* first, const char* const* second, size_t n,
                              const xlmr_encode_params* params, float* embeddings, float* logits, int32_t* n_tokens) {
  if (!e) return XLMR_ERROR_INVALID_ARGUMENT;
  if (!e->engine) return fail(e, XLMR_ERROR_NOT_LOADED, "no model loaded");
  if (n && (!first || !second)) return fail(e, XLMR_ERROR_INVALID_ARGUMENT, "first or second is NULL");
  xlmr::EncodeOptions eo;
  if (xlmr_status s = make_encode_options(e, params, &eo)) return s;
  return guarded(e, XLMR_ERROR_RUNTIME, [&] {
    std::vector<std::pair<std::string, std::string>> v(n);
    for (size_t i = 0; i < n; ++i) {
      if (!first[i] || !second[i]) XLMR_THROW("pair " + std::to_string(i) + " has a NULL text");
      v[i] = {first[i], second[i]};
    }
    copy_outputs(*e->engine, e->engine->encode_pairs(v, eo), embeddings, logits, n_tokens);
  });
}

xlmr_status xlmr_tokenize(xlmr_engine* e, const char* text, int32_t* ids, size_t capacity, size_t* n_ids) {
  if (!e) return XLMR_ERROR_INVALID_ARGUMENT;
  if (!e->engine) return fail(e, XLMR_ERROR_NOT_LOADED, "no model loaded");
  if (!text || !n_ids || (capacity && !ids))
    return fail(e, XLMR_ERROR_INVALID_ARGUMENT, "text, ids or n_ids is NULL");
  xlmr_status s = XLMR_OK;
  const xlmr_status g = guarded(e, XLMR_ERROR_RUNTIME, [&] {
    const xlmr::Encoding enc = e->engine->tokenizer().encode(text, e->engine->max_length());
    *n_ids = enc.ids.size();
    if (enc.ids.size() > capacity) {
      s = XLMR_ERROR_INVALID_ARGUMENT;
      return;
    }
    std::copy(enc.ids.begin(), enc.ids.end(), ids);
  });
  if (g != XLMR_OK) return g;
  if (s != XLMR_OK)
    return fail(e, s, "the text has " + std::to_string(*n_ids) + " ids, more than the capacity of " +
                          std::to_string(capacity));
  return XLMR_OK;
}

xlmr_status xlmr_encode_ids(xlmr_engine* e, const int32_t* ids, const size_t* offsets, size_t n,
                            const xlmr_encode_params* params, float* embeddings, float* logits) {
  if (!e) return XLMR_ERROR_INVALID_ARGUMENT;
  if (!e->engine) return fail(e, XLMR_ERROR_NOT_LOADED, "no model loaded");
  if (n && (!offsets || !ids)) return fail(e, XLMR_ERROR_INVALID_ARGUMENT, "ids or offsets is NULL");
  xlmr::EncodeOptions eo;
  if (xlmr_status s = make_encode_options(e, params, &eo)) return s;
  if (xlmr_status s = check_offsets(e, offsets, n)) return s;
  return guarded(e, XLMR_ERROR_INVALID_ARGUMENT, [&] {
    copy_outputs(*e->engine, e->engine->encode_ids(split_ids(ids, offsets, n), eo), embeddings, logits, nullptr);
  });
}

xlmr_status xlmr_encode_ids_hidden(xlmr_engine* e, const int32_t* ids, const size_t* offsets, size_t n,
                                   float* hidden) {
  if (!e) return XLMR_ERROR_INVALID_ARGUMENT;
  if (!e->engine) return fail(e, XLMR_ERROR_NOT_LOADED, "no model loaded");
  if (n && (!offsets || !ids || !hidden)) return fail(e, XLMR_ERROR_INVALID_ARGUMENT, "ids, offsets or hidden is NULL");
  if (xlmr_status s = check_offsets(e, offsets, n)) return s;
  xlmr::EncodeOptions eo;
  eo.pooling = xlmr::Pooling::none;
  eo.hidden = true;
  return guarded(e, XLMR_ERROR_INVALID_ARGUMENT, [&] {
    const auto r = e->engine->encode_ids(split_ids(ids, offsets, n), eo);
    const size_t E = size_t(e->engine->config().hidden);
    for (size_t i = 0; i < n; ++i)
      std::copy(r[i].hidden.begin(), r[i].hidden.end(), hidden + offsets[i] * E);
  });
}

}  // extern "C"
