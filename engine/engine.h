// xlmr-engine: run XLM-RoBERTa-family encoders from a .xlmr file.
//
// Usage:
//
//   #include "engine/engine.h"
//
//   xlmr::EngineOptions opts;                 // CPU, all cores
//   auto engine = xlmr::Engine::load("model.xlmr", opts);
//   xlmr::EncodeOptions enc;                  // the model's default pooling
//   std::vector<xlmr::Result> r = engine->encode_texts({"Hello world", "Bonjour"}, enc);
//   // r[i].embedding: [E] pooled vector, r[i].logits: [C] when the model has a head
//
// Errors are thrown as xlmr::Error (engine/error.h) with a one-line message;
// nothing in the library exits or aborts.
//
// Thread-safety: an Engine may be shared between threads; encode calls are
// serialised on an internal lock (the engine owns one workspace). For
// parallel throughput load one Engine per thread, each with threads = 1.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/error.h"
#include "engine/profiler.h"

namespace xlmr {

class Model;
class Backend;
class Tokenizer;

enum class Device { cpu, cuda };
enum class Path { reference, fused };

struct EngineOptions {
  Device device = Device::cpu;
  Path path = Path::fused;      // reference: the plain padded oracle ("slow path")
  int threads = 0;              // 0: all cores
  // GEMM precision of the fused path; default: bf16 when the file's matrices
  // are bf16 (on CPU only where it has AVX512_BF16 or AMX-BF16; elsewhere
  // f32, said in notes()), else f32 on CPU and f16 on CUDA. The reference
  // path is always f32.
  std::optional<Precision> precision;
  bool padded = false;          // fused path: pad to the longest sequence (comparison only)
  std::string isa;              // fused CPU path: "" (best available), "avx512" or "avx2"
  int max_batch_tokens = 8192;  // token budget of one batch
  int max_length = 0;           // tokens per sequence incl. specials; 0: the model's maximum
  bool verify_checksums = true; // per-tensor checksums at load
  bool cuda_graphs = true;      // CUDA: replay repeated batch shapes from captured graphs
  int gpu = 0;                  // CUDA: which GPU, 0-based among the visible ones (CUDA_VISIBLE_DEVICES)
  // Fused path: precision of attention's two products (Q.K^T, P.V).
  // CPU with bf16 GEMMs: bf16 (on AMX tiles, or AVX512_BF16 dot products on
  // CPUs without AMX) or f32; default bf16 where the CPU has either and the
  // head dim is 32, 64, 96 or 128. With int8 GEMMs: the same choice, default
  // f32 (bf16 costs int8's worst tokens some accuracy). With f32 GEMMs
  // always f32. CUDA: the GEMMs' 16-bit type (the tensor-core kernel) or f32
  // (the plain kernel); default tensor cores where the device and head size
  // allow (32, 64, 80, 128 on sm_80 and later).
  std::optional<Precision> attention;
  // int8 GEMMs (CPU): equalize their input channels from the weights, so
  // that channels much larger than the rest do not cost the others their
  // precision (engine/int8_equalize.h). Off only to measure what it does;
  // off with any other precision is an error.
  bool int8_equalize = true;
};

struct EncodeOptions {
  std::optional<Pooling> pooling;  // default: the model's (cls for XLM-R, mean for BERT-arch)
  std::optional<bool> normalize;   // default: the model's
  bool hidden = false;             // also return per-token hidden states
};

struct Result {
  int n_tokens = 0;
  std::vector<int32_t> ids;        // the ids that were run
  std::vector<float> embedding;    // [E], empty with Pooling::none
  std::vector<float> logits;       // [C], empty without a classification head
  std::vector<float> hidden;       // [n_tokens, E] when requested
  bool truncated = false;          // text input was cut to max_length
  bool invalid_utf8 = false;       // invalid bytes were replaced by U+FFFD
};

class Engine {
 public:
  static std::unique_ptr<Engine> load(const std::string& path, const EngineOptions& opts = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const ModelConfig& config() const;
  int max_length() const { return max_length_; }
  // Tokens one batch holds: max(max_batch_tokens, max_length()).
  int batch_budget() const { return batch_budget_; }
  const char* backend_name() const;
  // One line: backend, instruction set, precision, layout, threads.
  const std::string& describe() const { return description_; }
  // Things about this load a user should know, one line each (empty when
  // none): a default changed for this machine, an option that runs slowly here.
  const std::vector<std::string>& notes() const { return notes_; }
  // Per-kernel timings of the forwards run so far (enable() it first).
  Profiler& profiler();
  // CUDA graph captures/replays and overlapped uploads so far.
  BackendStats backend_stats() const;
  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  const Tokenizer& tokenizer() const;  // throws when the file has none

  // Each sequence: model ids, 1..max_length() of them, each < vocab_size.
  std::vector<Result> encode_ids(const std::vector<std::vector<int32_t>>& seqs, const EncodeOptions& opts);
  // Texts are tokenized (truncated to max_length(), flagged in the result).
  std::vector<Result> encode_texts(const std::vector<std::string>& texts, const EncodeOptions& opts);
  // Pairs for cross-encoders: <s> A </s></s> B </s>.
  std::vector<Result> encode_pairs(const std::vector<std::pair<std::string, std::string>>& pairs,
                                   const EncodeOptions& opts);

 private:
  Engine() = default;
  std::vector<Result> run(std::vector<Result> results, const EncodeOptions& opts);

  std::unique_ptr<Model> model_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Tokenizer> tokenizer_;
  EngineOptions opts_;
  int max_length_ = 0;
  int batch_budget_ = 0;
  std::string description_;
  std::vector<std::string> notes_;
  std::mutex mu_;
  // Host staging for two batches (the one running and the next), sized at load.
  std::vector<int32_t> ids_[2], cu_seqlens_[2];
  std::vector<float> hidden_, pooled_, logits_;
};

}  // namespace xlmr
