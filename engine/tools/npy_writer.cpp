#include "engine/tools/npy_writer.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "engine/error.h"

namespace xlmr::tools {

std::string npy_header(uint64_t rows, uint64_t cols, NpyType type) {
  const std::string shape = type == NpyType::f32 ? "(" + std::to_string(rows) + ", " + std::to_string(cols) + ")"
                                                 : "(" + std::to_string(rows) + ",)";
  std::string dict = std::string("{'descr': '") + (type == NpyType::f32 ? "<f4" : "<i8") +
                     "', 'fortran_order': False, 'shape': " + shape + ", }";
  // magic (6) + version (2) + header length (2), then the dict padded to the
  // fixed size with spaces and closed by '\n'. Two 20-digit numbers still fit.
  const size_t prefix = 10;
  const size_t len = kNpyHeaderSize - prefix;
  dict.resize(len - 1, ' ');
  dict.push_back('\n');
  std::string h = "\x93NUMPY";
  h.push_back('\x01');
  h.push_back('\x00');
  h.push_back(char(len & 0xff));
  h.push_back(char((len >> 8) & 0xff));
  return h + dict;
}

NpyWriter::NpyWriter(const std::string& path, size_t cols, NpyType type)
    : path_(path), type_(type), cols_(type == NpyType::f32 ? cols : 1) {
  XLMR_CHECK(cols_ > 0, "npy output: no columns to write");
  struct stat st;
  if (::stat(path.c_str(), &st) == 0)
    XLMR_CHECK(S_ISREG(st.st_mode), "npy output '" + path +
                                        "' is not a regular file (the header is rewritten at the end, so it "
                                        "must be seekable)");
  f_ = std::fopen(path.c_str(), "wb");
  XLMR_CHECK(f_, "cannot write '" + path + "': " + std::strerror(errno));
  checkpoint();
}

NpyWriter::~NpyWriter() {
  if (!f_) return;
  try {
    write_header();
  } catch (...) {
    // best effort on the error path; the caller is already reporting an error
  }
  std::fclose(f_);
}

void NpyWriter::write_header() {
  const std::string h = npy_header(rows_, cols_, type_);
  XLMR_CHECK(std::fseek(f_, 0, SEEK_SET) == 0, "cannot seek in '" + path_ + "': " + std::strerror(errno));
  XLMR_CHECK(std::fwrite(h.data(), 1, h.size(), f_) == h.size(), "failed writing '" + path_ + "'");
  XLMR_CHECK(std::fseek(f_, 0, SEEK_END) == 0, "cannot seek in '" + path_ + "': " + std::strerror(errno));
}

// The file is little-endian whatever the host is: a big-endian host's values
// are stored byte by byte.
void NpyWriter::append_rows(const float* v, size_t n) {
  XLMR_CHECK(type_ == NpyType::f32, "npy output '" + path_ + "' holds int64, not float32");
  const size_t count = n * cols_;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  XLMR_CHECK(std::fwrite(v, 4, count, f_) == count, "failed writing '" + path_ + "'");  // already little-endian
#else
  bytes_.resize(count * 4);
  for (size_t i = 0; i < count; ++i) {
    uint32_t u;
    std::memcpy(&u, &v[i], 4);
    for (int b = 0; b < 4; ++b) bytes_[4 * i + size_t(b)] = (unsigned char)((u >> (8 * b)) & 0xff);
  }
  write_bytes(count * 4);
#endif
  rows_ += n;
}

void NpyWriter::append(int64_t v) {
  XLMR_CHECK(type_ == NpyType::i64, "npy output '" + path_ + "' holds float32, not int64");
  bytes_.resize(8);
  const uint64_t u = uint64_t(v);
  for (int b = 0; b < 8; ++b) bytes_[size_t(b)] = (unsigned char)((u >> (8 * b)) & 0xff);
  write_bytes(8);
  ++rows_;
}

void NpyWriter::write_bytes(size_t n) {
  XLMR_CHECK(std::fwrite(bytes_.data(), 1, n, f_) == n, "failed writing '" + path_ + "'");
}

void NpyWriter::checkpoint() {
  write_header();
  XLMR_CHECK(std::fflush(f_) == 0, "failed writing '" + path_ + "': " + std::strerror(errno));
}

void NpyWriter::finish() {
  write_header();
  FILE* f = f_;
  f_ = nullptr;
  const bool ok = std::fflush(f) == 0;
  const bool closed = std::fclose(f) == 0;
  XLMR_CHECK(ok && closed, "failed writing '" + path_ + "'");
}

}  // namespace xlmr::tools
