#include "engine/engine.h"

#include <algorithm>
#include <cstring>

#include "engine/backend.h"
#include "engine/model.h"
#include "engine/scheduler.h"
#include "kernels/cuda/device.h"
#include "tokenizer/tokenizer.h"

namespace xlmr {

Engine::~Engine() = default;

std::unique_ptr<Engine> Engine::load(const std::string& path, const EngineOptions& opts) {
  XLMR_CHECK(opts.gpu >= 0, "the GPU index must be 0 or more, not " + std::to_string(opts.gpu));
  XLMR_CHECK(opts.gpu == 0 || opts.device == Device::cuda, "a GPU index goes with --device cuda");
  XLMR_CHECK(opts.device != Device::cuda || opts.precision != Precision::int8,
             "int8 GEMMs run on the CPU's fused path; on CUDA use --dtype f16 or bf16");
  if (opts.device == Device::cuda) {
    std::string why;
    XLMR_CHECK(cuda::device_available(&why, nullptr, opts.gpu), "--device cuda: " + why);
    XLMR_CHECK(opts.path == Path::fused, "--device cuda runs the fused path only (the reference path is CPU)");
    XLMR_CHECK(!opts.padded, "--padded is a CPU comparison mode; the CUDA path is always ragged");
  }
  XLMR_CHECK(opts.threads >= 0, "threads must be >= 0");
  XLMR_CHECK(opts.max_batch_tokens >= 1, "max_batch_tokens must be >= 1");

  std::unique_ptr<Engine> e(new Engine());
  e->opts_ = opts;
  LoadOptions lo;
  lo.verify_checksums = opts.verify_checksums;
  // Only the reference path reads the weight matrices as it runs; the others
  // pack or upload each once, so a 16-bit file's are not widened up front.
  const bool reference = opts.path == Path::reference && opts.device == Device::cpu;
  e->model_ = Model::load(path, lo, /*widen_matrices=*/reference);
  const ModelConfig& c = e->model_->config();

  e->max_length_ = c.max_length;
  if (opts.max_length > 0) {
    XLMR_CHECK(opts.max_length >= 2, "max_length must be at least 2");
    XLMR_CHECK(opts.max_length <= c.max_length, "max_length " + std::to_string(opts.max_length) +
                                                    " exceeds the model's limit of " + std::to_string(c.max_length));
    e->max_length_ = opts.max_length;
  }
  const std::string spm = e->model_->file().tokenizer_model();
  if (!spm.empty()) {
    TokenizerIds ids;
    ids.bos = c.bos_id;
    ids.pad = c.pad_id;
    ids.eos = c.eos_id;
    ids.unk = c.unk_id;
    e->tokenizer_.reset(new Tokenizer(spm, ids));
    XLMR_CHECK(e->tokenizer_->max_model_id() < c.vocab_size,
               "'" + path + "': the tokenizer has " + std::to_string(e->tokenizer_->spm_size()) +
                   " pieces, too many for the model's vocabulary of " + std::to_string(c.vocab_size));
  }
  const bool gpu = opts.device == Device::cuda;
  // A bf16 file computes in bf16, except where the CPU's bf16 GEMMs would be
  // emulated (several times slower than f32) or are not there at all.
  std::string no_bf16;  // why bf16 GEMMs are a poor default here ("" where they are fine)
  if (!gpu && opts.path == Path::fused) {
    if (opts.isa == "avx2")
      no_bf16 = "--isa avx2 has no bf16 GEMMs";
    else if (!cpu_has_native_bf16_gemm())
      no_bf16 = "this CPU has neither AVX512_BF16 nor AMX-BF16, so bf16 GEMMs would run several times slower";
  }
  Precision precision = gpu ? Precision::f16 : Precision::f32;
  if (opts.precision) {
    precision = *opts.precision;
    if (precision == Precision::bf16 && !no_bf16.empty() && opts.isa != "avx2")
      e->notes_.push_back("--dtype bf16: this CPU has neither AVX512_BF16 nor AMX-BF16, so its bf16 GEMMs run "
                          "several times slower than --dtype f32");
  } else if (c.dtype == DType::bf16 && !no_bf16.empty()) {
    e->notes_.push_back("computing in f32, not the file's bf16: " + no_bf16 +
                        "; the matrices are widened once at load, to twice their memory" +
                        (opts.isa == "avx2" ? "" : "; --dtype bf16 keeps them bf16"));
  } else if (c.dtype == DType::bf16) {
    precision = Precision::bf16;
  }
  XLMR_CHECK(opts.int8_equalize || (precision == Precision::int8 && opts.path == Path::fused && !gpu),
             "int8_equalize = false (--no-equalize) applies to int8 GEMMs (--dtype int8) only");
  XLMR_CHECK(!opts.attention || opts.path == Path::fused,
             "the attention precision is a choice of the fused path (the reference path computes in f32)");
  XLMR_CHECK(!gpu || !opts.attention || *opts.attention == Precision::f32 || *opts.attention == precision,
             std::string("on CUDA attention's products are f32 (the plain kernel) or the GEMMs' type, ") +
                 to_string(precision) + " (tensor cores), not " + to_string(*opts.attention));
  if (gpu) {
    CudaBackendOptions co;
    co.precision = precision;
    co.graphs = opts.cuda_graphs;
    co.attention = opts.attention;
    co.gpu = opts.gpu;
    e->backend_ = make_cuda_backend(*e->model_, co);
    e->description_ = e->backend_->name();
  } else if (opts.path == Path::reference) {
    XLMR_CHECK(precision == Precision::f32 || !opts.precision,
               "the reference path computes in f32 only (use the fused path for bf16 or int8)");
    XLMR_CHECK(!opts.padded, "the reference path is always padded; --padded applies to the fused path");
    e->backend_ = make_reference_backend(*e->model_);
    e->description_ = "reference (scalar, f32, padded)";
  } else {
    CpuBackendOptions co;
    co.precision = precision;
    co.threads = opts.threads;
    co.padded = opts.padded;
    co.isa = opts.isa;
    co.attention = opts.attention;
    co.int8_equalize = opts.int8_equalize;
    e->backend_ = make_cpu_backend(*e->model_, co);
    e->description_ = e->backend_->name();
  }
  e->notes_.insert(e->notes_.end(), e->backend_->notes().begin(), e->backend_->notes().end());
  const int budget = e->batch_budget_ = std::max(opts.max_batch_tokens, e->max_length_);
  e->backend_->reserve(budget, e->max_length_);
  // The backend has its own copy of the matrices now (none are kept widened
  // here; this makes sure, and leaves no pointer to them).
  if (e->backend_->keeps_own_matrices()) e->model_->release_matrices();
  const size_t E = size_t(c.hidden);
  for (int i = 0; i < 2; ++i) {
    e->ids_[i].resize(size_t(budget));
    e->cu_seqlens_[i].resize(size_t(budget) + 1);
  }
  e->hidden_.resize(size_t(budget) * E);
  e->pooled_.resize(size_t(budget) * E);
  e->logits_.resize(size_t(budget) * size_t(std::max(c.num_labels, 1)));
  return e;
}

const ModelConfig& Engine::config() const { return model_->config(); }
const char* Engine::backend_name() const { return backend_->name(); }
Profiler& Engine::profiler() { return backend_->profiler(); }
BackendStats Engine::backend_stats() const { return backend_->stats(); }

const Tokenizer& Engine::tokenizer() const {
  XLMR_CHECK(tokenizer_, "this model file carries no tokenizer: give token ids, or re-convert with --tokenizer");
  return *tokenizer_;
}

std::vector<Result> Engine::encode_ids(const std::vector<std::vector<int32_t>>& seqs, const EncodeOptions& opts) {
  const ModelConfig& c = config();
  std::vector<Result> results(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    const auto& s = seqs[i];
    XLMR_CHECK(!s.empty(), "input " + std::to_string(i) + ": no token ids");
    XLMR_CHECK(int(s.size()) <= max_length_, "input " + std::to_string(i) + ": " + std::to_string(s.size()) +
                                                 " token ids, the limit is " + std::to_string(max_length_));
    for (int32_t id : s)
      XLMR_CHECK(id >= 0 && id < c.vocab_size, "input " + std::to_string(i) + ": token id " + std::to_string(id) +
                                                   " is outside the vocabulary [0, " +
                                                   std::to_string(c.vocab_size) + ")");
    results[i].ids = s;
  }
  return run(std::move(results), opts);
}

std::vector<Result> Engine::encode_texts(const std::vector<std::string>& texts, const EncodeOptions& opts) {
  const Tokenizer& tok = tokenizer();
  std::vector<Result> results(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    Encoding enc = tok.encode(texts[i], max_length_);
    results[i].ids = std::move(enc.ids);
    results[i].truncated = enc.truncated;
    results[i].invalid_utf8 = enc.invalid_utf8;
  }
  return run(std::move(results), opts);
}

std::vector<Result> Engine::encode_pairs(const std::vector<std::pair<std::string, std::string>>& pairs,
                                         const EncodeOptions& opts) {
  const Tokenizer& tok = tokenizer();
  std::vector<Result> results(pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    Encoding enc = tok.encode_pair(pairs[i].first, pairs[i].second, max_length_);
    results[i].ids = std::move(enc.ids);
    results[i].truncated = enc.truncated;
    results[i].invalid_utf8 = enc.invalid_utf8;
  }
  return run(std::move(results), opts);
}

std::vector<Result> Engine::run(std::vector<Result> results, const EncodeOptions& eo) {
  std::lock_guard<std::mutex> lock(mu_);
  const ModelConfig& c = config();
  ForwardOptions fo;
  fo.pooling = eo.pooling.value_or(c.default_pooling);
  fo.normalize = eo.normalize.value_or(c.default_normalize);
  XLMR_CHECK(fo.pooling != Pooling::pooler || c.has_pooler,
             "this model has no pooler layer (use pooling cls or mean)");
  const size_t E = size_t(c.hidden), C = size_t(c.num_labels);

  std::vector<int> lengths(results.size());
  for (size_t i = 0; i < results.size(); ++i) lengths[i] = int(results[i].ids.size());
  ScheduleOptions so;
  so.max_tokens = batch_budget_;
  so.padded = backend_->padded();
  const std::vector<std::vector<int>> batches = schedule_batches(lengths, so);

  // Packs batch i into host staging buffer i % 2.
  auto pack = [&](size_t i) {
    const std::vector<int>& batch = batches[i];
    std::vector<int32_t>& ids = ids_[i % 2];
    std::vector<int32_t>& cu = cu_seqlens_[i % 2];
    int n = 0, longest = 0;
    cu[0] = 0;
    for (size_t k = 0; k < batch.size(); ++k) {
      const auto& seq = results[size_t(batch[k])].ids;
      std::copy(seq.begin(), seq.end(), ids.begin() + n);
      n += int(seq.size());
      longest = std::max(longest, int(seq.size()));
      cu[k + 1] = n;
    }
    return RaggedBatch{ids.data(), cu.data(), int(batch.size()), n, longest};
  };

  // Batch i+1 is packed before batch i runs, so that a backend can move it
  // to the device while batch i computes.
  RaggedBatch current{}, next{};
  if (!batches.empty()) current = pack(0);
  for (size_t i = 0; i < batches.size(); ++i) {
    const bool has_next = i + 1 < batches.size();
    if (has_next) next = pack(i + 1);
    fo.next = has_next ? &next : nullptr;
    fo.prefetched = i > 0;
    BatchOutputs out;
    out.hidden = eo.hidden ? hidden_.data() : nullptr;
    out.pooled = fo.pooling != Pooling::none ? pooled_.data() : nullptr;
    out.logits = C ? logits_.data() : nullptr;
    backend_->forward(current, fo, out);

    const std::vector<int>& batch = batches[i];
    const int32_t* cu = current.cu_seqlens;
    for (size_t k = 0; k < batch.size(); ++k) {
      Result& r = results[size_t(batch[k])];
      r.n_tokens = int(r.ids.size());
      if (out.pooled) r.embedding.assign(pooled_.begin() + k * E, pooled_.begin() + (k + 1) * E);
      if (out.logits) r.logits.assign(logits_.begin() + k * C, logits_.begin() + (k + 1) * C);
      if (out.hidden)
        r.hidden.assign(hidden_.begin() + size_t(cu[k]) * E, hidden_.begin() + size_t(cu[k + 1]) * E);
    }
    current = next;
  }
  return results;
}

}  // namespace xlmr
