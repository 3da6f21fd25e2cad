// Host-side planning for the CUDA backend, free of CUDA so that it builds and
// is tested on every machine: the device workspace layout, the packed
// per-batch upload, and the cache of captured CUDA graphs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/backend.h"
#include "engine/config.h"

namespace xlmr::cuda_plan {

// Element counts of every device buffer of one engine, for batches of at
// most max_tokens tokens and max_tokens sequences.
struct Workspace {
  size_t x = 0, qkv = 0, attn = 0, proj = 0, ffn = 0;  // 16-bit activations [T, .]
  size_t xn = 0;                                       // pre-norm models: LayerNorm of x [T, E]
  size_t first = 0, tmp = 0, logits16 = 0;             // 16-bit per-sequence rows [S, .]
  size_t hidden32 = 0, pooled32 = 0, logits32 = 0;     // fp32 results
  size_t meta_words = 0;                               // int32: ids | positions | cu_seqlens
  size_t bytes(size_t elt16) const;                    // all of it, per upload slot counted once
};
Workspace workspace(const ModelConfig& c, int max_tokens);

// The per-batch upload, one contiguous int32 block:
//   ids [N] | positions [N] | cu_seqlens [S + 1]
// Positions restart at position_offset for every sequence.
size_t meta_words(int n_tokens, int n_seqs);
void pack_meta(const RaggedBatch& b, int position_offset, int32_t* dst);

// Everything a captured forward depends on: launch sizes, which upload slot
// it reads, and which outputs it writes. Two batches with equal keys replay
// the same graph (the ids and cu_seqlens are read from device memory).
struct GraphKey {
  int n_tokens = 0, n_seqs = 0, max_seqlen = 0;
  int slot = 0;        // which upload buffer the graph reads
  int pooling = 0;     // Pooling, as int
  bool hidden = false, pooled = false, logits = false;
  bool operator==(const GraphKey& o) const;
};

// Captured graphs by key, without allocating after construction. A shape is
// captured the `capture_after`-th time it is seen among the last
// `history` batches, so one-off shapes of a large ragged job never pay for a
// capture; at most `capacity` graphs are kept, the least recently used one
// is destroyed to make room.
class GraphCache {
 public:
  using Handle = void*;
  using Destroy = void (*)(Handle) noexcept;
  enum class Action { replay, capture, direct };

  GraphCache(size_t capacity, size_t history, int capture_after, Destroy destroy);
  ~GraphCache();
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;

  // replay: *graph is the graph for k; capture: capture one and insert() it;
  // direct: launch the kernels one by one.
  Action lookup(const GraphKey& k, Handle* graph);
  void insert(const GraphKey& k, Handle graph);
  // Destroys every graph (e.g. after a failed capture) and stops capturing.
  void disable();
  bool enabled() const { return enabled_; }
  size_t size() const;
  size_t captures() const { return captures_; }
  size_t replays() const { return replays_; }

 private:
  struct Entry {
    GraphKey key;
    Handle graph = nullptr;
    uint64_t last_use = 0;
  };
  struct Seen {
    GraphKey key;
    int count = 0;
    bool valid = false;
  };
  std::vector<Entry> entries_;  // capacity slots; graph == nullptr: free
  std::vector<Seen> seen_;      // ring of recent keys without a graph
  size_t seen_next_ = 0;
  int capture_after_;
  Destroy destroy_;
  uint64_t clock_ = 0;
  size_t captures_ = 0, replays_ = 0;
  bool enabled_ = true;
};

}  // namespace xlmr::cuda_plan
