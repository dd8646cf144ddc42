// Combining N equally long arrays element by element: the arithmetic of a reducing collective, on the
// host. bfloat16 and float16 accumulate in float and round once.
#pragma once
#include <cstdint>
#include <span>
#include <string_view>

#include "runtime/base/data_type.h"

namespace moreh::runtime {

enum class ReduceOp : uint8_t { kSum, kAvg, kMax, kMin, kProd };

constexpr std::string_view name_of(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
    case ReduceOp::kProd: return "prod";
  }
  return "?";
}

// out[i] = inputs[0][i] op inputs[1][i] op ... for i < count, combined in the order of `inputs` (so every
// caller that lists the same inputs gets the same bits). kAvg is the sum divided by inputs.size()
// (truncating toward zero for integers). max and min propagate NaN, as torch does. Integer sums and
// products wrap. `out` may be one of the inputs (in place) but must not partly overlap one.
void reduce_elements(DataType type, ReduceOp op, std::span<const void* const> inputs, void* out, uint64_t count);

}  // namespace moreh::runtime
