// The inputs xlmr-bench times: named, reproducible sets of token-id
// sequences. A spec string names one (docs/bench.md lists them):
//
//   tutorial-short   "Hello world", "How are you!"
//   tutorial-long    the two above plus the opening of War and Peace
//   uniform:LxB      B sequences of L tokens
//   lognormal:N      N sequences, lengths ~ round(exp(normal(ln 27, 0.6)))
//   file:PATH        the non-empty lines of a text file
//
// Text is tokenized when the model carries a tokenizer. Without one, random
// ids of the lengths the texts would roughly have stand in for them. Random
// ids are always <s> r... </s> with r uniform in [4, V) (ids 0-3 are the
// specials), drawn from a std::mt19937_64 seeded with the --seed value, so a
// spec gives the same ids wherever it appears in the list.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace xlmr {
class Tokenizer;
}

namespace bench {

// A spec checked for syntax only (before any model exists).
struct WorkloadSpec {
  enum class Kind { tutorial_short, tutorial_long, uniform, lognormal, range, file };
  std::string name;  // the spec as written
  Kind kind = Kind::tutorial_short;
  int length = 0;    // uniform: L; range: LO
  int max_len = 0;   // range: HI
  int count = 0;     // uniform: B, lognormal: N; range: the token budget
  std::string path;  // file
};

// Throws xlmr::Error with a one-line message for a malformed spec or an
// unreadable file.
WorkloadSpec parse_workload_spec(const std::string& spec);

struct Workload {
  std::string name;
  std::vector<std::vector<int32_t>> seqs;  // model ids, <s> ... </s>
  bool tokenized = false;                  // from text (else random ids)

  int64_t n_tokens() const;  // sum of the lengths
  int longest() const;
  int64_t padded_tokens() const { return int64_t(seqs.size()) * longest(); }
};

struct WorkloadContext {
  const xlmr::Tokenizer* tokenizer = nullptr;  // nullptr: random ids stand in for text
  int vocab_size = 0;                          // V, > 4
  int max_length = 0;                          // tokens per sequence, specials included
  int bos_id = 0, eos_id = 2;
  uint64_t seed = 0;
};

// Builds the ids. Throws xlmr::Error when the spec does not fit the model
// (a length over max_length, a file workload without a tokenizer, ...).
Workload make_workload(const WorkloadSpec& spec, const WorkloadContext& ctx);

std::vector<std::string> default_workload_specs();

// {"workloads": [{"name": ..., "seqs": [[ids], ...]}, ...]}, keys in that order
nlohmann::ordered_json workloads_to_json(const std::vector<Workload>& workloads);

}  // namespace bench
