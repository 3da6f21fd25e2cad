// Element types and the scalar conversions between them.
//
// DType is what a .xlmr file stores (its numeric codes are part of the file
// format, docs/weights-format.md). SrcDType is what a source checkpoint may
// hold; the converter turns the floating ones into a DType and ignores the
// integer buffers (position_ids and the like).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace xlmr {

enum class DType : uint32_t { f32 = 0, f16 = 1, bf16 = 2 };

enum class SrcDType { f32, f16, bf16, f64, i64, i32, i16, i8, u8, boolean };

inline size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }

inline size_t dtype_size(SrcDType t) {
  switch (t) {
    case SrcDType::f64: case SrcDType::i64: return 8;
    case SrcDType::f32: case SrcDType::i32: return 4;
    case SrcDType::f16: case SrcDType::bf16: case SrcDType::i16: return 2;
    default: return 1;
  }
}

inline bool is_float(SrcDType t) {
  return t == SrcDType::f32 || t == SrcDType::f16 || t == SrcDType::bf16 || t == SrcDType::f64;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
  }
  return "?";
}

inline const char* dtype_name(SrcDType t) {
  switch (t) {
    case SrcDType::f32: return "f32";
    case SrcDType::f16: return "f16";
    case SrcDType::bf16: return "bf16";
    case SrcDType::f64: return "f64";
    case SrcDType::i64: return "i64";
    case SrcDType::i32: return "i32";
    case SrcDType::i16: return "i16";
    case SrcDType::i8: return "i8";
    case SrcDType::u8: return "u8";
    case SrcDType::boolean: return "bool";
  }
  return "?";
}

// Parses "f32" / "f16" / "bf16"; returns false for anything else.
inline bool parse_dtype(const std::string& s, DType* out) {
  if (s == "f32" || s == "fp32" || s == "float32") { *out = DType::f32; return true; }
  if (s == "f16" || s == "fp16" || s == "float16") { *out = DType::f16; return true; }
  if (s == "bf16" || s == "bfloat16") { *out = DType::bf16; return true; }
  return false;
}

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; NaN stays NaN (quiet).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do { man <<= 1; ++e; } while ((man & 0x400u) == 0);
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, overflow to inf, underflow through subnormals.
inline uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (a < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (a < 0x33000000u) return uint16_t(sign);  // rounds to zero
    uint32_t e = a >> 23;
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;  // 14 + (112 - e) ... bits to drop beyond the 13
    uint32_t drop = shift;     // total right shift to land in 10-bit mantissa
    uint32_t r = m >> drop;
    uint32_t rem = m & ((1u << drop) - 1);
    uint32_t half = 1u << (drop - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return uint16_t(sign | r);
  }
  uint32_t r = a - 0x38000000u;  // rebias exponent 127 -> 15
  uint32_t out = r >> 13;
  uint32_t rem = r & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (out & 1u))) ++out;
  return uint16_t(sign | out);
}

}  // namespace xlmr
