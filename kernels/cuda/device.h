// CUDA device discovery, available in every build: a build without CUDA
// answers that it has none, so callers can give one clear error either way.
#pragma once

#include <string>

namespace xlmr::cuda {

// True when a CUDA device can be used; otherwise *why says why not
// (no driver, no device, driver too old, built without CUDA).
bool device_available(std::string* why, std::string* device_name = nullptr);

}  // namespace xlmr::cuda
