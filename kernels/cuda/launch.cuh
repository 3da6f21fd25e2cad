// Kernel launches, their error check and dynamic shared memory, spelled so
// that the kernel sources also compile as plain C++ under the CPU emulator of
// tests/emulation, which defines XLMR_CUDA_EMULATION and supplies its own
// XLMR_LAUNCH, dynamic_shared and cudaGetLastError.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "engine/error.h"

namespace xlmr::cuda::detail {

// After a launch: throws "WHAT: kernel launch failed: ..." if it failed.
inline void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) XLMR_THROW(std::string(what) + ": kernel launch failed: " + cudaGetErrorString(err));
}

}  // namespace xlmr::cuda::detail

#ifndef XLMR_CUDA_EMULATION

// XLMR_LAUNCH(grid, block, smem, stream, kernel)(args...) is
// kernel<<<grid, block, smem, stream>>>(args...). The kernel comes last so
// that a template with several arguments needs no extra parentheses.
#define XLMR_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<(grid), (block), (smem), (stream)>>>

namespace xlmr::cuda::detail {

// The block's dynamic shared memory (the launch's `smem` bytes) as T*.
template <typename T>
__device__ __forceinline__ T* dynamic_shared() {
  extern __shared__ __align__(16) unsigned char xlmr_dynamic_smem[];
  return reinterpret_cast<T*>(xlmr_dynamic_smem);
}

}  // namespace xlmr::cuda::detail

#endif  // XLMR_CUDA_EMULATION
