// The fused CPU backend: the "fastpath". Per layer, six steps on a packed
// [N, E] token matrix with no padding (DESIGN §2):
//   QKV GEMM+bias -> varlen attention -> out-proj GEMM -> bias+residual+LN
//   -> FFN1 GEMM+bias+GELU -> FFN2 GEMM -> bias+residual+LN
// GEMMs are oneDNN matmuls on weights packed at load (kernels/cpu/gemm.h);
// the rest are the AVX-512/AVX2 kernels of kernels/cpu. Every buffer is sized
// in reserve(); forward() never allocates.
#include "engine/backend.h"

#ifdef XLMR_HAVE_ONEDNN

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "engine/cpu_threads.h"
#include "engine/error.h"
#include "engine/int8_equalize.h"
#include "engine/model.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/gemm.h"
#include "kernels/pooling.h"
#include "weights/schema.h"

namespace xlmr {
namespace {

using cpu::Gemm;
using cpu::GemmSpec;
using cpu::PackedWeights;

// 64-byte aligned, zero-initialised storage that never reallocates in forward.
template <typename T>
class Buffer {
 public:
  void resize(size_t n) {
    data_.assign(n + 64 / sizeof(T), T(0));
    off_ = (64 - reinterpret_cast<uintptr_t>(data_.data()) % 64) % 64 / sizeof(T);
  }
  T* get() { return data_.data() + off_; }
  size_t size() const { return data_.empty() ? 0 : data_.size() - 64 / sizeof(T); }

 private:
  std::vector<T> data_;
  size_t off_ = 0;
};

struct LayerPack {
  std::unique_ptr<PackedWeights> qkv, out, ffn1, ffn2;
};

class CpuBackend final : public Backend {
 public:
  CpuBackend(const Model& m, const CpuBackendOptions& o) : m_(m), c_(m.config()), w_(m.weights()), opts_(o) {
    isa_ = cpu::choose_isa(o.isa);
    XLMR_CHECK(o.threads >= 0, "threads must be >= 0");
    const CpuThreadBudget budget = cpu_thread_budget();
    threads_ = o.threads > 0 ? o.threads : budget.threads;
    XLMR_CHECK(o.precision != Precision::f16,
               "f16 compute is for the CUDA path; on CPU use --dtype f32, bf16 or int8");
    bf16_ = o.precision == Precision::bf16;
    int8_ = o.precision == Precision::int8;
    if (bf16_) {
      XLMR_CHECK(isa_ == cpu::Isa::avx512 && __builtin_cpu_supports("avx512bw"),
                 "bf16 compute needs AVX-512 (this CPU or the chosen --isa has only AVX2); use --dtype f32");
    }
    // Attention's products: bf16 by default with bf16 GEMMs where they can
    // run so (AMX, or AVX512_BF16 dot products); with int8 GEMMs only when
    // asked, since on the PyTorch fixtures it lowers int8's worst token
    // further than the int8 GEMMs' own rounding does (docs/BENCHMARKS.md).
    const bool low = bf16_ || int8_;
    const cpu::Bf16Unit unit = low || o.attention ? cpu::best_bf16_unit(isa_, c_.head_dim()) : cpu::Bf16Unit::none;
    bf16_unit_ = unit;  // the kernel runs on the unit describe() names
    if (o.attention) {
      XLMR_CHECK(*o.attention != Precision::f16, "attention precision must be f32 or bf16");
      XLMR_CHECK(*o.attention == Precision::f32 || low,
                 "bf16 attention runs with bf16 or int8 GEMMs (--dtype bf16 or int8); with f32 GEMMs attention is "
                 "f32");
      XLMR_CHECK(*o.attention == Precision::f32 || unit != cpu::Bf16Unit::none,
                 "bf16 attention needs AVX512_BF16 or AMX-BF16, which this CPU (or its OS, or --isa) does not "
                 "offer, and a head dim of 32, 64, 96 or 128 (this model's is " + std::to_string(c_.head_dim()) +
                     "); use --attention f32");
      products_ = *o.attention == Precision::bf16 ? cpu::AttentionProducts::bf16 : cpu::AttentionProducts::f32;
    } else if (bf16_ && unit != cpu::Bf16Unit::none) {
      products_ = cpu::AttentionProducts::bf16;
    } else if (bf16_ && cpu::has_bf16_attention(isa_, 64)) {
      notes_.push_back("attention's products run in f32: the bf16 kernels take head dims 32, 64, 96 and 128, this "
                       "model's is " + std::to_string(c_.head_dim()));
    }
    const std::string why = oversubscribed(threads_, budget);
    if (!why.empty()) notes_.push_back(why);
    if (int8_ && !cpu::has_vnni_int8_gemm())
      notes_.push_back("--dtype int8 without VNNI (this CPU, or DNNL_MAX_CPU_ISA): oneDNN sums pairs of 8-bit "
                       "products in 16 bits, which could saturate, so the weights are quantized to 7 bits (+-63): "
                       "twice the rounding of the weights, and less speed than on a CPU with VNNI");
    name_ = std::string("cpu-fused (") + cpu::to_string(isa_) + ", " + to_string(o.precision) + ", " +
            (o.padded ? "padded" : "ragged") + ", " + std::to_string(threads_) + " threads" +
            (products_ == cpu::AttentionProducts::bf16 ? std::string(", bf16 attention on ") + cpu::to_string(unit)
                                                       : std::string()) +
            (int8_ && !o.int8_equalize ? ", not equalized" : "") + ")";
    env_ = cpu::make_gemm_env();
  }

  const char* name() const override { return name_.c_str(); }
  bool padded() const override { return opts_.padded; }
  bool keeps_own_matrices() const override { return true; }

  void reserve(int max_tokens, int max_seqlen) override {
    XLMR_CHECK(max_tokens >= max_seqlen && max_seqlen >= 1, "cpu backend: bad workspace request");
    const int E = c_.hidden, F = c_.ffn, C = std::max(c_.num_labels, 1);
    cap_tokens_ = max_tokens;
    cap_seqlen_ = max_seqlen;
    const int max_seqs = max_tokens;  // every sequence has at least one token
    const Precision p = bf16_ ? Precision::bf16 : int8_ ? Precision::int8 : Precision::f32;

    // GEMMs are shared by all layers: only the packed weights differ.
    qkv_gemm_.reset(new Gemm(env_, GemmSpec{E, 3 * E, Epilogue::none, true, p, false, false, isa_}, max_tokens));
    out_gemm_.reset(new Gemm(env_, GemmSpec{E, E, Epilogue::none, false, p, false, false, isa_}, max_tokens));
    ffn1_gemm_.reset(new Gemm(env_, GemmSpec{E, F, Epilogue::gelu, true, p, bf16_, false, isa_}, max_tokens));
    ffn2_gemm_.reset(new Gemm(env_, GemmSpec{F, E, Epilogue::none, false, p, false, false, isa_}, max_tokens));
    layers_.clear();
    // Matrices are read from the file one at a time (an f16/bf16 one widened
    // into `wide` just for packing), not through weights(), whose matrix
    // pointers the engine releases (Model::release_matrices).
    std::vector<float> wide;
    auto matrix = [&](const std::string& name) { return m_.tensor_f32(name, &wide); };
    // int8: each GEMM's input channels are equalized (engine/int8_equalize.h)
    // from the LayerNorm that makes its input, or that LayerNorm's output
    // through V (the out-projection's input) or FFN1 (FFN2's).
    const bool equalize = int8_ && opts_.int8_equalize;
    std::vector<float> s;  // the scales of the matrix being packed
    auto scales = [&](const float* w, int out, int in, auto input_range) -> const float* {
      if (!equalize) return nullptr;
      s = int8_equalization_scales(input_range(), w, out, in);
      return s.data();
    };
    for (size_t i = 0; i < w_.layers.size(); ++i) {
      const LayerWeights& l = w_.layers[i];
      const int li = int(i);
      const NormParams attn_ln = norm_params(w_, li == 0 ? norm_after_embedding(c_) : norm_after_ffn(c_, li - 1));
      const NormParams ffn_ln = norm_params(w_, norm_after_attention(c_, li));
      std::vector<float> v_range, h_range;  // of V and of GELU(FFN1), while their matrix is at hand
      LayerPack lp;
      // Each matrix is done with before the next is read (into `wide`).
      const float* w = matrix(layer_tensor(li, "attn.qkv.weight"));
      if (equalize)
        v_range = linear_output_range(w + size_t(2) * E * E, l.qkv_b + 2 * E, E, E, attn_ln.gamma, attn_ln.beta, false);
      lp.qkv = qkv_gemm_->pack(w, l.qkv_b, scales(w, 3 * E, E, [&] {
        return layernorm_output_range(attn_ln.gamma, attn_ln.beta, E);
      }));
      w = matrix(layer_tensor(li, "attn.out.weight"));
      lp.out = out_gemm_->pack(w, nullptr, scales(w, E, E, [&] { return v_range; }));
      w = matrix(layer_tensor(li, "ffn1.weight"));
      if (equalize) h_range = linear_output_range(w, l.ffn1_b, F, E, ffn_ln.gamma, ffn_ln.beta, true);
      lp.ffn1 = ffn1_gemm_->pack(w, l.ffn1_b, scales(w, F, E, [&] {
        return layernorm_output_range(ffn_ln.gamma, ffn_ln.beta, E);
      }));
      w = matrix(layer_tensor(li, "ffn2.weight"));
      lp.ffn2 = ffn2_gemm_->pack(w, nullptr, scales(w, E, F, [&] { return h_range; }));
      layers_.push_back(std::move(lp));
    }
    // Sentence-level layers run on the [S, E] matrix of first tokens, in f32.
    const Epilogue act = c_.head_activation == HeadActivation::relu ? Epilogue::relu : Epilogue::tanh;
    size_t scratch = std::max({qkv_gemm_->scratchpad_bytes(), out_gemm_->scratchpad_bytes(),
                               ffn1_gemm_->scratchpad_bytes(), ffn2_gemm_->scratchpad_bytes()});
    if (c_.has_pooler) {
      pooler_gemm_.reset(new Gemm(env_, GemmSpec{E, E, Epilogue::tanh, true, Precision::f32, false, true}, max_seqs));
      pooler_ = pooler_gemm_->pack(matrix("pooler.dense.weight"), w_.pooler_b);
      scratch = std::max(scratch, pooler_gemm_->scratchpad_bytes());
    }
    if (c_.num_labels > 0) {
      head_dense_gemm_.reset(new Gemm(env_, GemmSpec{E, E, act, true, Precision::f32, false, true}, max_seqs));
      head_out_gemm_.reset(
          new Gemm(env_, GemmSpec{E, c_.num_labels, Epilogue::none, true, Precision::f32, false, true}, max_seqs));
      head_dense_ = head_dense_gemm_->pack(matrix("head.dense.weight"), w_.head_dense_b);
      head_out_ = head_out_gemm_->pack(matrix("head.out.weight"), w_.head_out_b);
      scratch = std::max({scratch, head_dense_gemm_->scratchpad_bytes(), head_out_gemm_->scratchpad_bytes()});
    }
    scratchpad_.resize(scratch + 64);

    const size_t T = size_t(cpu::gemm_padded_rows(max_tokens));
    const size_t S = size_t(cpu::gemm_padded_rows(max_seqs, true));
    x_.resize(T * E);
    if (c_.norm == Norm::pre) xn_.resize(T * E);
    qkv_.resize(T * 3 * E);
    attn_.resize(T * E);
    proj_.resize(T * E);
    if (bf16_) {
      x16_.resize(T * E);
      attn16_.resize(T * E);
      ffn16_.resize(T * F);
    } else {
      ffn_.resize(T * F);
    }
    ids_.assign(size_t(max_tokens), 0);
    pos_.assign(size_t(max_tokens), 0);
    cu_.assign(size_t(max_seqs) + 1, 0);
    kv_.assign(size_t(max_seqs), 0);
    first_.resize(S * E);
    head_tmp_.resize(S * E);
    logits_.resize(S * size_t(C));
    attn_ws_.reserve(max_tokens, c_.heads, c_.head_dim(), threads_, max_seqlen);
  }

  void forward(const RaggedBatch& b, const ForwardOptions& opts, const BatchOutputs& out) override {
    const int S = b.n_seqs, E = c_.hidden, F = c_.ffn, H = c_.heads;
    if (S == 0) return;
    XLMR_CHECK(b.max_seqlen <= cap_seqlen_, "cpu backend: sequence longer than the reserved workspace");
    const bool padded = opts_.padded;
    const int L = b.max_seqlen;
    const int N = padded ? S * L : b.n_tokens;  // rows the layers run on
    XLMR_CHECK(N <= cap_tokens_, "cpu backend: batch larger than the reserved workspace");
    // OpenMP's thread count is per calling thread: set it for this call, where
    // oneDNN reads it, so GEMMs and our kernels share one pool of threads_;
    // the caller's own setting comes back on return (or throw).
    struct ThreadCountScope {
      int saved = omp_get_max_threads();
      explicit ThreadCountScope(int n) { omp_set_num_threads(n); }
      ~ThreadCountScope() { omp_set_num_threads(saved); }
    } thread_scope(threads_);

    // Row layout: ragged rows are the batch itself; padded rows give every
    // sequence L rows, the tail filled with the pad token.
    double attn_work = 0;  // sum over sequences of query rows x keys
    {
      ProfileScope ps(profiler_, Kernel::pack, 0, double(N) * 8);
      int32_t* cu = cu_.data();
      cu[0] = 0;
      for (int s = 0; s < S; ++s) {
        const int start = b.cu_seqlens[s], len = b.cu_seqlens[s + 1] - start;
        const int row0 = padded ? s * L : start;
        const int rows = padded ? L : len;
        cu[s + 1] = row0 + rows;
        kv_[size_t(s)] = len;
        attn_work += double(rows) * len;
        for (int i = 0; i < rows; ++i) {
          const bool real = i < len;
          ids_[size_t(row0 + i)] = real ? b.ids[start + i] : c_.pad_id;
          pos_[size_t(row0 + i)] = real ? c_.position_offset + i : (c_.family == Family::xlmr ? c_.pad_id : 0);
        }
      }
    }
    const double NE = double(N) * E;
    uint16_t* x16 = bf16_ ? x16_.get() : nullptr;
    // The sublayers' input: the stream x (post-norm) or its LayerNorm xn
    // (pre-norm); in bf16 mode the LayerNorm kernels' bf16 copy of either.
    float* const xn = xn_.get();
    const bool pre = c_.norm == Norm::pre;
    const void* x_in = bf16_ ? static_cast<const void*>(x16_.get())
                             : static_cast<const void*>(pre ? xn : x_.get());
    const void* attn_in = bf16_ ? static_cast<const void*>(attn16_.get()) : static_cast<const void*>(attn_.get());
    void* ffn_buf = bf16_ ? static_cast<void*>(ffn16_.get()) : static_cast<void*>(ffn_.get());
    const double act_bytes = bf16_ ? 2 : 4;
    void* scratch = scratchpad_.get();

    {
      ProfileScope ps(profiler_, Kernel::embed_layernorm, 0, NE * 4 * 4);
      const NormStep step = norm_after_embedding(c_);
      const NormParams np = norm_params(w_, step);
      EmbedArgs ea{step.keep_sum ? xn : x_.get(), ids_.data(), pos_.data(), w_.word, w_.pos, w_.type0,
                   np.gamma, np.beta, N, E, c_.layer_norm_eps, step.keep_sum ? x_.get() : nullptr};
      cpu::embed_layernorm(isa_, ea, x16, threads_);
    }

    const double wbytes = bf16_ ? 2 : int8_ ? 1 : 4;
    // x += proj + bias, then the step's LayerNorm (into x, or xn for pre-norm).
    auto residual_step = [&](const NormStep& step, const float* bias) {
      const NormParams np = norm_params(w_, step);
      cpu::add_bias_residual_layernorm(isa_,
                                       {x_.get(), proj_.get(), bias, np.gamma, np.beta, N, E, c_.layer_norm_eps,
                                        step.keep_sum ? xn : nullptr},
                                       x16, threads_);
    };
    for (size_t li = 0; li < layers_.size(); ++li) {
      const LayerWeights& l = w_.layers[li];
      const LayerPack& lp = layers_[li];
      {
        ProfileScope ps(profiler_, Kernel::qkv_gemm, 2.0 * N * E * 3 * E, 3.0 * E * E * wbytes);
        qkv_gemm_->run(*lp.qkv, x_in, qkv_.get(), N, scratch);
      }
      {
        ProfileScope ps(profiler_, Kernel::attention, 4.0 * attn_work * E, NE * 4 * 4);
        cpu::VarlenAttentionArgs aa{attn_.get(), bf16_ ? attn16_.get() : nullptr, qkv_.get(), cu_.data(),
                                    padded ? kv_.data() : nullptr, S, E, H, products_, bf16_unit_};
        cpu::varlen_attention(isa_, aa, attn_ws_, threads_);
      }
      {
        ProfileScope ps(profiler_, Kernel::out_gemm, 2.0 * N * E * E, double(E) * E * wbytes);
        out_gemm_->run(*lp.out, attn_in, proj_.get(), N, scratch);
      }
      {
        ProfileScope ps(profiler_, Kernel::residual_ln1, 0, NE * (12 + (bf16_ ? 2 : 0)));
        residual_step(norm_after_attention(c_, int(li)), l.out_b);
      }
      {
        ProfileScope ps(profiler_, Kernel::ffn1_gemm, 2.0 * N * E * F, double(E) * F * wbytes);
        ffn1_gemm_->run(*lp.ffn1, x_in, ffn_buf, N, scratch);
      }
      {
        ProfileScope ps(profiler_, Kernel::ffn2_gemm, 2.0 * N * F * E, double(E) * F * wbytes + double(N) * F * act_bytes);
        ffn2_gemm_->run(*lp.ffn2, ffn_buf, proj_.get(), N, scratch);
      }
      {
        ProfileScope ps(profiler_, Kernel::residual_ln2, 0, NE * (12 + (bf16_ ? 2 : 0)));
        residual_step(norm_after_ffn(c_, int(li)), l.ffn2_b);
      }
    }

    ProfileScope ps(profiler_, Kernel::pool_head, 0, 0);
    const float* x = x_.get();
    auto seq_rows = [&](int s) { return x + size_t(cu_[size_t(s)]) * E; };
    if (out.hidden) {
      for (int s = 0; s < S; ++s) {
        const int start = b.cu_seqlens[s], len = b.cu_seqlens[s + 1] - start;
        std::memcpy(out.hidden + size_t(start) * E, seq_rows(s), sizeof(float) * size_t(len) * E);
      }
    }
    const bool need_first = (out.pooled && opts.pooling == Pooling::pooler) || (out.logits && c_.num_labels > 0);
    if (need_first) {
      for (int s = 0; s < S; ++s) std::memcpy(first_.get() + size_t(s) * E, seq_rows(s), sizeof(float) * E);
    }
    if (out.pooled && opts.pooling != Pooling::none) {
      if (opts.pooling == Pooling::pooler) {
        XLMR_CHECK(pooler_, "this model has no pooler layer (use --pooling cls or mean)");
        pooler_gemm_->run(*pooler_, first_.get(), head_tmp_.get(), S, scratch);
        std::memcpy(out.pooled, head_tmp_.get(), sizeof(float) * size_t(S) * E);
      }
      for (int s = 0; s < S; ++s) {
        float* p = out.pooled + size_t(s) * E;
        if (opts.pooling == Pooling::cls) std::memcpy(p, seq_rows(s), sizeof(float) * E);
        if (opts.pooling == Pooling::mean) ref::mean_rows(p, seq_rows(s), kv_[size_t(s)], E);
        if (opts.normalize) ref::l2_normalize(p, E);
      }
    }
    if (out.logits && c_.num_labels > 0) {
      head_dense_gemm_->run(*head_dense_, first_.get(), head_tmp_.get(), S, scratch);
      head_out_gemm_->run(*head_out_, head_tmp_.get(), logits_.get(), S, scratch);
      std::memcpy(out.logits, logits_.get(), sizeof(float) * size_t(S) * c_.num_labels);
    }
  }

 private:
  const Model& m_;
  const ModelConfig& c_;
  const ModelWeights& w_;
  CpuBackendOptions opts_;
  cpu::Isa isa_ = cpu::Isa::avx2;
  int threads_ = 1;
  bool bf16_ = false;
  bool int8_ = false;  // the layers' GEMMs on int8 operands (f32 activations in between)
  cpu::AttentionProducts products_ = cpu::AttentionProducts::f32;
  cpu::Bf16Unit bf16_unit_ = cpu::Bf16Unit::none;  // with bf16 products: where they run
  std::string name_;
  int cap_tokens_ = 0, cap_seqlen_ = 0;
  std::shared_ptr<cpu::GemmEnv> env_;
  std::unique_ptr<Gemm> qkv_gemm_, out_gemm_, ffn1_gemm_, ffn2_gemm_;
  std::unique_ptr<Gemm> pooler_gemm_, head_dense_gemm_, head_out_gemm_;
  std::vector<LayerPack> layers_;
  std::unique_ptr<PackedWeights> pooler_, head_dense_, head_out_;
  Buffer<char> scratchpad_;
  Buffer<float> x_, xn_, qkv_, attn_, proj_, ffn_, first_, head_tmp_, logits_;
  Buffer<uint16_t> x16_, attn16_, ffn16_;
  std::vector<int32_t> ids_, pos_, cu_, kv_;
  cpu::AttentionWorkspace attn_ws_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const Model& model, const CpuBackendOptions& opts) {
  return std::unique_ptr<Backend>(new CpuBackend(model, opts));
}

bool cpu_has_native_bf16_gemm() { return cpu::has_native_bf16_gemm(); }

}  // namespace xlmr

#else  // !XLMR_HAVE_ONEDNN

#include "engine/error.h"

namespace xlmr {
std::unique_ptr<Backend> make_cpu_backend(const Model&, const CpuBackendOptions&) {
  XLMR_THROW("this build has no fused CPU path (configured without oneDNN); use --path reference");
}
bool cpu_has_native_bf16_gemm() { return false; }
}  // namespace xlmr

#endif
