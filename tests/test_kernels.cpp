// Reference kernels on cases small enough to check by hand, the scheduler,
// and engine-level invariants (batching never changes a sequence's result).
#include <catch2/catch.hpp>

#include <cmath>
#include <numeric>
#include <set>

#include "engine/engine.h"
#include "engine/scheduler.h"
#include "kernels/attention.h"
#include "kernels/layernorm.h"
#include "kernels/linear.h"
#include "kernels/pooling.h"
#include "test_support.h"
#include "tiny_model.h"

using Catch::Detail::Approx;
using Catch::Matchers::Contains;

TEST_CASE("linear computes x W^T + b with epilogues", "[kernels][ref]") {
  const float x[2 * 3] = {1, 2, 3, -1, 0, 1};
  const float w[2 * 3] = {1, 0, -1, 0.5f, 0.5f, 0.5f};  // [O=2, I=3]
  const float b[2] = {0.25f, -4};
  float y[4];
  xlmr::ref::linear(y, x, w, b, 2, 2, 3);
  CHECK(y[0] == Approx(1 - 3 + 0.25));
  CHECK(y[1] == Approx(3 - 4));
  CHECK(y[2] == Approx(-1 - 1 + 0.25));
  CHECK(y[3] == Approx(0 - 4));
  xlmr::ref::linear(y, x, w, b, 2, 2, 3, xlmr::Epilogue::relu);
  CHECK(y[0] == 0.0f);
  CHECK(xlmr::ref::gelu(1.0f) == Approx(0.8413447460685429).epsilon(1e-7));
  CHECK(xlmr::ref::gelu(-3.0f) == Approx(-0.0040496982).epsilon(1e-6));  // erf form, not tanh form
}

TEST_CASE("layernorm normalises with biased variance and eps", "[kernels][ref]") {
  const float in[4] = {1, 2, 3, 4};
  const float g[4] = {1, 1, 2, 1}, b[4] = {0, 0, 0, 1};
  float out[4];
  xlmr::ref::layernorm_row(out, in, g, b, 4, 1e-5f);
  const double inv = 1.0 / std::sqrt(1.25 + 1e-5);
  CHECK(out[0] == Approx(-1.5 * inv));
  CHECK(out[2] == Approx(2 * 0.5 * inv));
  CHECK(out[3] == Approx(1.5 * inv + 1));

  float x[4] = {1, 1, 1, 1};
  const float y[4] = {0, 1, 2, 3}, bias[4] = {0, 0, 0, -2};
  xlmr::ref::add_bias_residual_layernorm({x, y, bias, g, b, 1, 4, 1e-5f});
  // x + y + bias = {1, 2, 3, 2}: mean 2, var 0.5
  CHECK(x[0] == Approx(-1 / std::sqrt(0.5 + 1e-5)));
}

TEST_CASE("attention stays inside each sequence and zeroes padding", "[kernels][ref]") {
  // S=2 sequences padded to L=3, heads=2, D=1 (E=2): qkv rows [q0 q1 k0 k1 v0 v1]
  const int S = 2, L = 3, H = 2, D = 1, E = 2;
  std::vector<float> qkv(size_t(S) * L * 3 * E, 0.0f);
  auto set = [&](int s, int t, std::vector<float> row) {
    std::copy(row.begin(), row.end(), qkv.begin() + (size_t(s) * L + t) * 3 * E);
  };
  set(0, 0, {0, 1, 0, 1, 10, 1});
  set(0, 1, {0, 1, 0, -1, 20, 2});
  set(0, 2, {9, 9, 9, 9, 999, 999});  // padding: must not leak
  set(1, 0, {5, 5, 1, 1, 7, 8});       // a one-token sequence
  set(1, 1, {9, 9, 9, 9, 999, 999});
  set(1, 2, {9, 9, 9, 9, 999, 999});
  const int32_t lengths[2] = {2, 1};
  std::vector<float> out(size_t(S) * L * E), scores(L);
  xlmr::ref::attention_padded(out.data(), qkv.data(), lengths, scores.data(), S, L, H, D);
  // head 0: q = 0 -> uniform over the two keys -> mean of v0 = 15
  CHECK(out[0] == Approx(15));
  CHECK(out[2] == Approx(15));
  // head 1: q=1, keys {1, -1} -> softmax(1, -1)
  const double p = std::exp(1.0) / (std::exp(1.0) + std::exp(-1.0));
  CHECK(out[1] == Approx(p * 1 + (1 - p) * 2));
  CHECK(out[4] == 0.0f);  // padding row
  CHECK(out[5] == 0.0f);
  CHECK(out[6] == Approx(7));  // one token attends to itself only
  CHECK(out[7] == Approx(8));
}

TEST_CASE("pooling helpers", "[kernels][ref]") {
  const float x[6] = {1, 2, 3, 4, 5, 6};
  float m[2];
  xlmr::ref::mean_rows(m, x, 3, 2);
  CHECK(m[0] == Approx(3));
  CHECK(m[1] == Approx(4));
  float v[2] = {3, 4};
  xlmr::ref::l2_normalize(v, 2);
  CHECK(v[0] == Approx(0.6));
  float z[2] = {0, 0};
  xlmr::ref::l2_normalize(z, 2);
  CHECK(z[0] == 0.0f);
}

TEST_CASE("scheduler packs every request once under the budget", "[scheduler]") {
  std::vector<int> lengths = {5, 1, 17, 3, 3, 8, 30, 2, 9, 16};
  for (bool padded : {false, true})
    for (int budget : {30, 40, 100, 1000}) {
      xlmr::ScheduleOptions so;
      so.max_tokens = budget;
      so.padded = padded;
      const auto batches = xlmr::schedule_batches(lengths, so);
      std::multiset<int> seen;
      for (const auto& b : batches) {
        REQUIRE(!b.empty());
        int sum = 0, longest = 0;
        for (int i : b) {
          seen.insert(i);
          sum += lengths[size_t(i)];
          longest = std::max(longest, lengths[size_t(i)]);
        }
        CHECK((padded ? int(b.size()) * longest : sum) <= budget);
      }
      CHECK(seen.size() == lengths.size());
      CHECK(std::set<int>(seen.begin(), seen.end()).size() == lengths.size());
    }
  xlmr::ScheduleOptions so;
  so.max_tokens = 10;
  CHECK_THROWS_WITH(xlmr::schedule_batches({4, 11}, so), Contains("request 1 has 11 tokens"));
  CHECK(xlmr::schedule_batches({}, so).empty());
}

TEST_CASE("engine: a sequence's result does not depend on its batch", "[engine]") {
  const std::string p = test::scratch("engine") + "/tiny.xlmr";
  test::write_tiny_model(p);
  std::vector<std::vector<int32_t>> seqs = {{0, 5, 2}, {0, 7, 8, 9, 10, 11, 12, 13, 14, 2}, {0, 2}, {4},
                                            {0, 39, 38, 37, 2, 2, 6, 2}};
  xlmr::EncodeOptions enc;
  enc.hidden = true;
  enc.pooling = xlmr::Pooling::mean;

  xlmr::EngineOptions big;
  auto e1 = xlmr::Engine::load(p, big);
  const auto together = e1->encode_ids(seqs, enc);
  REQUIRE(together.size() == seqs.size());

  xlmr::EngineOptions small = big;
  small.max_batch_tokens = 12;  // forces several batches (padded count)
  auto e2 = xlmr::Engine::load(p, small);
  const auto split = e2->encode_ids(seqs, enc);

  for (size_t i = 0; i < seqs.size(); ++i) {
    const auto alone = e1->encode_ids({seqs[i]}, enc);
    CHECK(together[i].n_tokens == int(seqs[i].size()));
    CHECK(together[i].ids == seqs[i]);  // input order kept
    REQUIRE(together[i].hidden.size() == seqs[i].size() * 16);
    for (const auto* r : {&split[i], &alone[0]}) {
      CHECK(r->hidden == together[i].hidden);
      CHECK(r->embedding == together[i].embedding);
      CHECK(r->logits == together[i].logits);
    }
    CHECK(together[i].logits.size() == 3);
  }
}

TEST_CASE("engine: bad ids and options are refused", "[engine][errors]") {
  const std::string p = test::scratch("engine") + "/tiny_err.xlmr";
  test::write_tiny_model(p);
  auto e = xlmr::Engine::load(p);
  xlmr::EncodeOptions enc;
  CHECK_THROWS_WITH(e->encode_ids({{0, 40, 2}}, enc), Contains("token id 40 is outside the vocabulary"));
  CHECK_THROWS_WITH(e->encode_ids({{0, -1, 2}}, enc), Contains("outside the vocabulary"));
  CHECK_THROWS_WITH(e->encode_ids({{0, 2}, {}}, enc), Contains("input 1: no token ids"));
  CHECK_THROWS_WITH(e->encode_ids({std::vector<int32_t>(19, 5)}, enc), Contains("the limit is 18"));
  CHECK_THROWS_WITH(e->encode_texts({"hi"}, enc), Contains("carries no tokenizer"));
  CHECK(e->encode_ids({}, enc).empty());

  xlmr::EngineOptions o;
  o.max_length = 19;
  CHECK_THROWS_WITH(xlmr::Engine::load(p, o), Contains("exceeds the model's limit of 18"));
  o = {};
  o.device = xlmr::Device::cuda;
  CHECK_THROWS_WITH(xlmr::Engine::load(p, o), Contains("--device cuda"));
}
