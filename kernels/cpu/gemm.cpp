#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/error.h"

namespace xlmr {
namespace cpu {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

class GemmEnv {
 public:
  GemmEnv() : eng(dnnl::engine::kind::cpu, 0), strm(eng) {}
  dnnl::engine eng;
  dnnl::stream strm;
};

std::shared_ptr<GemmEnv> make_gemm_env() {
  try {
    return std::make_shared<GemmEnv>();
  } catch (const dnnl::error& e) {
    XLMR_THROW(std::string("oneDNN: cannot create a CPU engine: ") + e.what());
  }
}

bool has_native_bf16_gemm() {
  // cpu_isa values are bit sets: an ISA includes every bit of those below it.
  const auto bits = [](dnnl::cpu_isa isa) { return static_cast<unsigned>(isa); };
  const unsigned need = bits(dnnl::cpu_isa::avx512_core_bf16);
  return (bits(dnnl::get_effective_cpu_isa()) & need) == need;
}

bool has_vnni_int8_gemm() {
  const auto bits = [](dnnl::cpu_isa isa) { return static_cast<unsigned>(isa); };
  const unsigned have = bits(dnnl::get_effective_cpu_isa());
  for (dnnl::cpu_isa isa : {dnnl::cpu_isa::avx512_core_vnni, dnnl::cpu_isa::avx2_vnni})
    if ((have & bits(isa)) == bits(isa)) return true;
  return false;
}

int int8_weight_max() { return has_vnni_int8_gemm() ? 127 : 63; }

namespace {

constexpr int kMaxChunk = 1024;

// Ascending row counts with a primitive of their own.
std::vector<int> bucket_rows(int max_rows, bool coarse) {
  std::vector<int> b;
  const int cap = std::min(max_rows, kMaxChunk);
  auto add = [&](int r) { b.push_back(r); return r >= cap; };
  if (coarse) {
    for (int r = 1; r <= kMaxChunk; r *= 2) if (add(r)) return b;
    return b;
  }
  for (int r = 1; r <= 16; ++r) if (add(r)) return b;
  for (int r = 32; r <= 256; r += 16) if (add(r)) return b;
  for (int r = 320; r <= kMaxChunk; r += 64) if (add(r)) return b;
  return b;
}

int round_to_bucket(int rows, bool coarse) {
  if (coarse) {
    int r = 1;
    while (r < rows) r *= 2;
    return r;
  }
  if (rows <= 16) return rows;
  if (rows <= 256) return (rows + 15) / 16 * 16;
  return (rows + 63) / 64 * 64;
}

dnnl::algorithm eltwise_of(Epilogue e) {
  switch (e) {
    case Epilogue::gelu: return dnnl::algorithm::eltwise_gelu_erf;
    case Epilogue::relu: return dnnl::algorithm::eltwise_relu;
    case Epilogue::tanh: return dnnl::algorithm::eltwise_tanh;
    case Epilogue::none: break;
  }
  return dnnl::algorithm::undef;
}

}  // namespace

int gemm_padded_rows(int M, bool coarse) {
  if (M <= 0) return 0;
  const int full = (M - 1) / kMaxChunk;  // whole chunks before the last one
  return full * kMaxChunk + round_to_bucket(M - full * kMaxChunk, coarse);
}

struct Gemm::Bucket {
  int rows = 0;
  dnnl::matmul prim;
  memory src, dst, scratch;  // descriptors for this bucket; data handles set per run
};

struct Gemm::Impl {
  memory::desc weights_desc;
  std::string impl_name;
  // int8: where run() keeps the quantized src in the scratchpad, after oneDNN's own.
  size_t row_scales_at = 0, row_zero_at = 0, q_at = 0;
};

struct PackedWeights::Impl {
  memory weights;
  memory bias;
  bool has_bias = false;
  // int8: each output channel's weight scale and sum of int8 weights, and the bias.
  std::vector<float> col_scales;
  std::vector<int32_t> col_sums;
  const float* bias_ptr = nullptr;
  std::vector<float> col_mul;  // int8 with input channel scales s: 1 / s, applied as src is quantized
};

PackedWeights::PackedWeights() : impl_(new Impl) {}
PackedWeights::~PackedWeights() = default;
size_t PackedWeights::bytes() const {
  return impl_->weights.get_desc().get_size() + impl_->col_scales.size() * sizeof(float) +
         impl_->col_sums.size() * sizeof(int32_t) + impl_->col_mul.size() * sizeof(float);
}

namespace {
size_t round_up64(size_t n) { return (n + 63) / 64 * 64; }
}  // namespace

Gemm::~Gemm() = default;

Gemm::Gemm(std::shared_ptr<GemmEnv> env, const GemmSpec& spec, int max_rows)
    : env_(std::move(env)), spec_(spec), max_rows_(max_rows), impl_(new Impl) {
  XLMR_CHECK(spec.in >= 1 && spec.out >= 1 && max_rows >= 1, "gemm: bad shape");
  XLMR_CHECK(spec.precision != Precision::f16, "gemm: f16 is for the CUDA path");
  const bool int8 = spec.precision == Precision::int8;
  XLMR_CHECK(!int8 || (!spec.bf16_out && (spec.epilogue == Epilogue::none || spec.epilogue == Epilogue::gelu)),
             "gemm: an int8 GEMM writes f32, with no epilogue or GELU");
  // |sum of K products of uint8 and int8| <= 255 * 127 * K must fit in int32.
  XLMR_CHECK(!int8 || spec.in <= 66000, "gemm: an int8 GEMM's sums of " + std::to_string(spec.in) +
                                            " products could overflow int32 (at most 66000)");
  const dt in_t = spec.precision == Precision::bf16 ? dt::bf16 : int8 ? dt::u8 : dt::f32;
  const dt w_t = int8 ? dt::s8 : in_t;
  const dt out_t = spec.bf16_out ? dt::bf16 : int8 ? dt::s32 : dt::f32;
  const memory::dim I = spec.in, O = spec.out;
  try {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (!int8 && spec.epilogue != Epilogue::none) {  // int8: dequantize_rows applies it
      dnnl::post_ops po;
      po.append_eltwise(1.0f, eltwise_of(spec.epilogue), 0.0f, 0.0f);
      attr.set_post_ops(po);
    }
    const bool bias_in_gemm = spec.bias && !int8;  // int8: added by dequantize_rows
    const memory::desc w_any({I, O}, w_t, tag::any);
    const memory::desc bias_d({1, O}, dt::f32, tag::ab);
    for (int rows : bucket_rows(max_rows, spec.coarse)) {
      const memory::desc src_d({rows, I}, in_t, tag::ab), dst_d({rows, O}, out_t, tag::ab);
      const dnnl::matmul::desc md = bias_in_gemm ? dnnl::matmul::desc(src_d, w_any, bias_d, dst_d)
                                                 : dnnl::matmul::desc(src_d, w_any, dst_d);
      dnnl::matmul::primitive_desc pd(md, attr, env_->eng);
      if (buckets_.empty()) {
        impl_->weights_desc = pd.weights_desc();
        impl_->impl_name = pd.impl_info_str();
      } else if (!(pd.weights_desc() == impl_->weights_desc)) {
        // The layout must be shared by every bucket; ask for it explicitly.
        dnnl::matmul::desc md2 = bias_in_gemm ? dnnl::matmul::desc(src_d, impl_->weights_desc, bias_d, dst_d)
                                              : dnnl::matmul::desc(src_d, impl_->weights_desc, dst_d);
        pd = dnnl::matmul::primitive_desc(md2, attr, env_->eng);
      }
      std::unique_ptr<Bucket> b(new Bucket);
      b->rows = rows;
      b->prim = dnnl::matmul(pd);
      b->src = memory(src_d, env_->eng, DNNL_MEMORY_NONE);
      b->dst = memory(dst_d, env_->eng, DNNL_MEMORY_NONE);
      b->scratch = memory(pd.scratchpad_desc(), env_->eng, DNNL_MEMORY_NONE);
      scratch_bytes_ = std::max(scratch_bytes_, pd.scratchpad_desc().get_size());
      buckets_.push_back(std::move(b));
    }
    if (int8) {
      const size_t rows = size_t(gemm_padded_rows(max_rows, spec.coarse));
      impl_->row_scales_at = round_up64(scratch_bytes_);
      impl_->row_zero_at = impl_->row_scales_at + round_up64(rows * sizeof(float));
      impl_->q_at = impl_->row_zero_at + round_up64(rows * sizeof(int32_t));
      scratch_bytes_ = impl_->q_at + round_up64(rows * size_t(I));
    }
  } catch (const dnnl::error& e) {
    XLMR_THROW("oneDNN: cannot build a " + std::to_string(spec.in) + "x" + std::to_string(spec.out) + " " +
               to_string(spec.precision) + " matmul: " + e.what());
  }
}

const char* Gemm::impl_name() const { return impl_->impl_name.c_str(); }

std::unique_ptr<PackedWeights> Gemm::pack(const float* w, const float* bias, const float* in_scale) const {
  XLMR_CHECK(w, "gemm: missing weights");
  XLMR_CHECK(!spec_.bias || bias, "gemm: missing bias");
  XLMR_CHECK(!in_scale || spec_.precision == Precision::int8, "gemm: input channel scales are for int8 GEMMs");
  std::unique_ptr<PackedWeights> p(new PackedWeights);
  try {
    // W is [O, I] row-major, i.e. the [I, O] matrix the matmul wants in
    // column-major ("ba") order: a reorder reads it in place.
    std::vector<int8_t> q;
    const void* user_data = w;
    dt user_t = dt::f32;
    if (spec_.precision == Precision::int8) {  // each output channel: int8 and its scale
      const size_t O = size_t(spec_.out), I = size_t(spec_.in);
      const float qmax = float(int8_weight_max());
      q.resize(O * I);
      p->impl_->col_scales.resize(O);
      if (in_scale) {  // W diag(s) is what gets quantized; run() quantizes x diag(1 / s)
        p->impl_->col_mul.resize(I);
        for (size_t i = 0; i < I; ++i) {
          XLMR_CHECK(std::isfinite(in_scale[i]) && in_scale[i] > 0.0f, "gemm: input channel scales must be positive");
          p->impl_->col_mul[i] = 1.0f / in_scale[i];
        }
        // A block of rows at a time, so that the scaled copy stays small
        // whatever the matrix (each row is quantized on its own anyway).
        constexpr size_t kRows = 256;
        std::vector<float> scaled(std::min(kRows, O) * I);
        for (size_t o0 = 0; o0 < O; o0 += kRows) {
          const size_t n = std::min(kRows, O - o0);
          for (size_t o = 0; o < n; ++o)
            for (size_t i = 0; i < I; ++i) scaled[o * I + i] = w[(o0 + o) * I + i] * in_scale[i];
          quantize_rows_s8(spec_.isa, {q.data() + o0 * I, p->impl_->col_scales.data() + o0, scaled.data(), int(n),
                                       spec_.in, qmax}, 0);
        }
      } else {
        quantize_rows_s8(spec_.isa, {q.data(), p->impl_->col_scales.data(), w, spec_.out, spec_.in, qmax}, 0);
      }
      p->impl_->col_sums.assign(size_t(spec_.out), 0);
      for (size_t o = 0; o < size_t(spec_.out); ++o)
        for (size_t i = 0; i < size_t(spec_.in); ++i) p->impl_->col_sums[o] += q[o * size_t(spec_.in) + i];
      p->impl_->bias_ptr = spec_.bias ? bias : nullptr;
      user_data = q.data();
      user_t = dt::s8;
    }
    const memory::desc user_d({spec_.in, spec_.out}, user_t, tag::ba);
    memory user(user_d, env_->eng, const_cast<void*>(user_data));
    p->impl_->weights = memory(impl_->weights_desc, env_->eng);
    dnnl::reorder(user, p->impl_->weights).execute(env_->strm, user, p->impl_->weights);
    env_->strm.wait();
    if (spec_.bias && spec_.precision != Precision::int8) {
      p->impl_->bias = memory(memory::desc({1, spec_.out}, dt::f32, tag::ab), env_->eng, const_cast<float*>(bias));
      p->impl_->has_bias = true;
    }
  } catch (const dnnl::error& e) {
    XLMR_THROW(std::string("oneDNN: cannot pack weights: ") + e.what());
  }
  return p;
}

void Gemm::run(const PackedWeights& w, const void* src, void* dst, int M, void* scratchpad) const {
  XLMR_CHECK(M >= 0 && M <= max_rows_, "gemm: more rows than the GEMM was built for");
  const bool int8 = spec_.precision == Precision::int8;
  const size_t in_row = size_t(spec_.in) * (spec_.precision == Precision::bf16 ? 2 : int8 ? 1 : 4);
  const size_t out_row = size_t(spec_.out) * (spec_.bf16_out ? 2 : 4);
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  float* row_scales = nullptr;
  int32_t* row_zero = nullptr;
  if (int8 && M > 0) {  // each src row to uint8, into the scratchpad
    char* base = static_cast<char*>(scratchpad);
    row_scales = reinterpret_cast<float*>(base + impl_->row_scales_at);
    row_zero = reinterpret_cast<int32_t*>(base + impl_->row_zero_at);
    uint8_t* q = reinterpret_cast<uint8_t*>(base + impl_->q_at);
    quantize_rows_u8(spec_.isa,
                     {q, row_scales, row_zero, static_cast<const float*>(src), M, spec_.in,
                      w.impl_->col_mul.empty() ? nullptr : w.impl_->col_mul.data()},
                     0);
    s = reinterpret_cast<const char*>(q);
  }
  for (int row = 0; row < M;) {
    const int rows = std::min(M - row, kMaxChunk);
    const int want = round_to_bucket(rows, spec_.coarse);
    // Buckets ascend; the first with enough rows (exact for whole chunks).
    size_t bi = 0;
    while (bi + 1 < buckets_.size() && buckets_[bi]->rows < want) ++bi;
    const Bucket& b = *buckets_[bi];
    dnnl_memory_set_data_handle(b.src.get(), const_cast<char*>(s + size_t(row) * in_row));
    dnnl_memory_set_data_handle(b.dst.get(), d + size_t(row) * out_row);
    dnnl_memory_set_data_handle(b.scratch.get(), scratchpad);
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, b.src.get()},
                               {DNNL_ARG_WEIGHTS, w.impl_->weights.get()},
                               {DNNL_ARG_DST, b.dst.get()},
                               {DNNL_ARG_SCRATCHPAD, b.scratch.get()},
                               {DNNL_ARG_BIAS, nullptr}};
    int nargs = 4;
    if (w.impl_->has_bias) args[nargs++] = {DNNL_ARG_BIAS, w.impl_->bias.get()};
    const dnnl_status_t st = dnnl_primitive_execute(b.prim.get(), env_->strm.get(), nargs, args);
    XLMR_CHECK(st == dnnl_success, "oneDNN: matmul failed (status " + std::to_string(int(st)) + ")");
    row += rows;
  }
  if (M > 0) dnnl_stream_wait(env_->strm.get());
  if (row_scales) {  // the int32 sums to fp32, in place: scales, zero points, bias, epilogue
    dequantize_rows(spec_.isa, {static_cast<float*>(dst), static_cast<const int32_t*>(dst), row_scales, row_zero,
                                w.impl_->col_scales.data(), w.impl_->col_sums.data(), w.impl_->bias_ptr, M,
                                spec_.out, spec_.epilogue == Epilogue::gelu}, 0);
  }
}

}  // namespace cpu
}  // namespace xlmr
