// Sliding windows over a long token sequence (xlmr-infer --long window).
//
// A text of n content tokens (specials excluded) is covered by windows of at
// most `room` tokens; consecutive windows share `overlap` tokens, so each new
// window starts `room - overlap` tokens after the previous one. The last
// window ends exactly at n and may be shorter. An empty text gives one empty
// window (it still runs as <s></s>).
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace xlmr::tools {

// [begin, end) content-token ranges; needs room >= 1 and overlap < room.
inline std::vector<std::pair<size_t, size_t>> split_windows(size_t n, size_t room, size_t overlap) {
  std::vector<std::pair<size_t, size_t>> out;
  if (room == 0 || overlap >= room) return out;  // the caller validates; never loop forever
  const size_t step = room - overlap;
  for (size_t begin = 0;; begin += step) {
    const size_t end = begin + room < n ? begin + room : n;
    out.emplace_back(begin, end);
    if (end == n) break;
  }
  return out;
}

}  // namespace xlmr::tools
