#include "engine/cuda_plan.h"

#include <algorithm>
#include <cstring>

#include "engine/error.h"

namespace xlmr::cuda_plan {

size_t Workspace::bytes(size_t elt16) const {
  return (x + xn + qkv + attn + proj + ffn + first + tmp + logits16) * elt16 +
         (hidden32 + pooled32 + logits32) * sizeof(float) + meta_words * sizeof(int32_t);
}

Workspace workspace(const ModelConfig& c, int max_tokens) {
  XLMR_CHECK(max_tokens >= 1, "cuda workspace: max_tokens must be >= 1");
  const size_t T = size_t(max_tokens), S = T, E = size_t(c.hidden), F = size_t(c.ffn);
  const size_t C = size_t(std::max(c.num_labels, 1));
  Workspace w;
  w.x = T * E;
  w.xn = c.norm == Norm::pre ? T * E : 0;
  w.qkv = T * 3 * E;
  w.attn = T * E;
  w.proj = T * E;
  w.ffn = T * F;
  w.first = S * E;
  w.tmp = S * E;
  w.logits16 = S * C;
  w.hidden32 = T * E;
  w.pooled32 = S * E;
  w.logits32 = S * C;
  w.meta_words = meta_words(max_tokens, max_tokens);
  return w;
}

size_t meta_words(int n_tokens, int n_seqs) { return 2 * size_t(n_tokens) + size_t(n_seqs) + 1; }

void pack_meta(const RaggedBatch& b, int position_offset, int32_t* dst) {
  const int N = b.n_tokens, S = b.n_seqs;
  int32_t* ids = dst;
  int32_t* pos = dst + N;
  int32_t* cu = dst + 2 * size_t(N);
  std::memcpy(ids, b.ids, sizeof(int32_t) * size_t(N));
  for (int s = 0; s < S; ++s)
    for (int t = b.cu_seqlens[s], i = 0; t < b.cu_seqlens[s + 1]; ++t, ++i) pos[t] = position_offset + i;
  std::memcpy(cu, b.cu_seqlens, sizeof(int32_t) * size_t(S + 1));
}

bool GraphKey::operator==(const GraphKey& o) const {
  return n_tokens == o.n_tokens && n_seqs == o.n_seqs && max_seqlen == o.max_seqlen && slot == o.slot &&
         pooling == o.pooling && hidden == o.hidden && pooled == o.pooled && logits == o.logits;
}

GraphCache::GraphCache(size_t capacity, size_t history, int capture_after, Destroy destroy)
    : entries_(capacity), seen_(std::max<size_t>(history, 1)), capture_after_(capture_after), destroy_(destroy) {
  XLMR_CHECK(capture_after >= 1, "graph cache: capture_after must be >= 1");
  if (capacity == 0) enabled_ = false;
}

GraphCache::~GraphCache() {
  for (Entry& e : entries_)
    if (e.graph) destroy_(e.graph);
}

size_t GraphCache::size() const {
  return size_t(std::count_if(entries_.begin(), entries_.end(), [](const Entry& e) { return e.graph != nullptr; }));
}

GraphCache::Action GraphCache::lookup(const GraphKey& k, Handle* graph) {
  *graph = nullptr;
  if (!enabled_) return Action::direct;
  ++clock_;
  for (Entry& e : entries_) {
    if (e.graph && e.key == k) {
      e.last_use = clock_;
      *graph = e.graph;
      ++replays_;
      return Action::replay;
    }
  }
  for (Seen& s : seen_) {
    if (s.valid && s.key == k) {
      if (++s.count >= capture_after_) {
        s.valid = false;
        return Action::capture;
      }
      return Action::direct;
    }
  }
  if (capture_after_ <= 1) return Action::capture;
  Seen& slot = seen_[seen_next_];
  seen_next_ = (seen_next_ + 1) % seen_.size();
  slot.key = k;
  slot.count = 1;
  slot.valid = true;
  return Action::direct;
}

void GraphCache::insert(const GraphKey& k, Handle graph) {
  XLMR_CHECK(graph != nullptr && !entries_.empty(), "graph cache: nothing to insert into");
  Entry* victim = &entries_[0];
  for (Entry& e : entries_) {
    if (!e.graph) {
      victim = &e;
      break;
    }
    if (e.last_use < victim->last_use) victim = &e;
  }
  if (victim->graph) destroy_(victim->graph);
  victim->key = k;
  victim->graph = graph;
  victim->last_use = ++clock_;
  ++captures_;
}

void GraphCache::disable() {
  for (Entry& e : entries_) {
    if (e.graph) destroy_(e.graph);
    e.graph = nullptr;
  }
  enabled_ = false;
}

}  // namespace xlmr::cuda_plan
