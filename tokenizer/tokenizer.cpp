#include "tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include "engine/error.h"
#include "weights/file_io.h"

namespace xlmr {

bool sanitize_utf8(std::string_view in, std::string* out) {
  out->clear();
  out->reserve(in.size());
  bool replaced = false;
  const auto* s = reinterpret_cast<const unsigned char*>(in.data());
  const size_t n = in.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    size_t len = 0;
    uint32_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) len = 1;
    else if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) { len = 3; hi = 0x9F; }  // no surrogates
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) { len = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) { len = 4; hi = 0x8F; }
    size_t ok = 0;  // bytes of a valid prefix
    if (len == 1) {
      ok = 1;
    } else if (len > 1) {
      ok = 1;
      for (size_t k = 1; k < len && i + k < n; ++k) {
        const unsigned char b = s[i + k];
        const bool good = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
        if (!good) break;
        ++ok;
      }
    }
    if (len > 0 && ok == len) {
      out->append(in.data() + i, len);
      i += len;
    } else {
      out->append("\xEF\xBF\xBD");  // U+FFFD for the maximal invalid subpart
      i += ok > 0 ? ok : 1;
      replaced = true;
    }
  }
  return replaced;
}

Tokenizer::Tokenizer(const std::string& model_proto, TokenizerIds ids)
    : spm_(new sentencepiece::SentencePieceProcessor()), ids_(ids) {
  XLMR_CHECK(!model_proto.empty(),
             "this model file carries no tokenizer: give token ids (--input-format ids), or re-convert with "
             "--tokenizer sentencepiece.bpe.model");
  // SentencePiece reports most problems through its status, but a malformed
  // model can also make it throw (e.g. its trie builder on an empty piece).
  sentencepiece::util::Status status;
  try {
    status = spm_->LoadFromSerializedProto(model_proto);
  } catch (const std::exception& e) {
    XLMR_THROW("cannot load the SentencePiece tokenizer: " + detail::one_line(e.what()));
  }
  XLMR_CHECK(status.ok(), "cannot load the SentencePiece tokenizer: " + detail::one_line(status.ToString()));
  XLMR_CHECK(spm_->GetPieceSize() >= 3, "the SentencePiece model has fewer than 3 pieces");
}

Tokenizer::~Tokenizer() = default;

int Tokenizer::spm_size() const { return spm_->GetPieceSize(); }

int Tokenizer::max_model_id() const { return spm_size(); }  // piece spm_size-1 maps to spm_size

std::vector<int32_t> Tokenizer::pieces(std::string_view text, bool* invalid_utf8) const {
  std::string clean;
  const bool bad = sanitize_utf8(text, &clean);
  if (invalid_utf8) *invalid_utf8 = bad;
  std::vector<int> spm_ids;
  sentencepiece::util::Status status;
  try {
    status = spm_->Encode(clean, &spm_ids);
  } catch (const std::exception& e) {
    XLMR_THROW(std::string("tokenizer failed: ") + detail::one_line(e.what()));
  }
  XLMR_CHECK(status.ok(), "tokenizer failed: " + detail::one_line(status.ToString()));
  std::vector<int32_t> out;
  out.reserve(spm_ids.size());
  for (int p : spm_ids) {
    // spm: 0 <unk>, 1 <s>, 2 </s>, then ordinary pieces (shifted by one in the
    // fairseq dictionary, which puts <pad> at 1).
    if (p == 0) out.push_back(ids_.unk);
    else if (p == 1) out.push_back(ids_.bos);
    else if (p == 2) out.push_back(ids_.eos);
    else out.push_back(int32_t(p + 1));
  }
  return out;
}

Encoding Tokenizer::encode(std::string_view text, int max_length) const {
  XLMR_CHECK(max_length >= 2, "max_length must be at least 2 (room for <s> and </s>)");
  Encoding e;
  std::vector<int32_t> p = pieces(text, &e.invalid_utf8);
  const size_t room = size_t(max_length - 2);
  if (p.size() > room) {
    p.resize(room);
    e.truncated = true;
  }
  e.ids.reserve(p.size() + 2);
  e.ids.push_back(ids_.bos);
  e.ids.insert(e.ids.end(), p.begin(), p.end());
  e.ids.push_back(ids_.eos);
  return e;
}

Encoding Tokenizer::encode_pair(std::string_view a, std::string_view b, int max_length) const {
  XLMR_CHECK(max_length >= 4, "max_length must be at least 4 for a pair (<s> A </s></s> B </s>)");
  Encoding e;
  bool bad_a = false, bad_b = false;
  std::vector<int32_t> pa = pieces(a, &bad_a), pb = pieces(b, &bad_b);
  e.invalid_utf8 = bad_a || bad_b;
  // Longest-first: drop one piece at a time from the longer side.
  const size_t room = size_t(max_length - 4);
  if (pa.size() + pb.size() > room) {
    e.truncated = true;
    size_t na = pa.size(), nb = pb.size();
    while (na + nb > room) {
      if (na >= nb) --na;
      else --nb;
    }
    pa.resize(na);
    pb.resize(nb);
  }
  e.ids.reserve(pa.size() + pb.size() + 4);
  e.ids.push_back(ids_.bos);
  e.ids.insert(e.ids.end(), pa.begin(), pa.end());
  e.ids.push_back(ids_.eos);
  e.ids.push_back(ids_.eos);
  e.ids.insert(e.ids.end(), pb.begin(), pb.end());
  e.ids.push_back(ids_.eos);
  return e;
}

}  // namespace xlmr
