// xlmr-infer: run a .xlmr model over text (or token-id) lines and write one
// JSON object per input line, in input order (DESIGN §4):
//   {"index": i, "n_tokens": n, "embedding": [...], "logits": [...]?, "hidden": [[...], ...]?}
// Inputs are read and processed in chunks, so memory stays flat however
// long the input is.
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "engine/engine.h"
#include "weights/xlmr_file.h"

namespace {

constexpr size_t kChunkLines = 256;

// Appends the shortest decimal that reads back as the same float.
void append_float(std::string* out, float v) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out->append(buf, r.ptr);
}

void append_floats(std::string* out, const float* v, size_t n) {
  out->push_back('[');
  for (size_t i = 0; i < n; ++i) {
    if (i) out->push_back(',');
    append_float(out, v[i]);
  }
  out->push_back(']');
}

struct Line {
  std::string text;
  std::string where;  // "file:line" for messages
};

class LineReader {
 public:
  explicit LineReader(const std::vector<std::string>& files) : files_(files) {
    if (files_.empty()) files_.push_back("-");
  }
  // Reads up to n lines; returns false at the end of all inputs.
  bool next(size_t n, std::vector<Line>* out) {
    out->clear();
    std::string s;
    while (out->size() < n) {
      if (!in_ && !open_next()) break;
      if (std::getline(*in_, s)) {
        ++line_no_;
        if (!s.empty() && s.back() == '\r') s.pop_back();
        out->push_back({s, name_ + ":" + std::to_string(line_no_)});
      } else {
        if (in_->bad()) throw xlmr::Error("error reading '" + name_ + "'", __FILE__, __LINE__);
        in_ = nullptr;
        file_.reset();
      }
    }
    return !out->empty();
  }

 private:
  bool open_next() {
    if (next_file_ >= files_.size()) return false;
    name_ = files_[next_file_++];
    line_no_ = 0;
    if (name_ == "-") {
      in_ = &std::cin;
      name_ = "<stdin>";
    } else {
      file_.reset(new std::ifstream(name_, std::ios::binary));
      if (!*file_) throw xlmr::Error("cannot open input '" + name_ + "': " + std::strerror(errno), __FILE__, __LINE__);
      in_ = file_.get();
    }
    return true;
  }
  std::vector<std::string> files_;
  size_t next_file_ = 0;
  std::unique_ptr<std::ifstream> file_;
  std::istream* in_ = nullptr;
  std::string name_;
  size_t line_no_ = 0;
};

std::vector<int32_t> parse_ids(const Line& line, const xlmr::Engine& engine) {
  std::vector<int32_t> ids;
  const char* p = line.text.data();
  const char* end = p + line.text.size();
  while (p < end) {
    while (p < end && (*p == ' ' || *p == '\t')) ++p;
    if (p == end) break;
    long long v = 0;
    auto r = std::from_chars(p, end, v);
    const char* tok_end = p;
    while (tok_end < end && *tok_end != ' ' && *tok_end != '\t') ++tok_end;
    if (r.ec != std::errc() || r.ptr != tok_end)
      throw xlmr::Error(line.where + ": '" + std::string(p, tok_end) + "' is not a token id", __FILE__, __LINE__);
    if (v < 0 || v >= engine.config().vocab_size)
      throw xlmr::Error(line.where + ": token id " + std::string(p, tok_end) + " is outside the vocabulary [0, " +
                            std::to_string(engine.config().vocab_size) + ")",
                        __FILE__, __LINE__);
    ids.push_back(int32_t(v));
    p = tok_end;
  }
  if (ids.empty()) throw xlmr::Error(line.where + ": empty line (ids input needs at least one token id)", __FILE__, __LINE__);
  if (int(ids.size()) > engine.max_length())
    throw xlmr::Error(line.where + ": " + std::to_string(ids.size()) + " token ids, more than the limit of " +
                          std::to_string(engine.max_length()),
                      __FILE__, __LINE__);
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Run an XLM-R-family encoder (.xlmr file) over input lines and write one JSON object per line,\n"
      "in input order: {\"index\", \"n_tokens\", \"embedding\", \"logits\" (models with a classification\n"
      "head), \"hidden\" (with --hidden)}. Inputs are files, or standard input when none (or '-') is given.",
      "xlmr-infer"};
  std::string model_path, device = "cpu", input_format = "text", pooling_name, output_path, path_name = "fused", dtype_name, isa;
  std::vector<std::string> inputs;
  bool normalize = false, hidden = false, no_verify = false, padded = false;
  int max_length = 0, threads = 0, batch_tokens = 8192;
  app.add_option("--model,-m", model_path, "the .xlmr model file (make one with xlmr-convert)")->required();
  app.add_option("--device", device, "cpu or cuda")->default_str("cpu");
  app.add_option("--input-format", input_format,
                 "text: one text per line (an empty line encodes as <s></s>); "
                 "ids: space-separated model token ids per line")
      ->default_str("text");
  app.add_option("--pooling", pooling_name,
                 "sentence embedding: cls (token 0), mean (over the tokens), pooler (the model's tanh pooler), "
                 "or none; default: the model's (cls for XLM-R, mean for BERT-arch)");
  app.add_flag("--normalize", normalize, "L2-normalise the embedding");
  app.add_flag("--hidden", hidden, "also write every token's last-layer hidden state");
  app.add_option("--max-length", max_length,
                 "tokens per input, <s> and </s> included; longer text is truncated with a warning "
                 "(default: the model's limit, 512 for XLM-R)");
  app.add_option("--output,-o", output_path, "write JSON lines here instead of standard output");
  app.add_option("--threads", threads, "CPU threads (default: all cores)");
  app.add_option("--batch-tokens", batch_tokens, "token budget of one batch")->default_str("8192");
  app.add_option("--path", path_name,
                 "compute path: fused (the fast kernels, no padding) or reference (plain padded kernels, "
                 "the slow oracle)")
      ->default_str("fused");
  app.add_option("--dtype", dtype_name,
                 "GEMM precision of the fused path: f32 or bf16 (needs AVX-512) on CPU, f16 or bf16 on "
                 "CUDA; default: bf16 for a bf16 .xlmr, else f32 on CPU and f16 on CUDA");
  app.add_flag("--padded", padded, "fused path: pad every batch to its longest input (for comparison only)");
  app.add_option("--isa", isa, "fused CPU path: instruction set, auto, avx512 or avx2")->default_str("auto");
  app.add_flag("--no-verify", no_verify, "skip the per-tensor checksums at load");
  app.add_option("INPUT", inputs, "input files ('-' for standard input)");
  app.set_version_flag("--version", std::string("xlmr-infer ") + XLMR_VERSION + " (reads .xlmr format version " +
                                        std::to_string(xlmr::kXlmrFormatVersion) + ")");
  CLI11_PARSE(app, argc, argv);

  try {
    xlmr::EngineOptions eo;
    if (device == "cpu") eo.device = xlmr::Device::cpu;
    else if (device == "cuda") eo.device = xlmr::Device::cuda;
    else XLMR_THROW("--device must be cpu or cuda, not '" + device + "'");
    if (path_name == "reference") eo.path = xlmr::Path::reference;
    else if (path_name == "fused") eo.path = xlmr::Path::fused;
    else XLMR_THROW("--path must be reference or fused, not '" + path_name + "'");
    if (dtype_name == "f32") eo.precision = xlmr::Precision::f32;
    else if (dtype_name == "bf16") eo.precision = xlmr::Precision::bf16;
    else if (dtype_name == "f16") eo.precision = xlmr::Precision::f16;
    else XLMR_CHECK(dtype_name.empty(), "--dtype must be f32, bf16 or f16, not '" + dtype_name + "'");
    eo.padded = padded;
    eo.isa = isa;
    XLMR_CHECK(input_format == "text" || input_format == "ids",
               "--input-format must be text or ids, not '" + input_format + "'");
    XLMR_CHECK(threads >= 0, "--threads must be >= 0");
    XLMR_CHECK(batch_tokens >= 1, "--batch-tokens must be >= 1");
    XLMR_CHECK(max_length >= 0, "--max-length must be >= 0");
    eo.threads = threads;
    eo.max_batch_tokens = batch_tokens;
    eo.max_length = max_length;
    eo.verify_checksums = !no_verify;
    xlmr::EncodeOptions enc;
    enc.hidden = hidden;
    if (!pooling_name.empty()) {
      xlmr::Pooling p;
      XLMR_CHECK(xlmr::parse_pooling(pooling_name, &p),
                 "--pooling must be cls, mean, pooler or none, not '" + pooling_name + "'");
      enc.pooling = p;
    }
    if (normalize) enc.normalize = true;

    std::unique_ptr<xlmr::Engine> engine = xlmr::Engine::load(model_path, eo);
    if (input_format == "text") (void)engine->tokenizer();  // fail early when the file has no tokenizer

    FILE* out = stdout;
    std::unique_ptr<FILE, int (*)(FILE*)> out_file(nullptr, &std::fclose);
    if (!output_path.empty()) {
      out_file.reset(std::fopen(output_path.c_str(), "wb"));
      XLMR_CHECK(out_file, "cannot write '" + output_path + "': " + std::strerror(errno));
      out = out_file.get();
    }

    LineReader reader(inputs);
    std::vector<Line> lines;
    std::string buf;
    size_t index = 0, n_truncated = 0, n_bad_utf8 = 0;
    std::string first_truncated, first_bad_utf8;
    const size_t E = size_t(engine->config().hidden);
    while (reader.next(kChunkLines, &lines)) {
      std::vector<xlmr::Result> results;
      if (input_format == "ids") {
        std::vector<std::vector<int32_t>> seqs;
        for (const Line& l : lines) seqs.push_back(parse_ids(l, *engine));
        results = engine->encode_ids(seqs, enc);
      } else {
        std::vector<std::string> texts;
        for (Line& l : lines) texts.push_back(std::move(l.text));
        results = engine->encode_texts(texts, enc);
      }
      for (size_t k = 0; k < results.size(); ++k, ++index) {
        const xlmr::Result& r = results[k];
        if (r.truncated && n_truncated++ == 0) first_truncated = lines[k].where;
        if (r.invalid_utf8 && n_bad_utf8++ == 0) first_bad_utf8 = lines[k].where;
        buf.clear();
        buf += "{\"index\":" + std::to_string(index) + ",\"n_tokens\":" + std::to_string(r.n_tokens);
        if (!r.embedding.empty()) {
          buf += ",\"embedding\":";
          append_floats(&buf, r.embedding.data(), r.embedding.size());
        }
        if (!r.logits.empty()) {
          buf += ",\"logits\":";
          append_floats(&buf, r.logits.data(), r.logits.size());
        }
        if (hidden) {
          buf += ",\"hidden\":[";
          for (int t = 0; t < r.n_tokens; ++t) {
            if (t) buf.push_back(',');
            append_floats(&buf, r.hidden.data() + size_t(t) * E, E);
          }
          buf.push_back(']');
        }
        buf += "}\n";
        XLMR_CHECK(std::fwrite(buf.data(), 1, buf.size(), out) == buf.size(), "failed writing the output");
      }
    }
    XLMR_CHECK(std::fflush(out) == 0, "failed writing the output");
    if (n_truncated)
      std::fprintf(stderr, "xlmr-infer: warning: %zu input(s) longer than %d tokens were truncated (first: %s)\n",
                   n_truncated, engine->max_length(), first_truncated.c_str());
    if (n_bad_utf8)
      std::fprintf(stderr,
                   "xlmr-infer: warning: %zu input(s) had invalid UTF-8, replaced by U+FFFD (first: %s)\n",
                   n_bad_utf8, first_bad_utf8.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xlmr-infer: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
