// xlmr-infer's progress line on standard error: lines done, lines/s,
// tokens/s and, when the input size is known, bytes read of the total.
// On a terminal it is redrawn in place ('\r') at most ten times a second, and
// ended with a newline (finish) so that warnings and errors start on a line
// of their own; elsewhere (a log file) it is a plain line at most once a second.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace xlmr::tools {

struct ProgressCounts {
  uint64_t lines = 0;
  uint64_t tokens = 0;       // tokens run through the model
  uint64_t bytes = 0;        // input bytes consumed
  uint64_t total_bytes = 0;  // 0: unknown (a pipe)
};

// One line of text, no control characters: "1200 lines  3400 lines/s ...".
std::string format_progress(const ProgressCounts& c, double seconds);

class Progress {
 public:
  // Disabled: every call is a no-op. `delay_s`: nothing is drawn before this
  // much time has passed (short runs stay quiet). `terminal`: redraw in place.
  Progress(FILE* to, bool enabled, double delay_s, bool terminal);
  void update(const ProgressCounts& c);  // redraws when 0.1 s have passed since the last draw
  // Draws the final counts (when anything was drawn, or delay_s is 0) and ends the line.
  void finish(const ProgressCounts& c);
  // Ends a drawn line without a final draw (before an error message).
  void interrupt();

 private:
  using Clock = std::chrono::steady_clock;
  void draw(const ProgressCounts& c, Clock::time_point now);
  FILE* to_;
  bool enabled_, terminal_;
  double delay_s_;
  Clock::time_point start_, last_;
  bool drawn_ = false, open_line_ = false;
  size_t last_width_ = 0;
};

}  // namespace xlmr::tools
