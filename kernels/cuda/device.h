// CUDA device discovery, available in every build: a build without CUDA
// answers that it has none, so callers can give one clear error either way.
#pragma once

#include <string>

namespace xlmr::cuda {

// True when CUDA device `index` (0-based, among the visible ones) can be
// used; otherwise *why says why not (no driver, no device, driver too old,
// no such index, built without CUDA).
bool device_available(std::string* why, std::string* device_name = nullptr, int index = 0);

}  // namespace xlmr::cuda
