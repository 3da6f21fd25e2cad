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
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "engine/cuda_plan.h"
#include "engine/error.h"
#include "engine/model.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device.h"
#include "weights/schema.h"

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
  void* get() const { return p_; }
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
  CudaBackend(const Model& m, const CudaBackendOptions& o) : m_(m), c_(m.config()), w_(m.weights()), gpu_(o.gpu) {
    std::string why, dev;
    XLMR_CHECK(cuda::device_available(&why, &dev, gpu_), "--device cuda: " + why);
    // gpu_ is current until the end of the constructor; should it throw,
    // also while the members are freed, and restore_ (destroyed last) gives
    // the thread its device back.
    restore_.previous = cuda::current_device();
    cuda::set_device(gpu_);
    try {
      setup(o, dev);
      cuda::set_device(restore_.previous);
    } catch (...) {
      release();  // the handles the destructor would free; the members follow
      throw;
    }
    restore_.previous = -1;
  }

  ~CudaBackend() override {
    // Everything freed here and by the members after this body lives on
    // gpu_; restore_, destroyed last, gives the thread its device back.
    try {
      restore_.previous = cuda::current_device();
      cuda::set_device(gpu_);
    } catch (const Error&) {  // nothing can be done about it in a destructor
    }
    release();
  }

  const char* name() const override { return name_.c_str(); }
  bool padded() const override { return false; }
  bool keeps_own_matrices() const override { return true; }  // uploaded in the constructor

 private:
  void setup(const CudaBackendOptions& o, const std::string& dev) {
    XLMR_CHECK(o.precision == Precision::f16 || o.precision == Precision::bf16,
               "the CUDA path computes in f16 or bf16 (use --dtype f16 or bf16)");
    XLMR_CHECK(c_.head_dim() % 8 == 0 && c_.head_dim() <= 128,
               "the CUDA attention kernels need a head size that is a multiple of 8, at most 128 (this model's is " +
                   std::to_string(c_.head_dim()) + ")");
    t_ = o.precision == Precision::bf16 ? Half16::bf16 : Half16::f16;
    elt_ = 2;
    if (o.attention == Precision::f32) {
      attention_ = cuda::AttentionKernel::plain;
    } else {
      attention_ = cuda::attention_prepare(t_, c_.head_dim());  // once: it may opt in to more shared memory
      XLMR_CHECK(!o.attention || attention_ == cuda::AttentionKernel::tensor_core,
                 "--attention " + std::string(to_string(*o.attention)) + ": no tensor-core attention for head size " +
                     std::to_string(c_.head_dim()) + " on this device (it takes 32, 64, 80 and 128 on sm_80 and " +
                     "later); use --attention f32 or leave it out");
    }
    if (!o.attention && attention_ == cuda::AttentionKernel::plain) {
      const cuda::DeviceLimits lim = cuda::device_limits();
      notes_.push_back("attention runs on the plain kernel: the tensor-core one takes head sizes 32, 64, 80 and 128 "
                       "on sm_80 and later (this model's is " + std::to_string(c_.head_dim()) + ", this GPU sm_" +
                       std::to_string(lim.cc_major) + std::to_string(lim.cc_minor) + ", " +
                       std::to_string(lim.smem_per_block_optin >> 10) + " KiB of shared memory a block)");
    }
    name_ = "cuda (" + dev + ", " + to_string(o.precision) + ", ragged, " + cuda::to_string(attention_) +
            " attention)";
    graph_capacity_ = o.graphs ? o.graph_cache : 0;
    stream_ = cuda::stream_create();
    copy_stream_ = cuda::stream_create();
    for (UploadSlot& u : slots_) u.uploaded = cuda::event_create();
    upload_weights();
  }

  // What the members do not free themselves (each call takes a null handle).
  void release() noexcept {
    graphs_.reset();
    gemms_.clear();
    lt_.reset();
    for (UploadSlot& u : slots_) {
      cuda::event_destroy(u.uploaded);
      u.uploaded = nullptr;
    }
    cuda::stream_destroy(copy_stream_);
    cuda::stream_destroy(stream_);
    copy_stream_ = stream_ = nullptr;
  }

 public:
  // Every entry point makes the engine's GPU current for its duration: a
  // program may call from any thread, with any device current.
  void reserve(int max_tokens, int max_seqlen) override {
    XLMR_CHECK(max_tokens >= max_seqlen && max_seqlen >= 1, "cuda backend: bad workspace request");
    const cuda::DeviceScope on(gpu_);
    graphs_.reset();  // captured graphs point into the old buffers
    const cuda_plan::Workspace w = cuda_plan::workspace(c_, max_tokens);
    cap_tokens_ = max_tokens;
    cap_seqlen_ = max_seqlen;
    x_.allocate(w.x * elt_);
    xn_.allocate(w.xn * elt_);
    qkv_.allocate(w.qkv * elt_);
    attn_.allocate(w.attn * elt_);
    proj_.allocate(w.proj * elt_);
    ffn_.allocate(w.ffn * elt_);
    first_.allocate(w.first * elt_);
    tmp_.allocate(w.tmp * elt_);
    logits16_.allocate(w.logits16 * elt_);
    hidden32_.allocate(w.hidden32 * sizeof(float));
    pooled32_.allocate(w.pooled32 * sizeof(float));
    logits32_.allocate(w.logits32 * sizeof(float));
    for (UploadSlot& u : slots_) {
      u.device.allocate(w.meta_words * sizeof(int32_t));
      u.host.allocate(w.meta_words * sizeof(int32_t));
    }
    staged_ = -1;

    lt_.reset(cuda::lt_create(size_t(32) << 20));
    gemms_.clear();
    const int E_ = c_.hidden, F_ = c_.ffn;
    qkv_gemm_ = add_gemm(E_, 3 * E_, cuda::LtEpilogue::bias, max_tokens);
    out_gemm_ = add_gemm(E_, E_, cuda::LtEpilogue::none, max_tokens);
    ffn1_gemm_ = add_gemm(E_, F_, cuda::LtEpilogue::bias_gelu, max_tokens);
    ffn2_gemm_ = add_gemm(F_, E_, cuda::LtEpilogue::none, max_tokens);
    if (c_.has_pooler) pooler_gemm_ = add_gemm(E_, E_, cuda::LtEpilogue::bias, max_tokens);
    if (c_.num_labels > 0) {
      head_dense_gemm_ = add_gemm(E_, E_, cuda::LtEpilogue::bias, max_tokens);
      head_out_gemm_ = add_gemm(E_, c_.num_labels, cuda::LtEpilogue::bias, max_tokens);
    }
    if (graph_capacity_ > 0)
      graphs_.reset(new cuda_plan::GraphCache(size_t(graph_capacity_), 64, 2, &cuda::graph_destroy));
  }

  void forward(const RaggedBatch& b, const ForwardOptions& opts, const BatchOutputs& out) override {
    const int S = b.n_seqs, N = b.n_tokens, E = c_.hidden;
    if (S == 0) return;
    XLMR_CHECK(N <= cap_tokens_ && b.max_seqlen <= cap_seqlen_, "cuda backend: batch larger than the workspace");
    const cuda::DeviceScope on(gpu_);
    const bool profile = profiler_.enabled();

    // 1. This batch's ids, positions and cu_seqlens: already on their way
    // when the previous call was told about it, else packed and sent now.
    int slot = 0;
    if (opts.prefetched && staged_ >= 0) {
      slot = staged_;
      cuda::stream_wait(stream_, slots_[size_t(slot)].uploaded);
      ++prefetched_;
    } else {
      if (staged_ >= 0) cuda::sync(copy_stream_);  // an unused upload may still read its slot
      cuda_plan::pack_meta(b, c_.position_offset, slots_[0].host.as<int32_t>());
      const size_t words = cuda_plan::meta_words(N, S);
      timed(Kernel::pack, 0, double(words) * 4, [&] {
        cuda::copy_to_device(slots_[0].device.get(), slots_[0].host.get(), words * sizeof(int32_t), stream_);
      });
    }
    staged_ = -1;

    // 2. The forward: replayed from a graph when this shape repeats.
    Outputs want;
    want.hidden = out.hidden != nullptr;
    want.pooled = out.pooled != nullptr && opts.pooling != Pooling::none;
    want.logits = out.logits != nullptr && c_.num_labels > 0;
    XLMR_CHECK(!want.pooled || opts.pooling != Pooling::pooler || pooler_gemm_,
               "this model has no pooler layer (use --pooling cls or mean)");
    cuda_plan::GraphKey key;
    key.n_tokens = N;
    key.n_seqs = S;
    key.max_seqlen = b.max_seqlen;
    key.slot = slot;
    key.pooling = int(opts.pooling);
    key.hidden = want.hidden;
    key.pooled = want.pooled;
    key.logits = want.logits;
    cuda_plan::GraphCache::Handle graph = nullptr;
    const auto action =
        (graphs_ && !profile) ? graphs_->lookup(key, &graph) : cuda_plan::GraphCache::Action::direct;
    if (action == cuda_plan::GraphCache::Action::capture) {
      cuda::capture_begin(stream_);
      try {
        launch_forward(b, slot, opts.pooling, want);
        graph = cuda::capture_end(stream_);
      } catch (const Error&) {
        // A capture that cannot complete leaves nothing behind; run the
        // kernels directly from now on.
        cuda::capture_abort(stream_);
        graphs_->disable();
        graph = nullptr;
      }
      if (graph) graphs_->insert(key, graph);
    }
    if (graph)
      cuda::graph_launch(graph, stream_);
    else
      launch_forward(b, slot, opts.pooling, want);

    // 3. While the GPU works: pack and send the next batch on the copy stream.
    if (opts.next && opts.next->n_seqs > 0 && opts.next->n_tokens <= cap_tokens_ &&
        opts.next->max_seqlen <= cap_seqlen_) {
      const int ns = 1 - slot;
      UploadSlot& u = slots_[size_t(ns)];
      cuda_plan::pack_meta(*opts.next, c_.position_offset, u.host.as<int32_t>());
      cuda::copy_to_device(u.device.get(), u.host.get(),
                           cuda_plan::meta_words(opts.next->n_tokens, opts.next->n_seqs) * sizeof(int32_t),
                           copy_stream_);
      cuda::event_record(u.uploaded, copy_stream_);
      staged_ = ns;
    }

    // 4. Results: one download each, then the host-side normalisation.
    const auto t0 = std::chrono::steady_clock::now();
    if (want.hidden) cuda::copy_to_host(out.hidden, hidden32_.get(), sizeof(float) * size_t(N) * E, stream_);
    if (want.pooled) cuda::copy_to_host(out.pooled, pooled32_.get(), sizeof(float) * size_t(S) * E, stream_);
    if (want.logits)
      cuda::copy_to_host(out.logits, logits32_.get(), sizeof(float) * size_t(S) * size_t(c_.num_labels), stream_);
    cuda::sync(stream_);
    if (want.pooled && opts.normalize) {
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
    if (profile)  // the downloads and the host-side normalisation
      profiler_.add(Kernel::pack, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0, 0);
  }

  BackendStats stats() const override {
    BackendStats st;
    if (graphs_) {
      st.graph_captures = graphs_->captures();
      st.graph_replays = graphs_->replays();
    }
    st.prefetched_batches = prefetched_;
    return st;
  }

 private:
  struct Outputs {
    bool hidden = false, pooled = false, logits = false;
  };
  struct UploadSlot {
    DeviceBuffer device;
    PinnedBuffer host;
    cuda::Event uploaded = nullptr;
  };

  // Profiling serialises: each kernel is timed to its completion. Never
  // active while a graph is captured.
  template <typename F>
  void timed(Kernel k, double flops, double bytes, F&& launch) {
    if (!profiler_.enabled()) {
      launch();
      return;
    }
    cuda::sync(stream_);
    const auto t0 = std::chrono::steady_clock::now();
    launch();
    cuda::sync(stream_);
    profiler_.add(k, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), flops, bytes);
  }

  // Every kernel of one forward, from the uploaded ids to the fp32 results
  // in hidden32_ / pooled32_ / logits32_, on stream_ without a host sync
  // (so that it can be captured into a graph).
  void launch_forward(const RaggedBatch& b, int slot, Pooling pooling, const Outputs& want) {
    const int S = b.n_seqs, N = b.n_tokens, E = c_.hidden, F = c_.ffn;
    const int32_t* d_ids = slots_[size_t(slot)].device.as<int32_t>();
    const int32_t* d_pos = d_ids + N;
    const int32_t* d_cu = d_ids + 2 * size_t(N);
    double attn_work = 0;
    for (int s = 0; s < S; ++s) {
      const double len = b.cu_seqlens[s + 1] - b.cu_seqlens[s];
      attn_work += len * len;
    }
    const double NE = double(N) * E;
    // Post-norm: the sublayers read the stream x. Pre-norm: they read its
    // LayerNorm xn while x carries the sums (NormStep, engine/config.h).
    void* const in = c_.norm == Norm::pre ? xn_.get() : x_.get();
    timed(Kernel::embed_layernorm, 0, NE * elt_ * 3, [&] {
      const NormStep step = norm_after_embedding(c_);
      const DeviceNorm n = norm(step);
      cuda::embed_layernorm(t_, step.keep_sum ? xn_.get() : x_.get(), d_ids, d_pos, word_.get(), pos_.get(),
                            type0_.get(), n.gamma, n.beta, N, E, c_.layer_norm_eps, stream_,
                            step.keep_sum ? x_.get() : nullptr);
    });
    // x += proj + bias, then the step's LayerNorm (into x, or xn for pre-norm).
    auto residual_step = [&](const NormStep& step, const DeviceBuffer& bias) {
      const DeviceNorm n = norm(step);
      cuda::add_bias_residual_layernorm(t_, x_.get(), proj_.get(), bias.as<float>(), n.gamma, n.beta, N, E,
                                        c_.layer_norm_eps, stream_, step.keep_sum ? xn_.get() : nullptr);
    };
    for (size_t li = 0; li < layers_.size(); ++li) {
      const DeviceLayer& l = layers_[li];
      timed(Kernel::qkv_gemm, 2.0 * N * E * 3 * E, 3.0 * E * E * elt_, [&] {
        cuda::lt_gemm_run(qkv_gemm_, qkv_.get(), in, l.qkv_w.get(), l.qkv_b.as<float>(), N, stream_);
      });
      timed(Kernel::attention, 4.0 * attn_work * E, NE * elt_ * 4, [&] {
        cuda::varlen_attention(t_, attention_, attn_.get(), qkv_.get(), d_cu, S, b.max_seqlen, c_.heads,
                               c_.head_dim(), stream_);
      });
      timed(Kernel::out_gemm, 2.0 * N * E * E, double(E) * E * elt_, [&] {
        cuda::lt_gemm_run(out_gemm_, proj_.get(), attn_.get(), l.out_w.get(), nullptr, N, stream_);
      });
      timed(Kernel::residual_ln1, 0, NE * elt_ * 3,
            [&] { residual_step(norm_after_attention(c_, int(li)), l.out_b); });
      timed(Kernel::ffn1_gemm, 2.0 * N * E * F, double(E) * F * elt_, [&] {
        cuda::lt_gemm_run(ffn1_gemm_, ffn_.get(), in, l.ffn1_w.get(), l.ffn1_b.as<float>(), N, stream_);
      });
      timed(Kernel::ffn2_gemm, 2.0 * N * F * E, double(E) * F * elt_, [&] {
        cuda::lt_gemm_run(ffn2_gemm_, proj_.get(), ffn_.get(), l.ffn2_w.get(), nullptr, N, stream_);
      });
      timed(Kernel::residual_ln2, 0, NE * elt_ * 3, [&] { residual_step(norm_after_ffn(c_, int(li)), l.ffn2_b); });
    }

    timed(Kernel::pool_head, 0, 0, [&] {
      if (want.hidden) cuda::convert_to_f32(t_, hidden32_.as<float>(), x_.get(), size_t(N) * E, stream_);
      if ((want.pooled && pooling == Pooling::pooler) || want.logits)
        cuda::gather_first(t_, first_.get(), x_.get(), d_cu, S, E, stream_);
      float* p32 = pooled32_.as<float>();
      if (want.pooled) {
        switch (pooling) {
          case Pooling::cls:
            cuda::gather_first(t_, tmp_.get(), x_.get(), d_cu, S, E, stream_);
            cuda::convert_to_f32(t_, p32, tmp_.get(), size_t(S) * E, stream_);
            break;
          case Pooling::mean: cuda::mean_pool(t_, p32, x_.get(), d_cu, S, E, stream_); break;
          case Pooling::pooler:
            cuda::lt_gemm_run(pooler_gemm_, tmp_.get(), first_.get(), pooler_w_.get(), pooler_b_.as<float>(), S,
                              stream_);
            cuda::activation(t_, tmp_.get(), size_t(S) * E, true, stream_);
            cuda::convert_to_f32(t_, p32, tmp_.get(), size_t(S) * E, stream_);
            break;
          case Pooling::none: break;
        }
      }
      if (want.logits) {
        const int C = c_.num_labels;
        cuda::lt_gemm_run(head_dense_gemm_, tmp_.get(), first_.get(), head_dense_w_.get(), head_dense_b_.as<float>(),
                          S, stream_);
        cuda::activation(t_, tmp_.get(), size_t(S) * E, c_.head_activation == HeadActivation::tanh, stream_);
        cuda::lt_gemm_run(head_out_gemm_, logits16_.get(), tmp_.get(), head_out_w_.get(), head_out_b_.as<float>(),
                          S, stream_);
        cuda::convert_to_f32(t_, logits32_.as<float>(), logits16_.get(), size_t(S) * C, stream_);
      }
    });
  }

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
    if (c_.norm == Norm::post) {
      up32(emb_g_, w_.emb_ln_g, E);
      up32(emb_b_, w_.emb_ln_b, E);
    } else {
      up32(final_g_, w_.final_ln_g, E);
      up32(final_b_, w_.final_ln_b, E);
    }
    // Matrices are read from the file one at a time (an f16/bf16 one widened
    // into `wide` just for the upload), not through weights(), whose matrix
    // pointers the engine releases (Model::release_matrices).
    std::vector<float> wide;
    auto matrix = [&](const std::string& name) { return m_.tensor_f32(name, &wide); };
    layers_ = std::vector<DeviceLayer>(w_.layers.size());
    for (size_t i = 0; i < w_.layers.size(); ++i) {
      const LayerWeights& l = w_.layers[i];
      const int li = int(i);
      DeviceLayer& d = layers_[i];
      up16(d.qkv_w, matrix(layer_tensor(li, "attn.qkv.weight")), 3 * E * E);
      up16(d.out_w, matrix(layer_tensor(li, "attn.out.weight")), E * E);
      up16(d.ffn1_w, matrix(layer_tensor(li, "ffn1.weight")), F * E);
      up16(d.ffn2_w, matrix(layer_tensor(li, "ffn2.weight")), E * F);
      up32(d.qkv_b, l.qkv_b, 3 * E);
      up32(d.out_b, l.out_b, E);
      up32(d.ln1_g, l.ln1_g, E);
      up32(d.ln1_b, l.ln1_b, E);
      up32(d.ffn1_b, l.ffn1_b, F);
      up32(d.ffn2_b, l.ffn2_b, E);
      up32(d.ln2_g, l.ln2_g, E);
      up32(d.ln2_b, l.ln2_b, E);
    }
    if (c_.has_pooler) {
      up16(pooler_w_, matrix("pooler.dense.weight"), E * E);
      up32(pooler_b_, w_.pooler_b, E);
    }
    if (c_.num_labels > 0) {
      up16(head_dense_w_, matrix("head.dense.weight"), E * E);
      up32(head_dense_b_, w_.head_dense_b, E);
      up16(head_out_w_, matrix("head.out.weight"), size_t(c_.num_labels) * E);
      up32(head_out_b_, w_.head_out_b, size_t(c_.num_labels));
    }
    cuda::sync(stream_);
  }

  // Declared first, so destroyed last: see ~CudaBackend.
  struct RestoreDevice {
    int previous = -1;
    ~RestoreDevice() {
      if (previous < 0) return;
      try {
        cuda::set_device(previous);
      } catch (const Error&) {
      }
    }
  } restore_;
  const Model& m_;
  const ModelConfig& c_;
  const ModelWeights& w_;
  const int gpu_;  // the device everything of this engine lives on
  Half16 t_ = Half16::f16;
  cuda::AttentionKernel attention_ = cuda::AttentionKernel::plain;
  size_t elt_ = 2;
  std::string name_;
  cuda::Stream stream_ = nullptr;
  int cap_tokens_ = 0, cap_seqlen_ = 0;

  // The device gamma and beta of a NormStep.
  struct DeviceNorm {
    const float* gamma;
    const float* beta;
  };
  DeviceNorm norm(const NormStep& step) const {
    switch (step.which) {
      case NormStep::emb: return {emb_g_.as<float>(), emb_b_.as<float>()};
      case NormStep::ln1: {
        const DeviceLayer& l = layers_.at(size_t(step.layer));
        return {l.ln1_g.as<float>(), l.ln1_b.as<float>()};
      }
      case NormStep::ln2: {
        const DeviceLayer& l = layers_.at(size_t(step.layer));
        return {l.ln2_g.as<float>(), l.ln2_b.as<float>()};
      }
      case NormStep::final: break;
    }
    return {final_g_.as<float>(), final_b_.as<float>()};
  }

  DeviceBuffer word_, pos_, type0_, emb_g_, emb_b_, final_g_, final_b_;
  std::vector<DeviceLayer> layers_;
  DeviceBuffer pooler_w_, pooler_b_, head_dense_w_, head_dense_b_, head_out_w_, head_out_b_;
  DeviceBuffer x_, xn_, qkv_, attn_, proj_, ffn_, first_, tmp_, logits16_, hidden32_, pooled32_, logits32_;
  UploadSlot slots_[2];  // the current batch's upload and the next one's
  int staged_ = -1;      // slot holding the upload of the batch announced as next
  uint64_t prefetched_ = 0;
  cuda::Stream copy_stream_ = nullptr;
  int graph_capacity_ = 0;
  std::unique_ptr<cuda_plan::GraphCache> graphs_;

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
