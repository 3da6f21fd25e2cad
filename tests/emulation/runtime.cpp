// The runtime half of kernels/cuda/cuda_kernels.h for the CPU emulator, so
// that engine/cuda_backend.cpp runs end to end on a machine without a GPU:
//   - "device" memory is host memory of exactly the requested size, 256-byte
//     aligned like cudaMalloc's, filled with 0xff bytes (a NaN pattern, so
//     reading what nobody wrote shows; under ASan reading past it is caught);
//   - streams are the emulator's (tests/emulation/emulator.h): synchronous,
//     recording instead of running while a graph is captured; copies are
//     stream work like kernels, so graphs record them too (the 16-bit -> fp32
//     conversion is elementwise.cu's kernel, emulated);
//   - events order nothing (every stream is synchronous) but exist;
//   - the GEMMs are a plain fp32 loop standing in for cuBLASLt, with the
//     same contract (D[M, O] = epilogue(A W^T + bias), 16-bit in and out,
//     fp32 bias, exact-erf GELU) and the same argument checks. It makes the
//     backend's wiring testable; it says nothing about cuBLASLt, whose tests
//     skip here.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/half_bits.cuh"
#include "tests/emulation/emulator.h"

namespace xlmr::cuda {

namespace emu = ::xlmr::emulation;

bool device_available(std::string* why, std::string* device_name, int index) {
  if (index != 0) {  // one emulated device, as device.cu words it
    if (why)
      *why = "there is no GPU " + std::to_string(index) +
             ": 1 visible (numbered from 0, as CUDA_VISIBLE_DEVICES leaves them)";
    return false;
  }
  if (why) why->clear();
  if (device_name) *device_name = "CPU emulator";
  return true;
}

void set_device(int index) {
  XLMR_CHECK(index == 0, "cudaSetDevice(" + std::to_string(index) + ") failed: invalid device ordinal (emulated)");
}
int current_device() { return 0; }

void* device_malloc(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0) p = nullptr;
  XLMR_CHECK(p != nullptr,
             "cudaMalloc (emulated): out of GPU memory (host memory) for " + std::to_string(bytes) + " bytes");
  std::memset(p, 0xff, bytes);
  return p;
}
void device_free(void* p) noexcept { std::free(p); }
void* host_malloc_pinned(size_t bytes) { return device_malloc(bytes); }
void host_free_pinned(void* p) noexcept { std::free(p); }

void copy_to_device(void* dst, const void* src, size_t bytes, Stream s) {
  if (bytes) emu::submit(s, [=] { std::memcpy(dst, src, bytes); });
}
void copy_to_host(void* dst, const void* src, size_t bytes, Stream s) {
  if (bytes) emu::submit(s, [=] { std::memcpy(dst, src, bytes); });
}
Stream stream_create() { return emu::stream_new(); }
void stream_destroy(Stream s) noexcept { emu::stream_delete(static_cast<emu::Stream*>(s)); }
void sync(Stream) {}

Event event_create() { return new int(0); }
void event_destroy(Event e) noexcept { delete static_cast<int*>(e); }
void event_record(Event, Stream) {}
void stream_wait(Stream, Event) {}

void capture_begin(Stream s) { emu::capture_start(s); }
GraphExec capture_end(Stream s) { return emu::capture_stop(s); }
void capture_abort(Stream s) noexcept { emu::capture_drop(s); }
void graph_launch(GraphExec g, Stream s) { emu::graph_run(static_cast<emu::Graph*>(g), s); }
void graph_destroy(GraphExec g) noexcept { emu::graph_delete(static_cast<emu::Graph*>(g)); }

namespace {

float to_f32(Half16 t, uint16_t u) {
  return t == Half16::f16 ? detail::F16Bits::to_float(u) : detail::Bf16Bits::to_float(u);
}
uint16_t from_f32(Half16 t, float x) {
  return t == Half16::f16 ? detail::F16Bits::from_float(x) : detail::Bf16Bits::from_float(x);
}

}  // namespace

DeviceLimits device_limits() { return emu::device_limits(); }
void allow_dynamic_smem(const void* kernel, size_t bytes) {
  // As cudaFuncSetAttribute: more than the device has is refused.
  const DeviceLimits d = emu::device_limits();
  XLMR_CHECK(bytes <= d.smem_per_block_optin,
             "cudaFuncSetAttribute(MaxDynamicSharedMemorySize) failed: invalid argument (emulated)");
  emu::allow_dynamic_smem(kernel, bytes);
}

void upload_f32_as(Half16 t, void* dst, const float* src, size_t n, Stream s) {
  auto* d = static_cast<uint16_t*>(dst);
  emu::submit(s, [=] {
    for (size_t i = 0; i < n; ++i) d[i] = from_f32(t, src[i]);
  });
}

// ---- the cuBLASLt stand-in ------------------------------------------------------
struct LtContext {
  size_t workspace_bytes = 0;
};

class LtGemm {
 public:
  LtGemm(Half16 t, int in, int out, LtEpilogue ep, int max_rows)
      : t_(t), in_(in), out_(out), ep_(ep), max_rows_(max_rows) {}

  void run(void* d, const void* a, const void* w, const float* bias, int M, Stream s) const {
    XLMR_CHECK(M >= 0 && M <= max_rows_, "lt_gemm_run (emulated): " + std::to_string(M) +
                                             " rows, planned for at most " + std::to_string(max_rows_));
    if (M == 0) return;
    XLMR_CHECK(d && a && w, "lt_gemm_run (emulated): null device pointer");
    XLMR_CHECK((ep_ != LtEpilogue::none) == (bias != nullptr),
               "lt_gemm_run (emulated): bias does not match the epilogue");
    const Half16 t = t_;
    const int I = in_, O = out_;
    const LtEpilogue ep = ep_;
    auto* dd = static_cast<uint16_t*>(d);
    const auto* aa = static_cast<const uint16_t*>(a);
    const auto* ww = static_cast<const uint16_t*>(w);
    emu::submit(s, [=] {
      std::vector<float> wf(size_t(O) * size_t(I)), arow(static_cast<size_t>(I));
      for (size_t k = 0; k < wf.size(); ++k) wf[k] = to_f32(t, ww[k]);
      for (int m = 0; m < M; ++m) {
        for (int i = 0; i < I; ++i) arow[size_t(i)] = to_f32(t, aa[size_t(m) * I + i]);
        for (int o = 0; o < O; ++o) {
          const float* wr = wf.data() + size_t(o) * I;
          float acc = 0.f;
          for (int i = 0; i < I; ++i) acc += arow[size_t(i)] * wr[i];
          if (ep != LtEpilogue::none) acc += bias[o];
          if (ep == LtEpilogue::bias_gelu) acc = 0.5f * acc * (1.f + std::erf(acc * 0.70710678118654752f));
          dd[size_t(m) * O + o] = from_f32(t, acc);
        }
      }
    });
  }

 private:
  Half16 t_;
  int in_, out_;
  LtEpilogue ep_;
  int max_rows_;
};

LtContext* lt_create(size_t workspace_bytes) { return new LtContext{workspace_bytes}; }
void lt_destroy(LtContext* c) noexcept { delete c; }
LtGemm* lt_gemm_create(LtContext* c, Half16 t, int in, int out, LtEpilogue ep, int max_rows) {
  XLMR_CHECK(c != nullptr, "lt_gemm_create (emulated): no context");
  XLMR_CHECK(in > 0 && out > 0 && max_rows > 0, "lt_gemm_create (emulated): bad GEMM shape");
  return new LtGemm(t, in, out, ep, max_rows);
}
void lt_gemm_destroy(LtGemm* g) noexcept { delete g; }
void lt_gemm_run(LtGemm* g, void* d, const void* a, const void* w, const float* bias, int M, Stream s) {
  XLMR_CHECK(g != nullptr, "lt_gemm_run (emulated): no GEMM plan");
  g->run(d, a, w, bias, M, s);
}

}  // namespace xlmr::cuda
