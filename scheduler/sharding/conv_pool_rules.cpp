// Convolution and pooling: images are independent along the batch.
#include "scheduler/sharding/rule_families.h"

#include <algorithm>

#include "scheduler/sharding/rule_helpers.h"

namespace moreh::scheduler {

using runtime::Attribute;
using runtime::Node;

namespace {

// convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups) and
// convolution_backward(grad_output, input, weight, bias_sizes, ..., output_mask) -> (grad_input,
// grad_weight, grad_bias): images are independent along the batch.
std::optional<ShardDecision> convolution(const Node& n, const BatchDims& b, bool backward) {
  if (backward) {
    if (batch_of_arg(n, b, 1) != 0) return std::nullopt;
    return same_rows(n, b, {0, 1}, {1, 2});
  }
  if (batch_of_arg(n, b, 0) != 0) return std::nullopt;
  return same_rows(n, b, {0});
}

}  // namespace

void add_conv_pool_rules(RuleTable& t) {
  t.emplace("aten::max_pool2d_with_indices", [](const Node& n, const BatchDims& b) { return same_rows(n, b, {0}); });
  t.emplace("aten::max_pool2d_with_indices_backward",
       [](const Node& n, const BatchDims& b) { return same_rows(n, b, {0, 1, 7}); });
  t.emplace("aten::avg_pool2d", [](const Node& n, const BatchDims& b) { return same_rows(n, b, {0}); });
  t.emplace("aten::avg_pool2d_backward", [](const Node& n, const BatchDims& b) { return same_rows(n, b, {0, 1}); });
  t.emplace("aten::_adaptive_avg_pool2d", [](const Node& n, const BatchDims& b) { return same_rows(n, b, {0}); });
  t.emplace("aten::_adaptive_avg_pool2d_backward", [](const Node& n, const BatchDims& b) { return same_rows(n, b, {0, 1}); });
  t.emplace("aten::convolution", [](const Node& n, const BatchDims& b) { return convolution(n, b, false); });
  t.emplace("aten::convolution_backward", [](const Node& n, const BatchDims& b) { return convolution(n, b, true); });
}

}  // namespace moreh::scheduler
