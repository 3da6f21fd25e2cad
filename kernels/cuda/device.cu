#include "kernels/cuda/device.h"

#include <cuda_runtime.h>

#include <string>

namespace xlmr::cuda {

bool device_available(std::string* why, std::string* device_name, int index) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorInsufficientDriver) {
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    cudaGetLastError();
    if (why) {
      auto ver = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
      if (driver == 0)
        *why = "no NVIDIA driver found (no CUDA device can be used on this machine)";
      else
        *why = "the NVIDIA driver is too old for this build (it supports CUDA " + ver(driver) +
               ", the engine was built with CUDA " + ver(runtime) + "): update the driver";
    }
    return false;
  }
  if (err != cudaSuccess) {
    if (why) *why = std::string("no usable CUDA device (") + cudaGetErrorString(err) + ")";
    cudaGetLastError();  // clear the sticky error for later callers
    return false;
  }
  if (count == 0) {
    if (why) *why = "no CUDA device found";
    return false;
  }
  if (index < 0 || index >= count) {
    if (why)
      *why = "there is no GPU " + std::to_string(index) + ": " + std::to_string(count) + " visible (numbered from 0" +
             ", as CUDA_VISIBLE_DEVICES leaves them)";
    return false;
  }
  cudaDeviceProp prop;
  err = cudaGetDeviceProperties(&prop, index);
  if (err != cudaSuccess) {
    if (why) *why = "cannot query CUDA device " + std::to_string(index) + " (" + cudaGetErrorString(err) + ")";
    cudaGetLastError();
    return false;
  }
  if (device_name) *device_name = prop.name;
  return true;
}

}  // namespace xlmr::cuda
