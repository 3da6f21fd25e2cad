#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

// ---- the tests' own scratch folders (test_support.h) --------------------------

#include "test_support.h"

TEST_CASE("test scratch: folders of processes that are gone are removed, others kept", "[support]") {
  const std::string root = test::scratch("orphans");
  // A pid that is surely gone: a child that has exited and been reaped.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) ::_exit(0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  const std::string gone = root + "/p" + std::to_string(child);
  const std::string alive = root + "/p" + std::to_string(::getpid());
  for (const std::string& d : {gone, gone + "/inner", alive, root + "/p", root + "/p12x", root + "/notes"})
    REQUIRE(::mkdir(d.c_str(), 0755) == 0);
  std::ofstream(gone + "/inner/file") << "left behind";
  test::remove_orphan_scratch(root);
  struct stat st;
  CHECK(::stat(gone.c_str(), &st) != 0);  // removed, with what was in it
  for (const std::string& kept : {alive, root + "/p", root + "/p12x", root + "/notes"}) {
    INFO(kept);
    CHECK(::stat(kept.c_str(), &st) == 0);
  }
  test::remove_orphan_scratch(root + "/missing");  // no such folder: nothing to do, no error
}
