// Hugging Face `tokenizer.json` -> SentencePiece model, for checkpoints that
// ship only the fast tokenizer's file. XLM-R's tokenizer.json is the
// SentencePiece Unigram model in another dress: the same pieces and scores,
// the same precompiled normalisation map, and the fairseq numbering already
// applied (<s> <pad> </s> <unk>, then spm piece p as id p + 1, then <mask>).
// rebuild_spm_model() undoes that numbering and writes the SentencePiece
// ModelProto that the engine's Tokenizer loads, so tokenization is the
// SentencePiece library's own, exactly as with sentencepiece.bpe.model.
//
// Only what a SentencePiece model can express is accepted: a Unigram model
// with XLM-R's four leading specials, no byte fallback, a Precompiled
// normaliser (optionally with whitespace collapsing or stripping), and a
// Metaspace pre-tokeniser ("▁", optionally after a whitespace split).
// Anything else is refused with a message naming what did not fit.
#pragma once

#include <string>
#include <vector>

namespace xlmr {

struct RebuiltTokenizer {
  std::string spm_model;           // a serialized SentencePiece ModelProto
  int entries = 0;                 // vocabulary entries of the tokenizer.json
  std::vector<std::string> notes;  // what the SentencePiece model cannot carry (extra added tokens)
};

// True when `bytes` looks like JSON (first non-space byte '{'), not a
// SentencePiece model proto.
bool looks_like_tokenizer_json(const std::string& bytes);

// Throws xlmr::Error naming `what` (a path, for messages) on anything it
// cannot rebuild faithfully.
RebuiltTokenizer rebuild_spm_model(const std::string& json_text, const std::string& what);

}  // namespace xlmr
