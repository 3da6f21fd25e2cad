// The seam between the engine and its compute backends.
//
// A batch is ragged: the token ids of all its sequences back to back, and the
// prefix sums cu_seqlens[S+1] (cu_seqlens[0] = 0) that say where each sequence
// starts. Every backend takes that form and returns per-token hidden states
// in the same packed order; how it lays things out inside (the reference
// backend pads, the fused ones do not) is its own business.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/profiler.h"

namespace xlmr {

class Model;

struct RaggedBatch {
  const int32_t* ids;         // [N] model ids, validated by the engine
  const int32_t* cu_seqlens;  // [S+1]
  int n_seqs;                 // S
  int n_tokens;               // N = cu_seqlens[S]
  int max_seqlen;             // longest sequence in the batch
};

struct ForwardOptions {
  Pooling pooling = Pooling::cls;
  bool normalize = false;  // L2-normalise the pooled vectors
  // The batch the next forward() call will receive, when the caller knows it:
  // a backend may start moving it to the device while this one computes. Its
  // arrays must stay unchanged until that call returns.
  const RaggedBatch* next = nullptr;
  // This batch is the one passed as `next` to the previous call, unchanged.
  bool prefetched = false;
};

// Caller-owned destinations; a nullptr skips that output.
struct BatchOutputs {
  float* hidden = nullptr;  // [N, E] last layer, packed like the ids
  float* pooled = nullptr;  // [S, E] (ignored when pooling is none)
  float* logits = nullptr;  // [S, C] when the model has a classification head
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // Sizes the workspace for batches of at most max_tokens tokens (as the
  // scheduler counts them for this backend) and max_seqlen tokens per
  // sequence. Called before the first forward; forward never allocates.
  virtual void reserve(int max_tokens, int max_seqlen) = 0;
  // Whether the scheduler must count a batch as S * max_seqlen tokens.
  virtual bool padded() const = 0;
  // True when, once reserve() has run, the backend works from its own copy
  // of the weight matrices (packed, or on the GPU) and never reads the
  // model's again, so that Model::release_matrices() may free them.
  virtual bool keeps_own_matrices() const { return false; }
  virtual void forward(const RaggedBatch& batch, const ForwardOptions& opts, const BatchOutputs& out) = 0;
  // Per-kernel timings of this backend's forwards (off until enabled).
  Profiler& profiler() { return profiler_; }
  virtual BackendStats stats() const { return {}; }
  // What a user should know about the choices made at construction, one
  // line each (Engine::notes()): a faster kernel the options allowed but
  // this model or machine could not use, a setting that slows it down.
  const std::vector<std::string>& notes() const { return notes_; }

 protected:
  Profiler profiler_;
  std::vector<std::string> notes_;
};

// The plain, padded, unfused oracle (kernels/ref).
std::unique_ptr<Backend> make_reference_backend(const Model& model);

struct CpuBackendOptions {
  Precision precision = Precision::f32;
  int threads = 0;        // 0: all cores
  bool padded = false;    // pad every sequence to the batch's longest (for comparison only)
  std::string isa;        // "" or "auto": the best the CPU has; "avx512" or "avx2" to force one
  std::optional<Precision> attention;  // EngineOptions::attention
  bool int8_equalize = true;           // EngineOptions::int8_equalize
};

// The fused CPU backend (kernels/cpu): oneDNN GEMMs on pre-packed weights,
// AVX-512/AVX2 kernels, variable-length attention, no padding. Throws when
// the build has no oneDNN or the CPU lacks what the options ask for.
std::unique_ptr<Backend> make_cpu_backend(const Model& model, const CpuBackendOptions& opts);

// Whether the fused CPU path's bf16 GEMMs run on bf16 instructions here
// (AVX512_BF16 or AMX-BF16; cpu::has_native_bf16_gemm). False in a build
// without oneDNN.
bool cpu_has_native_bf16_gemm();

struct CudaBackendOptions {
  Precision precision = Precision::f16;  // f16 or bf16
  int gpu = 0;                           // which visible GPU (0-based)
  bool graphs = true;    // replay repeated batch shapes from captured CUDA graphs
  int graph_cache = 32;  // most graphs kept (least recently used dropped)
  // Attention's products: f32 runs the plain kernel, `precision` the
  // tensor-core one (an error where the device or head size has none);
  // unset: tensor cores where available.
  std::optional<Precision> attention;
};

// The CUDA backend (kernels/cuda): 16-bit weights uploaded once, cuBLASLt
// GEMMs, handwritten LayerNorm and varlen attention kernels. Throws when the
// build has no CUDA or no usable device is present.
std::unique_ptr<Backend> make_cuda_backend(const Model& model, const CudaBackendOptions& opts);

}  // namespace xlmr
