// Helpers shared by the tests: fixture paths, a scratch folder, JSON loading,
// running the command-line tools, and tolerance checks.
#pragma once

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace test {

// tests/fixtures, or $XLMR_TEST_FIXTURES for programs carried to another
// machine (scripts/gpu-check.sh).
inline std::string fixture(const std::string& rel) {
  const char* env = std::getenv("XLMR_TEST_FIXTURES");
  return (env && *env ? std::string(env) : std::string(XLMR_FIXTURES_DIR)) + "/" + rel;
}
inline std::string source_path(const std::string& rel) { return std::string(XLMR_SOURCE_DIR) + "/" + rel; }
inline std::string binary_path(const std::string& rel) { return std::string(XLMR_BINARY_DIR) + "/" + rel; }

// Removes the folders under `root` of processes that no longer run (killed,
// so their ProcessScratch destructor never ran): p<pid> for a pid that is
// gone. Another process may be removing the same one: errors are ignored.
inline void remove_orphan_scratch(const std::string& root) {
  std::error_code ec;
  for (std::filesystem::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::filesystem::directory_entry& entry = *it;
    const std::string name = entry.path().filename().string();
    if (name.size() < 2 || name[0] != 'p' || name.find_first_not_of("0123456789", 1) != std::string::npos) continue;
    const long pid = std::strtol(name.c_str() + 1, nullptr, 10);
    if (pid > 0 && ::kill(pid_t(pid), 0) != 0 && errno == ESRCH) {
      std::error_code ignored;
      std::filesystem::remove_all(entry.path(), ignored);
    }
  }
}

// Scratch folders, created on demand under a folder of this process's own:
// <root>/p<pid>/<name>, where <root> is test-scratch in the build tree, or
// $XLMR_TEST_SCRATCH (programs carried to another machine, where the build
// tree's path does not exist: scripts/gpu-check.sh). CTest runs each test case
// as its own process, several at once, so no two processes ever share a file.
// The process's folder is removed when it exits (not by a forked child), unless
// $XLMR_KEEP_SCRATCH is set, for looking at what a failed test left; folders
// of processes that were killed are removed by the next one (not while
// $XLMR_KEEP_SCRATCH is set).
class ProcessScratch {
 public:
  ProcessScratch() : owner_(::getpid()) {
    const char* env = std::getenv("XLMR_TEST_SCRATCH");
    const std::string root = env && *env ? std::string(env) : binary_path("test-scratch");
    ::mkdir(root.c_str(), 0755);
    dir_ = root + "/p" + std::to_string(owner_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);  // left by an earlier process with this id
    ::mkdir(dir_.c_str(), 0755);
    const char* keep = std::getenv("XLMR_KEEP_SCRATCH");
    if (!(keep && *keep)) remove_orphan_scratch(root);
  }
  ~ProcessScratch() {
    const char* keep = std::getenv("XLMR_KEEP_SCRATCH");
    if (::getpid() != owner_ || (keep && *keep)) return;
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  ProcessScratch(const ProcessScratch&) = delete;
  ProcessScratch& operator=(const ProcessScratch&) = delete;
  const std::string& dir() const { return dir_; }

 private:
  pid_t owner_;
  std::string dir_;
};

inline std::string scratch(const std::string& name) {
  static const ProcessScratch process;
  const std::string dir = process.dir() + "/" + name;
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

inline nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_file(path)); }

struct RunResult {
  int status = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs a shell command line, capturing stdout and stderr (through files, so
// large outputs cannot dead-lock a pipe).
inline RunResult run(const std::string& cmd, const std::string& stdin_text = "") {
  static int counter = 0;
  const std::string dir = scratch("run");
  const std::string base = dir + "/" + std::to_string(counter++);
  write_file(base + ".in", stdin_text);
  const std::string full = "(" + cmd + ") < '" + base + ".in' > '" + base + ".out' 2> '" + base + ".err'";
  const int rc = std::system(full.c_str());
  RunResult r;
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.out = read_file(base + ".out");
  r.err = read_file(base + ".err");
  std::remove((base + ".in").c_str());
  std::remove((base + ".out").c_str());
  std::remove((base + ".err").c_str());
  return r;
}

inline std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string l;
  while (std::getline(in, l)) out.push_back(l);
  return out;
}

// Largest |a - b| (inf when sizes differ).
inline double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

inline std::vector<double> flatten(const nlohmann::json& j) {
  std::vector<double> out;
  if (j.is_array()) {
    for (const auto& x : j) {
      auto v = flatten(x);
      out.insert(out.end(), v.begin(), v.end());
    }
  } else {
    out.push_back(j.get<double>());
  }
  return out;
}

inline double cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb + 1e-30);
}

}  // namespace test
