// Runtime helpers of the CUDA backend: allocation, copies, streams, graphs,
// and the upload of fp32 host data as 16-bit (the device-side conversion back
// is in elementwise.cu).
//
// Every CUDA call is checked. A failure throws xlmr::Error naming the call and
// the CUDA message, after clearing the runtime's last-error slot: otherwise a
// failed cudaMalloc would be reported a second time by the next unrelated
// kernel-launch check (cudaGetLastError) and blamed on that kernel.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/half_bits.cuh"

namespace xlmr::cuda {
namespace {

// Bit-level conversions of the two 16-bit types, usable on host and device.
// Round to nearest, ties to even, as torch's .half() / .bfloat16().
using detail::Bf16Bits;
using detail::F16Bits;

std::string mib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / (1024.0 * 1024.0));
  return buf;
}

[[noreturn]] void fail(const std::string& call, cudaError_t err) {
  cudaGetLastError();  // clear it: it has been reported here
  XLMR_THROW(call + " failed: " + cudaGetErrorString(err));
}

void check(cudaError_t err, const char* call) {
  if (err != cudaSuccess) fail(call, err);
}

// " (X MiB free of Y MiB)", or nothing when the device cannot say.
std::string free_memory_note() {
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return " (" + mib(free_b) + " free of " + mib(total_b) + ")";
}

template <typename Bits>
void to_16bit_host(uint16_t* out, const float* in, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = Bits::from_float(in[i]);
}

}  // namespace

void* device_malloc(size_t bytes) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    XLMR_THROW("cudaMalloc: out of GPU memory allocating " + std::to_string(bytes) + " bytes (" + mib(bytes) + ")" +
               free_memory_note());
  }
  if (err != cudaSuccess) fail("cudaMalloc of " + std::to_string(bytes) + " bytes", err);
  return p;
}

void device_free(void* p) noexcept {
  if (!p) return;
  // Nothing to report from a destructor path; a sticky device fault surfaces
  // at the next sync().
  if (cudaFree(p) != cudaSuccess) cudaGetLastError();
}

void* host_malloc_pinned(size_t bytes) {
  void* p = nullptr;
  const cudaError_t err = cudaMallocHost(&p, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    XLMR_THROW("cudaMallocHost: out of pinned host memory allocating " + std::to_string(bytes) + " bytes (" +
               mib(bytes) + ")");
  }
  if (err != cudaSuccess) fail("cudaMallocHost of " + std::to_string(bytes) + " bytes", err);
  return p;
}

void host_free_pinned(void* p) noexcept {
  if (!p) return;
  if (cudaFreeHost(p) != cudaSuccess) cudaGetLastError();
}

void copy_to_device(void* dst, const void* src, size_t bytes, Stream s) {
  if (bytes == 0) return;
  const cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(s));
  if (err != cudaSuccess) fail("cudaMemcpyAsync (host to device, " + std::to_string(bytes) + " bytes)", err);
}

void copy_to_host(void* dst, const void* src, size_t bytes, Stream s) {
  if (bytes == 0) return;
  const cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(s));
  if (err != cudaSuccess) fail("cudaMemcpyAsync (device to host, " + std::to_string(bytes) + " bytes)", err);
}

Stream stream_create() {
  cudaStream_t s = nullptr;
  // Non-blocking: no implicit ordering with work on the legacy default stream.
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  return s;
}

void stream_destroy(Stream s) noexcept {
  if (!s) return;
  if (cudaStreamDestroy(static_cast<cudaStream_t>(s)) != cudaSuccess) cudaGetLastError();
}

void sync(Stream s) {
  check(cudaStreamSynchronize(static_cast<cudaStream_t>(s)), "cudaStreamSynchronize");
  check(cudaGetLastError(), "an earlier kernel launch");
}

Event event_create() {
  cudaEvent_t e = nullptr;
  check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  return e;
}

void event_destroy(Event e) noexcept {
  if (!e) return;
  if (cudaEventDestroy(static_cast<cudaEvent_t>(e)) != cudaSuccess) cudaGetLastError();
}

void event_record(Event e, Stream s) {
  check(cudaEventRecord(static_cast<cudaEvent_t>(e), static_cast<cudaStream_t>(s)), "cudaEventRecord");
}

void stream_wait(Stream s, Event e) {
  check(cudaStreamWaitEvent(static_cast<cudaStream_t>(s), static_cast<cudaEvent_t>(e), 0), "cudaStreamWaitEvent");
}

void capture_begin(Stream s) {
  // Thread-local mode: other threads of the process may keep using CUDA
  // (and even allocate) while this engine captures.
  check(cudaStreamBeginCapture(static_cast<cudaStream_t>(s), cudaStreamCaptureModeThreadLocal),
        "cudaStreamBeginCapture");
}

GraphExec capture_end(Stream s) {
  cudaGraph_t graph = nullptr;
  check(cudaStreamEndCapture(static_cast<cudaStream_t>(s), &graph), "cudaStreamEndCapture");
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (err != cudaSuccess) fail("cudaGraphInstantiate", err);
  return exec;
}

void capture_abort(Stream s) noexcept {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(static_cast<cudaStream_t>(s), &status) == cudaSuccess &&
      status != cudaStreamCaptureStatusNone) {
    cudaGraph_t graph = nullptr;
    if (cudaStreamEndCapture(static_cast<cudaStream_t>(s), &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
  }
  cudaGetLastError();
}

void graph_launch(GraphExec g, Stream s) {
  check(cudaGraphLaunch(static_cast<cudaGraphExec_t>(g), static_cast<cudaStream_t>(s)), "cudaGraphLaunch");
}

void graph_destroy(GraphExec g) noexcept {
  if (!g) return;
  if (cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(g)) != cudaSuccess) cudaGetLastError();
}

void set_device(int index) { check(cudaSetDevice(index), "cudaSetDevice"); }

int current_device() {
  int d = 0;
  check(cudaGetDevice(&d), "cudaGetDevice");
  return d;
}

DeviceLimits device_limits() {
  int dev = 0, major = 0, minor = 0, optin = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "cudaDeviceGetAttribute");
  DeviceLimits d;
  d.cc_major = major;
  d.cc_minor = minor;
  d.smem_per_block_optin = size_t(std::max(optin, 0));
  return d;
}

void allow_dynamic_smem(const void* kernel, size_t bytes) {
  XLMR_CHECK(bytes <= size_t(INT32_MAX), "allow_dynamic_smem: " + std::to_string(bytes) + " bytes is out of range");
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
        "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
}

void upload_f32_as(Half16 t, void* dst, const float* src, size_t n, Stream s) {
  if (n == 0) return;
  // Converted on the host in chunks through one staging buffer, each chunk
  // copied and waited for before the buffer is refilled.
  constexpr size_t kChunk = size_t(1) << 22;
  std::vector<uint16_t> staging(std::min(n, kChunk));
  auto* out = static_cast<uint16_t*>(dst);
  const auto stream = static_cast<cudaStream_t>(s);
  for (size_t off = 0; off < n; off += kChunk) {
    const size_t len = std::min(kChunk, n - off);
    if (t == Half16::f16)
      to_16bit_host<F16Bits>(staging.data(), src + off, len);
    else
      to_16bit_host<Bf16Bits>(staging.data(), src + off, len);
    const cudaError_t err = cudaMemcpyAsync(out + off, staging.data(), len * sizeof(uint16_t),
                                            cudaMemcpyHostToDevice, stream);
    if (err != cudaSuccess) fail("cudaMemcpyAsync (weight upload, " + std::to_string(len * 2) + " bytes)", err);
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (weight upload)");
  }
}

}  // namespace xlmr::cuda
