// The flat .xlmr weight file: one little-endian, memory-mappable file that
// holds everything needed to run a model (config, tensors, tokenizer).
// docs/weights-format.md specifies it byte by byte; this header is the code
// side of that document.
//
//   [header 128 B][config JSON][tensor directory n x 128 B][pad][tensors, each 64-B aligned][tokenizer bytes]
//
// The loader maps the file read-only and validates every offset, size and
// checksum before handing out pointers, so a truncated or corrupt file is an
// error with a message, never a crash or a silently wrong answer.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "weights/dtype.h"

namespace xlmr {

constexpr char kXlmrMagic[8] = {'X', 'L', 'M', 'R', 'E', 'N', 'G', '\0'};
constexpr uint32_t kXlmrFormatVersion = 1;
constexpr uint64_t kXlmrAlignment = 64;
constexpr size_t kXlmrHeaderSize = 128;
constexpr size_t kXlmrDirEntrySize = 128;
constexpr size_t kXlmrMaxName = 63;  // bytes, plus a NUL
constexpr int kXlmrMaxDims = 4;

// One tensor of the directory, as the loader hands it out.
struct TensorInfo {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  uint64_t offset = 0;  // from the start of the file
  uint64_t nbytes = 0;
  uint64_t checksum = 0;  // XXH64 (seed 0) of the tensor's bytes
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// ---- writing ---------------------------------------------------------------

struct TensorToWrite {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;  // numel * dtype_size bytes, row-major; unused when `produce` is set
  // Makes the bytes while the file is being written instead: called once,
  // in file order, to fill the buffer with numel * dtype_size bytes. The
  // writer reuses one buffer for all tensors, so a converter holds one
  // converted tensor at a time, not the model. An exception it throws
  // abandons the file (the temporary is removed) and propagates.
  std::function<void(std::vector<uint8_t>&)> produce;
};

// Writes the file atomically (to PATH.tmp, then rename). `config` is the JSON
// section (see docs/weights-format.md for its keys). Tensors are written one
// at a time, in order; their offsets follow from the shapes and dtypes, and
// the checksums in the directory are filled in once each tensor's bytes
// have been written.
void write_xlmr_file(const std::string& path, const nlohmann::json& config,
                     const std::vector<TensorToWrite>& tensors, const std::string& tokenizer_model);

// ---- reading ---------------------------------------------------------------

struct LoadOptions {
  bool verify_checksums = true;  // per-tensor XXH64; the header/JSON/directory are always checked
};

class XlmrFile {
 public:
  // Maps and validates the file; throws xlmr::Error naming the problem.
  static std::unique_ptr<XlmrFile> open(const std::string& path, const LoadOptions& opts = {});
  ~XlmrFile();
  XlmrFile(const XlmrFile&) = delete;
  XlmrFile& operator=(const XlmrFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  const nlohmann::json& config() const { return config_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;  // nullptr when absent
  const void* data(const TensorInfo& t) const { return base_ + t.offset; }
  // Hands the whole pages inside a tensor's bytes back to the OS (they are
  // clean, file-backed: a later read maps them in again from the file). For
  // tensors a backend has copied and will not read again.
  void drop_pages(const TensorInfo& t) const;
  std::string tokenizer_model() const;  // the SentencePiece model bytes

 private:
  XlmrFile() = default;
  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t tok_offset_ = 0, tok_size_ = 0;
  nlohmann::json config_;
  std::vector<TensorInfo> tensors_;
};

}  // namespace xlmr
