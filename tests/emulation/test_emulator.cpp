// The CPU emulator itself (tests/emulation/emulator.h): that it runs what a
// GPU runs - block and warp rendezvous, shuffles, the mma.sync fragment
// layout of the PTX ISA, cp.async's deferred copies - and that it reports,
// as a launch failure, what would hang or misbehave on a GPU.
#include "tests/emulation/emulator.h"
// (The emulator's spellings of the CUDA keywords must come first.)

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "kernels/cuda/half_bits.cuh"

namespace {

using xlmr::cuda::detail::Bf16Bits;
using xlmr::cuda::detail::F16Bits;

std::string launch_outcome() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? std::string("ok") : std::string(cudaGetErrorString(err));
}

// Every thread writes its coordinates; a block barrier separates a write of
// shared memory from the neighbour's read.
__global__ void places_kernel(int* out) {
  __shared__ int s[64];
  const int t = threadIdx.x + blockDim.x * threadIdx.y;
  s[t] = t * 10;
  __syncthreads();
  const int b = blockIdx.x + gridDim.x * blockIdx.y;
  out[b * 64 + t] = s[(t + 1) % 64] + 1000 * b;
}

// A warp sum by butterfly shuffles, and a broadcast from lane 5.
__global__ void shuffle_kernel(float* sums, float* fives) {
  float v = float(threadIdx.x);
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  sums[threadIdx.x] = v;
  fives[threadIdx.x] = __shfl_sync(0xffffffffu, float(threadIdx.x) * 2.f, 5);
}

// The first warp returns, the second waits at __syncthreads: fine on a GPU
// (exited threads count as arrived).
__global__ void early_exit_kernel(int* out) {
  if (threadIdx.x < 32) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

// Half of the second warp waits at __syncthreads, the other half at a
// full-warp shuffle that needs the first half: a hang on the device.
__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 48) {
    __syncthreads();
    out[threadIdx.x] = 1;
  } else {
    out[threadIdx.x] = int(__shfl_xor_sync(0xffffffffu, 1.f, 1));
  }
}

// Half a warp exits, the rest shuffles with the full mask.
__global__ void partial_warp_kernel(float* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.f, 1);
}

// Lanes meeting at different warp operations.
__global__ void mixed_warp_ops_kernel(float* out) {
  if (threadIdx.x % 2 == 0)
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.f, 1);
  else
    __syncwarp();
}

// A race: warp 1 writes s, warp 0 reads it two warp operations later, with
// no block barrier between - right only if warp 1 happens to be on time.
__global__ void racy_kernel(int* out) {
  __shared__ int s;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x == 0) s = 0;
  __syncthreads();
  __syncwarp();
  if (warp == 1) {
    if (lane == 0) s = 1;
    return;
  }
  __syncwarp();
  out[lane] = s;
}

// One m16n8k16 product: fragments loaded from row-major A [16][16] and
// B [16][8] by the PTX ISA's formulas, D [16][8] stored the same way.
template <bool kBf16>
__global__ void mma_kernel(const uint16_t* A, const uint16_t* B, const float* C, float* D) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  auto pair = [](uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); };
  uint32_t a[4];
  for (int r = 0; r < 4; ++r) {
    const int row = g + 8 * (r % 2), k = 2 * t + 8 * (r / 2);
    a[r] = pair(A[row * 16 + k], A[row * 16 + k + 1]);
  }
  const uint32_t b0 = pair(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]);
  const uint32_t b1 = pair(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g]);
  float d[4];
  for (int i = 0; i < 4; ++i) d[i] = C[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
  if (kBf16)
    xlmr::cuda::ptx::mma_m16n8k16_bf16(d, a, b0, b1);
  else
    xlmr::cuda::ptx::mma_m16n8k16_f16(d, a, b0, b1);
  for (int i = 0; i < 4; ++i) D[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = d[i];
}

// ldmatrix x4 (and .trans): the 32 rows of four 8 x 8 matrices lie in shared
// memory in a scrambled order, 16 elements apart; lane 8m + i names row i of
// matrix m wherever it is. Element (m, i, j) is m * 64 + i * 8 + j. out: per
// lane, its 4 words, then the 4 words of the .trans load. offset: added to
// every row address (1: misaligned).
__global__ void ldmatrix_kernel(uint32_t* out, int offset) {
  __shared__ __align__(16) uint16_t s[32 * 16];
  const int lane = threadIdx.x;
  const int slot = (lane * 13 + 5) % 32;  // where row `lane` is kept
  for (int j = 0; j < 8; ++j) s[slot * 16 + j] = uint16_t(lane * 8 + j);
  __syncwarp();
  const uint16_t* row = s + slot * 16 + offset;
  uint32_t r[4], rt[4];
  xlmr::cuda::ptx::ldmatrix_x4(r, row);
  xlmr::cuda::ptx::ldmatrix_x4_trans(rt, row);
  for (int m = 0; m < 4; ++m) {
    out[lane * 8 + m] = r[m];
    out[lane * 8 + 4 + m] = rt[m];
  }
}

// cp.async: the copy lands at the wait that covers its group, not before.
__global__ void cp_async_kernel(const float* src, float* seen) {
  __shared__ __align__(16) float s[8];
  for (int i = 0; i < 8; ++i) s[i] = -1.f;
  xlmr::cuda::ptx::cp_async_16(s, src, true);
  xlmr::cuda::ptx::cp_async_commit();
  xlmr::cuda::ptx::cp_async_16(s + 4, src + 4, false);  // zero-fill
  xlmr::cuda::ptx::cp_async_commit();
  seen[0] = s[0];  // nothing waited for yet
  xlmr::cuda::ptx::cp_async_wait<1>();
  seen[1] = s[0];  // group 0 done
  seen[2] = s[4];  // group 1 may still be in flight
  xlmr::cuda::ptx::cp_async_wait<0>();
  seen[3] = s[4];
}

}  // namespace

TEST_CASE("emulator: threads, blocks and shared memory", "[emulator]") {
  std::vector<int> out(4 * 64, -1);
  XLMR_LAUNCH(dim3(2, 2), dim3(32, 2), 0, nullptr, places_kernel)(out.data());
  REQUIRE(launch_outcome() == "ok");
  for (int b = 0; b < 4; ++b)
    for (int t = 0; t < 64; ++t) CHECK(out[size_t(b * 64 + t)] == ((t + 1) % 64) * 10 + 1000 * b);
}

TEST_CASE("emulator: warp shuffles", "[emulator]") {
  std::vector<float> sums(64), fives(64);
  XLMR_LAUNCH(1, 32, 0, nullptr, shuffle_kernel)(sums.data(), fives.data());
  REQUIRE(launch_outcome() == "ok");
  for (int l = 0; l < 32; ++l) {
    CHECK(sums[size_t(l)] == 496.f);  // 0 + 1 + ... + 31
    CHECK(fives[size_t(l)] == 10.f);
  }
}

TEST_CASE("emulator: exited threads count as arrived at a barrier", "[emulator]") {
  std::vector<int> out(64, 0);
  XLMR_LAUNCH(1, 64, 0, nullptr, early_exit_kernel)(out.data());
  REQUIRE(launch_outcome() == "ok");
  CHECK(out[0] == 0);
  CHECK(out[63] == 1);
}

TEST_CASE("emulator: a block that would hang is a launch failure", "[emulator]") {
  std::vector<int> out(64, 0);
  XLMR_LAUNCH(1, 64, 0, nullptr, divergent_barrier_kernel)(out.data());
  const std::string what = launch_outcome();
  INFO(what);
  CHECK(what.find("is stuck") != std::string::npos);
  CHECK(launch_outcome() == "ok");  // read once, as cudaGetLastError
}

TEST_CASE("emulator: warp operations with missing or disagreeing lanes fail", "[emulator]") {
  std::vector<float> out(32, 0.f);
  XLMR_LAUNCH(1, 32, 0, nullptr, partial_warp_kernel)(out.data());
  std::string what = launch_outcome();
  INFO(what);
  CHECK(what.find("lanes already exited") != std::string::npos);
  XLMR_LAUNCH(1, 32, 0, nullptr, mixed_warp_ops_kernel)(out.data());
  what = launch_outcome();
  INFO(what);
  CHECK(what.find("different warp operations") != std::string::npos);
}

TEST_CASE("emulator: launch configurations a GPU refuses", "[emulator]") {
  std::vector<int> out(4096, 0);
  XLMR_LAUNCH(1, 2048, 0, nullptr, early_exit_kernel)(out.data());
  CHECK(launch_outcome().find("invalid configuration") != std::string::npos);
  XLMR_LAUNCH(dim3(1, 70000), 32, 0, nullptr, early_exit_kernel)(out.data());
  CHECK(launch_outcome().find("invalid configuration") != std::string::npos);
  XLMR_LAUNCH(1, 64, size_t(64) << 10, nullptr, early_exit_kernel)(out.data());
  CHECK(launch_outcome().find("dynamic shared memory") != std::string::npos);
}

TEMPLATE_TEST_CASE("emulator: mma.sync m16n8k16 multiplies by the PTX fragment layout", "[emulator]", F16Bits,
                   Bf16Bits) {
  constexpr bool kBf16 = std::is_same<TestType, Bf16Bits>::value;
  std::vector<uint16_t> A(16 * 16), B(16 * 8);
  std::vector<float> C(16 * 8), D(16 * 8, 0.f);
  // Small integers: exact in both types and in fp32 sums.
  for (int i = 0; i < 16 * 16; ++i) A[size_t(i)] = TestType::from_float(float((i * 7) % 11 - 5));
  for (int i = 0; i < 16 * 8; ++i) B[size_t(i)] = TestType::from_float(float((i * 5) % 9 - 4));
  for (int i = 0; i < 16 * 8; ++i) C[size_t(i)] = float(i % 3);
  XLMR_LAUNCH(1, 32, 0, nullptr, mma_kernel<kBf16>)(A.data(), B.data(), C.data(), D.data());
  REQUIRE(launch_outcome() == "ok");
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 8; ++c) {
      float want = C[size_t(r * 8 + c)];
      for (int k = 0; k < 16; ++k)
        want += TestType::to_float(A[size_t(r * 16 + k)]) * TestType::to_float(B[size_t(k * 8 + c)]);
      INFO("row " << r << " column " << c);
      CHECK(D[size_t(r * 8 + c)] == want);
    }
}

TEST_CASE("emulator: ldmatrix gathers rows from every lane's address, as the PTX ISA lays them out", "[emulator]") {
  std::vector<uint32_t> out(32 * 8, 0);
  XLMR_LAUNCH(1, 32, 0, nullptr, ldmatrix_kernel)(out.data(), 0);
  REQUIRE(launch_outcome() == "ok");
  auto element = [](int m, int i, int j) { return uint32_t(m * 64 + i * 8 + j); };
  for (int lane = 0; lane < 32; ++lane)
    for (int m = 0; m < 4; ++m) {
      const int g = lane / 4, t = lane % 4;
      INFO("lane " << lane << " matrix " << m);
      // (row g, columns 2t and 2t+1), the lower column in the low half
      CHECK(out[size_t(lane * 8 + m)] == (element(m, g, 2 * t) | (element(m, g, 2 * t + 1) << 16)));
      // .trans: (rows 2t and 2t+1, column g)
      CHECK(out[size_t(lane * 8 + 4 + m)] == (element(m, 2 * t, g) | (element(m, 2 * t + 1, g) << 16)));
    }
  XLMR_LAUNCH(1, 32, 0, nullptr, ldmatrix_kernel)(out.data(), 1);
  CHECK(launch_outcome().find("ldmatrix with a row address that is not 16-byte aligned") != std::string::npos);
}

TEST_CASE("emulator: cp.async copies land at the wait that covers them", "[emulator]") {
  alignas(16) float src[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<float> seen(4, 0.f);
  XLMR_LAUNCH(1, 1, 0, nullptr, cp_async_kernel)(src, seen.data());
  REQUIRE(launch_outcome() == "ok");
  CHECK(seen[0] == -1.f);
  CHECK(seen[1] == 1.f);
  CHECK(seen[2] == -1.f);
  CHECK(seen[3] == 0.f);  // the zero-filled chunk
}

TEST_CASE("emulator: a shuffled schedule shows races that lockstep hides", "[emulator]") {
  std::vector<int> out(32, -1);
  XLMR_LAUNCH(1, 64, 0, nullptr, racy_kernel)(out.data());
  REQUIRE(launch_outcome() == "ok");
  CHECK(out[0] == 1);  // lockstep: warp 1 is always on time
  int late = 0;
  for (uint64_t seed = 1; seed <= 32; ++seed) {
    xlmr::emulation::set_schedule_seed(seed);
    XLMR_LAUNCH(1, 64, 0, nullptr, racy_kernel)(out.data());
    REQUIRE(launch_outcome() == "ok");
    late += out[0] == 0;
  }
  xlmr::emulation::set_schedule_seed(0);
  INFO(late << " of 32 shuffled runs read s before warp 1 wrote it");
  CHECK(late > 0);
  CHECK(late < 32);
}
