// The installed package: `cmake --install` into a scratch prefix, then the
// programs in examples/ (one C++, one C) are configured with
// find_package(xlmr_engine), built, and run on the demo model; both must
// print the engine's own numbers.
#include <catch2/catch.hpp>

#include "engine/engine.h"
#include "test_support.h"

TEST_CASE("an outside CMake project builds against the installed package", "[package]") {
  const std::string prefix = test::scratch("package") + "/prefix";
  const std::string build = test::scratch("package") + "/examples";
  auto install = test::run("cmake --install '" + std::string(XLMR_BINARY_DIR) + "' --prefix '" + prefix + "'");
  INFO(install.out << install.err);
  REQUIRE(install.status == 0);
  auto configure = test::run("cmake -S '" + test::source_path("examples") + "' -B '" + build +
                             "' -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH='" + prefix + "'");
  INFO(configure.out << configure.err);
  REQUIRE(configure.status == 0);
  auto make = test::run("cmake --build '" + build + "' -j 2");
  INFO(make.out << make.err);
  REQUIRE(make.status == 0);

  const std::string demo = test::binary_path("demo.xlmr");
  xlmr::EngineOptions o;
  auto engine = xlmr::Engine::load(demo, o);
  const auto want = engine->encode_texts({"Hello world", "Bonjour"}, {});
  char line[256];
  std::snprintf(line, sizeof line, "0: %d tokens, embedding[0..2] = %.6f %.6f %.6f", want[0].n_tokens,
                want[0].embedding[0], want[0].embedding[1], want[0].embedding[2]);
  for (const char* prog : {"embed_cpp", "embed_c"}) {
    auto r = test::run("'" + build + "/" + prog + "' '" + demo + "' 'Hello world' 'Bonjour'");
    INFO(prog << ": " << r.out << r.err);
    REQUIRE(r.status == 0);
    const auto out = test::lines(r.out);
    REQUIRE(out.size() == 2);
    CHECK(out[0] == line);
    // Errors come back as one line and a non-zero status.
    auto bad = test::run("'" + build + "/" + prog + "' /nonexistent.xlmr hi");
    CHECK(bad.status == 1);
    CHECK(test::lines(bad.err).size() == 1);
  }

  // pkg-config against the same install, at a prefix other than the one the
  // build was configured with: the .pc file finds it from where it lies.
  const std::string pc = "PKG_CONFIG_PATH=\"$(dirname \"$(find '" + prefix +
                         "' -name xlmr-engine.pc | head -1)\")\" pkg-config";
  const std::string c_prog = test::scratch("package") + "/embed_c_pc";
  auto cc = test::run("gcc -c '" + test::source_path("examples/embed.c") + "' -o '" + c_prog + ".o' $(" + pc +
                      " --cflags xlmr-engine) && g++ '" + c_prog + ".o' -o '" + c_prog + "' $(" + pc +
                      " --static --libs xlmr-engine)");
  INFO("pkg-config build: " << cc.out << cc.err);
  REQUIRE(cc.status == 0);
  auto r = test::run("'" + c_prog + "' '" + demo + "' 'Hello world' 'Bonjour'");
  INFO(r.out << r.err);
  REQUIRE(r.status == 0);
  CHECK(test::lines(r.out).at(0) == line);
}
