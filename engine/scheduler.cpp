#include "engine/scheduler.h"

#include <algorithm>
#include <numeric>

#include "engine/error.h"

namespace xlmr {

std::vector<std::vector<int>> schedule_batches(const std::vector<int>& lengths, const ScheduleOptions& opts) {
  std::vector<int> order(lengths.size());
  std::iota(order.begin(), order.end(), 0);
  // Ascending length, ties by index: the order is deterministic, and in
  // padded mode the request just added is always the batch's longest.
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return lengths[a] < lengths[b]; });

  std::vector<std::vector<int>> batches;
  std::vector<int> cur;
  long long sum = 0;
  for (int i : order) {
    const int len = lengths[i];
    XLMR_CHECK(len >= 1 && len <= opts.max_tokens,
               "request " + std::to_string(i) + " has " + std::to_string(len) +
                   " tokens, outside 1.." + std::to_string(opts.max_tokens));
    const long long cost = opts.padded ? (long long)(cur.size() + 1) * len : sum + len;
    if (!cur.empty() && cost > opts.max_tokens) {
      batches.push_back(std::move(cur));
      cur.clear();
      sum = 0;
    }
    cur.push_back(i);
    sum += len;
  }
  if (!cur.empty()) batches.push_back(std::move(cur));
  return batches;
}

}  // namespace xlmr
