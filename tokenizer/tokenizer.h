// XLM-R tokenizer: SentencePiece (the Unigram model embedded in the .xlmr
// file) plus the fairseq id mapping of SPEC §3:
//   <s>=0 <pad>=1 </s>=2 <unk>=3, spm piece p >= 3 -> p + 1, spm unk (0) -> 3.
// A sequence is <s> pieces </s>; a pair is <s> A </s></s> B </s>.
// Truncation cuts pieces (never the specials) and is reported to the caller.
// Invalid UTF-8 is replaced by U+FFFD before encoding, and reported.
//
// Long texts are tokenized in parts, so that a huge line costs neither the
// memory of SentencePiece's lattice over all of it (~135 bytes per input
// byte) nor, when it is truncated, the time to tokenize what is cut anyway.
// A text of up to kWholeTextBytes is one part. Beyond that a part ends
// before the first space at least kPartBytes into it: where the model's
// pieces never span a space (as with SentencePiece's training defaults; see
// space_splits_exactly()) the segmentation cannot cross that point. The
// first part's ids are then a whole-text call's exactly; later ones may
// differ only where SentencePiece's float sums, grown large along a long
// line, tell two segmentations of a word apart by rounding. A stretch of
// kMaxPartBytes without a space (or, for other models, every kMaxPartBytes)
// is cut at a character boundary, where the ids next to the cut may differ
// from the whole text's. encode() stops at the first part that fills
// max_length.
//
// Thread-safety: encode() is const and safe to call from several threads.
#pragma once

#include <cstddef>
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
  // SentencePiece ids mapped to model ids, no specials, no truncation; with
  // `enough`, tokenization may stop once more than `enough` ids are out.
  std::vector<int32_t> pieces(std::string_view text, bool* invalid_utf8 = nullptr,
                              size_t enough = SIZE_MAX) const;

  static constexpr size_t kWholeTextBytes = size_t(64) << 10;
  static constexpr size_t kPartBytes = size_t(32) << 10;
  static constexpr size_t kMaxPartBytes = size_t(1) << 20;
  // Whether cutting before a space leaves the ids unchanged: the normaliser
  // drops extra whitespace and puts U+2581 before each word, and no piece has
  // U+2581 after another character (so none spans a word boundary).
  bool space_splits_exactly() const { return space_splits_; }
  // Where the part of `text` that starts at `from` ends (text.size() at most).
  size_t part_end(std::string_view text, size_t from) const;

 private:
  void encode_part(std::string_view part, std::vector<int32_t>* out) const;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> spm_;
  TokenizerIds ids_;
  bool space_splits_ = false;
};

// Copies `in`, replacing each maximal invalid UTF-8 subsequence by U+FFFD.
// Returns true when anything was replaced.
bool sanitize_utf8(std::string_view in, std::string* out);

}  // namespace xlmr
