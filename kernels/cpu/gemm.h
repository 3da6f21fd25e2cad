// Dense layers on oneDNN matmul, the CPU backend's GEMMs:
//   dst[M, O] = epilogue(src[M, I] W^T + bias)      (W stored [O, I])
//
// Weights are reordered once, at load, into the blocked layout oneDNN picks
// for the shape (format_tag::any), in f32 or bf16. Bias and the epilogue
// (GELU, tanh, ReLU) run as oneDNN post-ops inside the GEMM.
//
// int8 (dynamic quantization): src and dst stay f32 for the caller. At load
// each weight row (output channel) is quantized symmetrically to int8 with a
// scale of its own (7 bits without VNNI: has_vnni_int8_gemm). At run time each src row (token) is quantized to uint8
// over its own range, with a zero point, into the scratchpad. oneDNN
// multiplies uint8 by int8 into exact int32 sums (the VNNI instruction's own
// operand types), written into dst; dequantize_rows then turns them into
// fp32 in place: the zero point's share taken out in int32, the two scales,
// the bias, GELU. A token's result depends only on its own row, never on
// the rest of the batch. (oneDNN has no per-row scale of its own that keeps
// its fast kernels: a per-row binary post-op falls back to its reference
// implementation, about 1000x slower.) pack()'s in_scale equalizes the
// input channels: the weights are quantized as W diag(s), the src rows as
// x diag(1 / s).
//
// oneDNN's fastest kernels (brgemm) need M fixed when the primitive is built,
// and building one allocates, so every primitive is built up front: one per
// row bucket (1..16, then steps of 16 to 256, then steps of 64 to 1024). A
// GEMM of M rows runs as chunks of 1024 plus one bucket >= the remainder, so
// src and dst must have rows up to padded_rows(M); the extra rows compute
// garbage that nobody reads. run() never allocates.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "engine/config.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/linear.h"

namespace xlmr {
namespace cpu {

class GemmEnv;  // oneDNN engine + stream (opaque)

std::shared_ptr<GemmEnv> make_gemm_env();

// Whether oneDNN runs bf16 GEMMs on bf16 instructions here (AVX512_BF16 or
// AMX-BF16, within any DNNL_MAX_CPU_ISA limit). Without them it converts
// bf16 to f32 inside its kernels, which is slower than f32 GEMMs.
bool has_native_bf16_gemm();

// Whether oneDNN's int8 GEMMs run on VNNI here (AVX512_VNNI or AVX-VNNI,
// within any DNNL_MAX_CPU_ISA limit). Without it they sum pairs of uint8 x
// int8 products in 16 bits, which saturate (255 x 127 x 2 > 32767), so an
// int8 Gemm then quantizes its weights to 7 bits (+-63), where no pair can.
bool has_vnni_int8_gemm();

struct GemmSpec {
  int in = 0, out = 0;                    // I, O
  Epilogue epilogue = Epilogue::none;
  bool bias = false;
  Precision precision = Precision::f32;   // src and weights (int8: f32 src, see above); fp32 (int32) sums
  bool bf16_out = false;                  // dst bf16 (else f32)
  // Power-of-two row buckets only: fewer primitives, up to 2x the rows. For
  // the small sentence-level GEMMs (pooler, classification head).
  bool coarse = false;
  Isa isa = Isa::avx512;                  // int8: the quantize / dequantize kernels' instruction set
};

// The largest |int8 weight| of an int8 Gemm here: 127, or 63 without VNNI.
int int8_weight_max();

// Rows a buffer needs so that a GEMM over its first M rows stays inside it.
int gemm_padded_rows(int M, bool coarse = false);

class PackedWeights;

class Gemm {
 public:
  // Builds the primitives for M up to max_rows.
  Gemm(std::shared_ptr<GemmEnv> env, const GemmSpec& spec, int max_rows);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  const GemmSpec& spec() const { return spec_; }
  // Packs w: [O, I] fp32 row-major (bias: [O] fp32, kept by pointer; it must
  // outlive the result) for this GEMM. int8 only, in_scale ([I], positive, or
  // nullptr): per input channel equalization - W diag(s) is quantized and
  // each src row is quantized as x diag(1 / s), the same product in exact
  // arithmetic, with the spread of values moved between the two operands
  // (see int8_equalization_scales in engine/int8_equalize.h).
  std::unique_ptr<PackedWeights> pack(const float* w, const float* bias, const float* in_scale = nullptr) const;
  // Bytes of scratch memory run() needs (64-byte aligned).
  size_t scratchpad_bytes() const { return scratch_bytes_; }
  // dst = epilogue(src W^T + bias) for M rows (0 <= M <= max_rows).
  void run(const PackedWeights& w, const void* src, void* dst, int M, void* scratchpad) const;
  // Name of the oneDNN implementation (for the benchmark report).
  const char* impl_name() const;

 private:
  struct Bucket;
  std::shared_ptr<GemmEnv> env_;
  GemmSpec spec_;
  int max_rows_ = 0;
  size_t scratch_bytes_ = 0;
  std::vector<std::unique_ptr<Bucket>> buckets_;  // ascending rows
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One layer's weights in a Gemm's layout.
class PackedWeights {
 public:
  ~PackedWeights();
  size_t bytes() const;

 private:
  friend class Gemm;
  PackedWeights();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cpu
}  // namespace xlmr
