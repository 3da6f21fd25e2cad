#include "benchmarks/workloads.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include "engine/error.h"
#include "tokenizer/tokenizer.h"

namespace bench {
namespace {

const char* const kHello = "Hello world";
const char* const kHowAreYou = "How are you!";

// The opening of War and Peace (Maude translation, public domain): about 190
// XLM-R tokens, the long sentence of the workload.
const char* const kWarAndPeace =
    "Well, Prince, so Genoa and Lucca are now just family estates of the Buonapartes. But I warn you, if you "
    "don't tell me that this means war, if you still try to defend the infamies and horrors perpetrated by that "
    "Antichrist\u2014I really believe he is Antichrist\u2014I will have nothing more to do with you and you are no "
    "longer my friend, no longer my 'faithful slave,' as you call yourself! But how do you do? I see I have "
    "frightened you\u2014sit down and tell me all the news. It was in July, 1805, and the speaker was the "
    "well-known Anna P\u00e1vlovna Sch\u00e9rer, maid of honor and favorite of the Empress M\u00e1rya "
    "F\u00ebdorovna.";

// Lengths the random stand-ins take when there is no tokenizer: what the
// three texts above come to with the XLM-R tokenizer, roughly.
constexpr int kHelloLen = 4, kHowAreYouLen = 6, kWarAndPeaceLen = 190;

constexpr int kMaxCount = 1 << 20;  // sequences in one workload

bool parse_int(const std::string& s, int* out) {
  if (s.empty()) return false;
  const char* end = s.data() + s.size();
  auto r = std::from_chars(s.data(), end, *out);
  return r.ec == std::errc() && r.ptr == end;
}

[[noreturn]] void bad_spec(const std::string& spec, const std::string& why) {
  XLMR_THROW("--workload '" + spec + "': " + why);
}

// <s> r... </s> with r uniform in [4, V).
std::vector<int32_t> random_sequence(int length, const WorkloadContext& ctx, std::mt19937_64& rng) {
  std::uniform_int_distribution<int32_t> id(4, ctx.vocab_size - 1);
  std::vector<int32_t> s(static_cast<size_t>(length));
  for (int i = 0; i < length; ++i) s[size_t(i)] = id(rng);
  s.front() = ctx.bos_id;
  if (length >= 2) s.back() = ctx.eos_id;
  return s;
}

std::vector<int32_t> check_length(std::vector<int32_t> ids, const WorkloadSpec& spec, const WorkloadContext& ctx) {
  if (int(ids.size()) > ctx.max_length)
    bad_spec(spec.name, "a sequence of " + std::to_string(ids.size()) + " tokens exceeds the model's limit of " +
                            std::to_string(ctx.max_length));
  return ids;
}

}  // namespace

int64_t Workload::n_tokens() const {
  int64_t n = 0;
  for (const auto& s : seqs) n += int64_t(s.size());
  return n;
}

int Workload::longest() const {
  size_t m = 0;
  for (const auto& s : seqs) m = std::max(m, s.size());
  return int(m);
}

std::vector<std::string> default_workload_specs() { return {"tutorial-short", "tutorial-long", "lognormal:64"}; }

WorkloadSpec parse_workload_spec(const std::string& spec) {
  WorkloadSpec w;
  w.name = spec;
  const size_t colon = spec.find(':');
  const std::string kind = spec.substr(0, colon);
  const std::string arg = colon == std::string::npos ? "" : spec.substr(colon + 1);
  const bool has_arg = colon != std::string::npos;
  if (kind == "tutorial-short" || kind == "tutorial-long") {
    if (has_arg) bad_spec(spec, kind + " takes no argument");
    w.kind = kind == "tutorial-short" ? WorkloadSpec::Kind::tutorial_short : WorkloadSpec::Kind::tutorial_long;
  } else if (kind == "uniform") {
    w.kind = WorkloadSpec::Kind::uniform;
    const size_t x = arg.find('x');
    if (!has_arg || x == std::string::npos || !parse_int(arg.substr(0, x), &w.length) ||
        !parse_int(arg.substr(x + 1), &w.count))
      bad_spec(spec, "expected uniform:LxB (B sequences of L tokens), e.g. uniform:128x8");
    if (w.length < 1) bad_spec(spec, "the length must be at least 1");
    if (w.count < 1 || w.count > kMaxCount)
      bad_spec(spec, "the sequence count must be in [1, " + std::to_string(kMaxCount) + "]");
  } else if (kind == "lognormal") {
    w.kind = WorkloadSpec::Kind::lognormal;
    if (!has_arg || !parse_int(arg, &w.count)) bad_spec(spec, "expected lognormal:N (N sequences), e.g. lognormal:64");
    if (w.count < 1 || w.count > kMaxCount)
      bad_spec(spec, "the sequence count must be in [1, " + std::to_string(kMaxCount) + "]");
  } else if (kind == "range") {
    // range:LO-HI:TOKENS - lengths uniform on [LO, HI] until TOKENS tokens.
    w.kind = WorkloadSpec::Kind::range;
    const size_t dash = arg.find('-'), c2 = arg.find(':');
    if (!has_arg || dash == std::string::npos || c2 == std::string::npos || c2 < dash ||
        !parse_int(arg.substr(0, dash), &w.length) || !parse_int(arg.substr(dash + 1, c2 - dash - 1), &w.max_len) ||
        !parse_int(arg.substr(c2 + 1), &w.count))
      bad_spec(spec, "expected range:LO-HI:TOKENS (lengths uniform on [LO, HI] up to TOKENS tokens), "
                     "e.g. range:16-512:16384");
    if (w.length < 1 || w.max_len < w.length) bad_spec(spec, "need 1 <= LO <= HI");
    if (w.count < w.length || w.count > kMaxCount * 64)
      bad_spec(spec, "the token budget must be in [LO, " + std::to_string(kMaxCount * 64) + "]");
  } else if (kind == "file") {
    w.kind = WorkloadSpec::Kind::file;
    if (arg.empty()) bad_spec(spec, "expected file:PATH (one text per line)");
    w.path = arg;
    std::ifstream f(w.path, std::ios::binary);
    if (!f) bad_spec(spec, "cannot open '" + w.path + "': " + std::strerror(errno));
  } else {
    bad_spec(spec, "unknown workload (expected tutorial-short, tutorial-long, uniform:LxB, lognormal:N, "
                  "range:LO-HI:TOKENS or file:PATH)");
  }
  return w;
}

Workload make_workload(const WorkloadSpec& spec, const WorkloadContext& ctx) {
  XLMR_CHECK(ctx.vocab_size > 4, "the model's vocabulary is too small for random token ids");
  Workload w;
  w.name = spec.name;
  std::mt19937_64 rng(ctx.seed);
  using Kind = WorkloadSpec::Kind;
  switch (spec.kind) {
    case Kind::tutorial_short:
    case Kind::tutorial_long: {
      std::vector<const char*> texts = {kHello, kHowAreYou};
      std::vector<int> lengths = {kHelloLen, kHowAreYouLen};
      if (spec.kind == Kind::tutorial_long) {
        texts.push_back(kWarAndPeace);
        lengths.push_back(kWarAndPeaceLen);
      }
      w.tokenized = ctx.tokenizer != nullptr;
      for (size_t i = 0; i < texts.size(); ++i) {
        if (ctx.tokenizer)
          w.seqs.push_back(ctx.tokenizer->encode(texts[i], ctx.max_length).ids);  // truncated to the limit
        else
          w.seqs.push_back(random_sequence(std::min(lengths[i], ctx.max_length), ctx, rng));
      }
      break;
    }
    case Kind::uniform:
      for (int i = 0; i < spec.count; ++i)
        w.seqs.push_back(check_length(random_sequence(spec.length, ctx, rng), spec, ctx));
      break;
    case Kind::lognormal: {
      // Sentence lengths of typical text: median 27 tokens, a long right tail.
      const int hi = std::min(256, ctx.max_length);
      std::normal_distribution<double> log_len(std::log(27.0), 0.6);
      for (int i = 0; i < spec.count; ++i) {
        const double x = std::round(std::exp(log_len(rng)));
        const int len = int(std::clamp(x, 3.0, double(std::max(hi, 3))));
        w.seqs.push_back(check_length(random_sequence(len, ctx, rng), spec, ctx));
      }
      break;
    }
    case Kind::range: {
      const int hi = std::min(spec.max_len, ctx.max_length);
      XLMR_CHECK(spec.length <= hi, spec.name + ": LO exceeds the model's limit of " + std::to_string(ctx.max_length));
      std::uniform_int_distribution<int> len(spec.length, hi);
      for (int total = 0; total < spec.count;) {
        const int n = std::min(len(rng), std::max(spec.length, spec.count - total));
        w.seqs.push_back(check_length(random_sequence(n, ctx, rng), spec, ctx));
        total += n;
      }
      break;
    }
    case Kind::file: {
      if (!ctx.tokenizer) bad_spec(spec.name, "a file workload needs a tokenizer, and the model has none");
      std::ifstream f(spec.path, std::ios::binary);
      if (!f) bad_spec(spec.name, "cannot open '" + spec.path + "': " + std::strerror(errno));
      std::string line;
      while (std::getline(f, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) continue;
        w.seqs.push_back(ctx.tokenizer->encode(line, ctx.max_length).ids);
      }
      if (f.bad()) bad_spec(spec.name, "error reading '" + spec.path + "'");
      if (w.seqs.empty()) bad_spec(spec.name, "'" + spec.path + "' has no non-empty line");
      w.tokenized = true;
      break;
    }
  }
  return w;
}

nlohmann::ordered_json workloads_to_json(const std::vector<Workload>& workloads) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const Workload& w : workloads) list.push_back({{"name", w.name}, {"seqs", w.seqs}});
  return {{"workloads", list}};
}

}  // namespace bench
