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
// Algorithms. A ragged batch's row count M changes from batch to batch, so
// plans are made per row bucket (kernels/cuda/gemm_buckets.h), not per M.
// init() asks cublasLtMatmulAlgoGetHeuristic once per bucket, with the
// layouts set to the bucket's upper row count and 256-byte pointer alignment,
// and checks with cublasLtMatmulAlgoCheck that the algorithm also accepts the
// bucket's smallest M (else it takes the heuristic's next candidate that does,
// and if none does, the first). run() sets the layouts to the real M and
// takes its bucket's algorithm: no heuristic query and no host allocation.
// cublasLtMatmul validates the algorithm against the problem it is given; if
// it refuses the bucket's algorithm for this M (CUBLAS_STATUS_NOT_SUPPORTED
// or INVALID_VALUE), run() queries the heuristic for the exact M, retries
// once, and only then throws.
//
// That fallback runs the heuristic inside the forward pass - host work, and
// whatever cuBLASLt allocates for it - in three cases: an M whose bucket
// algorithm cuBLASLt refuses (once per M while its plan stays cached),
// pointers that are not all 256-byte aligned (no caller in
// engine/cuda_backend.cpp passes one), and every call of a GEMM with a bias
// epilogue made without a workspace (nothing stands in for the bias pointer
// at init). Its plans go to a cache of at most kExactPlans (M, alignments)
// entries, reserved at init and overwritten round-robin when full, so memory
// stays bounded however many distinct M a long run sees.
//
// If cuBLASLt offers no fused-epilogue algorithm for a bucket or an exact M
// (an fp32 bias with a 16-bit output is not promised by every version), it
// runs the plain GEMM followed by bias_activation (elementwise.cu).
//
// Note: cuBLASLt's GELU epilogue is the tanh approximation of GELU; XLM-R
// uses the erf form. They differ by at most about 5e-4 in absolute value,
// below the fp16/bf16 rounding of the activations.
//
// Thread safety: an LtGemm keeps per-call state (the M of its layouts, the
// bias pointer, its fallback cache), and every GEMM of one LtContext shares
// its workspace; use a context and its GEMMs from one thread and one stream.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemm_buckets.h"

namespace xlmr::cuda {

namespace {

// The pointer alignment (bytes) the bucket plans are made for, matrices and
// bias alike. Every caller in engine/cuda_backend.cpp passes the start of its
// own cudaMalloc allocation (activations, weights, biases), and cudaMalloc
// returns 256-byte aligned memory; the GPU tests do the same. A second set of
// bucket plans for a smaller alignment would double the planning at load for
// pointers nobody passes, so any other alignment (an offset into a buffer)
// goes through the bounded exact-M cache instead.
constexpr uint32_t kPlannedAlign = 256;

// Capacity of the exact-M fallback cache of each GEMM.
constexpr size_t kExactPlans = 64;

uint64_t exact_key(int M, uint32_t matrix_align, uint32_t bias_align) {
  return (uint64_t(M) << 32) | (uint64_t(matrix_align) << 16) | uint64_t(bias_align);
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
    bool separate_epilogue;  // plain GEMM + bias_activation (elementwise.cu) instead of the fused epilogue
  };
  struct ExactPlan {
    uint64_t key;  // M, matrix alignment, bias alignment
    Plan plan;
  };

  void set_rows(int M);
  Plan choose(int lowest_rows, uint32_t matrix_align);
  bool find_algo(cublasLtMatmulDesc_t desc, uint32_t matrix_align, int lowest_rows, cublasLtMatmulAlgo_t* algo,
                 cublasStatus_t* status);
  bool cached_exact(uint64_t key, Plan* p) const;
  Plan exact_plan(int M, uint32_t matrix_align, uint64_t key);
  cublasStatus_t matmul(const Plan& p, void* d, const void* a, const void* w, cudaStream_t stream);
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
  int layout_rows_ = -1;              // the M that a_layout_ and d_layout_ describe now
  std::vector<int> buckets_;          // gemm_row_buckets(max_rows_)
  std::vector<Plan> bucket_plans_;    // [bucket], kPlannedAlign pointers; empty if not planned at init
  std::vector<char> bucket_refused_;  // [bucket]: cublasLtMatmul refused its algorithm for some M
  std::vector<ExactPlan> exact_;      // the fallback cache, capacity kExactPlans reserved at init
  size_t next_victim_ = 0;            // the entry of a full exact_ to overwrite next
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

  buckets_ = gemm_row_buckets(max_rows_);
  bucket_refused_.assign(buckets_.size(), 0);
  exact_.reserve(kExactPlans);

  // Plan every bucket now: the forward pass then runs no heuristic, and a
  // GEMM cuBLASLt cannot run fails here rather than in the first batch. The
  // heuristic reads the bias pointer only for its alignment; the workspace
  // (a 256-byte aligned device allocation) stands in for it.
  if (ep_ != LtEpilogue::none) {
    if (!ctx_->workspace) return;  // every call goes through the exact-M cache
    set_desc(fused_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(ctx_->workspace),
             "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
  }
  bucket_plans_.reserve(buckets_.size());
  for (size_t i = 0; i < buckets_.size(); ++i) {
    set_rows(buckets_[i]);
    bucket_plans_.push_back(choose(i == 0 ? 1 : buckets_[i - 1] + 1, kPlannedAlign));
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

// The layouts describe the M to plan for; lowest_rows (<= that M) is the
// smallest M the algorithm will be asked to run. Of the heuristic's
// candidates that fit the workspace, the first that cublasLtMatmulAlgoCheck
// also accepts for lowest_rows, else the first.
bool LtGemm::find_algo(cublasLtMatmulDesc_t desc, uint32_t matrix_align, int lowest_rows, cublasLtMatmulAlgo_t* algo,
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
  const int rows = layout_rows_;
  int usable = -1;  // the first candidate that runs `rows`
  for (int i = 0; i < found; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS || results[i].workspaceSize > ctx_->workspace_bytes) continue;
    if (lowest_rows == rows) {
      *algo = results[i].algo;
      return true;
    }
    if (usable < 0) usable = i;
    cublasLtMatmulHeuristicResult_t check = {};
    set_rows(lowest_rows);
    const cublasStatus_t st = cublasLtMatmulAlgoCheck(ctx_->handle, desc, w_layout_, a_layout_, d_layout_, d_layout_,
                                                      &results[i].algo, &check);
    set_rows(rows);
    if (st == CUBLAS_STATUS_SUCCESS && check.workspaceSize <= ctx_->workspace_bytes) {
      *algo = results[i].algo;
      return true;
    }
    cudaGetLastError();
  }
  if (usable >= 0) {  // run() falls back to an exact-M plan for any M cuBLASLt refuses it
    *algo = results[usable].algo;
    return true;
  }
  *status = CUBLAS_STATUS_NOT_SUPPORTED;
  return false;
}

// The layouts must already describe the M to plan for (lowest_rows up to
// it), and the fused descriptor hold the bias pointer of this call.
LtGemm::Plan LtGemm::choose(int lowest_rows, uint32_t matrix_align) {
  Plan p{};
  cublasStatus_t fused_status = CUBLAS_STATUS_SUCCESS, plain_status = CUBLAS_STATUS_SUCCESS;
  if (fused_ && find_algo(fused_, matrix_align, lowest_rows, &p.algo, &fused_status)) {
    p.separate_epilogue = false;
  } else if (find_algo(plain_, matrix_align, lowest_rows, &p.algo, &plain_status)) {
    p.separate_epilogue = fused_ != nullptr;
  } else {
    XLMR_THROW("cuBLASLt has no algorithm for the " + describe(layout_rows_) + " (pointer alignment " +
               std::to_string(matrix_align) + " bytes): " + status_text(plain_status) +
               (fused_ ? "; with the fused epilogue: " + status_text(fused_status) : std::string()));
  }
  return p;
}

bool LtGemm::cached_exact(uint64_t key, Plan* p) const {
  for (const ExactPlan& e : exact_) {
    if (e.key == key) {
      *p = e.plan;
      return true;
    }
  }
  return false;
}

// The plan for exactly M (the layouts must describe M), from the cache or the
// heuristic. The cache never grows past its reserved capacity.
LtGemm::Plan LtGemm::exact_plan(int M, uint32_t matrix_align, uint64_t key) {
  Plan p{};
  if (cached_exact(key, &p)) return p;
  p = choose(M, matrix_align);
  if (exact_.size() < kExactPlans) {
    exact_.push_back({key, p});
  } else {
    exact_[next_victim_] = {key, p};
    next_victim_ = (next_victim_ + 1) % kExactPlans;
  }
  return p;
}

cublasStatus_t LtGemm::matmul(const Plan& p, void* d, const void* a, const void* w, cudaStream_t stream) {
  const cublasLtMatmulDesc_t desc = (fused_ && !p.separate_epilogue) ? fused_ : plain_;
  const float one = 1.f, zero = 0.f;
  return cublasLtMatmul(ctx_->handle, desc, &one, w, w_layout_, a, a_layout_, &zero, d, d_layout_, d, d_layout_,
                        &p.algo, ctx_->workspace, ctx_->workspace_bytes, stream);
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
  const uint32_t bias_align = alignment_of(bias);
  const uint64_t key = exact_key(M, matrix_align, bias_align);

  // The bucket's plan when there is one for these pointers; the exact-M cache
  // first only in a bucket where cuBLASLt has refused the algorithm before.
  Plan exact{};
  const Plan* p = &exact;
  int bucket = -1;
  if (!bucket_plans_.empty() && matrix_align == kPlannedAlign && bias_align == kPlannedAlign) {
    bucket = gemm_bucket_index(buckets_, M);
    if (!bucket_refused_[size_t(bucket)] || !cached_exact(key, &exact)) p = &bucket_plans_[size_t(bucket)];
  } else {
    exact = exact_plan(M, matrix_align, key);
  }
  cublasStatus_t st = matmul(*p, d, a, w, stream);
  if (p != &exact && (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE)) {
    cudaGetLastError();
    bucket_refused_[size_t(bucket)] = 1;
    exact = exact_plan(M, matrix_align, key);
    p = &exact;
    st = matmul(*p, d, a, w, stream);
  }
  if (st != CUBLAS_STATUS_SUCCESS) {
    cudaGetLastError();
    XLMR_THROW("cublasLtMatmul failed for the " + describe(M) + ": " + status_text(st));
  }

  if (p->separate_epilogue) bias_activation(t_, d, bias, M, out_, ep_ == LtEpilogue::bias_gelu, stream);
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
