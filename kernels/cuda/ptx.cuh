// The PTX instructions the attention kernel issues directly: the warp-wide
// tensor-core product mma.sync m16n8k16 (fp16 or bf16 inputs, fp32
// accumulators), ldmatrix (shared memory -> mma fragments) and cp.async
// 16-byte global -> shared copies. sm_80 and
// newer. Under XLMR_CUDA_EMULATION (tests/emulation) the emulator supplies
// functions of the same names and semantics instead.
//
// Fragment layout of mma.m16n8k16 (PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type"), g = lane / 4, t = lane % 4:
//   A (16x16 row-major, 4 regs of 2 elements): a[0] (row g, k 2t..2t+1),
//     a[1] (row g+8, k 2t..), a[2] (row g, k 2t+8..), a[3] (row g+8, k 2t+8..)
//   B (16x8 column-major, 2 regs): b0 (k 2t..2t+1, col g), b1 (k 2t+8.., col g)
//   C/D (16x8 fp32): d[0], d[1] (row g, cols 2t, 2t+1), d[2], d[3] (row g+8)
// In every register the lower k (or column) index is in the low 16 bits.
#pragma once

#include <cstdint>

#if !defined(XLMR_CUDA_EMULATION) && (!defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800)

namespace xlmr::cuda::ptx {

// d += a * b, fp16 inputs.
__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// d += a * b, bf16 inputs.
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8 x 8 matrices of 16-bit elements from shared memory, warp-wide:
// lane 8m + i gives the address of row i of matrix m (16 bytes, 16-byte
// aligned), and each lane receives r[m] = (row lane / 4, elements
// 2 (lane % 4), +1) of matrix m - the layout of an mma A or B register.
// The _trans form transposes each matrix on the way: r[m] holds (rows
// 2 (lane % 4) and 2 (lane % 4) + 1, column lane / 4), the first in the low
// 16 bits. Reads memory other lanes' cp.async copies wrote, so it is
// ordered as a memory access ("memory" clobber).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
}

// 16-byte global -> shared copy into this thread's current group; when
// !valid nothing is read and the 16 bytes are zero-filled (src-size 0), but
// gmem must still be a valid address. Both addresses 16-byte aligned.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(src_bytes) : "memory");
}

// Closes this thread's current group of copies.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most `pending` of this thread's committed groups are still
// in flight (the newest ones). Other threads' copies need a barrier after.
template <int pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory");
}

}  // namespace xlmr::cuda::ptx

#endif
