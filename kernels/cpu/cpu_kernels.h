// The fused CPU kernels: handwritten AVX-512 kernels with an AVX2 twin, the
// instruction set chosen once at run time (CPUID), each the fast version of a
// reference kernel in kernels/ref (tests/test_cpu_kernels.cpp holds them to it).
//
// Every function here is threaded with OpenMP over `threads` threads (0: the
// calling thread's OpenMP default) and never allocates: scratch comes from a
// workspace sized beforehand. Each output element is computed by exactly one
// thread in a fixed order, so results do not depend on the thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kernels/embed.h"
#include "kernels/layernorm.h"

namespace xlmr {
namespace cpu {

enum class Isa { avx2, avx512 };
const char* to_string(Isa isa);

// The best instruction set this CPU has; throws xlmr::Error when it has
// neither AVX-512 (F, BW, DQ, VL) nor AVX2 + FMA.
Isa detect_isa();
// "" or "auto": detect_isa(); "avx512" or "avx2": that one, or an error when
// the CPU lacks it.
Isa choose_isa(const std::string& request);

// out[t] = LN(word[ids[t]] + pos[positions[t]] + type0); out_bf16 (nullable)
// receives a bf16 copy of each row (round to nearest even).
void embed_layernorm(Isa isa, const EmbedArgs& a, uint16_t* out_bf16, int threads);

// x = LN(x + y + bias) row by row; out_bf16 (nullable) as above.
void add_bias_residual_layernorm(Isa isa, const ResidualLayerNormArgs& a, uint16_t* out_bf16, int threads);

// n floats -> bf16 (round to nearest even).
void cast_to_bf16(Isa isa, uint16_t* out, const float* in, size_t n, int threads);

// int8 GEMMs (Precision::int8, kernels/cpu/gemm.h), each against its
// reference in kernels/linear.h. Weights: each row of x[rows, cols] to int8
// with a scale of its own, symmetric (ref::quantize_rows_s8).
struct QuantizeArgs {
  int8_t* q;         // [rows, cols]
  float* scale;      // [rows]: max |x| / qmax (0 for a row of zeros)
  const float* x;    // [rows, cols]
  int rows, cols;
  float qmax = 127;  // q in [-qmax, qmax]
};
void quantize_rows_s8(Isa isa, const QuantizeArgs& a, int threads);

// Activations: each row to uint8 over its own range, with a zero point
// (ref::quantize_rows_u8): x * col_mul ~ (q - zero) * scale, col_mul a
// per-column factor (an int8 Gemm's equalization; nullptr: none).
struct QuantizeU8Args {
  uint8_t* q;        // [rows, cols]
  float* scale;      // [rows]
  int32_t* zero;     // [rows]
  const float* x;    // [rows, cols]
  int rows, cols;
  const float* col_mul = nullptr;  // [cols] or nullptr
};
void quantize_rows_u8(Isa isa, const QuantizeU8Args& a, int threads);

// The int32 sums of a uint8 x int8 product back to fp32 (ref::dequantize_rows):
//   y = fma(float(acc - row_zero * col_sum) * col_scale, row_scale, bias),
// then GELU where asked (erf approximated within 1.5e-7). y may be acc's memory.
struct DequantizeArgs {
  float* y;                 // [rows, cols]
  const int32_t* acc;       // [rows, cols]
  const float* row_scale;   // [rows]
  const int32_t* row_zero;  // [rows]
  const float* col_scale;   // [cols]
  const int32_t* col_sum;   // [cols]: the sum of each weight row's int8 values
  const float* bias;        // [cols] or nullptr
  int rows, cols;
  bool gelu;
};
void dequantize_rows(Isa isa, const DequantizeArgs& a, int threads);

// How attention computes its two matrix products, Q.K^T and P.V:
//   f32:  fp32 FMAs (every ISA);
//   bf16: operands rounded to bf16 (Q already scaled by 1/sqrt(D), and the
//         probabilities P), products summed in fp32, on a Bf16Unit: for
//         CPUs with AMX-BF16 or AVX512_BF16 and head dims that are multiples
//         of 32 up to 128. Sequences of fewer than bf16_min_keys(unit)
//         keys still take the f32 kernel: for them packing the keys and
//         values (and on AMX the tile setup) costs more than the products
//         save. The softmax and the output stay fp32 either way.
enum class AttentionProducts { f32, bf16 };
// Where bf16 products run: AMX tiles (TDPBF16PS, Intel Sapphire Rapids and
// later) or AVX-512 dot products (VDPBF16PS: AMD Zen 4 and later, Intel
// Cooper Lake). `none`: not here.
enum class Bf16Unit { none, amx, avx512_bf16 };
// The fewest keys a sequence needs to take the bf16 kernel of `unit`
// (measured: docs/BENCHMARKS.md).
constexpr int bf16_min_keys(Bf16Unit unit) { return unit == Bf16Unit::amx ? 32 : 16; }
const char* to_string(Bf16Unit unit);  // "AMX", "AVX512_BF16", "none"
// Whether `unit` runs bf16 attention here with `isa` and head dim D. For
// AMX the first call with a supporting CPU asks Linux for the AMX register
// state (arch_prctl ARCH_REQ_XCOMP_PERM, once per process; oneDNN asks the
// same for its own AMX kernels).
bool has_bf16_unit(Bf16Unit unit, Isa isa, int head_dim);
// The best unit here: AMX, else AVX512_BF16, else none.
Bf16Unit best_bf16_unit(Isa isa, int head_dim);
// Whether AttentionProducts::bf16 runs here at all (best_bf16_unit != none).
bool has_bf16_attention(Isa isa, int head_dim);

// Variable-length multi-head attention over packed QKV, flash style: keys and
// values are visited in tiles with an online softmax, so no [S, S] score
// matrix ever exists. Sequence s owns rows [cu_seqlens[s], cu_seqlens[s+1]);
// its queries attend to the first kv_lens[s] of its rows (all of them when
// kv_lens is nullptr - kv_lens < rows is the padded layout, where pad rows
// are computed but attend to real keys only).
struct VarlenAttentionArgs {
  float* out;                  // [rows, E]
  uint16_t* out_bf16;          // [rows, E] bf16 copy of out, or nullptr
  const float* qkv;            // [rows, 3E]: Q | K | V, head h at columns [h*D, (h+1)*D) of each
  const int32_t* cu_seqlens;   // [S+1]
  const int32_t* kv_lens;      // [S] or nullptr
  int n_seqs;                  // S
  int hidden;                  // E
  int heads;                   // H, E = H * D
  AttentionProducts products = AttentionProducts::f32;
  // With bf16 products: the unit to run them on (none: the best one here).
  Bf16Unit bf16_unit = Bf16Unit::none;
};

// Query rows computed together (one SIMD lane per row).
constexpr int kAttentionRowBlock = 32;
// Keys per tile.
constexpr int kAttentionKeyBlock = 64;

// Per-thread scratch and the work list; sized once, reused by every call.
class AttentionWorkspace {
 public:
  // Enough for batches of up to max_rows rows (any split into sequences) in
  // which no sequence attends to more than max_seqlen keys (-1: max_rows),
  // head dimension head_dim, `heads` heads, on up to `threads` threads.
  void reserve(int max_rows, int heads, int head_dim, int threads, int max_seqlen = -1);

  // A work item: heads [head, head + n_heads) of one sequence, query rows
  // [row0, row1) - one or more row blocks, which share one packed copy of
  // each head's keys and values. Several heads only for single-block
  // sequences: consecutive heads read adjacent slices of the same rows.
  struct Item {
    int32_t seq, head, row0, row1;
    int64_t cost;
    int32_t n_heads;
  };
  std::vector<Item> items;
  std::vector<float> scratch;  // threads x per_thread floats, 64-byte aligned slices
  size_t per_thread = 0;
  int threads = 0;
  int head_dim = 0;
  int max_kv = 0;
  // best_bf16_unit's answer for AVX-512, asked once (for AMX it costs a
  // system call).
  std::optional<Bf16Unit> bf16_best;
};

void varlen_attention(Isa isa, const VarlenAttentionArgs& a, AttentionWorkspace& ws, int threads);

}  // namespace cpu
}  // namespace xlmr
