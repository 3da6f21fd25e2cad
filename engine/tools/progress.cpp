#include "engine/tools/progress.h"

#include <cinttypes>

namespace xlmr::tools {

namespace {

std::string human_bytes(uint64_t b) {
  char buf[32];
  if (b < 1024) std::snprintf(buf, sizeof buf, "%" PRIu64 " B", b);
  else if (b < 1024ull * 1024) std::snprintf(buf, sizeof buf, "%.1f KiB", double(b) / 1024);
  else if (b < 1024ull * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / (1024.0 * 1024));
  else std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / (1024.0 * 1024 * 1024));
  return buf;
}

}  // namespace

std::string format_progress(const ProgressCounts& c, double seconds) {
  const double s = seconds > 1e-9 ? seconds : 1e-9;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%" PRIu64 " lines  %.0f lines/s  %.0f tokens/s  %.1f s", c.lines,
                double(c.lines) / s, double(c.tokens) / s, seconds);
  std::string out = buf;
  out += "  " + human_bytes(c.bytes);
  if (c.total_bytes > 0) {
    const double pct = 100.0 * double(c.bytes) / double(c.total_bytes);
    std::snprintf(buf, sizeof buf, " of %s (%.1f%%)", human_bytes(c.total_bytes).c_str(), pct > 100 ? 100.0 : pct);
    out += buf;
  }
  return out;
}

Progress::Progress(FILE* to, bool enabled, double delay_s, bool terminal)
    : to_(to), enabled_(enabled), terminal_(terminal), delay_s_(delay_s), start_(Clock::now()), last_(start_) {}

void Progress::draw(const ProgressCounts& c, Clock::time_point now) {
  const std::string text = "xlmr-infer: " + format_progress(c, std::chrono::duration<double>(now - start_).count());
  last_ = now;
  drawn_ = true;
  if (!terminal_) {
    std::fprintf(to_, "%s\n", text.c_str());
    std::fflush(to_);
    return;
  }
  // Pad over the previous, possibly longer, text instead of relying on terminal escapes.
  std::string line = "\r" + text;
  if (text.size() < last_width_) line.append(last_width_ - text.size(), ' ');
  last_width_ = text.size();
  std::fputs(line.c_str(), to_);
  std::fflush(to_);
  open_line_ = true;
}

void Progress::update(const ProgressCounts& c) {
  if (!enabled_) return;
  const auto now = Clock::now();
  if (std::chrono::duration<double>(now - start_).count() < delay_s_) return;
  if (drawn_ && std::chrono::duration<double>(now - last_).count() < (terminal_ ? 0.1 : 1.0)) return;
  draw(c, now);
}

void Progress::finish(const ProgressCounts& c) {
  if (!enabled_) return;
  if (drawn_ || delay_s_ <= 0) draw(c, Clock::now());  // the final counts, even right after a draw
  interrupt();
}

void Progress::interrupt() {
  if (!enabled_ || !open_line_) return;
  std::fputc('\n', to_);
  std::fflush(to_);
  open_line_ = false;
}

}  // namespace xlmr::tools
