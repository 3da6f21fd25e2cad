// XLM-R tokenizer: SentencePiece (the Unigram model embedded in the .xlmr
// file) plus the fairseq id mapping of SPEC §3:
//   <s>=0 <pad>=1 </s>=2 <unk>=3, spm piece p >= 3 -> p + 1, spm unk (0) -> 3.
// A sequence is <s> pieces </s>; a pair is <s> A </s></s> B </s>.
// Truncation cuts pieces (never the specials) and is reported to the caller.
// Invalid UTF-8 is replaced by U+FFFD before encoding, and reported.
//
// Thread-safety: encode() is const and safe to call from several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace xlmr {

struct TokenizerIds {
  int bos = 0, pad = 1, eos = 2, unk = 3;
};

struct Encoding {
  std::vector<int32_t> ids;
  bool truncated = false;     // pieces were dropped to fit max_length
  bool invalid_utf8 = false;  // bytes were replaced by U+FFFD
};

class Tokenizer {
 public:
  // `model_proto` is a serialized SentencePiece model. Throws xlmr::Error.
  Tokenizer(const std::string& model_proto, TokenizerIds ids = {});
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  int spm_size() const;            // pieces in the SentencePiece model
  int max_model_id() const;        // largest id encode() can return
  // max_length counts the special tokens; it must be >= 2 (>= 4 for pairs).
  Encoding encode(std::string_view text, int max_length) const;
  Encoding encode_pair(std::string_view a, std::string_view b, int max_length) const;
  // SentencePiece ids mapped to model ids, no specials, no truncation.
  std::vector<int32_t> pieces(std::string_view text, bool* invalid_utf8 = nullptr) const;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> spm_;
  TokenizerIds ids_;
};

// Copies `in`, replacing each maximal invalid UTF-8 subsequence by U+FFFD.
// Returns true when anything was replaced.
bool sanitize_utf8(std::string_view in, std::string* out);

}  // namespace xlmr
