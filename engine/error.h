// Error type used by every library in the engine.
//
// Library code never exits or aborts: it throws xlmr::Error, whose message is
// one human-readable line (what went wrong and with which input) and whose
// where() names the source line that detected it. The CLIs print the message
// as "PROGRAM: error: MESSAGE" and exit non-zero.
#pragma once

#include <stdexcept>
#include <string>

namespace xlmr {

class Error : public std::runtime_error {
 public:
  Error(const std::string& message, const char* file, int line)
      : std::runtime_error(message), where_(std::string(file) + ":" + std::to_string(line)) {}
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

}  // namespace xlmr

#define XLMR_THROW(msg) throw ::xlmr::Error((msg), __FILE__, __LINE__)
#define XLMR_CHECK(cond, msg) \
  do {                        \
    if (!(cond)) XLMR_THROW(msg); \
  } while (0)
