// The CUDA backend's host-side logic, which needs no GPU: workspace sizing,
// the packed per-batch upload, the graph cache's keys and policy, and the row
// buckets the cuBLASLt GEMMs are planned for.
#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include "engine/cuda_plan.h"
#include "engine/error.h"
#include "kernels/cuda/gemm_buckets.h"

using xlmr::cuda_plan::GraphCache;
using xlmr::cuda_plan::GraphKey;

namespace {

xlmr::ModelConfig large() {
  xlmr::ModelConfig c;
  c.vocab_size = 250002;
  c.hidden = 1024;
  c.ffn = 4096;
  c.heads = 16;
  c.layers = 24;
  c.max_positions = 514;
  c.num_labels = 2;
  return c;
}

// A stand-in graph handle: destroying it marks it.
struct FakeGraph {
  bool destroyed = false;
};
void destroy_fake(void* h) noexcept { static_cast<FakeGraph*>(h)->destroyed = true; }

GraphKey key(int n_tokens, int n_seqs, int max_seqlen, int slot = 0) {
  GraphKey k;
  k.n_tokens = n_tokens;
  k.n_seqs = n_seqs;
  k.max_seqlen = max_seqlen;
  k.slot = slot;
  k.pooled = true;
  return k;
}

}  // namespace

TEST_CASE("CUDA workspace: sized from the token budget, XLM-R large", "[cuda-plan]") {
  const auto w = xlmr::cuda_plan::workspace(large(), 8192);
  CHECK(w.x == 8192u * 1024u);
  CHECK(w.qkv == 3 * w.x);
  CHECK(w.ffn == 8192u * 4096u);
  CHECK(w.pooled32 == 8192u * 1024u);  // as many sequences as tokens, at most
  CHECK(w.logits32 == 8192u * 2u);
  CHECK(w.meta_words == 2u * 8192u + 8192u + 1u);
  // 16-bit activations: x, attn, proj, first, tmp (E wide), qkv (3E), ffn (4E)
  // = 12 E per token; fp32 hidden + pooled = 2 E; + logits and the ids.
  const size_t T = 8192, E = 1024;
  const size_t want = (12 * E * T + 2 * T) * 2 + (2 * E * T + 2 * T) * 4 + (3 * T + 1) * 4;
  CHECK(w.bytes(2) == want);
  CHECK(w.bytes(2) < size_t(300) << 20);  // ~ 290 MiB for a 8192-token batch
  CHECK_THROWS_AS(xlmr::cuda_plan::workspace(large(), 0), xlmr::Error);
}

TEST_CASE("CUDA workspace: a pre-norm model (XLM-R XL) adds one E-wide buffer for the LayerNorm", "[cuda-plan]") {
  xlmr::ModelConfig c = large();
  const auto post = xlmr::cuda_plan::workspace(c, 4096);
  CHECK(post.xn == 0);
  c.norm = xlmr::Norm::pre;
  const auto pre = xlmr::cuda_plan::workspace(c, 4096);
  CHECK(pre.xn == pre.x);
  CHECK(pre.bytes(2) == post.bytes(2) + pre.x * 2);
}

TEST_CASE("CUDA upload: ids | positions | cu_seqlens, positions restart per sequence", "[cuda-plan]") {
  const std::vector<int32_t> ids = {0, 10, 11, 2, 0, 2, 0, 20, 21, 22, 2};
  const std::vector<int32_t> cu = {0, 4, 6, 11};
  xlmr::RaggedBatch b{ids.data(), cu.data(), 3, 11, 5};
  REQUIRE(xlmr::cuda_plan::meta_words(11, 3) == 2 * 11 + 4);
  std::vector<int32_t> meta(xlmr::cuda_plan::meta_words(11, 3), -7);
  xlmr::cuda_plan::pack_meta(b, 2, meta.data());
  const std::vector<int32_t> want = {0, 10, 11, 2, 0, 2, 0, 20, 21, 22, 2,   // ids
                                     2, 3,  4,  5, 2, 3, 2, 3,  4,  5,  6,   // positions (XLM-R offset 2)
                                     0, 4,  6,  11};                          // cu_seqlens
  CHECK(meta == want);
  xlmr::cuda_plan::pack_meta(b, 0, meta.data());  // BERT-style models start at 0
  CHECK(meta[11] == 0);
  CHECK(meta[15] == 0);
  CHECK(meta[21] == 4);
}

TEST_CASE("CUDA graph keys: every launch-relevant field counts", "[cuda-plan]") {
  const GraphKey a = key(128, 1, 128);
  CHECK(a == key(128, 1, 128));
  CHECK_FALSE(a == key(129, 1, 129));
  CHECK_FALSE(a == key(128, 2, 64));
  CHECK_FALSE(a == key(128, 1, 128, 1));  // another upload buffer
  GraphKey b = a;
  b.hidden = true;
  CHECK_FALSE(a == b);
  b = a;
  b.logits = true;
  CHECK_FALSE(a == b);
  b = a;
  b.pooling = 2;
  CHECK_FALSE(a == b);
}

TEST_CASE("CUDA graph cache: capture on the second sighting, then replay", "[cuda-plan]") {
  GraphCache cache(4, 16, 2, destroy_fake);
  void* g = nullptr;
  const GraphKey k = key(128, 1, 128);
  CHECK(cache.lookup(k, &g) == GraphCache::Action::direct);   // first time: one-off shapes are not captured
  CHECK(cache.lookup(key(64, 2, 40), &g) == GraphCache::Action::direct);
  CHECK(cache.lookup(k, &g) == GraphCache::Action::capture);  // seen again: worth a graph
  FakeGraph fg;
  cache.insert(k, &fg);
  CHECK(cache.size() == 1);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(cache.lookup(k, &g) == GraphCache::Action::replay);
    CHECK(g == &fg);
  }
  CHECK(cache.captures() == 1);
  CHECK(cache.replays() == 3);
  CHECK_FALSE(fg.destroyed);
}

TEST_CASE("CUDA graph cache: the least recently used graph makes room", "[cuda-plan]") {
  GraphCache cache(2, 16, 1, destroy_fake);
  FakeGraph g1, g2, g3;
  void* g = nullptr;
  REQUIRE(cache.lookup(key(1, 1, 1), &g) == GraphCache::Action::capture);  // capture_after 1: at once
  cache.insert(key(1, 1, 1), &g1);
  cache.insert(key(2, 1, 2), &g2);
  REQUIRE(cache.lookup(key(1, 1, 1), &g) == GraphCache::Action::replay);  // 1 is now the most recent
  cache.insert(key(3, 1, 3), &g3);
  CHECK(g2.destroyed);
  CHECK_FALSE(g1.destroyed);
  CHECK(cache.size() == 2);
  CHECK(cache.lookup(key(2, 1, 2), &g) == GraphCache::Action::capture);
  CHECK(cache.lookup(key(3, 1, 3), &g) == GraphCache::Action::replay);
  CHECK(g == &g3);
}

TEST_CASE("CUDA graph cache: disabled after a failed capture, graphs released", "[cuda-plan]") {
  FakeGraph g1, g2;
  {
    GraphCache cache(4, 16, 1, destroy_fake);
    cache.insert(key(1, 1, 1), &g1);
    cache.insert(key(2, 1, 2), &g2);
    cache.disable();
    CHECK(g1.destroyed);
    CHECK(g2.destroyed);
    void* g = nullptr;
    CHECK(cache.lookup(key(1, 1, 1), &g) == GraphCache::Action::direct);
    CHECK(g == nullptr);
    CHECK_FALSE(cache.enabled());
  }
  FakeGraph g3;
  {
    GraphCache cache(4, 16, 1, destroy_fake);
    cache.insert(key(1, 1, 1), &g3);
  }
  CHECK(g3.destroyed);  // the destructor releases what is left

  GraphCache none(0, 16, 2, destroy_fake);  // capacity 0: graphs off
  void* g = nullptr;
  CHECK(none.lookup(key(1, 1, 1), &g) == GraphCache::Action::direct);
  CHECK(none.lookup(key(1, 1, 1), &g) == GraphCache::Action::direct);
}

TEST_CASE("CUDA graph cache: the sighting history is bounded", "[cuda-plan]") {
  GraphCache cache(4, 2, 2, destroy_fake);  // remembers the last 2 shapes
  void* g = nullptr;
  CHECK(cache.lookup(key(1, 1, 1), &g) == GraphCache::Action::direct);
  CHECK(cache.lookup(key(2, 1, 2), &g) == GraphCache::Action::direct);
  CHECK(cache.lookup(key(3, 1, 3), &g) == GraphCache::Action::direct);  // forgets shape 1
  CHECK(cache.lookup(key(1, 1, 1), &g) == GraphCache::Action::direct);  // a first sighting again
  CHECK(cache.lookup(key(1, 1, 1), &g) == GraphCache::Action::capture);
}

TEST_CASE("CUDA GEMM row buckets: 1..16, then geometric steps ending at max rows", "[cuda-plan]") {
  for (const int max_rows : {1, 7, 16, 17, 24, 25, 100, 513, 4096, 8192, 16383, 16384, 100000}) {
    INFO("max rows " << max_rows);
    const std::vector<int> b = xlmr::cuda::gemm_row_buckets(max_rows);
    REQUIRE(!b.empty());
    CHECK(b.back() == max_rows);
    for (int i = 0; i < std::min(16, max_rows); ++i) CHECK(b[size_t(i)] == i + 1);
    for (size_t i = 1; i < b.size(); ++i) {
      INFO("bucket " << i << ": " << b[i - 1] << " -> " << b[i]);
      CHECK(b[i] > b[i - 1]);
      if (b[i] > 16 && b[i] != max_rows) CHECK(b[i] % 8 == 0);
      // No bucket spans more than a fifth of its upper end, or 8 rows.
      CHECK((b[i] - b[i - 1] <= 8 || 5 * (b[i] - b[i - 1]) <= b[i]));
    }
  }
  // A few dozen plans per GEMM for a 16k-token budget.
  const std::vector<int> b = xlmr::cuda::gemm_row_buckets(16384);
  CHECK(b.size() <= 64);
  const std::vector<int> want = {1,    2,    3,    4,    5,    6,    7,    8,    9,    10,    11,    12,   13,   14,
                                 15,   16,   24,   32,   40,   48,   56,   64,   80,   96,    112,   128,  160,  184,
                                 216,  256,  312,  368,  432,  512,  616,  728,  864,  1024,  1224,  1456, 1728, 2048,
                                 2440, 2904, 3448, 4096, 4872, 5800, 6896, 8192, 9744, 11592, 13784, 16384};
  CHECK(b == want);
  CHECK(xlmr::cuda::gemm_row_buckets(513).back() == 513);
  CHECK(xlmr::cuda::gemm_row_buckets(1) == std::vector<int>{1});
  CHECK(xlmr::cuda::gemm_row_buckets(2147483647).back() == 2147483647);
  CHECK(xlmr::cuda::gemm_row_buckets(2147483647).size() <= 128);
}

TEST_CASE("CUDA GEMM row buckets: a row count takes the smallest bucket that holds it", "[cuda-plan]") {
  for (const int max_rows : {1, 7, 16, 17, 513, 16384}) {
    INFO("max rows " << max_rows);
    const std::vector<int> b = xlmr::cuda::gemm_row_buckets(max_rows);
    for (int M = 1; M <= max_rows; ++M) {
      const int i = xlmr::cuda::gemm_bucket_index(b, M);
      REQUIRE(i >= 0);
      REQUIRE(size_t(i) < b.size());
      REQUIRE(b[size_t(i)] >= M);
      if (i > 0) REQUIRE(b[size_t(i) - 1] < M);
    }
    CHECK(xlmr::cuda::gemm_bucket_index(b, max_rows) == int(b.size()) - 1);
    CHECK_THROWS_AS(xlmr::cuda::gemm_bucket_index(b, 0), xlmr::Error);
    CHECK_THROWS_AS(xlmr::cuda::gemm_bucket_index(b, max_rows + 1), xlmr::Error);
  }
  CHECK(xlmr::cuda::gemm_bucket_index(xlmr::cuda::gemm_row_buckets(16384), 17) == 16);  // bucket 24
  CHECK_THROWS_AS(xlmr::cuda::gemm_bucket_index(std::vector<int>{}, 1), xlmr::Error);
}

TEST_CASE("CUDA GEMM row buckets: max rows must be at least 1", "[cuda-plan]") {
  CHECK_THROWS_AS(xlmr::cuda::gemm_row_buckets(0), xlmr::Error);
  CHECK_THROWS_AS(xlmr::cuda::gemm_row_buckets(-5), xlmr::Error);
}
