// Stand-in for builds configured without CUDA (XLMR_CUDA=OFF).
#include "kernels/cuda/device.h"

namespace xlmr::cuda {

bool device_available(std::string* why, std::string*, int) {
  if (why) *why = "this build of xlmr-engine has no CUDA support (configure with -DXLMR_CUDA=ON)";
  return false;
}

}  // namespace xlmr::cuda
