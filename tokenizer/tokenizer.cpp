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

namespace {

// Just enough of the protobuf wire format to read a few scalar fields of the
// SentencePiece model (sentencepiece_model.proto). The proto has already
// been parsed by SentencePiece, so a message this reader cannot walk to its
// end (it reports that) is not expected.
class ProtoFields {
 public:
  explicit ProtoFields(std::string_view msg) : msg_(msg) {}
  // Calls f(field, wire_type, varint value, bytes) for each field in turn;
  // false when the message could not be walked to its end.
  template <typename F>
  bool each(F f) const {
    size_t i = 0;
    uint64_t key = 0;
    while (i < msg_.size()) {
      if (!varint(&i, &key)) return false;
      const int field = int(key >> 3), wire = int(key & 7);
      uint64_t v = 0;
      std::string_view bytes;
      if (wire == 0) {
        if (!varint(&i, &v)) return false;
      } else if (wire == 2) {
        if (!varint(&i, &v) || v > msg_.size() - i) return false;
        bytes = msg_.substr(i, size_t(v));
        i += size_t(v);
      } else if (wire == 1 || wire == 5) {
        const size_t n = wire == 1 ? 8 : 4;
        if (n > msg_.size() - i) return false;
        i += n;
      } else {
        return false;
      }
      if (!f(field, wire, v, bytes)) return false;
    }
    return true;
  }

 private:
  bool varint(size_t* i, uint64_t* v) const {
    *v = 0;
    for (int shift = 0; shift < 64 && *i < msg_.size(); shift += 7) {
      const auto b = uint8_t(msg_[(*i)++]);
      *v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }
  std::string_view msg_;
};

// ModelProto: 2 trainer_spec, 3 normalizer_spec. TrainerSpec: 24
// treat_whitespace_as_suffix (default false). NormalizerSpec: 3
// add_dummy_prefix, 4 remove_extra_whitespaces, 5 escape_whitespaces (all
// default true).
// A model that cannot be read so far counts as not splitting at spaces.
bool spaces_are_word_starts(std::string_view model_proto) {
  bool suffix = false, dummy_prefix = true, remove_extra = true, escape = true;
  const bool read = ProtoFields(model_proto).each([&](int field, int wire, uint64_t, std::string_view bytes) {
    if (wire != 2) return true;
    if (field == 2)
      return ProtoFields(bytes).each([&](int f, int w, uint64_t v, std::string_view) {
        if (f == 24 && w == 0) suffix = v != 0;
        return true;
      });
    if (field == 3)
      return ProtoFields(bytes).each([&](int f, int w, uint64_t v, std::string_view) {
        if (w != 0) return true;
        if (f == 3) dummy_prefix = v != 0;
        if (f == 4) remove_extra = v != 0;
        if (f == 5) escape = v != 0;
        return true;
      });
    return true;
  });
  return read && !suffix && dummy_prefix && remove_extra && escape;
}

constexpr std::string_view kWordStart = "\xE2\x96\x81";  // U+2581, SentencePiece's space

}  // namespace

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
  // A piece with U+2581 after another character could match across a word
  // boundary. (Runs of U+2581 cannot occur in text whose extra whitespace
  // was removed, so a leading run is harmless.)
  space_splits_ = spaces_are_word_starts(model_proto);
  for (int id = 0; space_splits_ && id < spm_->GetPieceSize(); ++id) {
    if (spm_->IsControl(id) || spm_->IsUnknown(id)) continue;
    std::string_view p = spm_->IdToPiece(id);
    while (p.substr(0, kWordStart.size()) == kWordStart) p.remove_prefix(kWordStart.size());
    if (p.find(kWordStart) != std::string_view::npos) space_splits_ = false;
  }
}

Tokenizer::~Tokenizer() = default;

int Tokenizer::spm_size() const { return spm_->GetPieceSize(); }

int Tokenizer::max_model_id() const { return spm_size(); }  // piece spm_size-1 maps to spm_size

size_t Tokenizer::part_end(std::string_view text, size_t from) const {
  if (text.size() - from <= kWholeTextBytes) return text.size();
  if (space_splits_) {
    const size_t space = text.find(' ', from + kPartBytes);
    if (space != std::string_view::npos && space - from <= kMaxPartBytes) return space;
  }
  // No space near enough: cut at a character boundary (text is valid UTF-8).
  if (text.size() - from <= kMaxPartBytes) return text.size();
  size_t end = from + kMaxPartBytes;
  while ((uint8_t(text[end]) & 0xC0) == 0x80) --end;
  return end;
}

void Tokenizer::encode_part(std::string_view part, std::vector<int32_t>* out) const {
  std::vector<int> spm_ids;
  sentencepiece::util::Status status;
  try {
    status = spm_->Encode(part, &spm_ids);
  } catch (const std::exception& e) {
    XLMR_THROW(std::string("tokenizer failed: ") + detail::one_line(e.what()));
  }
  XLMR_CHECK(status.ok(), "tokenizer failed: " + detail::one_line(status.ToString()));
  out->reserve(out->size() + spm_ids.size());
  for (int p : spm_ids) {
    // spm: 0 <unk>, 1 <s>, 2 </s>, then ordinary pieces (shifted by one in the
    // fairseq dictionary, which puts <pad> at 1).
    if (p == 0) out->push_back(ids_.unk);
    else if (p == 1) out->push_back(ids_.bos);
    else if (p == 2) out->push_back(ids_.eos);
    else out->push_back(int32_t(p + 1));
  }
}

std::vector<int32_t> Tokenizer::pieces(std::string_view text, bool* invalid_utf8, size_t enough) const {
  std::string clean;
  const bool bad = sanitize_utf8(text, &clean);
  if (invalid_utf8) *invalid_utf8 = bad;
  std::vector<int32_t> out;
  for (size_t from = 0; from < clean.size() && out.size() <= enough;) {
    const size_t end = part_end(clean, from);
    encode_part(std::string_view(clean).substr(from, end - from), &out);
    from = end;
  }
  return out;
}

Encoding Tokenizer::encode(std::string_view text, int max_length) const {
  XLMR_CHECK(max_length >= 2, "max_length must be at least 2 (room for <s> and </s>)");
  Encoding e;
  const size_t room = size_t(max_length - 2);
  std::vector<int32_t> p = pieces(text, &e.invalid_utf8, room);
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
  // Longest-first: drop one piece at a time from the longer side. Neither
  // side keeps more than `room`, and counting more than `room + 1` of a side
  // changes nothing: the longer side is cut first either way.
  const size_t room = size_t(max_length - 4);
  std::vector<int32_t> pa = pieces(a, &bad_a, room), pb = pieces(b, &bad_b, room);
  e.invalid_utf8 = bad_a || bad_b;
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
