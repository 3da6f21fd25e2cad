// The CUDA backend: the fused path on an NVIDIA GPU. Weights go to the device
// once, as fp16 or bf16 matrices with fp32 biases and LayerNorm parameters;
// one workspace is sized in reserve(). Per batch, ids, positions and
// cu_seqlens travel in one pinned upload; the layer loop is kernel launches on
// the engine's stream with no host synchronisation; results come back in one
// download at the end.
//
// Written against kernels/cuda/cuda_kernels.h only, so this file needs no
// CUDA headers.
#include "engine/backend.h"

#ifdef XLMR_HAVE_CUDA

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/model.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device.h"

namespace xlmr {
namespace {

using cuda::Half16;

// Owning device allocation.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { cuda::device_free(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void allocate(size_t bytes) {
    cuda::device_free(p_);
    p_ = nullptr;
    p_ = cuda::device_malloc(bytes ? bytes : 1);
    bytes_ = bytes;
  }
  void* get() const { return p_; }
  template <typename T>
  T* as() const { return static_cast<T*>(p_); }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() { cuda::host_free_pinned(p_); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void allocate(size_t bytes) {
    cuda::host_free_pinned(p_);
    p_ = nullptr;
    p_ = cuda::host_malloc_pinned(bytes ? bytes : 1);
  }
  template <typename T>
  T* as() const { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
};

struct LtDeleter {
  void operator()(cuda::LtGemm* g) const noexcept { cuda::lt_gemm_destroy(g); }
  void operator()(cuda::LtContext* c) const noexcept { cuda::lt_destroy(c); }
};
using GemmPtr = std::unique_ptr<cuda::LtGemm, LtDeleter>;

struct DeviceLayer {
  DeviceBuffer qkv_w, out_w, ffn1_w, ffn2_w;                                      // 16-bit
  DeviceBuffer qkv_b, out_b, ln1_g, ln1_b, ffn1_b, ffn2_b, ln2_g, ln2_b;          // fp32
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(const Model& m, const CudaBackendOptions& o) : c_(m.config()), w_(m.weights()) {
    std::string why, dev;
    XLMR_CHECK(cuda::device_available(&why, &dev), "--device cuda: " + why);
    XLMR_CHECK(o.precision == Precision::f16 || o.precision == Precision::bf16,
               "the CUDA path computes in f16 or bf16 (use --dtype f16 or bf16)");
    XLMR_CHECK(c_.head_dim() % 8 == 0 && c_.head_dim() <= 128,
               "the CUDA attention kernels need a head size that is a multiple of 8, at most 128 (this model's is " +
                   std::to_string(c_.head_dim()) + ")");
    t_ = o.precision == Precision::bf16 ? Half16::bf16 : Half16::f16;
    elt_ = 2;
    name_ = "cuda (" + dev + ", " + to_string(o.precision) + ", ragged)";
    stream_ = cuda::stream_create();
    upload_weights();
  }

  ~CudaBackend() override {
    gemms_.clear();
    lt_.reset();
    cuda::stream_destroy(stream_);
  }

  const char* name() const override { return name_.c_str(); }
  bool padded() const override { return false; }

  void reserve(int max_tokens, int max_seqlen) override {
    XLMR_CHECK(max_tokens >= max_seqlen && max_seqlen >= 1, "cuda backend: bad workspace request");
    const size_t T = size_t(max_tokens), S = size_t(max_tokens), E = size_t(c_.hidden), F = size_t(c_.ffn);
    const size_t C = size_t(std::max(c_.num_labels, 1));
    cap_tokens_ = max_tokens;
    cap_seqlen_ = max_seqlen;
    x_.allocate(T * E * elt_);
    qkv_.allocate(T * 3 * E * elt_);
    attn_.allocate(T * E * elt_);
    proj_.allocate(T * E * elt_);
    ffn_.allocate(T * F * elt_);
    first_.allocate(S * E * elt_);
    tmp_.allocate(S * E * elt_);
    logits16_.allocate(S * C * elt_);
    out32_.allocate(std::max(T, S) * E * sizeof(float));
    logits32_.allocate(S * C * sizeof(float));
    // ids [T] | positions [T] | cu_seqlens [S+1], uploaded together.
    meta_words_ = 2 * T + S + 1;
    meta_.allocate(meta_words_ * sizeof(int32_t));
    meta_host_.allocate(meta_words_ * sizeof(int32_t));

    lt_.reset(cuda::lt_create(size_t(32) << 20));
    gemms_.clear();
    const int E_ = c_.hidden, F_ = c_.ffn;
    qkv_gemm_ = add_gemm(E_, 3 * E_, cuda::LtEpilogue::bias, max_tokens);
    out_gemm_ = add_gemm(E_, E_, cuda::LtEpilogue::none, max_tokens);
    ffn1_gemm_ = add_gemm(E_, F_, cuda::LtEpilogue::bias_gelu, max_tokens);
    ffn2_gemm_ = add_gemm(F_, E_, cuda::LtEpilogue::none, max_tokens);
    if (w_.pooler_w) pooler_gemm_ = add_gemm(E_, E_, cuda::LtEpilogue::bias, max_tokens);
    if (c_.num_labels > 0) {
      head_dense_gemm_ = add_gemm(E_, E_, cuda::LtEpilogue::bias, max_tokens);
      head_out_gemm_ = add_gemm(E_, c_.num_labels, cuda::LtEpilogue::bias, max_tokens);
    }
  }

  void forward(const RaggedBatch& b, const ForwardOptions& opts, const BatchOutputs& out) override {
    const int S = b.n_seqs, N = b.n_tokens, E = c_.hidden, F = c_.ffn;
    if (S == 0) return;
    XLMR_CHECK(N <= cap_tokens_ && b.max_seqlen <= cap_seqlen_, "cuda backend: batch larger than the workspace");
    const bool profile = profiler_.enabled();
    // Profiling serialises: each kernel is timed to its completion.
    auto timed = [&](Kernel k, double flops, double bytes, auto&& launch) {
      if (!profile) {
        launch();
        return;
      }
      cuda::sync(stream_);
      const auto t0 = std::chrono::steady_clock::now();
      launch();
      cuda::sync(stream_);
      profiler_.add(k, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), flops, bytes);
    };

    int32_t* h = meta_host_.as<int32_t>();
    int32_t* h_ids = h;
    int32_t* h_pos = h + N;
    int32_t* h_cu = h + 2 * N;
    double attn_work = 0;
    for (int s = 0; s < S; ++s) {
      const int start = b.cu_seqlens[s], len = b.cu_seqlens[s + 1] - start;
      for (int i = 0; i < len; ++i) {
        h_ids[start + i] = b.ids[start + i];
        h_pos[start + i] = c_.position_offset + i;
      }
      attn_work += double(len) * len;
    }
    std::memcpy(h_cu, b.cu_seqlens, sizeof(int32_t) * size_t(S + 1));
    int32_t* d_ids = meta_.as<int32_t>();
    int32_t* d_pos = d_ids + N;
    int32_t* d_cu = d_ids + 2 * N;
    timed(Kernel::pack, 0, double(2 * N + S + 1) * 4,
          [&] { cuda::copy_to_device(d_ids, h, sizeof(int32_t) * size_t(2 * N + S + 1), stream_); });

    const double NE = double(N) * E;
    timed(Kernel::embed_layernorm, 0, NE * elt_ * 3, [&] {
      cuda::embed_layernorm(t_, x_.get(), d_ids, d_pos, word_.get(), pos_.get(), type0_.get(), emb_g_.as<float>(),
                            emb_b_.as<float>(), N, E, c_.layer_norm_eps, stream_);
    });
    for (const DeviceLayer& l : layers_) {
      timed(Kernel::qkv_gemm, 2.0 * N * E * 3 * E, 3.0 * E * E * elt_, [&] {
        cuda::lt_gemm_run(qkv_gemm_, qkv_.get(), x_.get(), l.qkv_w.get(), l.qkv_b.as<float>(), N, stream_);
      });
      timed(Kernel::attention, 4.0 * attn_work * E, NE * elt_ * 4, [&] {
        cuda::varlen_attention(t_, attn_.get(), qkv_.get(), d_cu, S, b.max_seqlen, c_.heads, c_.head_dim(), stream_);
      });
      timed(Kernel::out_gemm, 2.0 * N * E * E, double(E) * E * elt_, [&] {
        cuda::lt_gemm_run(out_gemm_, proj_.get(), attn_.get(), l.out_w.get(), nullptr, N, stream_);
      });
      timed(Kernel::residual_ln1, 0, NE * elt_ * 3, [&] {
        cuda::add_bias_residual_layernorm(t_, x_.get(), proj_.get(), l.out_b.as<float>(), l.ln1_g.as<float>(),
                                          l.ln1_b.as<float>(), N, E, c_.layer_norm_eps, stream_);
      });
      timed(Kernel::ffn1_gemm, 2.0 * N * E * F, double(E) * F * elt_, [&] {
        cuda::lt_gemm_run(ffn1_gemm_, ffn_.get(), x_.get(), l.ffn1_w.get(), l.ffn1_b.as<float>(), N, stream_);
      });
      timed(Kernel::ffn2_gemm, 2.0 * N * F * E, double(E) * F * elt_, [&] {
        cuda::lt_gemm_run(ffn2_gemm_, proj_.get(), ffn_.get(), l.ffn2_w.get(), nullptr, N, stream_);
      });
      timed(Kernel::residual_ln2, 0, NE * elt_ * 3, [&] {
        cuda::add_bias_residual_layernorm(t_, x_.get(), proj_.get(), l.ffn2_b.as<float>(), l.ln2_g.as<float>(),
                                          l.ln2_b.as<float>(), N, E, c_.layer_norm_eps, stream_);
      });
    }

    const auto t0 = std::chrono::steady_clock::now();
    float* o32 = out32_.as<float>();
    const bool need_first = (out.pooled && opts.pooling == Pooling::pooler) || (out.logits && c_.num_labels > 0);
    if (need_first) cuda::gather_first(t_, first_.get(), x_.get(), d_cu, S, E, stream_);
    if (out.hidden) {
      cuda::convert_to_f32(t_, o32, x_.get(), size_t(N) * E, stream_);
      cuda::copy_to_host(out.hidden, o32, sizeof(float) * size_t(N) * E, stream_);
      cuda::sync(stream_);  // o32 is reused below
    }
    if (out.pooled && opts.pooling != Pooling::none) {
      switch (opts.pooling) {
        case Pooling::cls:
          cuda::gather_first(t_, tmp_.get(), x_.get(), d_cu, S, E, stream_);
          cuda::convert_to_f32(t_, o32, tmp_.get(), size_t(S) * E, stream_);
          break;
        case Pooling::mean: cuda::mean_pool(t_, o32, x_.get(), d_cu, S, E, stream_); break;
        case Pooling::pooler:
          XLMR_CHECK(pooler_gemm_, "this model has no pooler layer (use --pooling cls or mean)");
          cuda::lt_gemm_run(pooler_gemm_, tmp_.get(), first_.get(), pooler_w_.get(), pooler_b_.as<float>(), S, stream_);
          cuda::activation(t_, tmp_.get(), size_t(S) * E, true, stream_);
          cuda::convert_to_f32(t_, o32, tmp_.get(), size_t(S) * E, stream_);
          break;
        case Pooling::none: break;
      }
      cuda::copy_to_host(out.pooled, o32, sizeof(float) * size_t(S) * E, stream_);
    }
    if (out.logits && c_.num_labels > 0) {
      const int C = c_.num_labels;
      cuda::lt_gemm_run(head_dense_gemm_, tmp_.get(), first_.get(), head_dense_w_.get(), head_dense_b_.as<float>(), S,
                        stream_);
      cuda::activation(t_, tmp_.get(), size_t(S) * E, c_.head_activation == HeadActivation::tanh, stream_);
      cuda::lt_gemm_run(head_out_gemm_, logits16_.get(), tmp_.get(), head_out_w_.get(), head_out_b_.as<float>(), S,
                        stream_);
      cuda::convert_to_f32(t_, logits32_.as<float>(), logits16_.get(), size_t(S) * C, stream_);
      cuda::copy_to_host(out.logits, logits32_.get(), sizeof(float) * size_t(S) * C, stream_);
    }
    cuda::sync(stream_);
    if (out.pooled && opts.normalize && opts.pooling != Pooling::none) {
      for (int s = 0; s < S; ++s) {
        float* p = out.pooled + size_t(s) * E;
        double ss = 0;
        for (int e = 0; e < E; ++e) ss += double(p[e]) * p[e];
        if (ss > 0) {
          const float inv = float(1.0 / std::sqrt(ss));
          for (int e = 0; e < E; ++e) p[e] *= inv;
        }
      }
    }
    if (profile)
      profiler_.add(Kernel::pool_head, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0, 0);
  }

 private:
  cuda::LtGemm* add_gemm(int in, int out, cuda::LtEpilogue ep, int max_rows) {
    gemms_.emplace_back(cuda::lt_gemm_create(lt_.get(), t_, in, out, ep, max_rows));
    return gemms_.back().get();
  }

  void up16(DeviceBuffer& d, const float* src, size_t n) {
    d.allocate(n * elt_);
    cuda::upload_f32_as(t_, d.get(), src, n, stream_);
  }
  void up32(DeviceBuffer& d, const float* src, size_t n) {
    d.allocate(n * sizeof(float));
    cuda::copy_to_device(d.get(), src, n * sizeof(float), stream_);
  }

  void upload_weights() {
    const size_t E = size_t(c_.hidden), F = size_t(c_.ffn);
    up16(word_, w_.word, size_t(c_.vocab_size) * E);
    up16(pos_, w_.pos, size_t(c_.max_positions) * E);
    if (w_.type0) up16(type0_, w_.type0, E);
    up32(emb_g_, w_.emb_ln_g, E);
    up32(emb_b_, w_.emb_ln_b, E);
    layers_ = std::vector<DeviceLayer>(w_.layers.size());
    for (size_t i = 0; i < w_.layers.size(); ++i) {
      const LayerWeights& l = w_.layers[i];
      DeviceLayer& d = layers_[i];
      up16(d.qkv_w, l.qkv_w, 3 * E * E);
      up16(d.out_w, l.out_w, E * E);
      up16(d.ffn1_w, l.ffn1_w, F * E);
      up16(d.ffn2_w, l.ffn2_w, E * F);
      up32(d.qkv_b, l.qkv_b, 3 * E);
      up32(d.out_b, l.out_b, E);
      up32(d.ln1_g, l.ln1_g, E);
      up32(d.ln1_b, l.ln1_b, E);
      up32(d.ffn1_b, l.ffn1_b, F);
      up32(d.ffn2_b, l.ffn2_b, E);
      up32(d.ln2_g, l.ln2_g, E);
      up32(d.ln2_b, l.ln2_b, E);
    }
    if (w_.pooler_w) {
      up16(pooler_w_, w_.pooler_w, E * E);
      up32(pooler_b_, w_.pooler_b, E);
    }
    if (c_.num_labels > 0) {
      up16(head_dense_w_, w_.head_dense_w, E * E);
      up32(head_dense_b_, w_.head_dense_b, E);
      up16(head_out_w_, w_.head_out_w, size_t(c_.num_labels) * E);
      up32(head_out_b_, w_.head_out_b, size_t(c_.num_labels));
    }
    cuda::sync(stream_);
  }

  const ModelConfig& c_;
  const ModelWeights& w_;
  Half16 t_ = Half16::f16;
  size_t elt_ = 2;
  std::string name_;
  cuda::Stream stream_ = nullptr;
  int cap_tokens_ = 0, cap_seqlen_ = 0;
  size_t meta_words_ = 0;

  DeviceBuffer word_, pos_, type0_, emb_g_, emb_b_;
  std::vector<DeviceLayer> layers_;
  DeviceBuffer pooler_w_, pooler_b_, head_dense_w_, head_dense_b_, head_out_w_, head_out_b_;
  DeviceBuffer x_, qkv_, attn_, proj_, ffn_, first_, tmp_, logits16_, out32_, logits32_, meta_;
  PinnedBuffer meta_host_;

  std::unique_ptr<cuda::LtContext, LtDeleter> lt_;
  std::vector<GemmPtr> gemms_;
  cuda::LtGemm *qkv_gemm_ = nullptr, *out_gemm_ = nullptr, *ffn1_gemm_ = nullptr, *ffn2_gemm_ = nullptr;
  cuda::LtGemm *pooler_gemm_ = nullptr, *head_dense_gemm_ = nullptr, *head_out_gemm_ = nullptr;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const Model& model, const CudaBackendOptions& opts) {
  return std::unique_ptr<Backend>(new CudaBackend(model, opts));
}

}  // namespace xlmr

#else  // !XLMR_HAVE_CUDA

#include "engine/error.h"
#include "kernels/cuda/device.h"

namespace xlmr {
std::unique_ptr<Backend> make_cuda_backend(const Model&, const CudaBackendOptions&) {
  std::string why;
  cuda::device_available(&why);
  XLMR_THROW("--device cuda: " + why);
}
}  // namespace xlmr

#endif
