// Entry points shared by the libFuzzer targets (tests/fuzz/fuzz_*.cpp) and
// the regression test (tests/test_fuzz_regressions.cpp): each one feeds the
// bytes of one untrusted input through a public reader of the library.
//
// The contract being checked is the project's rule for bad input: a reader
// either accepts the input or throws exactly one xlmr::Error whose message is
// one non-empty printable line. An entry point catches xlmr::Error (a normal
// rejection) and checks the message; everything else escapes to the caller:
// a crash or sanitizer report, any other exception type (std::bad_alloc,
// nlohmann::json errors, ...), and a broken invariant of an accepted input,
// which is thrown as fuzz::Violation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace xlmr {
namespace fuzz {

// Thrown when an input was accepted but the result breaks an invariant, or
// when a rejection's message is not one clean line.
class Violation : public std::logic_error {
 public:
  explicit Violation(const std::string& what) : std::logic_error(what) {}
};

// What one entry point did with an input. A single input may go through
// several stages (e.g. as given, then with its checksums repaired), each
// either accepted or rejected.
struct Outcome {
  int accepted = 0;
  int rejected = 0;
  std::string last_error;  // message of the last rejection
};

enum class Target { xlmr, safetensors, torch, tokenizer, spm_model, tokenizer_json };

// Names as used for the fuzz target binaries (fuzz_<name>) and the folders
// of tests/fixtures/fuzz-regressions/<name>/.
const char* target_name(Target t);
bool parse_target(const std::string& name, Target* out);
std::vector<Target> all_targets();

// .xlmr model file: XlmrFile::open + Model::load (config, tensor set, f16
// widening) + the embedded tokenizer, as Engine::load does. Runs the input as
// given, then again with the header's file size and every checksum the
// layout lets it find recomputed, so mutations reach past the checksums.
Outcome run_xlmr(const uint8_t* data, size_t size);

// read_safetensors on the bytes as a file.
Outcome run_safetensors(const uint8_t* data, size_t size);

// read_torch_checkpoint (zip or legacy) on the bytes as a file.
Outcome run_torch(const uint8_t* data, size_t size);

// Tokenizer::encode / encode_pair / pieces with the demo SentencePiece model
// (scripts/demo/model/sentencepiece.bpe.model). The first byte chooses
// max_length and whether the rest is one text or a pair split at a 0xff byte.
Outcome run_tokenizer(const uint8_t* data, size_t size);

// Tokenizer construction from the bytes as a serialized SentencePiece model
// (what an .xlmr file embeds), then a short encode.
Outcome run_spm_model(const uint8_t* data, size_t size);

// rebuild_spm_model on the bytes as a Hugging Face tokenizer.json, then a
// Tokenizer from the rebuilt model and a short encode.
Outcome run_tokenizer_json(const uint8_t* data, size_t size);

Outcome run(Target t, const uint8_t* data, size_t size);

// For seeding the .xlmr corpus: a small valid model file's bytes (f32 or f16
// weights), with `spm` embedded as its tokenizer when not empty.
std::string make_xlmr_seed(bool f16, const std::string& spm);

}  // namespace fuzz
}  // namespace xlmr
