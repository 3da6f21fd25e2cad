// The .xlmr file: round trip, and refusal of every kind of damaged file.
#include <catch2/catch.hpp>

#include <cstring>

#include "engine/error.h"
#include "engine/model.h"
#include "test_support.h"
#include "tiny_model.h"
#include "weights/dtype.h"
#include "weights/xlmr_file.h"

using Catch::Matchers::Contains;

namespace {

std::string scratch_file(const std::string& name) { return test::scratch("format") + "/" + name; }

std::string tiny_path() {
  const std::string p = scratch_file("tiny.xlmr");
  test::write_tiny_model(p, "not-a-real-spm-but-bytes");
  return p;
}

void expect_refused(const std::string& bytes, const std::string& what, bool verify = true) {
  const std::string p = scratch_file("bad.xlmr");
  test::write_file(p, bytes);
  xlmr::LoadOptions lo;
  lo.verify_checksums = verify;
  REQUIRE_THROWS_WITH(xlmr::Model::load(p, lo), Contains(what));
}

size_t header_u64(const std::string& b, size_t off) {
  uint64_t v;
  std::memcpy(&v, b.data() + off, 8);
  return size_t(v);
}

}  // namespace

TEST_CASE("xlmr file round trip keeps config, tensors and tokenizer", "[format]") {
  const std::string p = tiny_path();
  auto f = xlmr::XlmrFile::open(p);
  CHECK(f->version() == xlmr::kXlmrFormatVersion);
  CHECK(f->tokenizer_model() == "not-a-real-spm-but-bytes");
  const xlmr::ModelConfig c = xlmr::ModelConfig::from_json(f->config());
  CHECK(c.hidden == 16);
  CHECK(c.head_activation == xlmr::HeadActivation::relu);
  const auto expected = test::tiny_tensors(test::tiny_config());
  REQUIRE(f->tensors().size() == expected.size());
  for (const auto& t : expected) {
    const xlmr::TensorInfo* info = f->find(t.name);
    REQUIRE(info);
    CHECK(info->offset % 64 == 0);
    CHECK(info->shape == t.shape);
    CHECK(std::memcmp(f->data(*info), t.data.data(), t.data.size()) == 0);
  }
}

TEST_CASE("damaged xlmr files are refused with a message naming the problem", "[format][errors]") {
  const std::string good = test::read_file(tiny_path());

  SECTION("missing file") {
    REQUIRE_THROWS_WITH(xlmr::Model::load(test::scratch("format") + "/nope.xlmr"), Contains("cannot open"));
  }
  SECTION("empty and tiny files") {
    expect_refused("", "not an .xlmr model file");
    expect_refused("XLMR", "not an .xlmr model file");
  }
  SECTION("wrong magic") {
    std::string b = good;
    b[0] = 'Z';
    expect_refused(b, "bad magic");
  }
  SECTION("other format version") {
    std::string b = good;
    b[8] = 9;
    expect_refused(b, "format version 9");
  }
  SECTION("truncated at many lengths") {
    for (size_t n : {size_t(64), size_t(128), size_t(200), good.size() / 2, good.size() - 1})
      expect_refused(good.substr(0, n), "");
    expect_refused(good.substr(0, good.size() - 1), "truncated");
  }
  SECTION("appended bytes") { expect_refused(good + "xx", "truncated or padded"); }
  SECTION("corrupt config JSON") {
    std::string b = good;
    b[xlmr::kXlmrHeaderSize + 3] ^= 0x20;
    expect_refused(b, "checksum mismatch");
  }
  SECTION("corrupt tensor directory") {
    std::string b = good;
    const size_t dir = header_u64(b, 40);
    b[dir + 70] ^= 0x01;  // ndim
    expect_refused(b, "checksum mismatch");
  }
  SECTION("corrupt tensor data is caught by the checksums") {
    std::string b = good;
    const size_t data = header_u64(b, 56);
    b[data + 5] ^= 0x40;
    expect_refused(b, "is corrupt");
  }
  SECTION("corrupt tokenizer bytes") {
    std::string b = good;
    b[b.size() - 2] ^= 0x01;
    expect_refused(b, "tokenizer section is corrupt");
  }
  SECTION("non-zero reserved bytes") {
    std::string b = good;
    b[110] = 1;
    expect_refused(b, "reserved");
  }
  SECTION("every single-byte flip in the header and directory is refused or harmless") {
    const size_t data = header_u64(good, 56);
    for (size_t i = 0; i < data; i += 3) {
      std::string b = good;
      b[i] = char(b[i] ^ 0x5a);
      const std::string p = scratch_file("flip.xlmr");
      test::write_file(p, b);
      try {
        xlmr::Model::load(p);
      } catch (const xlmr::Error&) {
      }
    }
    SUCCEED("no crash");
  }
}

TEST_CASE("config and tensor set are validated against each other", "[format][errors]") {
  const std::string p = scratch_file("mismatch.xlmr");
  xlmr::ModelConfig c = test::tiny_config();
  auto ts = test::tiny_tensors(c);

  SECTION("missing tensor") {
    ts.erase(ts.begin() + 5);
    xlmr::write_xlmr_file(p, c.to_json(), ts, "");
    REQUIRE_THROWS_WITH(xlmr::Model::load(p), Contains("is missing"));
  }
  SECTION("extra tensor") {
    xlmr::TensorToWrite extra = ts[0];
    extra.name = "something.else";
    ts.push_back(extra);
    xlmr::write_xlmr_file(p, c.to_json(), ts, "");
    REQUIRE_THROWS_WITH(xlmr::Model::load(p), Contains("unexpected tensor 'something.else'"));
  }
  SECTION("wrong shape") {
    nlohmann::json j = c.to_json();
    j["model"]["ffn"] = 32;
    xlmr::write_xlmr_file(p, j, ts, "");
    REQUIRE_THROWS_WITH(xlmr::Model::load(p), Contains("has shape [24, 16], the config needs [32, 16]"));
  }
  SECTION("impossible config") {
    nlohmann::json j = c.to_json();
    j["model"]["heads"] = 3;
    xlmr::write_xlmr_file(p, j, ts, "");
    REQUIRE_THROWS_WITH(xlmr::Model::load(p), Contains("not a multiple of the head count"));
  }
  SECTION("missing config key") {
    nlohmann::json j = c.to_json();
    j["model"].erase("hidden");
    xlmr::write_xlmr_file(p, j, ts, "");
    REQUIRE_THROWS_WITH(xlmr::Model::load(p), Contains("missing \"model.hidden\""));
  }
}

TEST_CASE("f16 and bf16 conversions round correctly", "[format][dtype]") {
  // Values exactly representable in half survive a round trip.
  for (float v : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f, 0.333251953125f})
    CHECK(xlmr::f16_to_f32(xlmr::f32_to_f16(v)) == v);
  CHECK(xlmr::f32_to_f16(1e6f) == 0x7c00);             // overflow to inf
  CHECK(xlmr::f32_to_f16(1e-9f) == 0x0000);            // underflow to zero
  CHECK(xlmr::f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00);  // tie to even (down)
  CHECK(xlmr::f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);  // tie to even (up)
  CHECK(xlmr::f16_to_f32(0x0001) == 5.960464477539063e-08f);  // smallest subnormal
  CHECK(xlmr::f16_to_f32(0x03ff) == 6.097555160522461e-05f);  // largest subnormal
  for (float v : {1.0f, -3.0f, 0.15625f, std::ldexp(1.0f, 100)}) CHECK(xlmr::bf16_to_f32(xlmr::f32_to_bf16(v)) == v);
  CHECK(xlmr::f32_to_bf16(1.0f + 1.0f / 256) == 0x3f80);  // tie to even
  // Random values: relative error within half an ulp.
  for (int i = 1; i < 2000; ++i) {
    const float v = float(i) * 0.0137f - 13.0f;
    CHECK(std::fabs(xlmr::f16_to_f32(xlmr::f32_to_f16(v)) - v) <= std::fabs(v) * (1.0f / 2048) + 3e-8f);
    CHECK(std::fabs(xlmr::bf16_to_f32(xlmr::f32_to_bf16(v)) - v) <= std::fabs(v) * (1.0f / 256));
  }
}

TEST_CASE("precision and pooling names parse back to what to_string gives", "[format][config]") {
  for (xlmr::Precision p : {xlmr::Precision::f32, xlmr::Precision::bf16, xlmr::Precision::f16, xlmr::Precision::int8}) {
    xlmr::Precision got = p == xlmr::Precision::f32 ? xlmr::Precision::int8 : xlmr::Precision::f32;
    CHECK(xlmr::parse_precision(xlmr::to_string(p), &got));
    CHECK(got == p);
  }
  for (xlmr::Pooling p : {xlmr::Pooling::cls, xlmr::Pooling::mean, xlmr::Pooling::none, xlmr::Pooling::pooler}) {
    xlmr::Pooling got = p == xlmr::Pooling::cls ? xlmr::Pooling::mean : xlmr::Pooling::cls;
    CHECK(xlmr::parse_pooling(xlmr::to_string(p), &got));
    CHECK(got == p);
  }
  xlmr::Precision untouched = xlmr::Precision::bf16;
  for (const char* bad : {"", "fp32", "F32", "bf16 ", "int4", "auto"}) {
    CHECK_FALSE(xlmr::parse_precision(bad, &untouched));
    CHECK(untouched == xlmr::Precision::bf16);
  }
}
