// Per-kernel timing: every kernel call of a backend's forward goes through
// one ProfileScope. Off by default (one predictable branch per call); the
// benchmark harness turns it on and prints the table.
//
// A Profiler belongs to one backend (no global state) and holds a fixed
// array of counters, so recording never allocates.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>

namespace xlmr {

enum class Kernel : int {
  embed_layernorm,  // gather + position + type + LayerNorm
  qkv_gemm,         // [N,E] x [E,3E] + bias
  attention,        // softmax(QK^T)V over each sequence
  out_gemm,         // [N,E] x [E,E]
  residual_ln1,     // bias + residual + LayerNorm after attention
  ffn1_gemm,        // [N,E] x [E,F] + bias + GELU
  ffn2_gemm,        // [N,F] x [F,E]
  residual_ln2,     // bias + residual + LayerNorm after the FFN
  pool_head,        // pooling, pooler, classification head
  pack,             // padding/unpadding copies, position ids, dtype casts
  count
};

inline const char* kernel_name(Kernel k) {
  switch (k) {
    case Kernel::embed_layernorm: return "embed+layernorm";
    case Kernel::qkv_gemm: return "qkv_gemm+bias";
    case Kernel::attention: return "attention";
    case Kernel::out_gemm: return "out_proj_gemm";
    case Kernel::residual_ln1: return "bias+residual+ln1";
    case Kernel::ffn1_gemm: return "ffn1_gemm+bias+gelu";
    case Kernel::ffn2_gemm: return "ffn2_gemm";
    case Kernel::residual_ln2: return "bias+residual+ln2";
    case Kernel::pool_head: return "pool+head";
    case Kernel::pack: return "pack/cast";
    case Kernel::count: break;
  }
  return "?";
}

inline bool kernel_is_gemm(Kernel k) {
  return k == Kernel::qkv_gemm || k == Kernel::out_gemm || k == Kernel::ffn1_gemm || k == Kernel::ffn2_gemm;
}

struct KernelStats {
  int64_t calls = 0;
  double seconds = 0;
  double flops = 0;  // floating-point operations performed (padding rows included)
  double bytes = 0;  // bytes moved (the kernel's minimum traffic)
};

class Profiler {
 public:
  static constexpr int kKernels = static_cast<int>(Kernel::count);
  bool enabled() const { return enabled_; }
  void enable(bool on) { enabled_ = on; }
  void reset() { stats_ = {}; }
  const KernelStats& stats(Kernel k) const { return stats_[static_cast<size_t>(k)]; }
  void add(Kernel k, double seconds, double flops, double bytes) {
    KernelStats& s = stats_[static_cast<size_t>(k)];
    ++s.calls;
    s.seconds += seconds;
    s.flops += flops;
    s.bytes += bytes;
  }

 private:
  bool enabled_ = false;
  std::array<KernelStats, static_cast<size_t>(Kernel::count)> stats_{};
};

// Times the enclosing block when the profiler is on. Kernels are synchronous
// on CPU, so wall-clock time is the kernel's time.
class ProfileScope {
 public:
  ProfileScope(Profiler& p, Kernel k, double flops = 0, double bytes = 0)
      : p_(p.enabled() ? &p : nullptr), k_(k), flops_(flops), bytes_(bytes) {
    if (p_) t0_ = std::chrono::steady_clock::now();
  }
  ~ProfileScope() {
    if (p_) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
      p_->add(k_, s, flops_, bytes_);
    }
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  Profiler* p_;
  Kernel k_;
  double flops_, bytes_;
  std::chrono::steady_clock::time_point t0_;
};

// What a backend did beyond the kernels themselves (CUDA: graphs, uploads).
struct BackendStats {
  uint64_t graph_captures = 0;      // CUDA graphs captured
  uint64_t graph_replays = 0;       // forwards replayed from a captured graph
  uint64_t prefetched_batches = 0;  // batches whose upload overlapped the previous batch
};

}  // namespace xlmr
