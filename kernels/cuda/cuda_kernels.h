// The CUDA kernels of the GPU backend, callable from plain C++ (no CUDA
// headers here): device pointers are void*, streams are opaque. Activations
// and weight matrices are 16-bit (fp16 or bf16, `Half16`); LayerNorm
// parameters and biases are fp32; all math accumulates in fp32.
//
// Every launch is asynchronous on `stream` and never synchronises or
// allocates. Launch failures surface at the next checked call (sync()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace xlmr {
namespace cuda {

enum class Half16 { f16, bf16 };
using Stream = void*;  // cudaStream_t

// ---- small runtime helpers (throw xlmr::Error with the CUDA message) -----
// Makes GPU `index` the calling host thread's current device (cudaSetDevice):
// every call below, and every kernel, goes to the current device.
void set_device(int index);
int current_device();  // cudaGetDevice
// Sets a device for a scope and gives the thread its previous one back.
class DeviceScope {
 public:
  explicit DeviceScope(int index) : previous_(current_device()) {
    if (index != previous_) set_device(index);
    changed_ = index != previous_;
  }
  ~DeviceScope() {
    if (!changed_) return;
    try {
      set_device(previous_);
    } catch (...) {  // a destructor may not throw; the next checked call reports a broken device
    }
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_;
  bool changed_ = false;
};
void* device_malloc(size_t bytes);          // cudaMalloc
void device_free(void* p) noexcept;         // cudaFree (nullptr ok)
void* host_malloc_pinned(size_t bytes);     // cudaMallocHost
void host_free_pinned(void* p) noexcept;
void copy_to_device(void* dst, const void* src, size_t bytes, Stream s);  // async
void copy_to_host(void* dst, const void* src, size_t bytes, Stream s);    // async
Stream stream_create();
void stream_destroy(Stream s) noexcept;
void sync(Stream s);  // cudaStreamSynchronize + error check
// Events order work between streams (timing disabled: they only order).
using Event = void*;  // cudaEvent_t
Event event_create();
void event_destroy(Event e) noexcept;
void event_record(Event e, Stream s);
void stream_wait(Stream s, Event e);  // later work on s waits for e

// CUDA graphs: everything launched on s between the two capture calls is
// recorded (not run) and instantiated once; graph_launch replays it.
using GraphExec = void*;  // cudaGraphExec_t
void capture_begin(Stream s);
GraphExec capture_end(Stream s);       // throws if the capture failed
void capture_abort(Stream s) noexcept;  // ends a capture that cannot finish
void graph_launch(GraphExec g, Stream s);
void graph_destroy(GraphExec g) noexcept;

// What the current device offers a kernel (cudaDeviceGetAttribute).
struct DeviceLimits {
  int cc_major = 0, cc_minor = 0;    // compute capability
  size_t smem_per_block_optin = 0;  // most shared memory one block can opt in to
};
DeviceLimits device_limits();
// Lets `kernel` (a __global__ function's address) launch with up to `bytes`
// of dynamic shared memory on the current device
// (cudaFuncSetAttribute(MaxDynamicSharedMemorySize)); needed above 48 KiB.
// The call waits for copies in flight, so it belongs in setup, not per launch.
void allow_dynamic_smem(const void* kernel, size_t bytes);

// fp32 host data -> 16-bit device data (for weights at load; synchronous).
void upload_f32_as(Half16 t, void* dst, const float* src, size_t n, Stream s);
// 16-bit device data -> fp32 device data.
void convert_to_f32(Half16 t, float* dst, const void* src, size_t n, Stream s);

// ---- kernels ---------------------------------------------------------------
// out[t] = LN(word[ids[t]] + pos[positions[t]] + type0) * gamma + beta
// word, pos, type0 (nullable): 16-bit; gamma, beta: fp32; out: 16-bit [N, E].
// raw (pre-norm models; nullable, not out): also the sum before LayerNorm.
void embed_layernorm(Half16 t, void* out, const int32_t* ids, const int32_t* positions, const void* word,
                     const void* pos, const void* type0, const float* gamma, const float* beta, int n_tokens,
                     int hidden, float eps, Stream s, void* raw = nullptr);

// x = LN(x + y + bias) * gamma + beta, row by row, in place on x (16-bit).
// With normed (pre-norm models; not x): x = x + y + bias, normed = LN(x).
void add_bias_residual_layernorm(Half16 t, void* x, const void* y, const float* bias, const float* gamma,
                                 const float* beta, int n_tokens, int hidden, float eps, Stream s,
                                 void* normed = nullptr);

// Variable-length multi-head attention over packed QKV rows [N, 3E] (Q | K |
// V, head h at columns [h*D, (h+1)*D) of each), sequences given by device
// cu_seqlens [S+1]; out [N, E]. Flash style: O(N) memory, no padding, any
// sequence length up to 8192. Head dims are multiples of 8 up to 128.
//
// Two kernels: tensor cores for head dims 32, 64, 80 and 128, and a plain
// fp32 one for any head dim. attention_prepare picks the kernel for a head
// dim on the current device, once, at setup: 80 and 128 need more than 48 KiB
// of shared memory, which it opts the kernel in to where the device has it
// (sm_80 and later); elsewhere it picks the plain kernel. varlen_attention
// runs the kernel given (at 80 and 128 the tensor-core launch fails unless
// attention_prepare chose it on this device).
enum class AttentionKernel { tensor_core, plain };
AttentionKernel attention_prepare(Half16 t, int head_dim);
const char* to_string(AttentionKernel k);
void varlen_attention(Half16 t, AttentionKernel k, void* out, const void* qkv, const int32_t* cu_seqlens,
                      int n_seqs, int max_seqlen, int heads, int head_dim, Stream s);

// out[s] = x[cu_seqlens[s]] (first token of each sequence), 16-bit [S, E].
void gather_first(Half16 t, void* out, const void* x, const int32_t* cu_seqlens, int n_seqs, int hidden, Stream s);
// out[s] = mean of the rows of sequence s, fp32 [S, E].
void mean_pool(Half16 t, float* out, const void* x, const int32_t* cu_seqlens, int n_seqs, int hidden, Stream s);
// In place: x = tanh(x) or relu(x), 16-bit, n elements.
void activation(Half16 t, void* x, size_t n, bool tanh_not_relu, Stream s);
// In place on d [rows, cols] (16-bit): d = act(d + bias[col]), act the exact
// erf GELU or none; bias fp32 [cols]. The GEMMs' epilogue when cuBLASLt has
// no fused one.
void bias_activation(Half16 t, void* d, const float* bias, int rows, int cols, bool gelu, Stream s);

// ---- GEMMs (cuBLASLt) --------------------------------------------------------
// D[M, O] = epilogue(A[M, I] W^T + bias), row-major, W stored [O, I] like the
// file; A, W, D 16-bit, bias fp32 (nullable), fp32 accumulation.
enum class LtEpilogue { none, bias, bias_gelu };
class LtGemm;
struct LtContext;  // cuBLASLt handle + workspace
LtContext* lt_create(size_t workspace_bytes);
void lt_destroy(LtContext* c) noexcept;
// Plans one (I, O, epilogue, type) GEMM for M up to max_rows.
LtGemm* lt_gemm_create(LtContext* c, Half16 t, int in, int out, LtEpilogue ep, int max_rows);
void lt_gemm_destroy(LtGemm* g) noexcept;
void lt_gemm_run(LtGemm* g, void* d, const void* a, const void* w, const float* bias, int M, Stream s);

}  // namespace cuda
}  // namespace xlmr
