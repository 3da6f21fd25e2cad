// Writes small valid .xlmr files to seed the fuzz_xlmr corpus; the fixtures
// hold no .xlmr file and the demo model is too large to mutate quickly.
//   xlmr-fuzz-seeds OUT_DIR [SPM_MODEL]
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "engine/error.h"
#include "tests/fuzz/fuzz_entry.h"

namespace {

bool write(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  return bool(out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::cerr << "usage: xlmr-fuzz-seeds OUT_DIR [SPM_MODEL]\n";
    return 2;
  }
  const std::string dir = argv[1];
  try {
    bool ok = write(dir + "/seed_f32.xlmr", xlmr::fuzz::make_xlmr_seed(false, "")) &&
              write(dir + "/seed_f16.xlmr", xlmr::fuzz::make_xlmr_seed(true, ""));
    if (argc == 3) {
      std::ifstream in(argv[2], std::ios::binary);
      std::ostringstream ss;
      ss << in.rdbuf();
      if (!in.good() || ss.str().empty()) {
        std::cerr << "xlmr-fuzz-seeds: cannot read " << argv[2] << "\n";
        return 1;
      }
      ok = ok && write(dir + "/seed_tokenizer.xlmr", xlmr::fuzz::make_xlmr_seed(false, ss.str()));
    }
    if (!ok) {
      std::cerr << "xlmr-fuzz-seeds: cannot write to " << dir << "\n";
      return 1;
    }
  } catch (const xlmr::Error& e) {
    std::cerr << "xlmr-fuzz-seeds: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
