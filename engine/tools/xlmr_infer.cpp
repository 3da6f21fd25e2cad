// xlmr-infer: run a .xlmr model over input lines (texts, text pairs, JSON
// lines or token ids) and write one record per input line, in input order:
// a JSON object per line (DESIGN §4)
//   {"index": i, "n_tokens": n, "embedding": [...], "logits": [...]?, "hidden": [[...], ...]?}
// or one row of a NumPy .npy matrix. Inputs are read and run in chunks
// (plan_chunks), so memory stays flat however long the input is, and the
// host's work on a chunk (tokenizing it, writing its records) overlaps the
// model's work on the chunk before or after it (engine/tools/infer_stream.h).
// The guide with examples is docs/cli.md.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "engine/tools/infer_input.h"
#include "engine/tools/infer_stream.h"
#include "engine/tools/npy_writer.h"
#include "engine/tools/progress.h"
#include "tokenizer/tokenizer.h"
#include "weights/xlmr_file.h"

namespace {

using xlmr::tools::InputFormat;
using xlmr::tools::Preparer;
using xlmr::tools::RunSettings;
using xlmr::tools::Sink;
using xlmr::tools::StreamStats;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);  // std::cin line reads at full speed; output goes through stdio
  CLI::App app{
      "Run an XLM-R-family encoder (.xlmr file) over input lines and write one record per line, in input\n"
      "order: a JSON object {\"index\", \"n_tokens\", \"embedding\", \"logits\" (models with a classification\n"
      "head), \"hidden\" (with --hidden)} per line, or one row of a NumPy .npy matrix. Inputs are files, or\n"
      "standard input when none (or '-') is given. Guide: docs/cli.md.",
      "xlmr-infer"};
  app.get_formatter()->column_width(34);
  std::string model_path, device = "cpu", input_format = "text", pooling_name, output_path, path_name = "fused",
                          dtype_name, attention_name = "auto", isa = "auto", text_field = "text", pair_field, prefix, pair_prefix,
                          long_mode = "truncate", output_format, npy_values = "embedding", progress_mode = "auto";
  std::vector<std::string> inputs;
  bool normalize = false, hidden = false, no_verify = false, padded = false, describe = false, no_overlap = false;
  bool no_equalize = false;
  int max_length = 0, threads = 0, batch_tokens = 8192, stride = -1, gpu = 0, max_line_mib = 64, host_threads = 1;

  const std::string g_model = "Model and compute", g_in = "Input", g_long = "Long inputs", g_out = "Output";
  app.add_option("--model,-m", model_path, "the .xlmr model file (make one with xlmr-convert)")
      ->required()
      ->group(g_model)
      ->type_name("FILE");
  app.add_option("--device", device, "cpu or cuda")->default_str("cpu")->group(g_model)->type_name("DEV");
  app.add_option("--gpu", gpu, "--device cuda: which GPU, 0-based among the visible ones (CUDA_VISIBLE_DEVICES)")
      ->default_str("0")
      ->group(g_model)
      ->type_name("N");
  app.add_option("--path", path_name,
                 "compute path: fused (the fast kernels, no padding) or reference (plain padded kernels, "
                 "the slow oracle)")
      ->default_str("fused")
      ->group(g_model)
      ->type_name("PATH");
  app.add_option("--dtype", dtype_name,
                 "GEMM precision of the fused path: f32, bf16 (needs AVX-512; fast with AVX512_BF16 or "
                 "AMX-BF16) or int8 (weights quantized per channel at load, each token's row at run time; fast with "
                 "AVX-512 VNNI; outputs close to f32's, not equal: docs/BENCHMARKS.md) on CPU, f16 or bf16 on CUDA; default: bf16 for "
                 "a bf16 .xlmr (on CPU only where it is fast, else f32, said in a note), else f32 on CPU and "
                 "f16 on CUDA")
      ->group(g_model)
      ->type_name("TYPE");
  app.add_option("--attention", attention_name,
                 "attention's products. CPU with --dtype bf16 or int8: bf16 (AMX tiles or AVX512_BF16), or f32; "
                 "auto: with bf16 GEMMs bf16 where the CPU has either and the head dim is 32, 64, 96 or 128, with "
                 "int8 f32. CUDA: the --dtype (tensor cores) or f32 (the "
                 "plain kernel); auto: tensor cores where the card and head dim allow")
      ->default_str("auto")
      ->group(g_model)
      ->type_name("TYPE");
  app.add_flag("--padded", padded, "fused path: pad every batch to its longest input (for comparison only)")
      ->group(g_model);
  app.add_flag("--no-equalize", no_equalize,
               "--dtype int8: quantize each GEMM's input as it comes, without first evening out its channels' "
               "ranges from the weights (for comparison only; docs/BENCHMARKS.md)")
      ->group(g_model);
  app.add_option("--isa", isa, "fused CPU path: instruction set of its own kernels, auto, avx512 or avx2 (oneDNN's GEMMs "
                 "take the best the CPU has, within DNNL_MAX_CPU_ISA)")
      ->default_str("auto")
      ->group(g_model)
      ->type_name("ISA");
  app.add_option("--threads", threads, "CPU threads; 0: one per physical core this process may run on, within its cgroup CPU quota")->default_str("0")->group(g_model)->type_name("N");
  app.add_option("--batch-tokens", batch_tokens, "token budget of one batch")
      ->default_str("8192")
      ->group(g_model)
      ->type_name("N");
  app.add_flag("--no-verify", no_verify, "skip the per-tensor checksums at load")->group(g_model);
  app.add_flag("--describe", describe,
               "load the model with these options, print what would run (the model's configuration, the engine "
               "chosen, its notes) as JSON on standard output, and exit without reading input")
      ->group(g_model);

  app.add_option("--input-format", input_format,
                 "text: one text per line (an empty line encodes as <s></s>); "
                 "ids: space-separated model token ids per line, specials included; "
                 "jsonl: one JSON object per line, text in --text-field (and --pair-field); "
                 "tsv-pairs: TEXT_A<TAB>TEXT_B per line, run as a pair for cross-encoders")
      ->default_str("text")
      ->group(g_in)
      ->type_name("FORMAT");
  app.add_option("--text-field", text_field, "jsonl: the string field holding the text")
      ->default_str("text")
      ->group(g_in)
      ->type_name("NAME");
  app.add_option("--pair-field", pair_field,
                 "jsonl: the string field holding a second text; each line then runs as the pair "
                 "<s> TEXT </s></s> PAIR </s> (default: none, single texts)")
      ->group(g_in)
      ->type_name("NAME");
  app.add_option("--prefix", prefix,
                 "string put before each text (and before the first text of a pair) before tokenization, "
                 "e.g. \"query: \" for e5 models (default: none)")
      ->group(g_in)
      ->type_name("STR");
  app.add_option("--max-line-mib", max_line_mib,
                 "longest input line read, in MiB; a longer one is an error (a binary file given by mistake "
                 "is not read into memory whole)")
      ->default_val(64)
      ->group(g_in)
      ->type_name("N");
  app.add_option("--pair-prefix", pair_prefix,
                 "string put before the second text of a pair, e.g. \"passage: \" (default: none)")
      ->group(g_in)
      ->type_name("STR");
  app.add_option("INPUT", inputs, "input files ('-' for standard input; default: standard input)")
      ->group(g_in)
      ->type_name("FILE");

  app.add_option("--max-length", max_length,
                 "tokens per sequence, <s> and </s> included (default: the model's limit, 512 for XLM-R)")
      ->group(g_long)
      ->type_name("N");
  app.add_option("--long", long_mode,
                 "text longer than --max-length: truncate (cut, counted in a warning) or window (split into "
                 "overlapping windows, outputs averaged over them; single texts only, not with --hidden)")
      ->default_str("truncate")
      ->group(g_long)
      ->type_name("MODE");
  app.add_option("--stride", stride,
                 "window mode: tokens shared by consecutive windows, 0 <= N < max-length - 2 "
                 "(default: (max-length - 2) / 4)")
      ->group(g_long)
      ->type_name("N");

  app.add_option("--pooling", pooling_name,
                 "sentence embedding: cls (token 0), mean (over the tokens), pooler (the model's tanh pooler), "
                 "or none; default: the model's (cls for XLM-R, mean for BERT-arch)")
      ->group(g_out)
      ->type_name("MODE");
  app.add_flag("--normalize", normalize, "L2-normalise the embedding (default: the model's, usually off)")
      ->group(g_out);
  app.add_flag("--hidden", hidden, "also write every token's last-layer hidden state (jsonl output only)")
      ->group(g_out);
  app.add_option("--output,-o", output_path, "write the records to this file (default: standard output)")
      ->group(g_out)
      ->type_name("FILE");
  app.add_option("--output-format", output_format,
                 "jsonl (one JSON object per line) or npy (float32 matrix, one row per line; needs --output "
                 "FILE); default: npy when --output ends in .npy, else jsonl")
      ->group(g_out)
      ->type_name("FORMAT");
  app.add_option("--npy-values", npy_values,
                 "npy output: what the rows hold, embedding (the pooled vector) or logits, one row per line; or "
                 "hidden: every token's last-layer hidden state, one row per token, with X.offsets.npy (int64) "
                 "saying that line i's rows are [offsets[i], offsets[i+1])")
      ->default_str("embedding")
      ->group(g_out)
      ->type_name("WHAT");
  app.add_option("--progress", progress_mode,
                 "progress line on standard error: auto (when stderr is a terminal and the records do not "
                 "go to it), always or never")
      ->default_str("auto")
      ->group(g_out)
      ->type_name("WHEN");
  app.add_option("--host-threads", host_threads,
                 "threads for each chunk's host work, tokenizing it and formatting its JSON records (tens of "
                 "ns a number): more where the busy-time line of --progress shows tokenize or write bounding "
                 "the run and cores are idle, as on a GPU machine")
      ->default_str("1")
      ->group(g_model)
      ->type_name("N");
  app.add_flag("--no-overlap", no_overlap,
               "run each chunk's stages (tokenize, model, write) one after another instead of overlapping "
               "them: for comparison, or to hold one chunk in memory instead of up to three")
      ->group(g_out);
  app.set_version_flag("--version", std::string("xlmr-infer (xlmr-engine ") + XLMR_VERSION +
                                        "), reads .xlmr format version " +
                                        std::to_string(xlmr::kXlmrFormatVersion));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    std::fprintf(stderr, "xlmr-infer: error: %s (see --help)\n", msg.c_str());
    return 1;
  }

  xlmr::tools::Progress progress(stderr, false, 0, false);
  try {
    // ---- options that need no model -------------------------------------
    xlmr::EngineOptions eo;
    if (device == "cpu") eo.device = xlmr::Device::cpu;
    else if (device == "cuda") eo.device = xlmr::Device::cuda;
    else XLMR_THROW("--device must be cpu or cuda, not '" + device + "'");
    eo.gpu = gpu;
    if (path_name == "reference") eo.path = xlmr::Path::reference;
    else if (path_name == "fused") eo.path = xlmr::Path::fused;
    else XLMR_THROW("--path must be reference or fused, not '" + path_name + "'");
    if (!dtype_name.empty()) {
      xlmr::Precision dt = xlmr::Precision::f32;
      XLMR_CHECK(xlmr::parse_precision(dtype_name, &dt), "--dtype must be f32, bf16, f16 or int8, not '" + dtype_name + "'");
      eo.precision = dt;
    }
    if (attention_name != "auto") {
      xlmr::Precision at = xlmr::Precision::int8;
      XLMR_CHECK(xlmr::parse_precision(attention_name, &at) && at != xlmr::Precision::int8,
                 "--attention must be auto, f32, bf16 or f16, not '" + attention_name + "'");
      eo.attention = at;
    }
    eo.padded = padded;
    XLMR_CHECK(!no_equalize || eo.precision == xlmr::Precision::int8, "--no-equalize applies to --dtype int8 only");
    eo.int8_equalize = !no_equalize;
    eo.isa = isa == "auto" ? "" : isa;
    XLMR_CHECK(threads >= 0, "--threads must be >= 0");
    XLMR_CHECK(batch_tokens >= 1, "--batch-tokens must be >= 1");
    XLMR_CHECK(max_length >= 0, "--max-length must be >= 0");
    eo.threads = threads;
    eo.max_batch_tokens = batch_tokens;
    eo.max_length = max_length;
    eo.verify_checksums = !no_verify;

    RunSettings rs;
    XLMR_CHECK(xlmr::tools::parse_input_format(input_format, &rs.format),
               "--input-format must be text, ids, jsonl or tsv-pairs, not '" + input_format + "'");
    const bool is_jsonl = rs.format == InputFormat::jsonl;
    XLMR_CHECK(is_jsonl || (!app.count("--text-field") && !app.count("--pair-field")),
               "--text-field and --pair-field apply to --input-format jsonl only");
    XLMR_CHECK(!text_field.empty(), "--text-field must not be empty");
    XLMR_CHECK(!app.count("--pair-field") || !pair_field.empty(), "--pair-field must not be empty");
    rs.pairs = rs.format == InputFormat::tsv_pairs || (is_jsonl && !pair_field.empty());
    XLMR_CHECK(rs.format != InputFormat::ids || (!app.count("--prefix") && !app.count("--pair-prefix")),
               "--prefix and --pair-prefix apply to text input, not to --input-format ids");
    XLMR_CHECK(rs.pairs || !app.count("--pair-prefix"),
               "--pair-prefix applies to pairs only (--input-format tsv-pairs, or jsonl with --pair-field)");
    rs.prefix = prefix;
    rs.pair_prefix = pair_prefix;
    XLMR_CHECK(max_line_mib >= 1 && max_line_mib <= (1 << 20), "--max-line-mib must be in [1, 1048576]");

    XLMR_CHECK(long_mode == "truncate" || long_mode == "window",
               "--long must be truncate or window, not '" + long_mode + "'");
    rs.window = long_mode == "window";
    XLMR_CHECK(!rs.window || rs.format != InputFormat::ids,
               "--long window splits text, not token ids (ids lines must fit --max-length)");
    XLMR_CHECK(!rs.window || !rs.pairs, "--long window works on single texts, not on pairs (they are truncated)");
    XLMR_CHECK(!rs.window || !hidden,
               "--long window and --hidden cannot be combined (the windows' hidden states overlap)");
    XLMR_CHECK(rs.window || !app.count("--stride"), "--stride applies to --long window only");
    XLMR_CHECK(!app.count("--stride") || stride >= 0, "--stride must be >= 0");

    if (output_path == "-") output_path.clear();
    if (output_format.empty()) output_format = ends_with(output_path, ".npy") ? "npy" : "jsonl";
    XLMR_CHECK(output_format == "jsonl" || output_format == "npy",
               "--output-format must be jsonl or npy, not '" + output_format + "'");
    const bool npy = output_format == "npy";
    XLMR_CHECK(npy_values == "embedding" || npy_values == "logits" || npy_values == "hidden",
               "--npy-values must be embedding, logits or hidden, not '" + npy_values + "'");
    XLMR_CHECK(npy || !app.count("--npy-values"), "--npy-values applies to npy output only");
    XLMR_CHECK(!npy || !output_path.empty(),
               "npy output needs a file (--output X.npy): its header is rewritten at the end, so it cannot "
               "go to standard output");
    XLMR_CHECK(!npy || !hidden,
               "--hidden cannot be written as npy (use jsonl output, or --npy-values hidden for every token's "
               "hidden state as the rows of one matrix)");
    const bool npy_hidden = npy && npy_values == "hidden";
    XLMR_CHECK(!rs.window || !npy_hidden,
               "--long window and --npy-values hidden cannot be combined (the windows' hidden states overlap)");
    // --npy-values hidden: line i's rows are [offsets[i], offsets[i+1]) of the matrix.
    const std::string offsets_path =
        !npy_hidden ? ""
                    : (ends_with(output_path, ".npy") ? output_path.substr(0, output_path.size() - 4) : output_path) +
                          ".offsets.npy";
    // Opening an output truncates it: it must not be the model or an input.
    for (const std::string& o : {output_path, offsets_path}) {
      struct stat out_st;
      if (o.empty() || ::stat(o.c_str(), &out_st) != 0) continue;
      XLMR_CHECK(!S_ISDIR(out_st.st_mode), "--output '" + o + "' is not a regular file but a folder");
      std::vector<std::string> read = inputs;
      read.push_back(model_path);
      for (const std::string& f : read) {
        struct stat in_st;
        XLMR_CHECK(f == "-" || ::stat(f.c_str(), &in_st) != 0 || in_st.st_dev != out_st.st_dev ||
                       in_st.st_ino != out_st.st_ino,
                   "--output '" + o + "' is '" + f + "', which this run reads: write elsewhere");
      }
    }
    XLMR_CHECK(host_threads >= 1 && host_threads <= 64, "--host-threads must be in [1, 64]");
    XLMR_CHECK(progress_mode == "auto" || progress_mode == "always" || progress_mode == "never",
               "--progress must be auto, always or never, not '" + progress_mode + "'");

    rs.enc.hidden = hidden || npy_hidden;
    if (!pooling_name.empty()) {
      xlmr::Pooling p;
      XLMR_CHECK(xlmr::parse_pooling(pooling_name, &p),
                 "--pooling must be cls, mean, pooler or none, not '" + pooling_name + "'");
      rs.enc.pooling = p;
    }
    if (normalize) rs.enc.normalize = true;

    // ---- the model, and what depends on it ----------------------------------
    std::unique_ptr<xlmr::Engine> engine = xlmr::Engine::load(model_path, eo);
    if (describe) {
      const nlohmann::json cj = engine->config().to_json();
      nlohmann::json d = {{"model", model_path},         {"engine", engine->describe()},
                          {"notes", engine->notes()},    {"max_length", engine->max_length()},
                          {"config", cj["model"]},       {"tokenizer", cj["tokenizer"]}};
      d["tokenizer"]["embedded"] = engine->has_tokenizer();
      if (engine->has_tokenizer()) d["tokenizer"]["pieces"] = engine->tokenizer().spm_size();
      const std::string text = d.dump(2) + "\n";
      XLMR_CHECK(std::fwrite(text.data(), 1, text.size(), stdout) == text.size() && std::fflush(stdout) == 0,
                 "failed writing the output");
      return 0;
    }
    for (const std::string& n : engine->notes()) std::fprintf(stderr, "xlmr-infer: note: %s\n", n.c_str());
    const xlmr::ModelConfig& cfg = engine->config();
    if (rs.format != InputFormat::ids) (void)engine->tokenizer();  // fail early when the file has none
    rs.normalize = rs.enc.normalize.value_or(cfg.default_normalize);
    const bool pooled = rs.enc.pooling.value_or(cfg.default_pooling) != xlmr::Pooling::none;
    if (rs.pairs) XLMR_CHECK(engine->max_length() >= 4, "--max-length must be at least 4 for pairs");
    if (rs.window) {
      const int room = engine->max_length() - 2;
      XLMR_CHECK(room >= 1, "--long window needs --max-length of at least 3");
      if (stride < 0) stride = room / 4;
      XLMR_CHECK(stride < room, "--stride must be in [0, " + std::to_string(room) + ") for --max-length " +
                                    std::to_string(engine->max_length()) + " (windows of " +
                                    std::to_string(room) + " tokens besides <s> and </s>), not " +
                                    std::to_string(stride));
      rs.overlap = size_t(stride);
    }

    const size_t E = size_t(cfg.hidden);
    std::unique_ptr<xlmr::tools::NpyWriter> npy_out;
    FILE* out = stdout;
    std::unique_ptr<FILE, int (*)(FILE*)> out_file(nullptr, &std::fclose);
    std::unique_ptr<xlmr::tools::NpyWriter> offsets_out;
    if (npy) {
      const bool logits = npy_values == "logits";
      XLMR_CHECK(!logits || cfg.num_labels > 0, "--npy-values logits: this model has no classification head");
      XLMR_CHECK(logits || npy_hidden || pooled, "npy output of embeddings needs pooling (not --pooling none); "
                                                 "or write --npy-values logits");
      npy_out.reset(new xlmr::tools::NpyWriter(output_path, logits ? size_t(cfg.num_labels) : E));
      if (npy_hidden) {
        offsets_out.reset(new xlmr::tools::NpyWriter(offsets_path, 1, xlmr::tools::NpyType::i64));
        offsets_out->append(0);
      }
    } else if (!output_path.empty()) {
      out_file.reset(std::fopen(output_path.c_str(), "wb"));
      XLMR_CHECK(out_file, "cannot write '" + output_path + "': " + std::strerror(errno));
      out = out_file.get();
    }

    const bool records_to_tty = !npy && output_path.empty() && ::isatty(STDOUT_FILENO);
    const bool err_tty = ::isatty(STDERR_FILENO);
    const bool show = progress_mode == "always" || (progress_mode == "auto" && err_tty && !records_to_tty);
    progress = xlmr::tools::Progress(stderr, show, progress_mode == "always" ? 0.0 : 0.5, err_tty);

    // ---- the stream ------------------------------------------------------
    xlmr::tools::RecordOptions ro;
    ro.format = rs.format;
    ro.text_field = text_field;
    ro.pair_field = pair_field;
    ro.vocab_size = cfg.vocab_size;
    ro.max_length = engine->max_length();
    xlmr::tools::LineReader reader(inputs, size_t(max_line_mib) << 20);
    const bool from_stdin = inputs.empty() || std::find(inputs.begin(), inputs.end(), "-") != inputs.end();
    // Typed lines are answered as they come (run_stream reads no further than
    // the input has ready).
    if (from_stdin && ::isatty(STDIN_FILENO))
      std::fprintf(stderr, "xlmr-infer: reading lines from the terminal; Ctrl-D ends the input\n");

    Preparer prep;
    prep.tok = rs.format == InputFormat::ids ? nullptr : &engine->tokenizer();
    prep.ro = ro;
    prep.rs = rs;
    prep.max_length = engine->max_length();
    if (rs.window) prep.specials = engine->tokenizer().encode("", 2).ids;  // <s> </s>
    prep.threads = host_threads;
    Sink sink;
    sink.out = npy ? nullptr : out;
    sink.npy = npy_out.get();
    sink.offsets = offsets_out.get();
    sink.npy_logits = npy_values == "logits";
    sink.hidden = hidden;
    sink.E = E;
    sink.threads = host_threads;
    StreamStats st;
    st.counts.total_bytes = reader.total_bytes();
    const auto started = std::chrono::steady_clock::now();
    xlmr::tools::install_stop_handlers();
    const auto plan = xlmr::tools::plan_chunks(eo.device, rs.enc.hidden, size_t(engine->batch_budget()));
    xlmr::tools::run_stream(*engine, prep, reader, plan, no_overlap, &sink, progress, &st);
    if (offsets_out) offsets_out->finish();
    if (npy_out) npy_out->finish();
    else XLMR_CHECK(std::fflush(out) == 0, "failed writing the output");
    st.counts.bytes = reader.bytes_read();
    progress.finish(st.counts);
    if (show) {
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      std::fprintf(stderr,
                   "xlmr-infer: busy time by stage (%s): read %.2f s, %s %.2f s, model %.2f s, write %.2f s; "
                   "wall %.2f s\n",
                   no_overlap ? "one after another" : "they overlap", st.read_s,
                   rs.format == InputFormat::ids ? "parse" : "tokenize", st.prepare_s, st.model_s, st.write_s, wall);
    }
    if (st.n_truncated)
      std::fprintf(stderr,
                   "xlmr-infer: warning: %zu input(s) longer than %d tokens were truncated (first: %s)%s\n",
                   st.n_truncated, engine->max_length(), st.first_truncated.c_str(),
                   rs.pairs ? "" : "; --long window covers them whole");
    if (st.n_bad_utf8)
      std::fprintf(stderr,
                   "xlmr-infer: warning: %zu input(s) had invalid UTF-8, replaced by U+FFFD (first: %s)\n",
                   st.n_bad_utf8, st.first_bad_utf8.c_str());
    if (st.stopped_by) {
      std::fprintf(stderr, "xlmr-infer: interrupted by %s: stopped after %llu lines, whose records are complete\n",
                   st.stopped_by == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long)st.counts.lines);
      // End by the signal, as the caller expects of a process it interrupted.
      std::signal(st.stopped_by, SIG_DFL);
      std::raise(st.stopped_by);
      return 128 + st.stopped_by;
    }
  } catch (const std::exception& e) {
    progress.interrupt();
    std::fprintf(stderr, "xlmr-infer: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
