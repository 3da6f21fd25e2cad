// Helpers shared by the GPU tests: skipping without a device, owning device
// buffers and streams, the 16-bit type names, and a small parallel loop for
// the slow CPU references.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device.h"

namespace test::gpu {

// True with a usable CUDA device; otherwise a visible warning that `what`
// is skipped.
inline bool available(const char* what) {
  std::string why;
  if (xlmr::cuda::device_available(&why)) return true;
  WARN("no CUDA device: " << why << " - " << what << " skipped");
  return false;
}

// True when the kernels run on the CPU emulator (tests/emulation) rather
// than a GPU: thousands of times slower, so the tests shrink their largest
// shapes there (each case says what it cut).
#ifdef XLMR_CUDA_EMULATION
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

// available(), for tests of cuBLASLt, which the emulator does not run.
inline bool cublas_available(const char* what) {
  if (kEmulated) {
    WARN("CPU emulator: cuBLASLt is not emulated - " << what << " skipped");
    return false;
  }
  return available(what);
}

inline const char* type_name(xlmr::cuda::Half16 t) { return t == xlmr::cuda::Half16::f16 ? "f16" : "bf16"; }

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : p_(xlmr::cuda::device_malloc(bytes ? bytes : 1)) {}
  ~DeviceBuffer() { xlmr::cuda::device_free(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return p_; }
  template <typename T>
  T* as() const { return static_cast<T*>(p_); }

 private:
  void* p_;
};

class StreamHolder {
 public:
  StreamHolder() : s_(xlmr::cuda::stream_create()) {}
  ~StreamHolder() { xlmr::cuda::stream_destroy(s_); }
  StreamHolder(const StreamHolder&) = delete;
  StreamHolder& operator=(const StreamHolder&) = delete;
  xlmr::cuda::Stream get() const { return s_; }

 private:
  xlmr::cuda::Stream s_;
};

// Runs fn(0..n-1) over the machine's cores; fn must touch disjoint data.
inline void parallel_for(size_t n, const std::function<void(size_t)>& fn) {
  const size_t workers = std::max<size_t>(1, std::min<size_t>(n, std::thread::hardware_concurrency()));
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (size_t w = 0; w < workers; ++w)
    pool.emplace_back([&] {
      for (size_t i = next++; i < n; i = next++) fn(i);
    });
  for (auto& th : pool) th.join();
}

}  // namespace test::gpu
