// xlmr-infer's stream: input lines in chunks through three overlapping
// stages - prepare (parse, tokenize), model, write (JSON lines or .npy) -
// with the records in input order. The rules it keeps (reads on the main
// thread, no read-ahead past what is ready, errors in input order, bounded
// memory, signals) are in docs/architecture.md, "xlmr-infer's stream".
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/tools/infer_input.h"
#include "engine/tools/npy_writer.h"
#include "engine/tools/progress.h"

namespace xlmr {
class Tokenizer;
}

namespace xlmr::tools {

constexpr size_t kChunkLines = 256;     // lines a chunk holds at most
constexpr size_t kChunkTokens = 32768;  // tokens a chunk is held near when records carry hidden states

struct RunSettings {
  InputFormat format = InputFormat::text;
  bool pairs = false;
  bool window = false;
  size_t overlap = 0;  // --stride, window mode
  std::string prefix, pair_prefix;
  xlmr::EncodeOptions enc;
  bool normalize = false;  // effective: --normalize or the model's default
};

// What the prepare stage needs: read-only, shared by its threads.
struct Preparer {
  const xlmr::Tokenizer* tok = nullptr;  // null for ids input
  RecordOptions ro;
  RunSettings rs;
  int max_length = 0;
  std::vector<int32_t> specials;  // window mode: <s> and </s>
  int threads = 1;                // --host-threads
};

// Where the records go: a JSON-lines stream or an .npy matrix.
struct Sink {
  FILE* out = nullptr;           // jsonl
  NpyWriter* npy = nullptr;      // npy
  NpyWriter* offsets = nullptr;  // npy of hidden states: where each line's rows end
  bool npy_logits = false;
  bool hidden = false;
  size_t E = 0;
  int threads = 1;                // jsonl: threads formatting records (--host-threads)
  std::vector<std::string> bufs;  // jsonl: one per formatting thread; the writer stage's own
};

// What a run over the input reports besides its records.
struct StreamStats {
  ProgressCounts counts;
  size_t n_truncated = 0, n_bad_utf8 = 0;
  std::string first_truncated, first_bad_utf8;
  double read_s = 0, prepare_s = 0, model_s = 0, write_s = 0;  // busy time of each stage
  int stopped_by = 0;  // the signal that stopped the run early; 0: it ran to the end of the input
};

// Makes the first SIGINT or SIGTERM stop run_stream after the chunk in
// progress (StreamStats::stopped_by says which; the caller then ends the
// process by it). A signal the parent made this process ignore (nohup, a
// background job) stays ignored.
void install_stop_handlers();

// Runs every input line through the stages, chunk by chunk. Lines are read on
// this thread, so that no helper ever waits on a pipe that an error would
// then have to wait for; chunk k+1 is prepared on a helper while the model
// runs chunk k here, and chunk k-1 is written on another meanwhile.
//
// Nothing is read ahead that the input does not have ready: a person at a
// terminal, or a program that writes a line and waits for its record before
// it writes the next, gets every record (flushed) before this waits for more
// input. With `serial` (--no-overlap) nothing is read ahead at all.
//
// Errors come out in input order: when chunk k fails (a bad line, the model,
// the output), the records before it are written first, as a serial run
// would have written them. A stop signal (install_stop_handlers) ends the
// run after the chunk in progress.
//
// Chunks hold up to `max_lines` lines. With `max_tokens` (not 0: the records
// carry every token's hidden state) a chunk is also held near that many
// tokens, judged from the lines of the chunk before: the memory of the up
// to three chunks in flight then stays bounded however long the lines are.
void run_stream(xlmr::Engine& engine, const Preparer& prep, LineReader& reader, size_t max_lines,
                size_t max_tokens, bool serial, Sink* sink, Progress& progress, StreamStats* st);

}  // namespace xlmr::tools
