// bfloat16 and float16 as stored bits, and their exact conversions to and from float. Reductions over
// them accumulate in float (as NCCL and ATen do) and round once at the end.
#pragma once
#include <bit>
#include <cstdint>

namespace moreh::runtime {

// bfloat16 is the top half of a float32, so the widening is a shift.
inline float bfloat16_to_float(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

// Rounds to nearest, ties to even (torch's rounding); NaN stays a quiet NaN with its sign.
inline uint16_t float_to_bfloat16(float value) {
  uint32_t u = std::bit_cast<uint32_t>(value);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// float16 goes through the compiler's _Float16 (GCC >= 12, Clang >= 15), which converts with the
// hardware's rounding (F16C on x86-64, FCVT on AArch64) rather than bit twiddling here.
inline float float16_to_float(uint16_t bits) { return static_cast<float>(std::bit_cast<_Float16>(bits)); }
inline uint16_t float_to_float16(float value) { return std::bit_cast<uint16_t>(static_cast<_Float16>(value)); }

}  // namespace moreh::runtime
