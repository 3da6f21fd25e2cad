// The fused CPU path's default thread count (engine/cpu_threads.h): physical
// cores, capped by the cgroup CPU quota, read from a made-up /proc and /sys.
#include <catch2/catch.hpp>

#include <omp.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "engine/cpu_threads.h"
#include "engine/engine.h"
#include "test_support.h"
#include "tiny_model.h"

namespace {

void put(const std::string& root, const std::string& rel, const std::string& text) {
  const std::string path = root + "/" + rel;
  ::mkdir(root.c_str(), 0755);
  for (size_t i = root.size() + 1; (i = path.find('/', i)) != std::string::npos; ++i)
    ::mkdir(path.substr(0, i).c_str(), 0755);
  test::write_file(path, text + "\n");
}

// Four logical CPUs on two cores (cpu0/cpu2 and cpu1/cpu3 are SMT siblings).
std::string smt_machine(const std::string& name) {
  const std::string root = test::scratch("cpu-threads") + "/" + name;
  for (int cpu = 0; cpu < 4; ++cpu) {
    const std::string topo = "sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    put(root, topo + "physical_package_id", "0");
    put(root, topo + "core_id", std::to_string(cpu % 2));
  }
  return root;
}

}  // namespace

TEST_CASE("default threads: one per physical core among the allowed CPUs", "[cpu][threads]") {
  const std::string root = smt_machine("smt");
  put(root, "proc/self/cgroup", "0::/");
  auto b = xlmr::cpu_thread_budget({0, 1, 2, 3}, root);
  CHECK(b.logical == 4);
  CHECK(b.cores == 2);
  CHECK(b.quota == 0);
  CHECK(b.threads == 2);
  // An affinity mask of two siblings is one core.
  b = xlmr::cpu_thread_budget({0, 2}, root);
  CHECK(b.cores == 1);
  CHECK(b.threads == 1);
  // Two sockets: the same core id on another package is another core.
  put(root, "sys/devices/system/cpu/cpu3/topology/physical_package_id", "1");
  CHECK(xlmr::cpu_thread_budget({0, 1, 2, 3}, root).cores == 3);
  // Without a readable topology: every allowed CPU.
  b = xlmr::cpu_thread_budget({0, 1, 2, 3, 4}, root);  // cpu4 has no topology files
  CHECK(b.cores == 0);
  CHECK(b.threads == 5);
}

TEST_CASE("default threads: a cgroup CPU quota caps them", "[cpu][threads]") {
  SECTION("cgroup v2, the process's own cgroup and its parents") {
    const std::string root = smt_machine("v2");
    put(root, "proc/self/cgroup", "0::/kube/pod1");
    put(root, "sys/fs/cgroup/kube/pod1/cpu.max", "150000 100000");
    auto b = xlmr::cpu_thread_budget({0, 1, 2, 3}, root);
    CHECK(b.quota == Approx(1.5));
    CHECK(b.threads == 2);  // ceil(1.5), and 2 cores anyway
    put(root, "sys/fs/cgroup/kube/cpu.max", "50000 100000");  // a parent's smaller quota wins
    b = xlmr::cpu_thread_budget({0, 1, 2, 3}, root);
    CHECK(b.quota == Approx(0.5));
    CHECK(b.threads == 1);
    put(root, "sys/fs/cgroup/kube/cpu.max", "max 100000");
    put(root, "sys/fs/cgroup/kube/pod1/cpu.max", "max 100000");
    CHECK(xlmr::cpu_thread_budget({0, 1, 2, 3}, root).quota == 0);
  }
  SECTION("inside a container: its own cgroup is the mount's root") {
    const std::string root = smt_machine("container");
    put(root, "proc/self/cgroup", "0::/docker/abc123");  // not under the mount
    put(root, "sys/fs/cgroup/cpu.max", "100000 100000");
    CHECK(xlmr::cpu_thread_budget({0, 1, 2, 3}, root).threads == 1);
  }
  SECTION("cgroup v1, cpu controller (alone or with cpuacct), beside a v2 line") {
    const std::string root = smt_machine("v1");
    put(root, "proc/self/cgroup", "12:pids:/\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/\n0::/");
    put(root, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "100000");
    put(root, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000");
    auto b = xlmr::cpu_thread_budget({0, 1, 2, 3}, root);
    CHECK(b.quota == Approx(1.0));
    CHECK(b.threads == 1);
    put(root, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1");  // unlimited
    CHECK(xlmr::cpu_thread_budget({0, 1, 2, 3}, root).threads == 2);
  }
  SECTION("unreadable or odd files set no quota") {
    const std::string root = smt_machine("odd");
    put(root, "proc/self/cgroup", "garbage without colons\n0::/x");
    put(root, "sys/fs/cgroup/x/cpu.max", "lots 0");
    CHECK(xlmr::cpu_thread_budget({0, 1, 2, 3}, root).quota == 0);
  }
}

TEST_CASE("more threads than the CPUs or the quota run: one note says so", "[cpu][threads]") {
  xlmr::CpuThreadBudget b;
  b.logical = 8;
  b.cores = 4;
  b.threads = 4;
  CHECK(xlmr::oversubscribed(8, b).empty());  // SMT siblings: allowed, not the default
  CHECK(xlmr::oversubscribed(9, b) == "9 threads on 8 logical CPUs: threads beyond the CPUs wait for each other at every kernel");
  b.quota = 2.5;
  b.threads = 3;
  CHECK(xlmr::oversubscribed(3, b).empty());
  CHECK_THAT(xlmr::oversubscribed(4, b), Catch::StartsWith("4 threads under a CPU quota of 2.5 (cgroup)"));
  b.quota = 16;  // a quota above the cores: only the CPUs count
  b.threads = 4;
  CHECK(xlmr::oversubscribed(6, b).empty());
}

TEST_CASE("default threads on this machine, and what the engine runs with", "[cpu][threads]") {
  const xlmr::CpuThreadBudget b = xlmr::cpu_thread_budget();
  INFO(b.logical << " logical CPUs, " << b.cores << " cores, quota " << b.quota);
  CHECK(b.logical == omp_get_num_procs());
  CHECK(b.threads >= 1);
  CHECK(b.threads <= b.logical);
  const std::string m = test::scratch("cpu-threads") + "/tiny.xlmr";
  test::write_tiny_model(m);
  CHECK_THAT(xlmr::Engine::load(m)->describe(), Catch::Contains(", " + std::to_string(b.threads) + " threads"));
}
