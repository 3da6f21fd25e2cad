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

constexpr size_t kChunkLines = 256;       // lines a chunk holds at most on CPU
constexpr size_t kChunkLinesCuda = 4096;  // on CUDA, where a chunk's tokens bound it first
constexpr size_t kChunkTokens = 32768;    // tokens a chunk is held near, at least, when tokens bound it

// How the stream cuts its input into chunks.
struct ChunkPlan {
  size_t max_lines = kChunkLines;
  size_t max_tokens = 0;  // not 0: a chunk is also held near this many tokens
};

// The plan for a run. On CPU a chunk is kChunkLines lines: a batch of them
// keeps the cores busy. On CUDA a chunk is held near max(kChunkTokens,
// 2 x the batch budget) tokens, up to kChunkLinesCuda lines, so that short
// texts still fill whole batches (256 ten-token lines would make a
// 2,560-token batch of an 8,192-token budget). When the records carry every
// token's hidden state (`hidden`), a chunk is held near kChunkTokens tokens
// on either device, so that memory stays bounded however long the lines are.
ChunkPlan plan_chunks(xlmr::Device device, bool hidden, size_t batch_budget);

// Lines the next chunk reads, judged from the chunk before it (`tokens` over
// `lines`; 0 lines: no chunk yet, when lines of 512 tokens are assumed).
// Between 16 and plan.max_lines.
size_t next_chunk_lines(const ChunkPlan& plan, size_t tokens, size_t lines);

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
// Chunks are cut as `plan` says (plan_chunks, next_chunk_lines).
void run_stream(xlmr::Engine& engine, const Preparer& prep, LineReader& reader, const ChunkPlan& plan,
                bool serial, Sink* sink, Progress& progress, StreamStats* st);

}  // namespace xlmr::tools
