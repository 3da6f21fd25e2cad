// What the machine can do, measured in the same process as the engine runs
// so that every run can be reported as a fraction of it: the CPU's name and
// instruction sets, the oneDNN matmul peak, and the memory read bandwidth.
#pragma once

#include <string>
#include <vector>

namespace bench {

struct MachineInfo {
  std::string cpu;                    // "model name" of /proc/cpuinfo
  int cores = 0;                      // physical cores (logical CPUs when unknown)
  int logical_cpus = 0;
  bool avx2 = false;                  // AVX2 + FMA
  bool avx512_core = false;           // AVX-512 F, BW, DQ, VL: oneDNN's avx512_core, the bf16 floor
  std::vector<std::string> features;  // notable extras: avx512_bf16, amx_bf16, ...
  std::string isa() const { return avx512_core ? "avx512" : avx2 ? "avx2" : "baseline"; }
};

MachineInfo probe_machine();

// The GEMM shape the peak is measured on: big enough to be compute bound,
// and the shape of an XLM-R base FFN1 over 1024 tokens.
constexpr int kPeakM = 1024, kPeakK = 768, kPeakN = 3072;

// Operand types of a peak measurement: f32 in and out; bf16 in, f32 out;
// int8: uint8 x int8 in, int32 out (what an int8 Gemm hands oneDNN).
enum class PeakType { f32, bf16, int8 };

// Best GFLOP/s (int8: GOP/s) of a oneDNN matmul [M,K] x [K,N] -> [M,N] with
// the weights reordered once into the layout oneDNN picks for itself
// (format_tag::any), on `threads` OpenMP threads. Returns a negative number
// and sets *why when it cannot be measured (no oneDNN).
double gemm_peak_gflops(PeakType type, int threads, std::string* why);

// Best of three: GB/s of summing a `bytes`-long float buffer on `threads`
// OpenMP threads. Falls back to a smaller buffer when `bytes` cannot be
// allocated; *used_bytes says what was measured.
double read_bandwidth_gbs(size_t bytes, int threads, size_t* used_bytes);

}  // namespace bench
