#include "engine/tools/infer_stream.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <exception>
#include <functional>
#include <future>
#include <iterator>

#include "engine/error.h"
#include "engine/tools/windows.h"
#include "tokenizer/tokenizer.h"

namespace xlmr::tools {

namespace {

constexpr size_t kMinChunkLines = 16;

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

// Same guard as the engine's (and torch.nn.functional.normalize): divide by max(norm, 1e-12).
void l2_normalize(std::vector<float>* v) {
  double ss = 0.0;
  for (float x : *v) ss += double(x) * x;
  const double norm = std::max(std::sqrt(ss), 1e-12);
  for (float& x : *v) x = float(x / norm);
}

// One output record per input line.
struct LineResult {
  xlmr::Result r;
  int windows = 0;  // --long window: windows the line was split into
};

// ---- the three stages of a chunk ---------------------------------------------
//
// A chunk of input lines is prepared (parsed and tokenized), run through the
// model, and written. The stages of consecutive chunks overlap: while the
// model runs chunk k on the main thread, chunk k+1 is prepared and chunk k-1
// written on helper threads (see run_stream). Preparing and writing touch no
// engine state: the tokenizer's encode is const and thread-safe.

struct Chunk {
  std::vector<std::string> where;          // "file:line" of each line
  std::vector<std::vector<int32_t>> seqs;  // what the model runs; with --long window several per line
  std::vector<size_t> first;               // window mode: line i's windows are seqs[first[i], first[i+1])
  std::vector<LineResult> out;             // one per line: the tokenizer's flags, then the outputs
  uint64_t tokens = 0;                     // tokens run through the model
  uint64_t bytes_read = 0;                 // input consumed up to the end of this chunk
  double prepare_s = 0;
};

// --long window: each text is split into overlapping windows of at most
// max_length - 2 content tokens, each window runs as <s> window </s>, and the
// line gets the mean of its windows' pooled vectors (un-normalised, then
// normalised once) and of their logits (finish_windows). All windows of a
// chunk run together.
void add_windows(const Preparer& p, const std::string& text, Chunk* c, LineResult* lr) {
  bool bad = false;
  const std::vector<int32_t> pieces = p.tok->pieces(text, &bad);
  lr->r.invalid_utf8 = bad;
  lr->r.n_tokens = int(pieces.size() + 2);
  const size_t room = size_t(p.max_length - 2);
  for (const auto& [b, e] : split_windows(pieces.size(), room, p.rs.overlap)) {
    std::vector<int32_t> ids;
    ids.reserve(e - b + 2);
    ids.push_back(p.specials.front());
    ids.insert(ids.end(), pieces.begin() + long(b), pieces.begin() + long(e));
    ids.push_back(p.specials.back());
    c->seqs.push_back(std::move(ids));
  }
}

// Parses and tokenizes lines [begin, end) into *c (without window mode's
// closing entry of c->first); throws "FILE:LINE: ..." at the first line that
// does not fit the input format.
void prepare_lines(const Preparer& p, std::vector<Line>& lines, size_t begin, size_t end, Chunk* c) {
  const RunSettings& rs = p.rs;
  c->out.resize(end - begin);
  c->where.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) {
    Record rec = parse_record(&lines[i], p.ro);
    c->where.push_back(std::move(lines[i].where));
    LineResult& lr = c->out[i - begin];
    if (rs.format == InputFormat::ids) {
      c->seqs.push_back(std::move(rec.ids));
      continue;
    }
    if (rs.window) {
      c->first.push_back(c->seqs.size());
      add_windows(p, rs.prefix + rec.a, c, &lr);
      continue;
    }
    xlmr::Encoding e = rs.pairs ? p.tok->encode_pair(rs.prefix + rec.a, rs.pair_prefix + rec.b, p.max_length)
                                : p.tok->encode(rs.prefix.empty() ? rec.a : rs.prefix + rec.a, p.max_length);
    lr.r.truncated = e.truncated;
    lr.r.invalid_utf8 = e.invalid_utf8;
    c->seqs.push_back(std::move(e.ids));
  }
}

// The prepare stage: a chunk's lines parsed and tokenized, on p.threads
// threads (contiguous ranges of lines, joined in order, so the result and the
// first bad line's error are those of one thread).
Chunk prepare_chunk(const Preparer& p, std::vector<Line> lines, uint64_t bytes_read) {
  const auto t0 = std::chrono::steady_clock::now();
  const size_t n = lines.size();
  const size_t parts = std::clamp<size_t>(n / 16, 1, size_t(std::max(1, p.threads)));  // 16 lines a part at least
  std::vector<Chunk> part(parts);
  std::vector<std::future<void>> helpers;
  for (size_t t = 1; t < parts; ++t)
    helpers.push_back(std::async(std::launch::async, prepare_lines, std::cref(p), std::ref(lines), n * t / parts,
                                 n * (t + 1) / parts, &part[t]));
  std::exception_ptr error;
  try {
    prepare_lines(p, lines, 0, n / parts, &part[0]);
  } catch (...) {
    error = std::current_exception();
  }
  for (auto& h : helpers) {  // every helper is waited for; the first error in line order is the one thrown
    try {
      h.get();
    } catch (...) {
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  Chunk c = std::move(part[0]);
  for (size_t t = 1; t < parts; ++t) {
    for (size_t f : part[t].first) c.first.push_back(c.seqs.size() + f);
    std::move(part[t].where.begin(), part[t].where.end(), std::back_inserter(c.where));
    std::move(part[t].seqs.begin(), part[t].seqs.end(), std::back_inserter(c.seqs));
    std::move(part[t].out.begin(), part[t].out.end(), std::back_inserter(c.out));
  }
  if (p.rs.window) c.first.push_back(c.seqs.size());
  c.bytes_read = bytes_read;
  c.prepare_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return c;
}

// Window mode: each line's outputs are the means over its windows.
void finish_windows(const RunSettings& rs, const std::vector<xlmr::Result>& win, Chunk* c) {
  for (size_t i = 0; i < c->out.size(); ++i) {
    LineResult& lr = c->out[i];
    const size_t b = c->first[i], e = c->first[i + 1], n = e - b;
    lr.windows = int(n);
    auto mean = [&](std::vector<float> xlmr::Result::*field, std::vector<float>* dst) {
      const size_t width = (win[b].*field).size();
      std::vector<double> acc(width, 0.0);
      for (size_t w = b; w < e; ++w)
        for (size_t k = 0; k < width; ++k) acc[k] += (win[w].*field)[k];
      dst->resize(width);
      for (size_t k = 0; k < width; ++k) (*dst)[k] = float(acc[k] / double(n));
    };
    mean(&xlmr::Result::embedding, &lr.r.embedding);
    mean(&xlmr::Result::logits, &lr.r.logits);
    if (rs.normalize && !lr.r.embedding.empty()) l2_normalize(&lr.r.embedding);
  }
}

// The model stage, on the thread that owns the engine.
void run_chunk(xlmr::Engine& engine, const RunSettings& rs, Chunk* c) {
  xlmr::EncodeOptions enc = rs.enc;
  if (rs.window) enc.normalize = false;  // average the raw pooled vectors, normalise the mean
  std::vector<xlmr::Result> res = engine.encode_ids(c->seqs, enc);
  for (const auto& s : c->seqs) c->tokens += s.size();
  if (rs.window) {
    finish_windows(rs, res, c);
  } else {
    for (size_t i = 0; i < res.size(); ++i) {
      LineResult& lr = c->out[i];
      res[i].truncated = lr.r.truncated;
      res[i].invalid_utf8 = lr.r.invalid_utf8;
      lr.r = std::move(res[i]);
    }
  }
  c->seqs = {};
}

// Appends one JSON record, with its line break, to *buf.
void format_json_record(std::string* buf, size_t index, const LineResult& lr, bool hidden, size_t E) {
  const xlmr::Result& r = lr.r;
  *buf += "{\"index\":" + std::to_string(index) + ",\"n_tokens\":" + std::to_string(r.n_tokens);
  if (lr.windows) *buf += ",\"n_windows\":" + std::to_string(lr.windows);
  if (!r.embedding.empty()) {
    *buf += ",\"embedding\":";
    append_floats(buf, r.embedding.data(), r.embedding.size());
  }
  if (!r.logits.empty()) {
    *buf += ",\"logits\":";
    append_floats(buf, r.logits.data(), r.logits.size());
  }
  if (hidden) {
    *buf += ",\"hidden\":[";
    for (int t = 0; t < r.n_tokens; ++t) {
      if (t) buf->push_back(',');
      append_floats(buf, r.hidden.data() + size_t(t) * E, E);
    }
    buf->push_back(']');
  }
  *buf += "}\n";
}

// JSON records of a chunk. Formatting numbers is the costly part (tens of
// ns a float), so with several threads the records go in waves: each thread
// formats a run of consecutive records into its own buffer, and the buffers
// are written in order. A run holds about 1 MiB of text, so memory stays
// small with --hidden too.
void write_json_records(Sink* s, const Chunk& c, size_t first_index) {
  const size_t n = c.out.size(), threads = size_t(std::max(1, s->threads));
  s->bufs.resize(threads);
  const size_t floats = s->E * (s->hidden ? 64 : 1) + 16;  // a guess at a record's size: 12 bytes a float
  const size_t per_run = threads == 1 ? 1 : std::clamp<size_t>((size_t(1) << 20) / (12 * floats), 1, 256);
  // Each run appends to a string on its own thread's stack: the buffers' string
  // objects share cache lines, and appending to them in place from several
  // threads would bounce those lines between cores on every number.
  auto format_run = [s, &c, first_index, n](std::string* buf, size_t begin, size_t end) {
    std::string local = std::move(*buf);  // keeps the capacity of earlier waves
    local.clear();
    for (size_t k = begin; k < end && k < n; ++k)
      format_json_record(&local, first_index + k, c.out[k], s->hidden, s->E);
    *buf = std::move(local);
  };
  for (size_t wave = 0; wave < n; wave += threads * per_run) {
    std::vector<std::future<void>> helpers;
    for (size_t t = 1; t < threads && wave + t * per_run < n; ++t)
      helpers.push_back(std::async(std::launch::async, format_run, &s->bufs[t], wave + t * per_run,
                                   wave + (t + 1) * per_run));
    format_run(&s->bufs[0], wave, wave + per_run);
    for (auto& h : helpers) h.get();
    for (size_t t = 0; t <= helpers.size(); ++t)
      XLMR_CHECK(std::fwrite(s->bufs[t].data(), 1, s->bufs[t].size(), s->out) == s->bufs[t].size(),
                 "failed writing the output");
  }
}

// The writer stage: the chunk's records, numbered from first_index. Returns
// the seconds it took.
double write_chunk(Sink* s, const Chunk& c, size_t first_index) {
  const auto t0 = std::chrono::steady_clock::now();
  if (s->out) {
    write_json_records(s, c, first_index);
  } else {
    for (const LineResult& lr : c.out) {
      if (s->offsets) {
        s->npy->append_rows(lr.r.hidden.data(), size_t(lr.r.n_tokens));
        s->offsets->append(int64_t(s->npy->rows()));
      } else {
        s->npy->append_row(s->npy_logits ? lr.r.logits.data() : lr.r.embedding.data());
      }
    }
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ---- stopping on SIGINT and SIGTERM ------------------------------------------
//
// The first SIGINT (Ctrl-C) or SIGTERM asks the stream to stop after the
// chunk the model is running: its records are written, an .npy header is
// finished, and the process then ends by that signal, so that its caller
// sees how it ended. While the main thread waits for input, every record of
// the lines read so far is already written and flushed (run_stream
// checkpoints the outputs before such a wait), so the signal ends the
// process at once. A second signal always does (SA_RESETHAND).
//
// A signal handler reaches data only through globals: these two are the
// program's only mutable globals (the library has none).
volatile std::sig_atomic_t g_stop_signal = 0;    // the signal that asked to stop; 0: none
volatile std::sig_atomic_t g_waiting_input = 0;  // 1: waiting for input with every record out

void on_stop_signal(int sig) {
  if (g_waiting_input) {
    std::raise(sig);  // the handler is reset: the signal ends the process as the handler returns
    return;
  }
  g_stop_signal = sig;
  static const char msg[] = "\nxlmr-infer: stopping after the chunk in progress (again to stop at once)\n";
  (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
}

}  // namespace

// A signal the parent made this process ignore (nohup, a background job)
// stays ignored.
void install_stop_handlers() {
  struct sigaction sa = {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;
  for (int sig : {SIGINT, SIGTERM}) {
    struct sigaction old = {};
    if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler != SIG_IGN) ::sigaction(sig, &sa, nullptr);
  }
}

ChunkPlan plan_chunks(xlmr::Device device, bool hidden, size_t batch_budget) {
  ChunkPlan p;
  if (device == xlmr::Device::cuda) {
    p.max_lines = kChunkLinesCuda;
    p.max_tokens = hidden ? kChunkTokens : std::max(kChunkTokens, 2 * batch_budget);
  } else if (hidden) {
    p.max_tokens = kChunkTokens;
  }
  return p;
}

size_t next_chunk_lines(const ChunkPlan& plan, size_t tokens, size_t lines) {
  if (!plan.max_tokens) return plan.max_lines;
  const size_t per_line = lines ? std::max<size_t>(1, tokens / lines) : 512;
  return std::clamp<size_t>(plan.max_tokens / per_line, std::min(kMinChunkLines, plan.max_lines), plan.max_lines);
}

// See infer_stream.h for what it promises; docs/architecture.md, "xlmr-infer's
// stream", for why.
void run_stream(xlmr::Engine& engine, const Preparer& prep, LineReader& reader, const ChunkPlan& plan,
                bool serial, Sink* sink, Progress& progress, StreamStats* st) {
  using Clock = std::chrono::steady_clock;
  auto since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  std::future<Chunk> next;      // the chunk being prepared
  std::future<double> writing;  // the chunk being written
  ProgressCounts done = st->counts, pending;  // written; being written
  size_t index = 0;                                          // the next record's index
  size_t chunk_lines = next_chunk_lines(plan, 0, 0);

  // Reads the next lines and starts preparing them; false at the end of the
  // input, or when a stop was asked for before a wait. A read error waits for
  // its chunk's turn. `may_wait`: the input may have nothing ready, and the
  // outputs are checkpointed, so a stop signal may end the process during the read.
  auto read_next = [&](bool may_wait) -> bool {
    std::vector<Line> lines;
    try {
      const auto t0 = Clock::now();
      g_waiting_input = may_wait;
      if (may_wait && g_stop_signal) {  // asked just before the wait
        g_waiting_input = 0;
        return false;
      }
      const bool got = reader.next(chunk_lines, &lines);
      g_waiting_input = 0;
      st->read_s += since(t0);
      if (!got) return false;
    } catch (...) {
      g_waiting_input = 0;
      std::promise<Chunk> failed;
      failed.set_exception(std::current_exception());
      next = failed.get_future();
      return true;
    }
    next = std::async(std::launch::async, prepare_chunk, std::cref(prep), std::move(lines), reader.bytes_read());
    return true;
  };
  auto finish_writing = [&]() {
    if (!writing.valid()) return;
    st->write_s += writing.get();
    done.lines += pending.lines;
    done.tokens += pending.tokens;
    done.bytes = pending.bytes;
    progress.update(done);
  };

  // Everything so far written and on disk: nothing is lost if a signal ends the process.
  auto checkpoint = [&]() {
    if (sink->out) XLMR_CHECK(std::fflush(sink->out) == 0, "failed writing the output");
    if (sink->npy) sink->npy->checkpoint();
    if (sink->offsets) sink->offsets->checkpoint();
  };

  try {
    checkpoint();
    bool more = read_next(true);
    while (more && !g_stop_signal) {
      Chunk c = next.get();
      st->prepare_s += c.prepare_s;
      if (plan.max_tokens && !c.out.empty()) {
        size_t tokens = 0;
        for (const auto& q : c.seqs) tokens += q.size();
        chunk_lines = next_chunk_lines(plan, tokens, c.out.size());
      }
      const bool ahead = !serial && reader.ready();
      if (ahead) more = read_next(false);
      const auto t0 = Clock::now();
      run_chunk(engine, prep.rs, &c);
      st->model_s += since(t0);
      for (size_t k = 0; k < c.out.size(); ++k) {
        if (c.out[k].r.truncated && st->n_truncated++ == 0) st->first_truncated = c.where[k];
        if (c.out[k].r.invalid_utf8 && st->n_bad_utf8++ == 0) st->first_bad_utf8 = c.where[k];
      }
      finish_writing();
      pending.lines = c.out.size();
      pending.tokens = c.tokens;
      pending.bytes = c.bytes_read;
      writing = std::async(std::launch::async,
                           [sink, index, c = std::move(c)]() { return write_chunk(sink, c, index); });
      index += pending.lines;
      if (!ahead) {
        finish_writing();
        checkpoint();
        more = read_next(true);
      }
    }
    finish_writing();
  } catch (...) {
    if (writing.valid()) {
      try {
        writing.get();
      } catch (...) {  // the first error is the one reported
      }
    }
    throw;
  }
  st->counts = done;
  st->stopped_by = g_stop_signal;
}

}  // namespace xlmr::tools
