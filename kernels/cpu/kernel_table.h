// Internal to kernels/cpu: the single-threaded row kernels of one ISA, which
// cpu_kernels.cpp spreads over threads. One table per ISA, built in that
// ISA's translation unit.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/cpu_kernels.h"

namespace xlmr {
namespace cpu {

struct KernelTable {
  void (*embed_rows)(const EmbedArgs& a, uint16_t* out_bf16, int r0, int r1);
  void (*residual_rows)(const ResidualLayerNormArgs& a, uint16_t* out_bf16, int r0, int r1);
  void (*cast_range)(uint16_t* out, const float* in, size_t n);
  void (*attention_item)(const VarlenAttentionArgs& a, const AttentionWorkspace::Item& item, float* scratch);
  void (*quantize_rows)(const QuantizeArgs& a, int r0, int r1);
  void (*quantize_rows_u8)(const QuantizeU8Args& a, int r0, int r1);
  void (*dequantize_rows)(const DequantizeArgs& a, int r0, int r1);
};

namespace avx512 { const KernelTable& table(); }
namespace avx2 { const KernelTable& table(); }
// Attention with bf16 products on AMX (attention_amx.cpp): a thread loads
// the tile configuration before its first item and releases the tiles
// after its last.
namespace amx {
void begin_tiles();
void end_tiles();
void attention_item(const VarlenAttentionArgs& a, const AttentionWorkspace::Item& item, float* scratch);
}
// Attention with bf16 products on AVX512_BF16 dot products
// (attention_avx512_bf16.cpp), for CPUs without AMX.
namespace avx512_bf16 {
void attention_item(const VarlenAttentionArgs& a, const AttentionWorkspace::Item& item, float* scratch);
}

}  // namespace cpu
}  // namespace xlmr
