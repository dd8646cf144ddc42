// How one recorded elementwise node is written in a fused kernel's IR (runtime/kernels/elementwise_kernel.h), by
// operator name, following what torch's kernels compute: operands are taken to the node's result type,
// reduced-precision types compute in float and round once per op (as ATen's opmath does), scalars that
// are per-step data (StepValue) become kernel parameters and integers recorded in the graph constants.
#pragma once
#include <functional>
#include <optional>

#include "runtime/base/data_type.h"
#include "runtime/kernels/elementwise_kernel.h"
#include "runtime/graph/step_graph.h"

namespace moreh::scheduler {

struct FusionLowering {
  runtime::ElementwiseKernel& kernel;
  const runtime::Node& node;
  runtime::DataType result;  // the type of the tensor the node produces or writes
  // The value of node input i, of its recorded type.
  std::function<runtime::ElementwiseValue(size_t input)> input;
  // A kernel scalar of `type`, bound at each launch to the node's attribute `attr` (a StepValue).
  std::function<runtime::ElementwiseValue(size_t attr, runtime::DataType type)> scalar;
};

// The node's result, of type `result`; std::nullopt (or std::invalid_argument from the IR builders) when
// this instance cannot be fused (an attribute or type combination the rule does not cover).
using FusionRule = std::function<std::optional<runtime::ElementwiseValue>(FusionLowering&)>;

// The rule for an operator, or nullptr for an operator that is never fused.
const FusionRule* fusion_rule(runtime::OpId op);

// The type float16 and bfloat16 compute in (float); others compute in their own type.
runtime::DataType compute_type_of(runtime::DataType type);

}  // namespace moreh::scheduler
