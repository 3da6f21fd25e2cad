// A 2-D little-endian float32 array streamed into a NumPy .npy file (format
// version 1.0, C order) whose row count is only known at the end.
//
// The header has a fixed size of kNpyHeaderSize bytes (a multiple of 64, as
// the format asks), with the shape padded by spaces so that any row count
// fits; finish() seeks back and rewrites it with the final count. That needs
// a seekable regular file, so standard output and pipes are refused.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace xlmr::tools {

constexpr size_t kNpyHeaderSize = 128;  // magic, version, length, dict, spaces, '\n'

// The complete header for a float32 array of shape (rows, cols).
std::string npy_header(uint64_t rows, uint64_t cols);

class NpyWriter {
 public:
  // Creates (truncates) `path`; throws xlmr::Error when it cannot be written
  // or is not a regular file.
  NpyWriter(const std::string& path, size_t cols);
  // Without finish() (an error on the way), still leaves a valid file that
  // holds the rows appended so far.
  ~NpyWriter();
  NpyWriter(const NpyWriter&) = delete;
  NpyWriter& operator=(const NpyWriter&) = delete;

  size_t cols() const { return cols_; }
  uint64_t rows() const { return rows_; }
  void append_row(const float* v);  // [cols]
  // Rewrites the header with the final shape and closes the file. Throws on I/O errors.
  void finish();

 private:
  void write_header();
  std::string path_;
  FILE* f_ = nullptr;
  size_t cols_ = 0;
  uint64_t rows_ = 0;
  std::vector<unsigned char> row_;  // [cols * 4] little-endian bytes
};

}  // namespace xlmr::tools
