#include "benchmarks/machine.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <unordered_map>
#include <utility>

#ifdef XLMR_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace bench {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t");
  const size_t e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

}  // namespace

MachineInfo probe_machine() {
  MachineInfo m;
  m.logical_cpus = int(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  std::set<std::pair<std::string, std::string>> cores;  // (physical id, core id)
  std::set<std::string> flags;
  std::ifstream f("/proc/cpuinfo");
  std::string line, physical_id;
  while (std::getline(f, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = trim(line.substr(0, colon)), value = trim(line.substr(colon + 1));
    if (key == "model name" && m.cpu.empty()) m.cpu = value;
    else if (key == "physical id") physical_id = value;
    else if (key == "core id") cores.insert({physical_id, value});
    else if (key == "flags" && flags.empty()) {
      std::istringstream ss(value);
      std::string fl;
      while (ss >> fl) flags.insert(fl);
    }
  }
  if (m.cpu.empty()) m.cpu = "unknown";
  m.cores = cores.empty() ? m.logical_cpus : int(cores.size());
#if defined(__x86_64__) || defined(__i386__)
  // CPUID through the compiler's runtime, which also checks that the OS
  // saves the wide registers.
  __builtin_cpu_init();
  m.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  m.avx512_core = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
  for (const char* extra : {"avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_bf16", "amx_int8"})
    if (flags.count(extra)) m.features.push_back(extra);
  return m;
}

double gemm_peak_gflops(PeakType type, int threads, std::string* why) {
#ifdef XLMR_HAVE_ONEDNN
  try {
    omp_set_num_threads(threads);
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const dnnl::memory::dim M = kPeakM, K = kPeakK, N = kPeakN;
    const bool bf16 = type == PeakType::bf16, int8 = type == PeakType::int8;
    const dt in = bf16 ? dt::bf16 : int8 ? dt::u8 : dt::f32, w = int8 ? dt::s8 : in;
    dnnl::engine eng(dnnl::engine::kind::cpu, 0);
    dnnl::stream stream(eng);
    const dnnl::memory::desc a_md({M, K}, in, tag::ab);
    const dnnl::memory::desc b_plain({K, N}, w, tag::ab);
    const dnnl::memory::desc b_any({K, N}, w, tag::any);
    const dnnl::memory::desc c_md({M, N}, int8 ? dt::s32 : dt::f32, tag::ab);
#if DNNL_VERSION_MAJOR >= 3
    dnnl::matmul::primitive_desc pd(eng, a_md, b_any, c_md);
#else
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_any, c_md), eng);
#endif
    dnnl::memory a(a_md, eng), b_src(b_plain, eng), b(pd.weights_desc(), eng), c(c_md, eng);
    // Small values of either type (timing does not depend on them, as long
    // as they are normal numbers).
    for (dnnl::memory* mem : {&a, &b_src}) {
      const size_t n = mem->get_desc().get_size() / (bf16 ? 2 : int8 ? 1 : 4);
      if (int8) {  // small values of both signs fit either type's range
        uint8_t* p = static_cast<uint8_t*>(mem->get_data_handle());
        for (size_t i = 0; i < n; ++i) p[i] = uint8_t(1 + i % 97);
      } else if (bf16) {
        uint16_t* p = static_cast<uint16_t*>(mem->get_data_handle());
        for (size_t i = 0; i < n; ++i) p[i] = uint16_t(0x3c00 + (i % 97));  // ~0.0078 .. 0.0118
      } else {
        float* p = static_cast<float*>(mem->get_data_handle());
        for (size_t i = 0; i < n; ++i) p[i] = 0.01f * float(1 + i % 97) / 97.0f;
      }
    }
    dnnl::reorder(b_src, b).execute(stream, b_src, b);
    dnnl::matmul mm(pd);
    const std::unordered_map<int, dnnl::memory> args = {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}};
    mm.execute(stream, args);  // warm-up: JIT, caches, thread pool
    stream.wait();
    double best = 1e30;
    for (int i = 0; i < 5; ++i) {
      const double t0 = now_s();
      mm.execute(stream, args);
      stream.wait();
      best = std::min(best, now_s() - t0);
    }
    return 2.0 * double(M) * double(N) * double(K) / best * 1e-9;
  } catch (const dnnl::error& e) {
    *why = std::string("oneDNN: ") + e.what();
    return -1;
  }
#else
  (void)type, (void)threads;
  *why = "built without oneDNN";
  return -1;
#endif
}

double read_bandwidth_gbs(size_t bytes, int threads, size_t* used_bytes) {
  constexpr size_t kBlock = 4096;  // floats per inner sum
  float* buf = nullptr;
  while (bytes >= (size_t(64) << 20)) {
    bytes = bytes / (kBlock * 4) * (kBlock * 4);
    buf = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (buf) break;
    bytes /= 2;
  }
  *used_bytes = buf ? bytes : 0;
  if (!buf) return -1;
  const size_t n_blocks = bytes / (kBlock * 4);
  // First touch by the threads that will read it (pages land near them).
#pragma omp parallel for schedule(static) num_threads(threads)
  for (size_t b = 0; b < n_blocks; ++b)
    for (size_t i = 0; i < kBlock; ++i) buf[b * kBlock + i] = 1.0f;
  double best = 1e30, total = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const double t0 = now_s();
    double sum = 0;
#pragma omp parallel for schedule(static) reduction(+ : sum) num_threads(threads)
    for (size_t b = 0; b < n_blocks; ++b) {
      const float* p = buf + b * kBlock;
      float s = 0;
#pragma omp simd reduction(+ : s)
      for (size_t i = 0; i < kBlock; ++i) s += p[i];
      sum += s;
    }
    best = std::min(best, now_s() - t0);
    total += sum;
  }
  std::free(buf);
  // The sum is checked so that the reads cannot be optimised away.
  if (total != 3.0 * double(n_blocks) * double(kBlock)) return -1;
  return double(bytes) / best * 1e-9;
}

}  // namespace bench
