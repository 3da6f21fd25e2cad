// The CUDA backend (kernels/cuda). Until its kernels land, every build answers
// --device cuda with a clear error naming the reason.
#include "engine/backend.h"
#include "engine/error.h"
#include "kernels/cuda/device.h"

namespace xlmr {
std::unique_ptr<Backend> make_cuda_backend(const Model&, const CudaBackendOptions&) {
  std::string why, name;
  if (!cuda::device_available(&why, &name)) XLMR_THROW("--device cuda: " + why);
  XLMR_THROW("--device cuda: found " + name + ", but this build has no CUDA backend yet");
}
}  // namespace xlmr
