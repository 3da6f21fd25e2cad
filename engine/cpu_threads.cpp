#include "engine/cpu_threads.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

namespace xlmr {
namespace {

bool first_line(const std::string& path, std::string* out) {
  std::ifstream f(path);
  return f && std::getline(f, *out);
}

bool read_integer(const std::string& path, long long* v) {
  std::string s;
  if (!first_line(path, &s)) return false;
  char* end = nullptr;
  *v = std::strtoll(s.c_str(), &end, 10);
  return end != s.c_str();
}

// One cgroup folder's CPU quota in CPUs; 0 when it sets none.
double v2_quota(const std::string& dir) {  // cpu.max: "max PERIOD" or "QUOTA PERIOD"
  std::string s, quota;
  long long period = 0;
  if (!first_line(dir + "/cpu.max", &s)) return 0;
  std::istringstream in(s);
  if (!(in >> quota >> period) || quota == "max" || period <= 0) return 0;
  const long long q = std::atoll(quota.c_str());
  return q > 0 ? double(q) / double(period) : 0;
}

double v1_quota(const std::string& dir) {  // cpu.cfs_quota_us is -1 when unlimited
  long long quota = 0, period = 0;
  if (!read_integer(dir + "/cpu.cfs_quota_us", &quota) || !read_integer(dir + "/cpu.cfs_period_us", &period))
    return 0;
  return quota > 0 && period > 0 ? double(quota) / double(period) : 0;
}

// The smallest quota from cgroup `rel` ("/a/b") up to the hierarchy's root,
// under `mount`. Inside a container the process's path may not exist under
// the mount (its own cgroup is mounted as the root): the walk reaches it.
double smallest_quota(const std::string& mount, std::string rel, double (*quota_of)(const std::string&)) {
  double smallest = 0;
  for (;;) {
    const double q = quota_of(mount + rel);
    if (q > 0 && (smallest == 0 || q < smallest)) smallest = q;
    if (rel.empty() || rel == "/") return smallest;
    const size_t slash = rel.find_last_of('/');
    rel = slash == 0 || slash == std::string::npos ? "/" : rel.substr(0, slash);
  }
}

// The process's CPU quota, the smallest its cgroups set: v2 (the "0::"
// line of /proc/self/cgroup) and v1's cpu controller (hybrid systems have both).
double cgroup_quota(const std::string& root) {
  std::ifstream f(root + "proc/self/cgroup");
  std::string line;
  double smallest = 0;
  auto take = [&](double q) {
    if (q > 0) smallest = smallest == 0 ? q : std::min(smallest, q);
  };
  while (std::getline(f, line)) {  // "HIERARCHY:CONTROLLERS:PATH"
    const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (line.compare(0, a, "0") == 0 && controllers.empty()) {
      take(smallest_quota(root + "sys/fs/cgroup", path, v2_quota));
      continue;
    }
    std::istringstream list(controllers);
    std::string c;
    bool cpu = false;
    while (std::getline(list, c, ',')) cpu = cpu || c == "cpu";
    if (!cpu) continue;
    for (const char* mount : {"sys/fs/cgroup/cpu,cpuacct", "sys/fs/cgroup/cpu"})
      take(smallest_quota(root + mount, path, v1_quota));
  }
  return smallest;
}

}  // namespace

CpuThreadBudget cpu_thread_budget(const std::vector<int>& cpus, const std::string& root_dir) {
  const std::string root = root_dir.empty() || root_dir.back() == '/' ? root_dir : root_dir + "/";
  CpuThreadBudget b;
  b.logical = int(cpus.size());
  std::set<std::pair<long long, long long>> cores;  // (package, core)
  for (int cpu : cpus) {
    const std::string topo = root + "sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    long long package = 0, core = 0;
    if (!read_integer(topo + "physical_package_id", &package) || !read_integer(topo + "core_id", &core)) {
      cores.clear();
      break;
    }
    cores.insert({package, core});
  }
  b.cores = int(cores.size());
  b.quota = cgroup_quota(root);
  b.threads = b.cores > 0 ? b.cores : b.logical;
  if (b.quota > 0) b.threads = std::min(b.threads, int(std::ceil(b.quota - 1e-9)));
  b.threads = std::max(b.threads, 1);
  return b;
}

std::string oversubscribed(int threads, const CpuThreadBudget& b) {
  if (threads > b.logical)
    return std::to_string(threads) + " threads on " + std::to_string(b.logical) +
           " logical CPUs: threads beyond the CPUs wait for each other at every kernel";
  if (b.quota > 0 && threads > int(std::ceil(b.quota - 1e-9))) {
    char quota[32];
    std::snprintf(quota, sizeof quota, "%g", b.quota);
    return std::to_string(threads) + " threads under a CPU quota of " + quota +
           " (cgroup): they take turns on the CPUs, and wait for each other at every kernel";
  }
  return "";
}

CpuThreadBudget cpu_thread_budget() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int i = 0; i < CPU_SETSIZE; ++i)
      if (CPU_ISSET(i, &set)) cpus.push_back(i);
  }
  if (cpus.empty()) {
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    for (long i = 0; i < std::max(n, 1L); ++i) cpus.push_back(int(i));
  }
  return cpu_thread_budget(cpus, "/");
}

}  // namespace xlmr
