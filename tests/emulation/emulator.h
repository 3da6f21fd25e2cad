// A CPU emulator for the handwritten CUDA kernels of kernels/cuda, so that
// the GPU tests (tests/test_cuda_attention.cpp, tests/test_cuda_kernels.cpp)
// also run - slowly - on machines without a GPU, CI among them, against the
// very kernel source that nvcc compiles.
//
// How: each kernel file is compiled a second time as plain C++ by
// tests/emulation/kernels_*.cpp, which include this header first. Every CUDA
// thread of a block becomes a fiber with its own stack; the
// fibers of one block run on the calling thread, one block after another,
// and switch only where threads of a real GPU wait for each other:
//   __syncthreads()              every live thread of the block must arrive
//   __syncwarp, __shfl*_sync,    every lane of the warp must arrive at the
//   ldmatrix, mma.sync           same kind of operation, then all go on
// so a missing barrier, a barrier in divergent code or a shuffle with lanes
// missing is reported (as a launch failure), not silently tolerated.
// __shared__ variables become function statics (one block runs at a time).
// cp.async copies are deferred until the cp.async.wait_group that covers
// them, so reading a tile before waiting for it reads stale data, as on the
// device. mma.sync m16n8k16 gathers the warp's fragments and multiplies them
// in fp32 following the PTX ISA's fragment layout; ldmatrix gathers the
// lanes' row addresses and deals out the words by the same ISA. Fresh device memory and
// shared memory are filled with 0xff bytes (NaN in fp16, bf16 and fp32).
//
// Streams are synchronous; a stream capturing a graph records its work, and
// launching the graph runs the recording (tests/emulation/runtime.cpp builds
// the runtime of kernels/cuda/cuda_kernels.h on this, with a plain fp32 GEMM
// standing in for cuBLASLt so that the CUDA backend runs end to end).
// Not emulated: cuBLASLt itself (its tests skip), timing, concurrency
// between streams, anything about speed. Launch errors the emulator detects
// (bad grid or block, too much dynamic shared memory, a deadlock, misaligned
// cp.async) surface through cudaGetLastError() as on the device.
#pragma once

#ifndef XLMR_CUDA_EMULATION
#define XLMR_CUDA_EMULATION 1
#endif

// The host parts of the CUDA headers first: types (dim3, uint4, __half) and
// the fp16/bf16 conversions, which are host functions too.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels/cuda/cuda_kernels.h"

namespace xlmr::emulation {

// Where the calling emulated thread is.
struct Place {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
const Place& place();
int lane_id();

// Block and warp rendezvous; the warp one names its operation so that lanes
// meeting at different operations are reported.
void sync_block();
void sync_warp(const char* op, unsigned mask);

constexpr int kExchangeWords = 16;

// Publishes n (<= kExchangeWords) words of this lane and waits for the warp; returns the
// warp's words as [32 lanes][kExchangeWords], valid until this lane's next warp operation.
const uint32_t* warp_exchange(const char* op, unsigned mask, const uint32_t* mine, int n);

void* dynamic_shared_memory();

// cp.async (sm_80): a deferred 16-byte copy, group commit and wait.
void cp_async(void* smem, const void* gmem, bool valid);
void cp_async_commit();
void cp_async_wait(int pending);

// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: `row` is this lane's row
// address (16-byte aligned) of one of four 8 x 8 16-bit matrices.
void ldmatrix_x4(bool trans, uint32_t (&r)[4], const void* row);

// d += A B for one mma.m16n8k16 with fp32 accumulators.
void mma_m16n8k16(bool bf16, float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

// The schedule of this host thread's later launches. 0 (the default):
// lockstep - released warps all go on, cp.async copies land at their wait.
// Otherwise a seed: each warp of a block gets a random pace and goes on from
// a rendezvous (a barrier included) only when its turn comes up, so warps
// drift apart, and each cp.async lands at its issue or at its wait at random
// - a missing barrier or a too-early buffer reuse then tends to show.
void set_schedule_seed(uint64_t seed);

// Runs body(ctx) as every thread of every block of the grid; `kernel` (the
// kernel's address) decides how much dynamic shared memory it may have.
void run_grid(dim3 grid, dim3 block, size_t dynamic_smem, const void* kernel, void (*body)(void*), void* ctx);

// The emulated device: compute capability and the most shared memory a block
// can opt in to (default: 9.0 and 227 KiB, an H100's). Tests lower them to
// see what a smaller device gets. Opt-ins already granted stay.
void set_device_limits(int cc_major, int cc_minor, size_t smem_per_block_optin);
cuda::DeviceLimits device_limits();
// cudaFuncSetAttribute(kernel, MaxDynamicSharedMemorySize, bytes), checked by
// the caller against device_limits(); 0 withdraws the opt-in.
void allow_dynamic_smem(const void* kernel, size_t bytes);

// Streams. Work submitted to a stream runs at once (every stream is
// synchronous here) unless the stream is capturing a graph: then it is
// recorded, to run when the graph is launched. A null stream never captures.
struct Stream;
struct Graph;
Stream* stream_new();
void stream_delete(Stream* s) noexcept;
void submit(void* stream, std::function<void()> work);
void capture_start(void* stream);   // throws xlmr::Error if already capturing
Graph* capture_stop(void* stream);  // throws if not capturing
void capture_drop(void* stream) noexcept;
void graph_run(Graph* g, void* stream);
void graph_delete(Graph* g) noexcept;

// The launch's outcome, read (and cleared) by cudaGetLastError().
cudaError_t take_error();
const char* error_string(cudaError_t err);

// XLMR_LAUNCH(...)(args...): the kernel's parameters are copied once per
// launch (and kept by a graph that records it), and every emulated thread
// calls the kernel with them.
template <typename... P>
class Launch {
 public:
  Launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, void* stream)
      : kernel_(kernel), grid_(grid), block_(block), smem_(smem), stream_(stream) {}

  template <typename... A>
  void operator()(A&&... args) const {
    struct Call {
      void (*kernel)(P...);
      std::tuple<std::decay_t<P>...> params;
    };
    auto call = std::make_shared<Call>(Call{kernel_, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)});
    const dim3 grid = grid_, block = block_;
    const size_t smem = smem_;
    submit(stream_, [call, grid, block, smem] {
      run_grid(
          grid, block, smem, reinterpret_cast<const void*>(call->kernel),
          [](void* c) {
            auto* k = static_cast<Call*>(c);
            std::apply(k->kernel, k->params);
          },
          call.get());
    });
  }

 private:
  void (*kernel_)(P...);
  dim3 grid_, block_;
  size_t smem_;
  void* stream_;
};

template <typename... P>
Launch<P...> launch(dim3 grid, dim3 block, size_t smem, void* stream, void (*kernel)(P...)) {
  return Launch<P...>(kernel, grid, block, smem, stream);
}

// std::bit_cast (C++20) for the 32-bit values shuffles move.
template <typename To, typename From>
To bit_cast32(From v) {
  static_assert(sizeof(To) == 4 && sizeof(From) == 4, "32-bit values only");
  To t;
  std::memcpy(&t, &v, 4);
  return t;
}

// v as held by lane src (mod 32) of the calling warp.
template <typename T>
T shuffle(const char* op, unsigned mask, T v, int src) {
  const uint32_t mine = bit_cast32<uint32_t>(v);
  const uint32_t* all = warp_exchange(op, mask, &mine, 1);
  return bit_cast32<T>(all[(src & 31) * kExchangeWords]);
}

}  // namespace xlmr::emulation

// ---- the CUDA C++ spellings the kernels use ---------------------------------
#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)
#define threadIdx (::xlmr::emulation::place().thread_idx)
#define blockIdx (::xlmr::emulation::place().block_idx)
#define blockDim (::xlmr::emulation::place().block_dim)
#define gridDim (::xlmr::emulation::place().grid_dim)
#define cudaGetLastError() ::xlmr::emulation::take_error()
#define cudaGetErrorString(err) ::xlmr::emulation::error_string(err)
#define XLMR_LAUNCH(grid, block, smem, stream, ...) \
  ::xlmr::emulation::launch((grid), (block), (smem), static_cast<void*>(stream), &__VA_ARGS__)

inline void __syncthreads() { ::xlmr::emulation::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::xlmr::emulation::sync_warp("__syncwarp", mask); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
  return ::xlmr::emulation::shuffle("__shfl_xor_sync", mask, v, ::xlmr::emulation::lane_id() ^ lane_mask);
}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane) {
  return ::xlmr::emulation::shuffle("__shfl_sync", mask, v, src_lane);
}

inline float __uint_as_float(unsigned u) { return ::xlmr::emulation::bit_cast32<float>(u); }
inline unsigned __float_as_uint(float f) { return ::xlmr::emulation::bit_cast32<uint32_t>(f); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

namespace xlmr::cuda::ptx {
inline void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  ::xlmr::emulation::mma_m16n8k16(false, d, a, b0, b1);
}
inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  ::xlmr::emulation::mma_m16n8k16(true, d, a, b0, b1);
}
inline void cp_async_16(void* smem, const void* gmem, bool valid) { ::xlmr::emulation::cp_async(smem, gmem, valid); }
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) { ::xlmr::emulation::ldmatrix_x4(false, r, row); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) { ::xlmr::emulation::ldmatrix_x4(true, r, row); }
inline void cp_async_commit() { ::xlmr::emulation::cp_async_commit(); }
template <int pending>
void cp_async_wait() {
  ::xlmr::emulation::cp_async_wait(pending);
}
}  // namespace xlmr::cuda::ptx

namespace xlmr::cuda::detail {
template <typename T>
T* dynamic_shared() {
  return static_cast<T*>(::xlmr::emulation::dynamic_shared_memory());
}
}  // namespace xlmr::cuda::detail
