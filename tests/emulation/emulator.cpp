// The fiber scheduler behind tests/emulation/emulator.h.
//
// One launch at a time per host thread. A block's threads are fibers that run
// round-robin on the calling thread: each runs until it reaches a rendezvous
// (block barrier or warp operation) or returns. When no fiber can run, the
// scheduler releases the warps whose live lanes all wait at the same warp
// operation, and the block if every live thread waits at __syncthreads (in a
// shuffled schedule released warps then go on at their own random pace); if
// nothing can go on, the block is stuck (a real GPU would hang or misbehave)
// and the launch fails with a message that says where the threads wait.
//
// Warp exchanges use two buffers per warp, alternating per operation: a lane
// writes its words into one, waits for the warp, reads; its next operation
// writes the other buffer, and it can only get back to the first one after
// every lane has passed the rendezvous in between - after all reads of it.
#include "tests/emulation/emulator.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/cuda/half_bits.cuh"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define XLMR_EMU_ASAN 1
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace xlmr::emulation {
namespace {

// ---- execution contexts ------------------------------------------------------
// On x86-64 a context is a saved stack pointer and switching saves the
// callee-saved registers, MXCSR and the x87 control word on the old stack and
// restores them from the new one: no system call (swapcontext's signal-mask
// call would cost more than the kernels' arithmetic). Elsewhere: ucontext.
#if defined(__x86_64__)
struct Context {
  void* sp = nullptr;
};
extern "C" void xlmr_emu_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl xlmr_emu_switch
  .type xlmr_emu_switch, @function
xlmr_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size xlmr_emu_switch, .-xlmr_emu_switch
)");

// A fresh context whose first switch "returns" into entry with the stack
// aligned as after a call. entry must never return.
void context_init(Context& c, char* stack, size_t size, void (*entry)()) {
  auto top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15);
  auto* slot = reinterpret_cast<uint64_t*>(top - 16);
  slot[0] = reinterpret_cast<uint64_t>(entry);  // popped by ret: rsp is then 8 mod 16
  slot[1] = 0;
  uint64_t* frame = slot - 7;  // MXCSR | FCW, r15, r14, r13, r12, rbx, rbp
  uint32_t mxcsr;
  uint16_t fcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fcw));
  frame[0] = uint64_t(mxcsr) | (uint64_t(fcw) << 32);
  for (int i = 1; i < 7; ++i) frame[i] = 0;
  c.sp = frame;
}
void context_switch(Context& from, Context& to) { xlmr_emu_switch(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
};
void context_init(Context& c, char* stack, size_t size, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
void context_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

// ---- fibers and grids --------------------------------------------------------
// held: released from a rendezvous, waiting for its turn (shuffled schedules only).
enum class State { ready, held, at_barrier, at_warp_op, done };

struct Copy {
  void* dst;
  const void* src;
  bool valid;
  int group;
};

struct Fiber {
  Context ctx;
  State state = State::ready;
  const char* op = nullptr;  // the warp operation waited at
  unsigned ops = 0;          // warp operations so far: picks the exchange buffer
  Place where{};
  int linear = 0;  // thread index within the block
  char* stack = nullptr;
  std::vector<Copy> copies;  // cp.async not yet performed
  int committed = 0;         // cp.async groups committed
#ifdef XLMR_EMU_ASAN
  void* fake_stack = nullptr;
#endif
};

constexpr size_t kStackBytes = size_t(256) << 10;
constexpr int kWarp = 32;
constexpr size_t kMaxDynamicSmem = size_t(48) << 10;  // without cudaFuncSetAttribute

struct Grid {
  void (*body)(void*) = nullptr;
  void* ctx = nullptr;
  std::vector<Fiber> fibers;
  std::unique_ptr<char[]> stacks;
  std::vector<uint32_t> exchange;  // [warps][2][32][kExchangeWords]
  std::vector<unsigned char> smem;
  Context scheduler;
  Fiber* current = nullptr;
  std::string error;  // the first problem found; ends the launch
  uint64_t rng = 0;   // shuffled schedule when non-zero (set_schedule_seed)
  std::vector<int> warp_slowness;  // shuffled: a held warp goes on with odds 1 in 2^slowness, per block
#ifdef XLMR_EMU_ASAN
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;
#endif
};

// xorshift64: the shuffled schedule's coin.
uint64_t next_random(uint64_t& x) {
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

// The launch running on this host thread, the last launch's outcome, and the
// schedule asked for (0: lockstep) with a count that varies it per launch.
thread_local Grid* t_grid = nullptr;
thread_local uint64_t t_seed = 0;
thread_local uint64_t t_launches = 0;
thread_local cudaError_t t_error = cudaSuccess;
thread_local std::string t_error_text;

Grid& grid() {
  if (!t_grid) {
    // A device function called outside a launch: a bug in the test itself.
    std::fputs("emulator: device code called outside a kernel launch\n", stderr);
    std::abort();
  }
  return *t_grid;
}

Fiber& me() { return *grid().current; }

void fail(const std::string& what) {
  Grid& g = grid();
  if (g.error.empty()) g.error = what;
}

std::string block_name(const Place& p) {
  std::ostringstream os;
  os << "block (" << p.block_idx.x << ", " << p.block_idx.y << ", " << p.block_idx.z << ")";
  return os.str();
}

// Back to the scheduler; returns when this fiber is released.
void yield(State why, const char* op) {
  Grid& g = grid();
  Fiber& f = me();
  f.state = why;
  f.op = op;
#ifdef XLMR_EMU_ASAN
  __sanitizer_start_switch_fiber(&f.fake_stack, g.sched_bottom, g.sched_size);
#endif
  context_switch(f.ctx, g.scheduler);
#ifdef XLMR_EMU_ASAN
  __sanitizer_finish_switch_fiber(f.fake_stack, &g.sched_bottom, &g.sched_size);
#endif
}

[[noreturn]] void fiber_main() {
  Grid& g = grid();
#ifdef XLMR_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &g.sched_bottom, &g.sched_size);
#endif
  g.body(g.ctx);
  Fiber& f = me();
  f.state = State::done;
#ifdef XLMR_EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, g.sched_bottom, g.sched_size);  // this stack is finished
#endif
  context_switch(f.ctx, g.scheduler);
  std::abort();  // a finished fiber is never resumed
}

void resume(Grid& g, Fiber& f) {
  g.current = &f;
#ifdef XLMR_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, kStackBytes);
#endif
  context_switch(g.scheduler, f.ctx);
#ifdef XLMR_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  g.current = nullptr;
}

const char* state_name(State s) {
  switch (s) {
    case State::ready: return "running";
    case State::held: return "released";
    case State::at_barrier: return "__syncthreads";
    case State::at_warp_op: return "a warp operation";
    case State::done: return "exited";
  }
  return "?";
}

// Releases what can go on; false when nothing can (the block is stuck).
// Released fibers become ready at once in lockstep mode. In a shuffled
// schedule they are held instead, and each round every warp with held lanes
// goes on with odds set by its pace for the block (at least one warp does):
// warps drift apart and leave a barrier at different times, as they may on a
// GPU, so what one warp does between two of its rendezvous can overtake
// another's.
void release_warp(Grid& g, int w0) {
  const int w1 = std::min(int(g.fibers.size()), w0 + kWarp);
  for (int i = w0; i < w1; ++i) {
    Fiber& f = g.fibers[size_t(i)];
    if (f.state == State::at_warp_op || f.state == State::at_barrier) f.state = g.rng ? State::held : State::ready;
  }
}

bool release(Grid& g) {
  const int n = int(g.fibers.size());
  // Warps whose lanes all wait at the same warp operation go on.
  for (int w0 = 0; w0 < n; w0 += kWarp) {
    const int w1 = std::min(n, w0 + kWarp);
    int waiting = 0, exited = 0;
    for (int i = w0; i < w1; ++i) {
      waiting += g.fibers[size_t(i)].state == State::at_warp_op;
      exited += g.fibers[size_t(i)].state == State::done;
    }
    if (waiting == 0 || waiting + exited != w1 - w0) continue;
    const Fiber& first = *std::find_if(g.fibers.begin() + w0, g.fibers.begin() + w1,
                                       [](const Fiber& f) { return f.state == State::at_warp_op; });
    if (exited > 0) {
      fail(block_name(first.where) + ", warp " + std::to_string(w0 / kWarp) + ": " + first.op + " with " +
           std::to_string(exited) + " lanes already exited");
      return false;
    }
    for (int i = w0; i < w1; ++i) {
      const Fiber& f = g.fibers[size_t(i)];
      if (std::strcmp(f.op, first.op) != 0) {
        fail(block_name(f.where) + ", warp " + std::to_string(w0 / kWarp) +
             ": lanes meet at different warp operations (" + first.op + " and " + f.op + ")");
        return false;
      }
    }
    release_warp(g, w0);
  }
  // The block goes on when every live thread waits at __syncthreads.
  if (std::all_of(g.fibers.begin(), g.fibers.end(),
                  [](const Fiber& f) { return f.state == State::at_barrier || f.state == State::done; }) &&
      std::any_of(g.fibers.begin(), g.fibers.end(), [](const Fiber& f) { return f.state == State::at_barrier; })) {
    for (int w0 = 0; w0 < n; w0 += kWarp) release_warp(g, w0);
  }
  if (g.rng) {
    int held[1024 / kWarp], n_held = 0;  // first thread of each warp with held lanes
    for (int w0 = 0; w0 < n; w0 += kWarp)
      if (std::any_of(g.fibers.begin() + w0, g.fibers.begin() + std::min(n, w0 + kWarp),
                      [](const Fiber& f) { return f.state == State::held; }))
        held[n_held++] = w0;
    bool any = false;
    for (int k = 0; k < n_held; ++k) {
      const uint64_t odds = uint64_t(1) << g.warp_slowness[size_t(held[k] / kWarp)];
      if (next_random(g.rng) % odds != 0) continue;
      any = true;
      for (int i = held[k]; i < std::min(n, held[k] + kWarp); ++i)
        if (g.fibers[size_t(i)].state == State::held) g.fibers[size_t(i)].state = State::ready;
    }
    if (!any && n_held > 0) {
      const int w0 = held[next_random(g.rng) % uint64_t(n_held)];
      for (int i = w0; i < std::min(n, w0 + kWarp); ++i)
        if (g.fibers[size_t(i)].state == State::held) g.fibers[size_t(i)].state = State::ready;
    }
  }
  if (std::any_of(g.fibers.begin(), g.fibers.end(), [](const Fiber& f) { return f.state == State::ready; }))
    return true;

  std::ostringstream os;
  os << block_name(g.fibers.front().where) << " is stuck (a hang on the device):";
  for (int w0 = 0; w0 < n; w0 += kWarp) {
    os << " warp " << w0 / kWarp << " [";
    for (int i = w0; i < std::min(n, w0 + kWarp); ++i) {
      const Fiber& f = g.fibers[size_t(i)];
      os << (i > w0 ? " " : "") << (f.state == State::at_warp_op ? f.op : state_name(f.state));
      if (i - w0 == 3 && w0 + kWarp - 1 > i) {  // enough to see the pattern
        os << " ...";
        break;
      }
    }
    os << "]";
  }
  fail(os.str());
  return false;
}

void run_block(Grid& g, const uint3& block_idx, const dim3& grid_dim, const dim3& block_dim) {
  const int n = int(g.fibers.size());
  std::fill(g.smem.begin(), g.smem.end(), static_cast<unsigned char>(0xff));
  // Shuffled: every warp of the block gets its own pace, from always going on
  // when released (0) to 1 round in 16 (4), so some warps fall far behind.
  g.warp_slowness.assign((size_t(n) + kWarp - 1) / kWarp, 0);
  if (g.rng)
    for (int& w : g.warp_slowness) w = int(next_random(g.rng) % 5);
  for (int i = 0; i < n; ++i) {
    Fiber& f = g.fibers[size_t(i)];
    f.state = State::ready;
    f.op = nullptr;
    f.ops = 0;
    f.copies.clear();
    f.committed = 0;
    f.linear = i;
    f.where.thread_idx = make_uint3(unsigned(i) % block_dim.x, unsigned(i) / block_dim.x % block_dim.y,
                                    unsigned(i) / (block_dim.x * block_dim.y));
    f.where.block_idx = block_idx;
    f.where.block_dim = block_dim;
    f.where.grid_dim = grid_dim;
    f.stack = g.stacks.get() + size_t(i) * kStackBytes;
    context_init(f.ctx, f.stack, kStackBytes, fiber_main);
  }
  for (;;) {
    for (Fiber& f : g.fibers)
      if (f.state == State::ready) resume(g, f);
    if (!g.error.empty()) return;
    if (std::all_of(g.fibers.begin(), g.fibers.end(), [](const Fiber& f) { return f.state == State::done; })) return;
    if (!release(g)) return;
  }
}

std::string dims(const dim3& d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

void set_error(cudaError_t err, const std::string& text) {
  if (t_error != cudaSuccess) return;  // the first error sticks until read
  t_error = err;
  t_error_text = text;
}

// Each lane publishes its fragments already widened to fp32, in element
// order: A a0..a7 (words 0..7), B b0..b3 (words 8..11), element e of register
// r being the low (e even) or high half of that register.
template <typename Bits>
void widen(const uint32_t (&a)[4], uint32_t b0, uint32_t b1, uint32_t (&out)[12]) {
  const uint32_t regs[6] = {a[0], a[1], a[2], a[3], b0, b1};
  for (int r = 0; r < 6; ++r) {
    out[2 * r] = bit_cast32<uint32_t>(Bits::to_float(uint16_t(regs[r] & 0xffffu)));
    out[2 * r + 1] = bit_cast32<uint32_t>(Bits::to_float(uint16_t(regs[r] >> 16)));
  }
}

// The PTX ISA's m16n8k16 fragments (g = lane / 4, t = lane % 4):
//   A element i of lane (g, t): row g + 8 ((i / 2) % 2), k 2t + (i % 2) + 8 (i / 4)
//   B element i: k 2t + (i % 2) + 8 (i / 2), column g
//   C element i: row g + 8 (i / 2), column 2t + (i % 2)
// Read backwards: A[row][k] is element (k % 2) + 2 (row >= 8) + 4 (k >= 8) of
// lane 4 (row % 8) + (k % 8) / 2; B[k][col] is element (k % 2) + 2 (k >= 8)
// of lane 4 col + (k % 8) / 2.
void mma_impl(float (&d)[4], const uint32_t* all, int lane) {
  const int g = lane / 4, t = lane % 4;
  float A[2][16], B[2][16];      // rows g and g + 8 of A; columns 2t and 2t + 1 of B
  for (int q = 0; q < 4; ++q) {  // k = 2q, 2q + 1, 2q + 8, 2q + 9 sit in lane 4 * (row or column) + q
    const uint32_t* a_lane = all + size_t(4 * g + q) * kExchangeWords;
    for (int h = 0; h < 2; ++h) {  // h: row g + 8h
      A[h][2 * q] = bit_cast32<float>(a_lane[2 * h]);
      A[h][2 * q + 1] = bit_cast32<float>(a_lane[2 * h + 1]);
      A[h][2 * q + 8] = bit_cast32<float>(a_lane[2 * h + 4]);
      A[h][2 * q + 9] = bit_cast32<float>(a_lane[2 * h + 5]);
    }
    for (int c = 0; c < 2; ++c) {  // column 2t + c
      const uint32_t* b_lane = all + size_t(4 * (2 * t + c) + q) * kExchangeWords;
      B[c][2 * q] = bit_cast32<float>(b_lane[8]);
      B[c][2 * q + 1] = bit_cast32<float>(b_lane[9]);
      B[c][2 * q + 8] = bit_cast32<float>(b_lane[10]);
      B[c][2 * q + 9] = bit_cast32<float>(b_lane[11]);
    }
  }
  for (int i = 0; i < 4; ++i) {  // C element i: row g + 8 (i / 2), column 2t + (i % 2)
    float acc = d[i];
    for (int k = 0; k < 16; ++k) acc += A[i / 2][k] * B[i % 2][k];
    d[i] = acc;
  }
}

}  // namespace

const Place& place() { return me().where; }

int lane_id() { return me().linear % kWarp; }

void sync_block() { yield(State::at_barrier, nullptr); }

void sync_warp(const char* op, unsigned mask) {
  if (mask != 0xffffffffu) fail(std::string(op) + " with a partial lane mask is not emulated");
  ++me().ops;
  yield(State::at_warp_op, op);
}

const uint32_t* warp_exchange(const char* op, unsigned mask, const uint32_t* mine, int n) {
  Grid& g = grid();
  Fiber& f = me();
  const int warp = f.linear / kWarp, lane = f.linear % kWarp;
  uint32_t* buf = g.exchange.data() + (size_t(warp) * 2 + (f.ops & 1)) * kWarp * kExchangeWords;
  std::copy(mine, mine + n, buf + size_t(lane) * kExchangeWords);
  sync_warp(op, mask);
  return buf;
}

void* dynamic_shared_memory() { return grid().smem.data(); }

void ldmatrix_x4(bool trans, uint32_t (&r)[4], const void* row) {
  Fiber& f = me();
  const uintptr_t a = reinterpret_cast<uintptr_t>(row);
  if (a % 16 != 0) {
    fail(block_name(f.where) + ": ldmatrix with a row address that is not 16-byte aligned");
    r[0] = r[1] = r[2] = r[3] = 0;
    return;
  }
  // Every lane names one row: lanes 8m..8m+7 rows 0..7 of matrix m (8 x 8
  // 16-bit elements, 16 bytes a row). Each lane then receives, of matrix m,
  // the 32-bit word (row lane / 4, elements 2 (lane % 4), +1), or with .trans
  // that word of the transposed matrix: elements (rows 2 (lane % 4) and
  // 2 (lane % 4) + 1, column lane / 4), the first in the low 16 bits.
  const uint32_t mine[2] = {uint32_t(uint64_t(a) & 0xffffffffu), uint32_t(uint64_t(a) >> 32)};
  const uint32_t* all = warp_exchange(trans ? "ldmatrix.trans" : "ldmatrix", 0xffffffffu, mine, 2);
  auto row_of = [&](int src_lane) {
    const uint32_t* w = all + size_t(src_lane) * kExchangeWords;
    return reinterpret_cast<const unsigned char*>(uintptr_t(uint64_t(w[0]) | (uint64_t(w[1]) << 32)));
  };
  const int lane = lane_id(), g = lane / 4, t = lane % 4;
  for (int m = 0; m < 4; ++m) {
    if (!trans) {
      std::memcpy(&r[m], row_of(8 * m + g) + 4 * t, 4);
    } else {
      uint16_t lo, hi;
      std::memcpy(&lo, row_of(8 * m + 2 * t) + 2 * g, 2);
      std::memcpy(&hi, row_of(8 * m + 2 * t + 1) + 2 * g, 2);
      r[m] = uint32_t(lo) | (uint32_t(hi) << 16);
    }
  }
}

void cp_async(void* smem, const void* gmem, bool valid) {
  Fiber& f = me();
  if (reinterpret_cast<uintptr_t>(smem) % 16 != 0 || reinterpret_cast<uintptr_t>(gmem) % 16 != 0) {
    fail(block_name(f.where) + ": cp.async with an address that is not 16-byte aligned");
    return;
  }
  // A copy may land any time between its issue and the wait that covers it:
  // at the wait in lockstep mode (a read before the wait sees stale data), at
  // either end at random in a shuffled schedule (a write into a buffer other
  // warps still read shows too).
  if (grid().rng && next_random(grid().rng) % 2 == 0) {
    if (valid)
      std::memcpy(smem, gmem, 16);
    else
      std::memset(smem, 0, 16);
    return;
  }
  f.copies.push_back({smem, gmem, valid, f.committed});
}

void cp_async_commit() { ++me().committed; }

void cp_async_wait(int pending) {
  Fiber& f = me();
  const int complete_below = f.committed - pending;  // groups older than the newest `pending`
  auto keep = f.copies.begin();
  for (auto it = f.copies.begin(); it != f.copies.end(); ++it) {
    if (it->group < complete_below) {
      if (it->valid)
        std::memcpy(it->dst, it->src, 16);
      else
        std::memset(it->dst, 0, 16);
    } else {
      *keep++ = *it;
    }
  }
  f.copies.erase(keep, f.copies.end());
}

void mma_m16n8k16(bool bf16, float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  uint32_t mine[12];
  if (bf16)
    widen<cuda::detail::Bf16Bits>(a, b0, b1, mine);
  else
    widen<cuda::detail::F16Bits>(a, b0, b1, mine);
  const uint32_t* all = warp_exchange(bf16 ? "mma.sync (bf16)" : "mma.sync (f16)", 0xffffffffu, mine, 12);
  mma_impl(d, all, lane_id());
}

namespace {
// The emulated device, shared by every host thread as a real one is.
struct Device {
  std::mutex mu;
  cuda::DeviceLimits limits{9, 0, size_t(227) << 10};
  std::map<const void*, size_t> smem_optin;  // kernel -> bytes granted
};
Device& device() {
  static Device d;
  return d;
}
}  // namespace

void run_grid(dim3 grid_dim, dim3 block_dim, size_t dynamic_smem, const void* kernel, void (*body)(void*),
              void* ctx) {
  if (t_grid) {
    set_error(cudaErrorLaunchFailure, "emulator: a kernel launched from device code");
    return;
  }
  const unsigned long long threads = 1ull * block_dim.x * block_dim.y * block_dim.z;
  if (grid_dim.x == 0 || grid_dim.y == 0 || grid_dim.z == 0 || grid_dim.y > 65535 || grid_dim.z > 65535 ||
      threads == 0 || threads > 1024 || block_dim.z > 64) {
    set_error(cudaErrorInvalidConfiguration,
              "invalid configuration argument (grid " + dims(grid_dim) + ", block " + dims(block_dim) + ")");
    return;
  }
  size_t smem_limit = kMaxDynamicSmem;
  {
    Device& d = device();
    std::lock_guard<std::mutex> lock(d.mu);
    const auto it = d.smem_optin.find(kernel);
    if (it != d.smem_optin.end() && it->second > smem_limit) smem_limit = it->second;
  }
  if (dynamic_smem > smem_limit) {
    set_error(cudaErrorInvalidValue,
              "invalid argument (" + std::to_string(dynamic_smem) + " bytes of dynamic shared memory; " +
                  (smem_limit == kMaxDynamicSmem ? std::string("48 KiB without an opt-in)")
                                                 : "the kernel opted in to " + std::to_string(smem_limit) + ")"));
    return;
  }

  Grid g;
  if (t_seed) {  // splitmix64 of (seed, launch): a different schedule per launch, never 0
    uint64_t z = t_seed + 0x9e3779b97f4a7c15ull * ++t_launches;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    g.rng = (z ^ (z >> 31)) | 1;
  }
  g.body = body;
  g.ctx = ctx;
  g.fibers.resize(size_t(threads));
  g.stacks.reset(new char[size_t(threads) * kStackBytes]);
  g.exchange.assign((size_t(threads) + kWarp - 1) / kWarp * 2 * kWarp * kExchangeWords, 0u);
  g.smem.resize(std::max<size_t>(dynamic_smem, 16));
  t_grid = &g;
  for (unsigned z = 0; z < grid_dim.z && g.error.empty(); ++z)
    for (unsigned y = 0; y < grid_dim.y && g.error.empty(); ++y)
      for (unsigned x = 0; x < grid_dim.x && g.error.empty(); ++x)
        run_block(g, make_uint3(x, y, z), grid_dim, block_dim);
  t_grid = nullptr;
  if (!g.error.empty()) set_error(cudaErrorLaunchFailure, "emulated kernel failed: " + g.error);
}

void set_device_limits(int cc_major, int cc_minor, size_t smem_per_block_optin) {
  Device& d = device();
  std::lock_guard<std::mutex> lock(d.mu);
  d.limits = cuda::DeviceLimits{cc_major, cc_minor, smem_per_block_optin};
}

cuda::DeviceLimits device_limits() {
  Device& d = device();
  std::lock_guard<std::mutex> lock(d.mu);
  return d.limits;
}

void allow_dynamic_smem(const void* kernel, size_t bytes) {
  Device& d = device();
  std::lock_guard<std::mutex> lock(d.mu);
  d.smem_optin[kernel] = bytes;
}

// ---- streams and graphs -------------------------------------------------------
struct Stream {
  bool capturing = false;
  std::vector<std::function<void()>> recorded;
};
struct Graph {
  std::vector<std::function<void()>> work;
};

Stream* stream_new() { return new Stream; }
void stream_delete(Stream* s) noexcept { delete s; }

void submit(void* stream, std::function<void()> work) {
  auto* s = static_cast<Stream*>(stream);
  if (s && s->capturing)
    s->recorded.push_back(std::move(work));
  else
    work();
}

void capture_start(void* stream) {
  auto* s = static_cast<Stream*>(stream);
  XLMR_CHECK(s && !s->capturing, "cudaStreamBeginCapture (emulated): no stream, or one already capturing");
  s->capturing = true;
  s->recorded.clear();
}

Graph* capture_stop(void* stream) {
  auto* s = static_cast<Stream*>(stream);
  XLMR_CHECK(s && s->capturing, "cudaStreamEndCapture (emulated): the stream is not capturing");
  auto* g = new Graph{std::move(s->recorded)};
  s->recorded.clear();
  s->capturing = false;
  return g;
}

void capture_drop(void* stream) noexcept {
  auto* s = static_cast<Stream*>(stream);
  if (!s) return;
  s->capturing = false;
  s->recorded.clear();
}

void graph_run(Graph* g, void* stream) {
  XLMR_CHECK(g != nullptr, "cudaGraphLaunch (emulated): no graph");
  for (const auto& w : g->work) submit(stream, w);
}

void graph_delete(Graph* g) noexcept { delete g; }

void set_schedule_seed(uint64_t seed) {
  t_seed = seed;
  t_launches = 0;
}

cudaError_t take_error() {
  const cudaError_t e = t_error;
  t_error = cudaSuccess;
  return e;
}

const char* error_string(cudaError_t err) {
  if (err == cudaSuccess) return "no error";
  return t_error_text.c_str();
}

}  // namespace xlmr::emulation
