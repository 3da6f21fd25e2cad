// The dense layers of the CUDA backend on cuBLASLt:
//   D[M, O] = epilogue(A[M, I] W^T + bias)
// row-major, W stored [O, I] as in the weight file, A/W/D fp16 or bf16, bias
// fp32, fp32 accumulation (CUBLAS_COMPUTE_32F), bias and GELU fused into the
// GEMM's epilogue.
//
// Layouts. cuBLASLt is column-major, and a row-major [R, C] buffer read
// column-major is the C x R matrix with leading dimension C - its transpose.
// So, with every buffer left as it is:
//   W [O, I] row-major  =  Wc: I x O column-major, ld I   (Wc = W^T)
//   A [M, I] row-major  =  Ac: I x M column-major, ld I   (Ac = A^T)
//   D [M, O] row-major  =  Dc: O x M column-major, ld O   (Dc = D^T)
// and D = A W^T  <=>  D^T = W A^T  <=>  Dc = Wc^T Ac.
// cuBLASLt's operand "A" is therefore the weight with TRANSA = T, operand "B"
// the activations with TRANSB = N, giving m = O, n = M, k = I (the "TN" case
// every tensor-core kernel takes). The epilogue bias runs along the rows of
// Dc - the output features o - and is broadcast over the M columns: exactly
// the Linear bias. Only the column count of Ac and Dc depends on M.
//
// Algorithms come from cublasLtMatmulAlgoGetHeuristic, once per distinct
// (M, pointer alignments) and cached; a later call with the same key does no
// host allocation. If cuBLASLt offers no fused-epilogue algorithm for a key
// (an fp32 bias with a 16-bit output is not promised by every version), that
// key runs the plain GEMM followed by a small bias (+ exact GELU) kernel.
//
// Note: cuBLASLt's GELU epilogue is the tanh approximation of GELU; XLM-R
// uses the erf form. They differ by at most about 5e-4 in absolute value,
// below the fp16/bf16 rounding of the activations.
//
// Thread safety: an LtGemm keeps per-call state (the M of its layouts, the
// bias pointer, its plan cache), and every GEMM of one LtContext shares its
// workspace; use a context and its GEMMs from one thread and one stream.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "engine/error.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/half_bits.cuh"

namespace xlmr::cuda {

namespace {

using detail::Bf16Bits;
using detail::F16Bits;

// The unfused epilogue: d[m, o] = act(d[m, o] + bias[o]) over total = M * O
// elements, grid-stride. GELU in its exact erf form, as ref::gelu.
template <typename Bits, bool kGelu>
__global__ void bias_act_kernel(uint16_t* __restrict__ d, const float* __restrict__ bias, size_t total, int O) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    float v = Bits::to_float(d[i]) + bias[i % size_t(O)];
    if (kGelu) v = 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    d[i] = Bits::from_float(v);
  }
}

std::string status_text(cublasStatus_t st) {
  return std::string(cublasLtGetStatusName(st)) + " (" + cublasLtGetStatusString(st) + ")";
}

// Throws with the call's name; the literal keeps the success path free of
// string building.
void lt_check(cublasStatus_t st, const char* call) {
  if (st != CUBLAS_STATUS_SUCCESS) {
    cudaGetLastError();  // a CUDA failure underneath is reported here, not at the next launch check
    XLMR_THROW(std::string(call) + " failed: " + status_text(st));
  }
}

template <typename V>
void set_desc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const V& value, const char* what) {
  lt_check(cublasLtMatmulDescSetAttribute(d, attr, &value, sizeof(value)), what);
}

// Largest power of two, up to 256, that divides the address (256 for null).
uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (a == 0) return 256;
  return uint32_t(std::min<uintptr_t>(256, a & (~a + 1)));
}

const char* epilogue_name(LtEpilogue ep) {
  switch (ep) {
    case LtEpilogue::none: return "no";
    case LtEpilogue::bias: return "bias";
    case LtEpilogue::bias_gelu: return "bias+GELU";
  }
  return "?";
}

}  // namespace

struct LtContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;  // [workspace_bytes], shared by every GEMM of the context
  size_t workspace_bytes = 0;

  LtContext() = default;
  LtContext(const LtContext&) = delete;
  LtContext& operator=(const LtContext&) = delete;
  ~LtContext() {
    if (handle && cublasLtDestroy(handle) != CUBLAS_STATUS_SUCCESS) cudaGetLastError();
    device_free(workspace);
  }
};

class LtGemm {
 public:
  LtGemm(LtContext* c, Half16 t, int in, int out, LtEpilogue ep, int max_rows)
      : ctx_(c), t_(t), in_(in), out_(out), ep_(ep), max_rows_(max_rows) {}
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;
  ~LtGemm();

  void init();
  void run(void* d, const void* a, const void* w, const float* bias, int M, cudaStream_t stream);

 private:
  struct Plan {
    cublasLtMatmulAlgo_t algo;
    bool separate_epilogue;  // plain GEMM + bias_act_kernel instead of the fused epilogue
  };

  void set_rows(int M);
  const Plan& plan(int M, uint32_t matrix_align, uint32_t bias_align);
  bool find_algo(cublasLtMatmulDesc_t desc, uint32_t matrix_align, cublasLtMatmulAlgo_t* algo,
                 cublasStatus_t* status);
  std::string describe(int M) const;

  LtContext* ctx_;
  Half16 t_;
  int in_, out_;
  LtEpilogue ep_;
  int max_rows_;

  cublasLtMatmulDesc_t plain_ = nullptr;  // no epilogue
  cublasLtMatmulDesc_t fused_ = nullptr;  // with the bias (+GELU) epilogue; null for LtEpilogue::none
  cublasLtMatrixLayout_t w_layout_ = nullptr, a_layout_ = nullptr, d_layout_ = nullptr;
  cublasLtMatmulPreference_t pref_ = nullptr;
  int layout_rows_ = -1;  // the M that a_layout_ and d_layout_ describe now
  std::unordered_map<uint64_t, Plan> plans_;
};

LtGemm::~LtGemm() {
  // Destroy calls only free host memory; a failure has nothing left to undo.
  if (pref_) cublasLtMatmulPreferenceDestroy(pref_);
  if (d_layout_) cublasLtMatrixLayoutDestroy(d_layout_);
  if (a_layout_) cublasLtMatrixLayoutDestroy(a_layout_);
  if (w_layout_) cublasLtMatrixLayoutDestroy(w_layout_);
  if (fused_) cublasLtMatmulDescDestroy(fused_);
  if (plain_) cublasLtMatmulDescDestroy(plain_);
}

std::string LtGemm::describe(int M) const {
  return std::string(t_ == Half16::f16 ? "f16" : "bf16") + " GEMM [" + std::to_string(M) + " x " +
         std::to_string(in_) + "] x [" + std::to_string(in_) + " -> " + std::to_string(out_) + "] with " +
         epilogue_name(ep_) + " epilogue";
}

void LtGemm::init() {
  const cudaDataType_t dt = t_ == Half16::f16 ? CUDA_R_16F : CUDA_R_16BF;
  const int32_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;

  lt_check(cublasLtMatmulDescCreate(&plain_, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  set_desc(plain_, CUBLASLT_MATMUL_DESC_TRANSA, op_t, "cublasLtMatmulDescSetAttribute(TRANSA)");
  set_desc(plain_, CUBLASLT_MATMUL_DESC_TRANSB, op_n, "cublasLtMatmulDescSetAttribute(TRANSB)");
  if (ep_ != LtEpilogue::none) {
    lt_check(cublasLtMatmulDescCreate(&fused_, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    set_desc(fused_, CUBLASLT_MATMUL_DESC_TRANSA, op_t, "cublasLtMatmulDescSetAttribute(TRANSA)");
    set_desc(fused_, CUBLASLT_MATMUL_DESC_TRANSB, op_n, "cublasLtMatmulDescSetAttribute(TRANSB)");
    const uint32_t epi = ep_ == LtEpilogue::bias_gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    set_desc(fused_, CUBLASLT_MATMUL_DESC_EPILOGUE, epi, "cublasLtMatmulDescSetAttribute(EPILOGUE)");
    const int32_t bias_type = CUDA_R_32F;
    set_desc(fused_, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, bias_type,
             "cublasLtMatmulDescSetAttribute(BIAS_DATA_TYPE)");
  }

  // Wc: I x O (ld I), Ac: I x M (ld I), Dc: O x M (ld O); M is set per call.
  lt_check(cublasLtMatrixLayoutCreate(&w_layout_, dt, uint64_t(in_), uint64_t(out_), int64_t(in_)),
           "cublasLtMatrixLayoutCreate(weight)");
  lt_check(cublasLtMatrixLayoutCreate(&a_layout_, dt, uint64_t(in_), uint64_t(max_rows_), int64_t(in_)),
           "cublasLtMatrixLayoutCreate(input)");
  lt_check(cublasLtMatrixLayoutCreate(&d_layout_, dt, uint64_t(out_), uint64_t(max_rows_), int64_t(out_)),
           "cublasLtMatrixLayoutCreate(output)");
  layout_rows_ = max_rows_;

  lt_check(cublasLtMatmulPreferenceCreate(&pref_), "cublasLtMatmulPreferenceCreate");
  const uint64_t ws = ctx_->workspace_bytes;
  lt_check(cublasLtMatmulPreferenceSetAttribute(pref_, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
           "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");

  // Plan the largest M now, so that a GEMM cuBLASLt cannot run fails here
  // rather than in the first batch. The heuristic reads the bias pointer only
  // for its alignment; the workspace (a 256-byte aligned device allocation)
  // stands in for it.
  if (ep_ == LtEpilogue::none) {
    plan(max_rows_, 256, 256);
  } else if (ctx_->workspace) {
    set_desc(fused_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(ctx_->workspace),
             "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
    plan(max_rows_, 256, 256);
  }
}

void LtGemm::set_rows(int M) {
  if (M == layout_rows_) return;
  const uint64_t cols = uint64_t(M);
  lt_check(cublasLtMatrixLayoutSetAttribute(a_layout_, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof(cols)),
           "cublasLtMatrixLayoutSetAttribute(COLS)");
  lt_check(cublasLtMatrixLayoutSetAttribute(d_layout_, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof(cols)),
           "cublasLtMatrixLayoutSetAttribute(COLS)");
  layout_rows_ = M;
}

bool LtGemm::find_algo(cublasLtMatmulDesc_t desc, uint32_t matrix_align, cublasLtMatmulAlgo_t* algo,
                       cublasStatus_t* status) {
  for (const auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    lt_check(cublasLtMatmulPreferenceSetAttribute(pref_, attr, &matrix_align, sizeof(matrix_align)),
             "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)");
  constexpr int kCandidates = 4;
  cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
  int found = 0;
  *status = cublasLtMatmulAlgoGetHeuristic(ctx_->handle, desc, w_layout_, a_layout_, d_layout_, d_layout_, pref_,
                                           kCandidates, results, &found);
  if (*status != CUBLAS_STATUS_SUCCESS) {
    cudaGetLastError();
    return false;
  }
  for (int i = 0; i < found; ++i) {
    if (results[i].state == CUBLAS_STATUS_SUCCESS && results[i].workspaceSize <= ctx_->workspace_bytes) {
      *algo = results[i].algo;
      return true;
    }
  }
  *status = CUBLAS_STATUS_NOT_SUPPORTED;
  return false;
}

// The layouts must already describe M, and the fused descriptor hold the
// bias pointer of this call.
const LtGemm::Plan& LtGemm::plan(int M, uint32_t matrix_align, uint32_t bias_align) {
  const uint64_t key = (uint64_t(M) << 32) | (uint64_t(matrix_align) << 16) | uint64_t(bias_align);
  const auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;

  Plan p{};
  cublasStatus_t fused_status = CUBLAS_STATUS_SUCCESS, plain_status = CUBLAS_STATUS_SUCCESS;
  if (fused_ && find_algo(fused_, matrix_align, &p.algo, &fused_status)) {
    p.separate_epilogue = false;
  } else if (find_algo(plain_, matrix_align, &p.algo, &plain_status)) {
    p.separate_epilogue = fused_ != nullptr;
  } else {
    XLMR_THROW("cuBLASLt has no algorithm for the " + describe(M) + " (pointer alignment " +
               std::to_string(matrix_align) + " bytes): " + status_text(plain_status) +
               (fused_ ? "; with the fused epilogue: " + status_text(fused_status) : std::string()));
  }
  return plans_.emplace(key, p).first->second;
}

void LtGemm::run(void* d, const void* a, const void* w, const float* bias, int M, cudaStream_t stream) {
  XLMR_CHECK(M >= 0 && M <= max_rows_, "lt_gemm_run: " + std::to_string(M) + " rows, but the " + describe(M) +
                                           " was planned for at most " + std::to_string(max_rows_));
  if (M == 0) return;
  XLMR_CHECK(d && a && w, "lt_gemm_run: null device pointer for the " + describe(M));
  const bool with_bias = ep_ != LtEpilogue::none;
  XLMR_CHECK(with_bias == (bias != nullptr),
             "lt_gemm_run: the " + describe(M) + (with_bias ? " needs a bias" : " takes no bias"));

  set_rows(M);
  if (with_bias)
    set_desc(fused_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(bias),
             "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
  const uint32_t matrix_align = std::min({alignment_of(d), alignment_of(a), alignment_of(w)});
  const Plan& p = plan(M, matrix_align, alignment_of(bias));

  const cublasLtMatmulDesc_t desc = (with_bias && !p.separate_epilogue) ? fused_ : plain_;
  const float one = 1.f, zero = 0.f;
  const cublasStatus_t st = cublasLtMatmul(ctx_->handle, desc, &one, w, w_layout_, a, a_layout_, &zero, d, d_layout_,
                                           d, d_layout_, &p.algo, ctx_->workspace, ctx_->workspace_bytes, stream);
  if (st != CUBLAS_STATUS_SUCCESS) {
    cudaGetLastError();
    XLMR_THROW("cublasLtMatmul failed for the " + describe(M) + ": " + status_text(st));
  }

  if (p.separate_epilogue) {
    const size_t total = size_t(M) * size_t(out_);
    constexpr int kBlock = 256;
    const unsigned blocks = unsigned(std::min<size_t>((total + kBlock - 1) / kBlock, size_t(1) << 16));
    auto* dd = static_cast<uint16_t*>(d);
    const bool gelu = ep_ == LtEpilogue::bias_gelu;
    if (t_ == Half16::f16) {
      if (gelu)
        bias_act_kernel<F16Bits, true><<<blocks, kBlock, 0, stream>>>(dd, bias, total, out_);
      else
        bias_act_kernel<F16Bits, false><<<blocks, kBlock, 0, stream>>>(dd, bias, total, out_);
    } else {
      if (gelu)
        bias_act_kernel<Bf16Bits, true><<<blocks, kBlock, 0, stream>>>(dd, bias, total, out_);
      else
        bias_act_kernel<Bf16Bits, false><<<blocks, kBlock, 0, stream>>>(dd, bias, total, out_);
    }
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess)
      XLMR_THROW(std::string("GEMM bias epilogue: kernel launch failed: ") + cudaGetErrorString(err));
  }
}

LtContext* lt_create(size_t workspace_bytes) {
  auto c = std::make_unique<LtContext>();
  lt_check(cublasLtCreate(&c->handle), "cublasLtCreate");
  if (workspace_bytes > 0) {
    c->workspace = device_malloc(workspace_bytes);
    c->workspace_bytes = workspace_bytes;
  }
  return c.release();
}

void lt_destroy(LtContext* c) noexcept { delete c; }

LtGemm* lt_gemm_create(LtContext* c, Half16 t, int in, int out, LtEpilogue ep, int max_rows) {
  XLMR_CHECK(c != nullptr, "lt_gemm_create: no cuBLASLt context");
  XLMR_CHECK(in > 0 && out > 0 && max_rows > 0, "lt_gemm_create: bad GEMM shape (in " + std::to_string(in) +
                                                    ", out " + std::to_string(out) + ", max rows " +
                                                    std::to_string(max_rows) + ")");
  auto g = std::make_unique<LtGemm>(c, t, in, out, ep, max_rows);
  g->init();
  return g.release();
}

void lt_gemm_destroy(LtGemm* g) noexcept { delete g; }

void lt_gemm_run(LtGemm* g, void* d, const void* a, const void* w, const float* bias, int M, Stream s) {
  XLMR_CHECK(g != nullptr, "lt_gemm_run: no GEMM plan");
  g->run(d, a, w, bias, M, static_cast<cudaStream_t>(s));
}

}  // namespace xlmr::cuda
