// xlmr-convert: turns a torchtext, Hugging Face or fairseq XLM-R-family
// checkpoint into one .xlmr file (docs/weights-format.md).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "engine/error.h"
#include "weights/convert.h"
#include "weights/xlmr_file.h"

namespace {

// The progress line: tensors and bytes written of the total, and the time.
// On a terminal it is redrawn in place at most ten times a second, from half
// a second on (quick conversions stay silent); elsewhere (--progress always
// into a log) it is a plain line at most once a second, and the last one.
class ConvertProgressLine {
 public:
  ConvertProgressLine(bool enabled, bool terminal) : enabled_(enabled), terminal_(terminal) {}

  void update(const xlmr::ConvertProgress& p) {
    if (!enabled_) return;
    const auto now = Clock::now();
    const double since_start = seconds(start_, now);
    const bool last = p.tensors_done == p.tensors_total;
    if (terminal_ && since_start < 0.5) return;  // (a quick conversion shows nothing)
    if (!last && drawn_ && seconds(last_, now) < (terminal_ ? 0.1 : 1.0)) return;
    last_ = now;
    drawn_ = true;
    const bool gb = p.bytes_total >= 1000000000;
    const double unit = gb ? 1e9 : 1e6;
    char line[160];
    std::snprintf(line, sizeof line, "xlmr-convert: %zu/%zu tensors, %.*f of %.*f %s, %.0f s", p.tensors_done,
                  p.tensors_total, gb ? 2 : 1, double(p.bytes_done) / unit, gb ? 2 : 1, double(p.bytes_total) / unit,
                  gb ? "GB" : "MB", since_start);
    std::fprintf(stderr, terminal_ ? "\r%s\033[K" : "%s\n", line);
    open_line_ = terminal_;
    if (last) end_line();
    std::fflush(stderr);
  }

  // Ends a line drawn in place, so that what follows starts on its own.
  void end_line() {
    if (open_line_) std::fputc('\n', stderr);
    open_line_ = false;
  }

 private:
  using Clock = std::chrono::steady_clock;
  static double seconds(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  }
  bool enabled_, terminal_;
  Clock::time_point start_ = Clock::now(), last_;
  bool drawn_ = false, open_line_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Convert an XLM-R-family checkpoint into a .xlmr file.\n\n"
      "SRC is a .safetensors file, a PyTorch .pt/.bin (torch.save, zip or legacy), or a\n"
      "Hugging Face model folder (config.json + model.safetensors, pytorch_model.bin or\n"
      "their sharded *.index.json). The format is detected from the content and the\n"
      "tensor naming (torchtext, Hugging Face, fairseq) from the tensor names.",
      "xlmr-convert"};
  std::string src, out, dtype = "f32";
  xlmr::ConvertOptions opts;
  bool quiet = false;
  app.add_option("SRC", src, "checkpoint file or Hugging Face model folder")->required();
  app.add_option("OUT", out, "the .xlmr file to write")->required();
  app.add_option("--tokenizer", opts.tokenizer_path,
                 "tokenizer to embed: a SentencePiece model, or a Hugging Face tokenizer.json of XLM-R's kind "
                 "(rebuilt as one); default: sentencepiece.bpe.model, else tokenizer.json, beside SRC");
  app.add_option("--dtype", dtype, "storage type of the weight matrices: f32, f16 or bf16 (biases and LayerNorm stay f32)")
      ->default_str("f32");
  app.add_option("--head-activation", opts.head_activation,
                 "activation inside the classification head: relu (torchtext) or tanh (Hugging Face, fairseq); "
                 "default from the naming");
  app.add_option("--family", opts.family,
                 "xlmr (positions from 2) or bert (positions from 0: multilingual-e5-small, MiniLM); "
                 "default from config.json or the naming");
  app.add_option("--head", opts.head_name, "fairseq classification head to keep, when there are several");
  app.add_option("--heads", opts.heads,
                 "number of attention heads (default: config.json, fairseq args, or the released count for a "
                 "released XLM-R-family width)");
  app.add_flag("--ignore-unknown", opts.ignore_unknown, "drop tensors with names this converter does not know");
  app.add_flag("-q,--quiet", quiet, "print nothing on success");
  std::string progress_mode = "auto";
  app.add_option("--progress", progress_mode,
                 "progress line on standard error: auto (when it is a terminal and without --quiet), always, never")
      ->default_str("auto");
  app.set_version_flag("--version", std::string("xlmr-convert ") + XLMR_VERSION + " (writes .xlmr format version " +
                                        std::to_string(xlmr::kXlmrFormatVersion) + ")");
  CLI11_PARSE(app, argc, argv);

  const bool err_tty = ::isatty(STDERR_FILENO);
  ConvertProgressLine progress(progress_mode == "always" || (progress_mode == "auto" && err_tty && !quiet),
                               err_tty);
  try {
    if (!xlmr::parse_dtype(dtype, &opts.dtype)) XLMR_THROW("--dtype must be f32, f16 or bf16, not '" + dtype + "'");
    XLMR_CHECK(progress_mode == "auto" || progress_mode == "always" || progress_mode == "never",
               "--progress must be auto, always or never, not '" + progress_mode + "'");
    opts.progress = [&progress](const xlmr::ConvertProgress& p) { progress.update(p); };
    const xlmr::ConvertReport r = xlmr::convert_checkpoint(src, out, opts);
    if (r.tokenizer.empty())
      std::fprintf(stderr,
                   "xlmr-convert: warning: no tokenizer embedded (no sentencepiece.bpe.model or tokenizer.json beside "
                   "the source, no --tokenizer): the model will accept token ids only\n");
    for (const std::string& n : r.notes) std::fprintf(stderr, "xlmr-convert: warning: %s\n", n.c_str());
    if (!quiet) {
      const auto& m = r.config["model"];
      std::fprintf(stderr, "xlmr-convert: %s (%s naming) -> %s\n", r.source_format.c_str(), r.naming.c_str(),
                   out.c_str());
      std::fprintf(stderr,
                   "  %s%s: vocab %d, hidden %d, ffn %d, heads %d, layers %d, positions %d, %s head%s, dtype %s\n",
                   m["family"].get<std::string>().c_str(), m["norm"] == "pre" ? " (pre-LayerNorm, XL layout)" : "",
                   m["vocab_size"].get<int>(), m["hidden"].get<int>(),
                   m["ffn"].get<int>(), m["heads"].get<int>(), m["layers"].get<int>(), m["max_positions"].get<int>(),
                   m["num_labels"].get<int>() ? (std::to_string(m["num_labels"].get<int>()) + "-class " +
                                                 m["head_activation"].get<std::string>())
                                                    .c_str()
                                              : "no classification",
                   m["has_pooler"].get<bool>() ? ", pooler" : "", m["dtype"].get<std::string>().c_str());
      std::fprintf(stderr, "  %zu tensors, %.1f MB; tokenizer: %s%s\n", r.n_tensors, double(r.bytes) / 1e6,
                   r.tokenizer.empty() ? "none" : r.tokenizer.c_str(),
                   r.tokenizer_rebuilt ? " (rebuilt as a SentencePiece model)" : "");
      std::fprintf(stderr, "  default pooling: %s%s\n", m["pooling"].get<std::string>().c_str(),
                   m["normalize"].get<bool>() ? ", L2-normalised" : "");
      if (!r.ignored.empty()) {
        std::fprintf(stderr, "  left out %zu tensor(s) the encoder does not use:", r.ignored.size());
        for (size_t k = 0; k < r.ignored.size() && k < 6; ++k) std::fprintf(stderr, " %s", r.ignored[k].c_str());
        std::fprintf(stderr, "%s\n", r.ignored.size() > 6 ? " ..." : "");
      }
    }
  } catch (const std::exception& e) {
    progress.end_line();
    std::fprintf(stderr, "xlmr-convert: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
