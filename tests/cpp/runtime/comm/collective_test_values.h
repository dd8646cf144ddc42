// Element values for the collectives tests (host and same-GPU communicators, the reduce kernels): small
// integers every dtype holds exactly, and the reduction of them over n ranks as the dtype stores it.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/base/data_type.h"
#include "runtime/kernels/elementwise_reduction.h"
#include "runtime/base/low_precision_float.h"

namespace moreh::runtime::test_values {

// The types and ops every collective test covers.
constexpr DataType kTypes[] = {DataType::kFloat32, DataType::kFloat64, DataType::kBFloat16,
                               DataType::kFloat16, DataType::kInt64,   DataType::kInt32};
constexpr ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin, ReduceOp::kProd};

inline void store(DataType t, void* base, uint64_t i, double v) {
  switch (t) {
    case DataType::kFloat32: static_cast<float*>(base)[i] = static_cast<float>(v); break;
    case DataType::kFloat64: static_cast<double*>(base)[i] = v; break;
    case DataType::kBFloat16: static_cast<uint16_t*>(base)[i] = float_to_bfloat16(static_cast<float>(v)); break;
    case DataType::kFloat16: static_cast<uint16_t*>(base)[i] = float_to_float16(static_cast<float>(v)); break;
    case DataType::kInt64: static_cast<int64_t*>(base)[i] = static_cast<int64_t>(v); break;
    case DataType::kInt32: static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v); break;
    case DataType::kBool: static_cast<uint8_t*>(base)[i] = v != 0; break;
  }
}

inline double load(DataType t, const void* base, uint64_t i) {
  switch (t) {
    case DataType::kFloat32: return static_cast<const float*>(base)[i];
    case DataType::kFloat64: return static_cast<const double*>(base)[i];
    case DataType::kBFloat16: return bfloat16_to_float(static_cast<const uint16_t*>(base)[i]);
    case DataType::kFloat16: return float16_to_float(static_cast<const uint16_t*>(base)[i]);
    case DataType::kInt64: return static_cast<double>(static_cast<const int64_t*>(base)[i]);
    case DataType::kInt32: return static_cast<const int32_t*>(base)[i];
    case DataType::kBool: return static_cast<const uint8_t*>(base)[i];
  }
  return 0;
}

// Small integers: every dtype holds them, their sums and their products exactly.
inline double value(ReduceOp op, int rank, uint64_t i) {
  if (op == ReduceOp::kProd) return (rank + i) % 3 == 0 ? 2.0 : ((rank + i) % 3 == 1 ? -1.0 : 1.0);
  return static_cast<double>(static_cast<int64_t>((rank * 7 + i * 3) % 11) - 5);
}

// The reduction of element i over n ranks, as the dtype stores it.
inline double expected(DataType t, ReduceOp op, int n, uint64_t i) {
  double acc = value(op, 0, i);
  for (int r = 1; r < n; ++r) {
    const double v = value(op, r, i);
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg: acc += v; break;
      case ReduceOp::kProd: acc *= v; break;
      case ReduceOp::kMax: acc = std::max(acc, v); break;
      case ReduceOp::kMin: acc = std::min(acc, v); break;
    }
  }
  if (op == ReduceOp::kAvg) {
    if (t == DataType::kInt64 || t == DataType::kInt32) acc = static_cast<double>(static_cast<int64_t>(acc) / n);
    else if (t == DataType::kFloat64) acc = acc / n;
    else acc = static_cast<float>(acc) / static_cast<float>(n);  // low-precision types accumulate in float
  }
  uint64_t bits = 0;
  store(t, &bits, 0, acc);
  return load(t, &bits, 0);
}

// Slice sizes for the uneven reduce_scatter / all_gather tests: 3, 1, 6, 4, 2, 0, 5, 3 elements.
inline std::vector<uint64_t> uneven_counts(int n) {
  std::vector<uint64_t> counts;
  for (int r = 0; r < n; ++r) counts.push_back((r * 5 + 3) % 7);
  return counts;
}

// Whether elements [begin, begin + count) of `data` are want(0), want(1), ...
inline ::testing::AssertionResult holds(DataType t, const void* data, uint64_t begin, uint64_t count,
                                        const std::function<double(uint64_t)>& want, const std::string& what) {
  for (uint64_t i = 0; i < count; ++i) {
    const double got = load(t, data, begin + i), w = want(i);
    if (got != w)
      return ::testing::AssertionFailure() << what << " " << name_of(t) << ": element " << i << " is " << got
                                           << ", expected " << w;
  }
  return ::testing::AssertionSuccess();
}
inline ::testing::AssertionResult holds(DataType t, const std::vector<std::byte>& data, uint64_t begin, uint64_t count,
                                        const std::function<double(uint64_t)>& want, const std::string& what) {
  return holds(t, data.data(), begin, count, want, what);
}

}  // namespace moreh::runtime::test_values
