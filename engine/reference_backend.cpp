// The reference backend: the unfused "slow path" on a padded [S, L] layout,
// one plain kernel per step of the model (SPEC §2), everything fp32. It is
// deliberately simple; every faster backend is tested against it.
#include <cstring>
#include <vector>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/model.h"
#include "kernels/attention.h"
#include "kernels/embed.h"
#include "kernels/layernorm.h"
#include "kernels/linear.h"
#include "kernels/pooling.h"

namespace xlmr {
namespace {

class ReferenceBackend final : public Backend {
 public:
  explicit ReferenceBackend(const Model& m) : c_(m.config()), w_(m.weights()) {}
  const char* name() const override { return "reference"; }
  bool padded() const override { return true; }

  void reserve(int max_tokens, int max_seqlen) override {
    XLMR_CHECK(max_tokens >= max_seqlen && max_seqlen >= 1, "reference backend: bad workspace request");
    const size_t T = size_t(max_tokens), E = size_t(c_.hidden), F = size_t(c_.ffn);
    cap_tokens_ = max_tokens;
    cap_seqlen_ = max_seqlen;
    x_.assign(T * E, 0.0f);
    xn_.assign(c_.norm == Norm::pre ? T * E : 0, 0.0f);
    qkv_.assign(T * 3 * E, 0.0f);
    attn_.assign(T * E, 0.0f);
    proj_.assign(T * E, 0.0f);
    ffn_.assign(T * F, 0.0f);
    scores_.assign(size_t(max_seqlen), 0.0f);
    ids_.assign(T, 0);
    pos_.assign(T, 0);
    lengths_.assign(T, 0);
    tmp_.assign(E, 0.0f);
  }

  void forward(const RaggedBatch& b, const ForwardOptions& opts, const BatchOutputs& out) override {
    const int S = b.n_seqs, L = b.max_seqlen, E = c_.hidden, F = c_.ffn;
    XLMR_CHECK(L <= cap_seqlen_ && int64_t(S) * L <= cap_tokens_,
               "reference backend: batch larger than the reserved workspace");
    const int T = S * L;

    // Pad: sequence s takes rows [s*L, s*L + len). Real tokens get positions
    // offset, offset+1, ... (2, 3, ... for XLM-R: rows 0 and 1 belong to
    // padding); pad rows use the pad id and a valid position, and are ignored.
    for (int s = 0; s < S; ++s) {
      const int start = b.cu_seqlens[s], len = b.cu_seqlens[s + 1] - start;
      lengths_[s] = len;
      for (int i = 0; i < L; ++i) {
        const size_t r = size_t(s) * L + i;
        ids_[r] = i < len ? b.ids[start + i] : c_.pad_id;
        pos_[r] = i < len ? c_.position_offset + i : (c_.family == Family::xlmr ? c_.pad_id : 0);
      }
    }

    const double TE = double(T) * E, W = 4;  // fp32 bytes
    double attn_work = 0;
    for (int s = 0; s < S; ++s) attn_work += double(lengths_[s]) * lengths_[s];
    // Post-norm: the sublayers read the stream x. Pre-norm: they read its
    // LayerNorm xn, and x carries the sums (NormStep, engine/config.h).
    float* const xn = xn_.data();
    const float* const in = c_.norm == Norm::pre ? xn : x_.data();
    {
      ProfileScope ps(profiler_, Kernel::embed_layernorm, 0, TE * W * 3);
      const NormStep step = norm_after_embedding(c_);
      const NormParams np = norm_params(w_, step);
      EmbedArgs ea{step.keep_sum ? xn : x_.data(), ids_.data(), pos_.data(), w_.word, w_.pos, w_.type0,
                   np.gamma, np.beta, T, E, c_.layer_norm_eps, step.keep_sum ? x_.data() : nullptr};
      ref::embed_layernorm(ea);
    }

    for (int li = 0; li < c_.layers; ++li) {
      const LayerWeights& l = w_.layers[size_t(li)];
      {
        ProfileScope ps(profiler_, Kernel::qkv_gemm, 2.0 * T * E * 3 * E, 3.0 * E * E * W);
        ref::linear(qkv_.data(), in, l.qkv_w, l.qkv_b, T, 3 * E, E);
      }
      {
        ProfileScope ps(profiler_, Kernel::attention, 4.0 * attn_work * E, TE * W * 4);
        ref::attention_padded(attn_.data(), qkv_.data(), lengths_.data(), scores_.data(), S, L, c_.heads,
                              c_.head_dim());
      }
      {
        ProfileScope ps(profiler_, Kernel::out_gemm, 2.0 * T * E * E, double(E) * E * W);
        ref::linear(proj_.data(), attn_.data(), l.out_w, nullptr, T, E, E);
      }
      {
        ProfileScope ps(profiler_, Kernel::residual_ln1, 0, TE * W * 3);
        residual_step(norm_after_attention(c_, li), l.out_b, T);
      }
      {
        ProfileScope ps(profiler_, Kernel::ffn1_gemm, 2.0 * T * E * F, double(E) * F * W);
        ref::linear(ffn_.data(), in, l.ffn1_w, l.ffn1_b, T, F, E, Epilogue::gelu);
      }
      {
        ProfileScope ps(profiler_, Kernel::ffn2_gemm, 2.0 * T * F * E, double(E) * F * W);
        ref::linear(proj_.data(), ffn_.data(), l.ffn2_w, nullptr, T, E, F);
      }
      {
        ProfileScope ps(profiler_, Kernel::residual_ln2, 0, TE * W * 3);
        residual_step(norm_after_ffn(c_, li), l.ffn2_b, T);
      }
    }
    ProfileScope pool(profiler_, Kernel::pool_head, 0, 0);

    for (int s = 0; s < S; ++s) {
      const int start = b.cu_seqlens[s], len = lengths_[s];
      const float* xs = x_.data() + size_t(s) * L * E;  // this sequence's rows
      if (out.hidden) std::memcpy(out.hidden + size_t(start) * E, xs, sizeof(float) * size_t(len) * E);
      if (out.pooled && opts.pooling != Pooling::none) {
        float* p = out.pooled + size_t(s) * E;
        switch (opts.pooling) {
          case Pooling::cls: std::memcpy(p, xs, sizeof(float) * E); break;
          case Pooling::mean: ref::mean_rows(p, xs, len, E); break;
          case Pooling::pooler:
            XLMR_CHECK(w_.pooler_w, "this model has no pooler layer (use --pooling cls or mean)");
            ref::linear(p, xs, w_.pooler_w, w_.pooler_b, 1, E, E, Epilogue::tanh);
            break;
          case Pooling::none: break;
        }
        if (opts.normalize) ref::l2_normalize(p, E);
      }
      if (out.logits && c_.num_labels > 0) {
        const Epilogue act = c_.head_activation == HeadActivation::relu ? Epilogue::relu : Epilogue::tanh;
        ref::classification_head(out.logits + size_t(s) * c_.num_labels, xs, w_.head_dense_w, w_.head_dense_b,
                                 w_.head_out_w, w_.head_out_b, E, c_.num_labels, act, tmp_.data());
      }
    }
  }

 private:
  // x += proj + bias, then the step's LayerNorm (into x, or into xn for pre-norm).
  void residual_step(const NormStep& step, const float* bias, int T) {
    const NormParams np = norm_params(w_, step);
    ref::add_bias_residual_layernorm({x_.data(), proj_.data(), bias, np.gamma, np.beta, T, c_.hidden,
                                      c_.layer_norm_eps, step.keep_sum ? xn_.data() : nullptr});
  }

  const ModelConfig& c_;
  const ModelWeights& w_;
  int cap_tokens_ = 0, cap_seqlen_ = 0;
  std::vector<float> x_;       // [T, E] residual stream
  std::vector<float> xn_;      // [T, E] pre-norm: LayerNorm of x, the sublayers' input
  std::vector<float> qkv_;     // [T, 3E]
  std::vector<float> attn_;    // [T, E]
  std::vector<float> proj_;    // [T, E] sublayer output before bias
  std::vector<float> ffn_;     // [T, F]
  std::vector<float> scores_;  // [L] one attention row
  std::vector<int32_t> ids_;   // [T] padded ids
  std::vector<int32_t> pos_;   // [T] padded positions
  std::vector<int32_t> lengths_;  // [S]
  std::vector<float> tmp_;     // [E] head scratch
};

}  // namespace

std::unique_ptr<Backend> make_reference_backend(const Model& model) {
  return std::unique_ptr<Backend>(new ReferenceBackend(model));
}

}  // namespace xlmr
