// A little-endian array streamed into a NumPy .npy file (format version 1.0,
// C order) whose row count is only known at the end: a 2-D float32 matrix
// (rows of `cols` values) or a 1-D int64 vector.
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

enum class NpyType {
  f32,  // 2-D (rows, cols) float32
  i64,  // 1-D (rows,) int64
};

// The complete header for an array of `rows` rows (of `cols` values for f32).
std::string npy_header(uint64_t rows, uint64_t cols, NpyType type = NpyType::f32);

class NpyWriter {
 public:
  // Creates (truncates) `path`; throws xlmr::Error when it cannot be written
  // or is not a regular file. `cols` is ignored for i64.
  NpyWriter(const std::string& path, size_t cols, NpyType type = NpyType::f32);
  // Without finish() (an error on the way), still leaves a valid file that
  // holds the rows appended so far.
  ~NpyWriter();
  NpyWriter(const NpyWriter&) = delete;
  NpyWriter& operator=(const NpyWriter&) = delete;

  size_t cols() const { return cols_; }
  uint64_t rows() const { return rows_; }
  void append_row(const float* v) { append_rows(v, 1); }  // f32: [cols]
  void append_rows(const float* v, size_t n);              // f32: [n, cols]
  void append(int64_t v);                                  // i64: one value
  // Rewrites the header with the rows so far and flushes: the file on disk is
  // then a valid array of them, should the process end without finish().
  void checkpoint();
  // Rewrites the header with the final shape and closes the file. Throws on I/O errors.
  void finish();

 private:
  void write_header();
  void write_bytes(size_t n);
  std::string path_;
  FILE* f_ = nullptr;
  NpyType type_ = NpyType::f32;
  size_t cols_ = 0;
  uint64_t rows_ = 0;
  std::vector<unsigned char> bytes_;  // little-endian staging
};

}  // namespace xlmr::tools
