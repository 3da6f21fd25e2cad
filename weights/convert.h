// Checkpoint -> .xlmr conversion: finds the source files, works out which
// naming the checkpoint uses (torchtext, Hugging Face, fairseq), maps every
// tensor onto the canonical schema (weights/schema.h), packs Q/K/V, derives
// the config from tensor shapes and config.json, converts dtypes, and writes
// one file with the tokenizer embedded.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "weights/checkpoint.h"
#include "weights/dtype.h"

namespace xlmr {

struct ConvertProgress {
  size_t tensors_done = 0, tensors_total = 0;
  uint64_t bytes_done = 0, bytes_total = 0;  // of the output's tensor data
};

struct ConvertOptions {
  std::string tokenizer_path;    // SentencePiece model or tokenizer.json; default: sentencepiece.bpe.model,
                                 // else tokenizer.json, beside the source
  DType dtype = DType::f32;      // matrices; biases and LayerNorm stay f32
  std::string head_activation;   // "relu" | "tanh" | "" (from the naming: torchtext relu, others tanh)
  std::string family;            // "xlmr" | "bert" | "" (from config.json / naming)
  std::string head_name;         // fairseq classification head to keep, when there are several
  int heads = 0;                 // attention heads; 0: config.json, fairseq args, or a released shape's
  bool ignore_unknown = false;   // drop tensors that match no known name instead of failing
  // Called as each output tensor is converted, just before it is written,
  // with the counts so far and in all (the last call has done == total).
  // Converting a large checkpoint takes minutes: this feeds a progress line.
  std::function<void(const ConvertProgress&)> progress;
};

struct ConvertReport {
  std::string source_format;     // safetensors, torch-zip, torch-legacy
  std::string naming;            // torchtext, torchtext-old, hf, fairseq
  std::vector<std::string> source_files;
  std::string tokenizer;         // path of the embedded tokenizer, or "" when none
  bool tokenizer_rebuilt = false;  // it was a tokenizer.json, rebuilt as a SentencePiece model
  std::vector<std::string> ignored;  // source tensors deliberately left out
  std::vector<std::string> notes;    // what the converter could not honour, for the user
  nlohmann::json config;         // the file's JSON section
  size_t n_tensors = 0;
  uint64_t bytes = 0;
};

ConvertReport convert_checkpoint(const std::string& src, const std::string& out, const ConvertOptions& opts);

}  // namespace xlmr
