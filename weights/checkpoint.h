// Readers for source checkpoints: safetensors and PyTorch zip / legacy files.
//
// Each reader turns a file into a flat list of named, contiguous, row-major
// tensors. Nothing here knows about XLM-R: mapping names onto the model's
// canonical schema is weights/convert.cpp's job. Every reader validates its
// input completely and throws xlmr::Error with a one-line message naming the
// file and the problem; hostile or corrupt input never crashes it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "weights/dtype.h"

namespace xlmr {

struct SourceTensor {
  std::string name;              // dotted path, e.g. "model.encoder.sentence_encoder.embed_tokens.weight"
  SrcDType dtype = SrcDType::f32;
  std::vector<int64_t> shape;    // empty for a scalar
  std::vector<uint8_t> data;     // numel * dtype_size bytes, contiguous, little-endian
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

struct Checkpoint {
  std::string format;            // "safetensors", "torch-zip", "torch-legacy"
  std::vector<SourceTensor> tensors;
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
