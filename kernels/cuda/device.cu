#include "kernels/cuda/device.h"

#include <cuda_runtime.h>

namespace xlmr::cuda {

bool device_available(std::string* why, std::string* device_name) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (why) *why = std::string("no usable CUDA device (") + cudaGetErrorString(err) + ")";
    cudaGetLastError();  // clear the sticky error for later callers
    return false;
  }
  if (count == 0) {
    if (why) *why = "no CUDA device found";
    return false;
  }
  cudaDeviceProp prop;
  err = cudaGetDeviceProperties(&prop, 0);
  if (err != cudaSuccess) {
    if (why) *why = std::string("cannot query CUDA device 0 (") + cudaGetErrorString(err) + ")";
    return false;
  }
  if (device_name) *device_name = prop.name;
  return true;
}

}  // namespace xlmr::cuda
