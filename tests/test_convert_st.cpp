// sentence-transformers folders (multilingual-e5, bge-m3): the converter reads
// modules.json and the Pooling module's config into the file's default
// pooling and normalisation.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "engine/engine.h"
#include "weights/convert.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

// A copy of the Hugging Face smoke fixture with sentence-transformers files.
std::string st_folder(const std::string& tag, const std::string& modules, const std::string& pooling_config) {
  const fs::path dir = fs::path(test::scratch("convert-st")) / tag;
  fs::remove_all(dir);
  fs::create_directories(dir / "1_Pooling");
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(test::fixture(std::string("smoke/hf/") + f), dir / f);
  std::ofstream(dir / "modules.json") << modules;
  if (!pooling_config.empty()) std::ofstream(dir / "1_Pooling" / "config.json") << pooling_config;
  return dir.string();
}

const char* kModules = R"([
  {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
  {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
  {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])";

std::string pooling(bool cls, bool mean, bool max = false) {
  return std::string("{\"word_embedding_dimension\": 32, \"pooling_mode_cls_token\": ") + (cls ? "true" : "false") +
         ", \"pooling_mode_mean_tokens\": " + (mean ? "true" : "false") +
         ", \"pooling_mode_max_tokens\": " + (max ? "true" : "false") + "}";
}

}  // namespace

TEST_CASE("sentence-transformers folder: mean pooling + Normalize become the defaults (e5)", "[convert]") {
  const std::string dir = st_folder("e5", kModules, pooling(false, true));
  const std::string out = dir + ".xlmr";
  const xlmr::ConvertReport r = xlmr::convert_checkpoint(dir, out, {});
  CHECK(r.config["model"]["pooling"] == "mean");
  CHECK(r.config["model"]["normalize"] == true);
  CHECK(r.notes.empty());

  // The defaults are what encode uses without options: the same vector as
  // asking for mean + normalize explicitly, and of unit length.
  auto e = xlmr::Engine::load(out);
  const std::vector<std::vector<int32_t>> ids = {{0, 5, 6, 7, 2}};
  const auto plain = e->encode_ids(ids, {});
  xlmr::EncodeOptions explicit_opts;
  explicit_opts.pooling = xlmr::Pooling::mean;
  explicit_opts.normalize = true;
  const auto want = e->encode_ids(ids, explicit_opts);
  CHECK(plain[0].embedding == want[0].embedding);
  double ss = 0;
  for (float v : plain[0].embedding) ss += double(v) * v;
  CHECK(std::sqrt(ss) == Approx(1.0).epsilon(1e-5));
}

TEST_CASE("sentence-transformers folder: CLS pooling (bge-m3)", "[convert]") {
  const std::string dir = st_folder("bge", kModules, pooling(true, false));
  const xlmr::ConvertReport r = xlmr::convert_checkpoint(dir, dir + ".xlmr", {});
  CHECK(r.config["model"]["pooling"] == "cls");
  CHECK(r.config["model"]["normalize"] == true);
}

TEST_CASE("sentence-transformers folder: a pooling mode the engine lacks is a note, not a guess", "[convert]") {
  const std::string dir = st_folder("max", kModules, pooling(false, false, true));
  const xlmr::ConvertReport r = xlmr::convert_checkpoint(dir, dir + ".xlmr", {});
  CHECK(r.config["model"]["pooling"] == "cls");  // the family's default, unchanged
  REQUIRE(r.notes.size() == 1);
  CHECK_THAT(r.notes[0], Catch::Contains("pooling_mode_max_tokens"));

  const std::string missing = st_folder("nocfg", kModules, "");
  const xlmr::ConvertReport r2 = xlmr::convert_checkpoint(missing, missing + ".xlmr", {});
  REQUIRE(r2.notes.size() == 1);
  CHECK_THAT(r2.notes[0], Catch::Contains("not found"));
}

TEST_CASE("sentence-transformers folder: hostile modules.json is refused", "[convert]") {
  const std::string escape = st_folder("escape", R"([{"path": "../../etc", "type": "x.Pooling"}])", "");
  CHECK_THROWS_WITH(xlmr::convert_checkpoint(escape, escape + ".xlmr", {}), Catch::Contains("inside the folder"));
  const std::string broken = st_folder("broken", "{not json", "");
  CHECK_THROWS_WITH(xlmr::convert_checkpoint(broken, broken + ".xlmr", {}), Catch::Contains("not valid JSON"));
  const std::string object = st_folder("object", "{}", "");
  CHECK_THROWS_WITH(xlmr::convert_checkpoint(object, object + ".xlmr", {}), Catch::Contains("list of modules"));
}
