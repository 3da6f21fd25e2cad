// How many threads the fused CPU path runs when not told (EngineOptions::
// threads = 0): one per physical core the process may run on - SMT siblings
// share a core's vector units, so a second thread per core buys the GEMMs
// little or nothing and costs every parallel region a larger barrier - and
// no more than the CPU quota of its cgroup allows (a container limited to 2
// CPUs on a 64-core host must not start 64 threads that take turns).
#pragma once

#include <string>
#include <vector>

namespace xlmr {

struct CpuThreadBudget {
  int logical = 0;    // CPUs in the process's affinity mask
  int cores = 0;      // physical cores among them; 0 when the topology is unreadable
  double quota = 0;   // cgroup CPU quota in CPUs (quota / period); 0: none
  int threads = 1;    // the default: cores (logical when unknown), at most ceil(quota), at least 1
};

// For this process: its affinity mask, /sys/devices/system/cpu topology and
// its cgroup (v2 cpu.max, or v1 cpu.cfs_quota_us / cpu.cfs_period_us, on its
// own cgroup and every parent).
CpuThreadBudget cpu_thread_budget();

// The same for the given CPU ids, with every path read under `root` (which
// holds proc/self/cgroup, sys/devices/system/cpu/... and sys/fs/cgroup/...);
// for tests.
CpuThreadBudget cpu_thread_budget(const std::vector<int>& cpus, const std::string& root);

// One line when `threads` is more than the budget's CPUs can run at once
// (more than its logical CPUs, or above its cgroup quota), else "".
std::string oversubscribed(int threads, const CpuThreadBudget& b);

}  // namespace xlmr
