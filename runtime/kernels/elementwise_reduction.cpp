#include "runtime/kernels/elementwise_reduction.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>
#include <type_traits>

#include "runtime/base/low_precision_float.h"

namespace moreh::runtime {
namespace {

// How a stored element widens to its accumulator and narrows back.
template <DataType T>
struct Storage;
template <>
struct Storage<DataType::kFloat32> {
  using Stored = float;
  using Acc = float;
  static Acc load(Stored v) { return v; }
  static Stored store(Acc v) { return v; }
};
template <>
struct Storage<DataType::kFloat64> {
  using Stored = double;
  using Acc = double;
  static Acc load(Stored v) { return v; }
  static Stored store(Acc v) { return v; }
};
template <>
struct Storage<DataType::kBFloat16> {
  using Stored = uint16_t;
  using Acc = float;
  static Acc load(Stored v) { return bfloat16_to_float(v); }
  static Stored store(Acc v) { return float_to_bfloat16(v); }
};
template <>
struct Storage<DataType::kFloat16> {
  using Stored = uint16_t;
  using Acc = float;
  static Acc load(Stored v) { return float16_to_float(v); }
  static Stored store(Acc v) { return float_to_float16(v); }
};
template <>
struct Storage<DataType::kInt64> {
  using Stored = int64_t;
  using Acc = int64_t;
  static Acc load(Stored v) { return v; }
  static Stored store(Acc v) { return v; }
};
template <>
struct Storage<DataType::kInt32> {
  using Stored = int32_t;
  using Acc = int32_t;
  static Acc load(Stored v) { return v; }
  static Stored store(Acc v) { return v; }
};

template <class A>
A combine(ReduceOp op, A a, A b) {
  if constexpr (std::is_integral_v<A>) {
    using U = std::make_unsigned_t<A>;
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg: return static_cast<A>(static_cast<U>(a) + static_cast<U>(b));
      case ReduceOp::kProd: return static_cast<A>(static_cast<U>(a) * static_cast<U>(b));
      case ReduceOp::kMax: return std::max(a, b);
      case ReduceOp::kMin: return std::min(a, b);
    }
  } else {
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg: return a + b;
      case ReduceOp::kProd: return a * b;
      case ReduceOp::kMax: return (a > b || a != a) ? a : b;
      case ReduceOp::kMin: return (a < b || a != a) ? a : b;
    }
  }
  return a;
}

template <DataType T>
void reduce_typed(ReduceOp op, std::span<const void* const> inputs, void* out, uint64_t count) {
  using S = Storage<T>;
  using Stored = typename S::Stored;
  using Acc = typename S::Acc;
  // Blocks keep the accumulator in cache and let `out` alias an input: a block is read from every input
  // before it is written.
  constexpr uint64_t kBlock = 1024;
  Acc acc[kBlock];
  auto* dst = static_cast<Stored*>(out);
  for (uint64_t begin = 0; begin < count; begin += kBlock) {
    const uint64_t n = std::min(kBlock, count - begin);
    const auto* first = static_cast<const Stored*>(inputs[0]) + begin;
    for (uint64_t i = 0; i < n; ++i) acc[i] = S::load(first[i]);
    for (size_t k = 1; k < inputs.size(); ++k) {
      const auto* src = static_cast<const Stored*>(inputs[k]) + begin;
      for (uint64_t i = 0; i < n; ++i) acc[i] = combine(op, acc[i], S::load(src[i]));
    }
    if (op == ReduceOp::kAvg) {
      const Acc divisor = static_cast<Acc>(inputs.size());
      for (uint64_t i = 0; i < n; ++i) acc[i] /= divisor;
    }
    for (uint64_t i = 0; i < n; ++i) dst[begin + i] = S::store(acc[i]);
  }
}

}  // namespace

void reduce_elements(DataType type, ReduceOp op, std::span<const void* const> inputs, void* out, uint64_t count) {
  if (inputs.empty() || count == 0) return;
  switch (type) {
    case DataType::kFloat32: return reduce_typed<DataType::kFloat32>(op, inputs, out, count);
    case DataType::kFloat64: return reduce_typed<DataType::kFloat64>(op, inputs, out, count);
    case DataType::kBFloat16: return reduce_typed<DataType::kBFloat16>(op, inputs, out, count);
    case DataType::kFloat16: return reduce_typed<DataType::kFloat16>(op, inputs, out, count);
    case DataType::kInt64: return reduce_typed<DataType::kInt64>(op, inputs, out, count);
    case DataType::kInt32: return reduce_typed<DataType::kInt32>(op, inputs, out, count);
    case DataType::kBool: break;
  }
  throw std::invalid_argument(fmt::format("cannot reduce {} elements", name_of(type)));
}

}  // namespace moreh::runtime
