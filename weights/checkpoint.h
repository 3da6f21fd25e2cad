// Readers for source checkpoints: safetensors and PyTorch zip / legacy files.
//
// Each reader turns a file into a flat list of named tensors. Nothing here
// knows about XLM-R: mapping names onto the model's canonical schema is
// weights/convert.cpp's job. Every reader validates its input completely and
// throws xlmr::Error with a one-line message naming the file and the problem;
// hostile or corrupt input never crashes it.
//
// Opening a checkpoint reads and checks its structure only (the safetensors
// header, the zip directory and pickle, the storage table) and no tensor
// bytes: XLM-R XXL is 43 GB in f32, more than a converter should hold. A
// tensor's bytes are read from the file, which stays open, when
// SourceTensor::read asks for them; every offset and size was checked at open
// time and the read itself is bounds-checked again, so a file that turns out
// shorter than it said (or shrank since) is an xlmr::Error naming it, never an
// out-of-bounds read.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "weights/dtype.h"

namespace xlmr {

// Where one tensor's bytes are in its file, and how to gather them: each
// reader has its own kind (a byte range of a safetensors file, a possibly
// strided view into a PyTorch storage). It holds the file open, shared with
// the checkpoint's other tensors, for as long as any tensor refers to it.
// Reading moves the shared file position, so the tensors of one checkpoint
// are read from one thread at a time.
class TensorBytes {
 public:
  virtual ~TensorBytes() = default;
  // Fills dst with the tensor's nbytes bytes (contiguous, row-major,
  // little-endian), or throws xlmr::Error naming the file.
  virtual void read(uint8_t* dst, uint64_t nbytes) const = 0;
};

struct SourceTensor {
  std::string name;              // dotted path, e.g. "model.encoder.sentence_encoder.embed_tokens.weight"
  SrcDType dtype = SrcDType::f32;
  std::vector<int64_t> shape;    // empty for a scalar
  std::shared_ptr<const TensorBytes> bytes;  // set by the readers
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  uint64_t nbytes() const { return static_cast<uint64_t>(numel()) * dtype_size(dtype); }
  // Reads the tensor's bytes from its file now: nbytes() of them, contiguous,
  // row-major, little-endian. Resizes *out, reusing its capacity, so a caller
  // going through many tensors keeps one buffer of the largest one.
  void read(std::vector<uint8_t>* out) const;
  std::vector<uint8_t> read() const;
  // The same into memory the caller provides: nbytes() bytes at dst.
  void read_into(uint8_t* dst) const;
};

struct Checkpoint {
  std::string format;            // "safetensors", "torch-zip", "torch-legacy"
  std::vector<SourceTensor> tensors;  // metadata only: see SourceTensor::read
  // Non-tensor leaves reachable from the root (strings, numbers, bools, None,
  // fields of an argparse.Namespace), under the same dotted paths; and for
  // safetensors the "__metadata__" object.
  nlohmann::json metadata = nlohmann::json::object();
};

enum class SourceKind { safetensors, torch_zip, torch_legacy, unknown };

// Looks at the first bytes only (by content, never by extension).
SourceKind sniff_checkpoint(const std::string& path);

Checkpoint read_safetensors(const std::string& path);
Checkpoint read_torch_checkpoint(const std::string& path);  // zip (torch.save >= 1.6) or legacy

// Reads whichever of the above the file is; throws for anything else.
Checkpoint read_checkpoint_file(const std::string& path);

}  // namespace xlmr
