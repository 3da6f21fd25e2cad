// Dispatch and threading for the fused CPU kernels: picks the ISA's row
// kernels (kernel_table.h) and spreads rows or attention work items over
// OpenMP threads - the same pool oneDNN runs its GEMMs on.
#include "kernels/cpu/cpu_kernels.h"

#include <cpuid.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "engine/error.h"
#include "kernels/cpu/kernel_table.h"

namespace xlmr {
namespace cpu {
namespace {

const KernelTable& table(Isa isa) { return isa == Isa::avx512 ? avx512::table() : avx2::table(); }

bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
}
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

int team_size(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

// Rows [0, n) in contiguous, nearly equal chunks, one per thread: each row is
// always computed whole by one thread, so the thread count cannot change it.
template <typename F>
void parallel_rows(int n, int threads, int min_rows_per_thread, F&& f) {
  if (n <= 0) return;
  const int want = std::max(1, std::min(team_size(threads), n / std::max(1, min_rows_per_thread)));
  if (want == 1) {
    f(0, n);
    return;
  }
#pragma omp parallel num_threads(want)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const int r0 = int(int64_t(n) * t / T), r1 = int(int64_t(n) * (t + 1) / T);
    if (r1 > r0) f(r0, r1);
  }
}

}  // namespace

const char* to_string(Isa isa) { return isa == Isa::avx512 ? "avx512" : "avx2"; }

const char* to_string(Bf16Unit unit) {
  switch (unit) {
    case Bf16Unit::amx: return "AMX";
    case Bf16Unit::avx512_bf16: return "AVX512_BF16";
    default: return "none";
  }
}

bool has_bf16_unit(Bf16Unit unit, Isa isa, int head_dim) {
  if (unit == Bf16Unit::none || isa != Isa::avx512 || !has_avx512() || head_dim < 32 || head_dim > 128 ||
      head_dim % 32 != 0)
    return false;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool amx_bf16 = (d >> 22) & 1u, amx_tile = (d >> 24) & 1u;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
  const bool avx512_bf16 = (a >> 5) & 1u;  // both kernels convert with it
  if (!avx512_bf16) return false;
  if (unit == Bf16Unit::avx512_bf16) return true;
  if (!amx_bf16 || !amx_tile) return false;
  // Linux enables the 8 KiB tile register state per process, on request;
  // asking again once granted is harmless.
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}

Bf16Unit best_bf16_unit(Isa isa, int head_dim) {
  for (Bf16Unit u : {Bf16Unit::amx, Bf16Unit::avx512_bf16})
    if (has_bf16_unit(u, isa, head_dim)) return u;
  return Bf16Unit::none;
}

bool has_bf16_attention(Isa isa, int head_dim) { return best_bf16_unit(isa, head_dim) != Bf16Unit::none; }

Isa detect_isa() {
  if (has_avx512()) return Isa::avx512;
  if (has_avx2()) return Isa::avx2;
  XLMR_THROW("this CPU has neither AVX-512 nor AVX2+FMA; the fused CPU path needs one of them (use --path reference)");
}

Isa choose_isa(const std::string& request) {
  if (request.empty() || request == "auto") return detect_isa();
  if (request == "avx512") {
    XLMR_CHECK(has_avx512(), "--isa avx512: this CPU lacks AVX-512 (F, BW, DQ, VL)");
    return Isa::avx512;
  }
  if (request == "avx2") {
    XLMR_CHECK(has_avx2(), "--isa avx2: this CPU lacks AVX2 or FMA");
    return Isa::avx2;
  }
  XLMR_THROW("unknown instruction set '" + request + "' (expected auto, avx512 or avx2)");
}

void embed_layernorm(Isa isa, const EmbedArgs& a, uint16_t* out_bf16, int threads) {
  const KernelTable& k = table(isa);
  parallel_rows(a.n_tokens, threads, 4, [&](int r0, int r1) { k.embed_rows(a, out_bf16, r0, r1); });
}

void add_bias_residual_layernorm(Isa isa, const ResidualLayerNormArgs& a, uint16_t* out_bf16, int threads) {
  const KernelTable& k = table(isa);
  parallel_rows(a.n_tokens, threads, 4, [&](int r0, int r1) { k.residual_rows(a, out_bf16, r0, r1); });
}

void quantize_rows_s8(Isa isa, const QuantizeArgs& a, int threads) {
  const KernelTable& k = table(isa);
  parallel_rows(a.rows, threads, 4, [&](int r0, int r1) { k.quantize_rows(a, r0, r1); });
}

void quantize_rows_u8(Isa isa, const QuantizeU8Args& a, int threads) {
  const KernelTable& k = table(isa);
  parallel_rows(a.rows, threads, 4, [&](int r0, int r1) { k.quantize_rows_u8(a, r0, r1); });
}

void dequantize_rows(Isa isa, const DequantizeArgs& a, int threads) {
  const KernelTable& k = table(isa);
  parallel_rows(a.rows, threads, 4, [&](int r0, int r1) { k.dequantize_rows(a, r0, r1); });
}

void cast_to_bf16(Isa isa, uint16_t* out, const float* in, size_t n, int threads) {
  const KernelTable& k = table(isa);
  constexpr size_t kBlock = 4096;  // floats per unit of work
  const int blocks = int((n + kBlock - 1) / kBlock);
  parallel_rows(blocks, threads, 4, [&](int b0, int b1) {
    const size_t i0 = size_t(b0) * kBlock, i1 = std::min(n, size_t(b1) * kBlock);
    k.cast_range(out + i0, in + i0, i1 - i0);
  });
}

void AttentionWorkspace::reserve(int max_rows, int n_heads, int d, int n_threads, int max_seqlen) {
  XLMR_CHECK(max_rows >= 0 && n_heads >= 1 && d >= 1 && n_threads >= 1, "attention workspace: bad sizes");
  if (max_seqlen < 0) max_seqlen = max_rows;
  // Worst case: every sequence one row, so one item per (row, head).
  items.reserve(size_t(max_rows) * size_t(n_heads) + 1);
  const size_t dp = size_t(d + 15) / 16 * 16;
  const size_t R = kAttentionRowBlock, B = kAttentionKeyBlock;
  // Qt [D][R], Pt [B][R], O [R][Dp], m, l, c [R], then the packed keys and
  // values, [max_seqlen][Dp] each (kernels/cpu/simd_attention.inc); Dp here
  // is rounded up to 16 lanes, the most either ISA needs. The bf16 kernels
  // (attention_bf16.inc) need less in each part, plus bf16 probabilities
  // [R][B] and keys padded up to 32: B/2 x R and B x Dp more cover both. Their
  // 16 partial sums a row fit in the half of Qt that bf16 queries leave
  // (D >= 32).
  size_t floats = dp * R + B * R + R * dp + 3 * R + 2 * size_t(max_seqlen) * dp + B / 2 * R + B * dp;
  per_thread = (floats + 15) / 16 * 16;  // keep each slice 64-byte aligned
  scratch.assign(per_thread * size_t(n_threads) + 16, 0.0f);
  threads = n_threads;
  head_dim = d;
  bf16_best.reset();
  max_kv = max_seqlen;
}

void varlen_attention(Isa isa, const VarlenAttentionArgs& a, AttentionWorkspace& ws, int threads) {
  const int H = a.heads;
  XLMR_CHECK(H >= 1 && a.hidden % H == 0, "attention: hidden size not divisible by the heads");
  XLMR_CHECK(a.hidden / H == ws.head_dim, "attention: workspace reserved for another head size");
  Bf16Unit unit = Bf16Unit::none;
  if (a.products == AttentionProducts::bf16) {
    if (isa == Isa::avx512 && !ws.bf16_best) ws.bf16_best = best_bf16_unit(isa, ws.head_dim);
    const Bf16Unit best = isa == Isa::avx512 ? *ws.bf16_best : Bf16Unit::none;
    unit = a.bf16_unit == Bf16Unit::none ? best : a.bf16_unit;
    XLMR_CHECK(unit != Bf16Unit::none && (unit == best || has_bf16_unit(unit, isa, ws.head_dim)),
               std::string("attention: bf16 products need ") +
                   (a.bf16_unit == Bf16Unit::none ? "AVX512_BF16 or AMX-BF16" : to_string(a.bf16_unit)) +
                   " and a head dim that is a multiple of 32, at most 128");
  }
  const int T = std::min(team_size(threads), ws.threads);

  // Row blocks per item: one when the batch has few, so that every thread
  // gets work; more when it has plenty (about 8 items per thread), so that
  // packing a head's keys and values is shared by more query rows. A
  // sequence of one block takes as many heads per item instead: its rows are
  // then read in order, head after head, not 3E floats apart by a thread
  // that moves on to another sequence (1.2-1.3x on 16- to 31-token batches).
  // Which rows or heads share an item never changes any row's arithmetic.
  constexpr int R = kAttentionRowBlock;
  size_t blocks = 0;
  for (int s = 0; s < a.n_seqs; ++s) {
    const int rows = a.cu_seqlens[s + 1] - a.cu_seqlens[s];
    const int kv = a.kv_lens ? a.kv_lens[s] : rows;
    XLMR_CHECK(kv >= 0 && kv <= ws.max_kv, "attention: sequence longer than the reserved workspace");
    blocks += size_t((rows + R - 1) / R) * size_t(H);
  }
  XLMR_CHECK(blocks <= ws.items.capacity(), "attention: batch larger than the reserved workspace");
  const int group = int(std::max<size_t>(1, blocks / (size_t(8) * size_t(T))));

  // Work items costed by rows x keys, the largest first so that dynamic
  // scheduling ends with small pieces.
  ws.items.clear();
  for (int s = 0; s < a.n_seqs; ++s) {
    const int rows = a.cu_seqlens[s + 1] - a.cu_seqlens[s];
    const int kv = a.kv_lens ? a.kv_lens[s] : rows;
    const int heads_per_item = rows <= R ? std::min(H, group) : 1;
    for (int r0 = 0; r0 < rows; r0 += group * R) {
      const int r1 = std::min(rows, r0 + group * R);
      for (int h = 0; h < H; h += heads_per_item) {
        const int nh = std::min(heads_per_item, H - h);
        ws.items.push_back({s, h, r0, r1, int64_t(r1 - r0) * std::max(kv, 1) * nh, nh});
      }
    }
  }
  if (ws.items.empty()) return;
  // (std::sort: unlike stable_sort it never allocates; ties are broken by
  // position so the order is fixed.)
  std::sort(ws.items.begin(), ws.items.end(), [](const AttentionWorkspace::Item& x, const AttentionWorkspace::Item& y) {
    if (x.cost != y.cost) return x.cost > y.cost;
    if (x.seq != y.seq) return x.seq < y.seq;
    if (x.row0 != y.row0) return x.row0 < y.row0;
    return x.head < y.head;
  });

  // bf16 products for sequences of at least bf16_min_keys(unit) keys;
  // shorter ones cost more in packing (and tile setup) than the products
  // save, and keep fp32.
  const int min_keys = bf16_min_keys(unit);
  const auto fp32_item = table(isa).attention_item;
  const int n_items = int(ws.items.size());
  float* base = ws.scratch.data();
  base += (16 - (reinterpret_cast<uintptr_t>(base) / sizeof(float)) % 16) % 16;
  const int team = std::max(1, std::min(T, n_items));
#pragma omp parallel num_threads(team)
  {
    float* mine = base + ws.per_thread * size_t(omp_get_thread_num());
    bool tiles = false;  // this thread's AMX tiles configured
#pragma omp for schedule(dynamic, 1) nowait
    for (int i = 0; i < n_items; ++i) {
      const AttentionWorkspace::Item& it = ws.items[size_t(i)];
      const int kv = a.kv_lens ? a.kv_lens[it.seq] : a.cu_seqlens[it.seq + 1] - a.cu_seqlens[it.seq];
      AttentionWorkspace::Item one = it;  // the kernels take one head at a time
      for (one.head = it.head; one.head < it.head + it.n_heads; ++one.head) {
        if (unit == Bf16Unit::amx && kv >= min_keys) {
          if (!tiles) amx::begin_tiles();
          tiles = true;
          amx::attention_item(a, one, mine);
        } else if (unit == Bf16Unit::avx512_bf16 && kv >= min_keys) {
          avx512_bf16::attention_item(a, one, mine);
        } else {
          fp32_item(a, one, mine);
        }
      }
    }
    if (tiles) amx::end_tiles();
  }
}

}  // namespace cpu
}  // namespace xlmr
