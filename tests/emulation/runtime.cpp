// The runtime half of kernels/cuda/cuda_kernels.h for the CPU emulator:
// "device" memory is host memory (fresh allocations filled with 0xff bytes,
// a NaN pattern, so reading what nobody wrote shows), streams are tokens,
// every call completes before it returns. cuBLASLt, events and graphs are not
// emulated and say so.
#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/error.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/half_bits.cuh"

namespace xlmr::cuda {
namespace {

[[noreturn]] void not_emulated(const char* what) {
  XLMR_THROW(std::string(what) + " is not emulated on the CPU (the emulator runs the handwritten kernels only)");
}

}  // namespace

bool device_available(std::string* why, std::string* device_name) {
  if (why) why->clear();
  if (device_name) *device_name = "CPU emulator";
  return true;
}

// Exactly `bytes` (256-byte aligned like cudaMalloc), so that under
// AddressSanitizer a kernel reading past its buffer is caught.
void* device_malloc(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0) p = nullptr;
  XLMR_CHECK(p != nullptr, "cudaMalloc (emulated): out of host memory for " + std::to_string(bytes) + " bytes");
  std::memset(p, 0xff, bytes);
  return p;
}
void device_free(void* p) noexcept { std::free(p); }
void* host_malloc_pinned(size_t bytes) { return device_malloc(bytes); }
void host_free_pinned(void* p) noexcept { std::free(p); }
void copy_to_device(void* dst, const void* src, size_t bytes, Stream) {
  if (bytes) std::memcpy(dst, src, bytes);
}
void copy_to_host(void* dst, const void* src, size_t bytes, Stream) {
  if (bytes) std::memcpy(dst, src, bytes);
}
Stream stream_create() { return new int(0); }
void stream_destroy(Stream s) noexcept { delete static_cast<int*>(s); }
void sync(Stream) {}

Event event_create() { not_emulated("cudaEventCreate"); }
void event_destroy(Event) noexcept {}
void event_record(Event, Stream) { not_emulated("cudaEventRecord"); }
void stream_wait(Stream, Event) { not_emulated("cudaStreamWaitEvent"); }
void capture_begin(Stream) { not_emulated("CUDA graph capture"); }
GraphExec capture_end(Stream) { not_emulated("CUDA graph capture"); }
void capture_abort(Stream) noexcept {}
void graph_launch(GraphExec, Stream) { not_emulated("CUDA graph launch"); }
void graph_destroy(GraphExec) noexcept {}

void upload_f32_as(Half16 t, void* dst, const float* src, size_t n, Stream) {
  auto* d = static_cast<uint16_t*>(dst);
  for (size_t i = 0; i < n; ++i)
    d[i] = t == Half16::f16 ? detail::F16Bits::from_float(src[i]) : detail::Bf16Bits::from_float(src[i]);
}

void convert_to_f32(Half16 t, float* dst, const void* src, size_t n, Stream) {
  const auto* s = static_cast<const uint16_t*>(src);
  for (size_t i = 0; i < n; ++i)
    dst[i] = t == Half16::f16 ? detail::F16Bits::to_float(s[i]) : detail::Bf16Bits::to_float(s[i]);
}

LtContext* lt_create(size_t) { not_emulated("cuBLASLt"); }
void lt_destroy(LtContext*) noexcept {}
LtGemm* lt_gemm_create(LtContext*, Half16, int, int, LtEpilogue, int) { not_emulated("cuBLASLt"); }
void lt_gemm_destroy(LtGemm*) noexcept {}
void lt_gemm_run(LtGemm*, void*, const void*, const void*, const float*, int, Stream) { not_emulated("cuBLASLt"); }

}  // namespace xlmr::cuda
