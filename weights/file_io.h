// Small helpers shared by the checkpoint readers: a bounds-checked binary
// input file and little-endian decoding. Internal to the library (weights/,
// tokenizer/).
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "engine/error.h"

namespace xlmr {
namespace detail {

inline uint64_t load_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int k = 7; k >= 0; --k) v = (v << 8) | p[k];
  return v;
}

// Bounded, single-line rendering of text for error messages: control
// characters become \xNN escapes, and with escape_quotes also quotes and
// backslashes (for untrusted names and keys quoted by the message itself).
inline std::string escaped(const std::string& s, size_t max_len, bool escape_quotes) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < max_len; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f || (escape_quotes && (c == '\'' || c == '\\'))) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max_len) out += "...";
  return out;
}

// Untrusted text (names, keys) the message puts in quotes.
inline std::string printable(const std::string& s, size_t max_len = 200) { return escaped(s, max_len, true); }

// A message from a parser or another library that may quote untrusted
// bytes: only control characters are escaped, so its own quoting stays
// readable.
inline std::string one_line(const std::string& s, size_t max_len = 400) { return escaped(s, max_len, false); }

// A regular file opened for binary reading, with its size known up front.
class InputFile {
 public:
  explicit InputFile(const std::string& path) : path_(path) {
    std::error_code ec;
    std::filesystem::file_status st = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::exists(st)) XLMR_THROW(path + ": cannot open checkpoint file (no such file)");
    if (std::filesystem::is_directory(st)) XLMR_THROW(path + ": is a directory, not a checkpoint file");
    if (!std::filesystem::is_regular_file(st)) XLMR_THROW(path + ": not a regular file");
    in_.open(path, std::ios::binary);
    if (!in_) XLMR_THROW(path + ": cannot open checkpoint file (" + std::strerror(errno) + ")");
    in_.seekg(0, std::ios::end);
    std::streamoff end = in_.tellg();
    if (!in_ || end < 0) XLMR_THROW(path + ": cannot determine the file size");
    size_ = static_cast<uint64_t>(end);
    in_.seekg(0, std::ios::beg);
  }

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }

  // Reads exactly n bytes at offset; throws when they are not all there.
  void read_at(uint64_t offset, void* dst, uint64_t n) {
    if (offset > size_ || n > size_ - offset) {
      XLMR_THROW(path_ + ": file truncated (needs bytes " + std::to_string(offset) + ".." +
                 std::to_string(offset + n) + ", file has " + std::to_string(size_) + ")");
    }
    if (n == 0) return;
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(offset), std::ios::beg);
    in_.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
    if (!in_ || static_cast<uint64_t>(in_.gcount()) != n) {
      // Sizes were checked against the size seen at open: a short read now
      // means the file shrank since, or an I/O error.
      XLMR_THROW(path_ + ": read error at offset " + std::to_string(offset) +
                 " (file truncated or changed since it was opened?)");
    }
  }

 private:
  std::string path_;
  std::ifstream in_;
  uint64_t size_ = 0;
};

}  // namespace detail
}  // namespace xlmr
