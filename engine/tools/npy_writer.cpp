#include "engine/tools/npy_writer.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "engine/error.h"

namespace xlmr::tools {

std::string npy_header(uint64_t rows, uint64_t cols) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                     std::to_string(cols) + "), }";
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

NpyWriter::NpyWriter(const std::string& path, size_t cols) : path_(path), cols_(cols), row_(cols * 4) {
  XLMR_CHECK(cols > 0, "npy output: no columns to write");
  struct stat st;
  if (::stat(path.c_str(), &st) == 0)
    XLMR_CHECK(S_ISREG(st.st_mode), "npy output '" + path +
                                        "' is not a regular file (the header is rewritten at the end, so it "
                                        "must be seekable)");
  f_ = std::fopen(path.c_str(), "wb");
  XLMR_CHECK(f_, "cannot write '" + path + "': " + std::strerror(errno));
  write_header();
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
  const std::string h = npy_header(rows_, cols_);
  XLMR_CHECK(std::fseek(f_, 0, SEEK_SET) == 0, "cannot seek in '" + path_ + "': " + std::strerror(errno));
  XLMR_CHECK(std::fwrite(h.data(), 1, h.size(), f_) == h.size(), "failed writing '" + path_ + "'");
  XLMR_CHECK(std::fseek(f_, 0, SEEK_END) == 0, "cannot seek in '" + path_ + "': " + std::strerror(errno));
}

void NpyWriter::append_row(const float* v) {
  // Byte by byte, so the file is little-endian whatever the host is.
  for (size_t i = 0; i < cols_; ++i) {
    uint32_t u;
    std::memcpy(&u, &v[i], 4);
    row_[4 * i + 0] = (unsigned char)(u & 0xff);
    row_[4 * i + 1] = (unsigned char)((u >> 8) & 0xff);
    row_[4 * i + 2] = (unsigned char)((u >> 16) & 0xff);
    row_[4 * i + 3] = (unsigned char)((u >> 24) & 0xff);
  }
  XLMR_CHECK(std::fwrite(row_.data(), 1, row_.size(), f_) == row_.size(), "failed writing '" + path_ + "'");
  ++rows_;
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
