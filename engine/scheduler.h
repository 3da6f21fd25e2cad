// Packs requests into batches under a token budget.
//
// Requests are taken in order of length, so that a batch holds sequences of
// similar length; a ragged backend pays for the sum of the lengths, a padded
// one for count x longest, and the budget is charged accordingly. Each batch
// lists request indices; the engine writes results back by index, so the
// caller sees them in input order.
#pragma once

#include <vector>

namespace xlmr {

struct ScheduleOptions {
  int max_tokens = 8192;  // budget per batch, as the backend counts tokens
  bool padded = false;    // charge S * longest instead of the sum
};

// lengths[i] >= 1 and <= max_tokens for every i (the engine checks).
std::vector<std::vector<int>> schedule_batches(const std::vector<int>& lengths, const ScheduleOptions& opts);

}  // namespace xlmr
