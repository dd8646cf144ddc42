// Losses: nll_loss and mse_loss over split rows; a mean becomes the global mean.
#include "scheduler/sharding/rule_families.h"

#include <algorithm>

#include "scheduler/sharding/rule_helpers.h"

namespace moreh::scheduler {

using runtime::Attribute;
using runtime::Node;

namespace {

// nll_loss_forward(self, target, weight, reduction, ignore_index) -> (output, total_weight)
std::optional<ShardDecision> nll_loss(const Node& n, const BatchDims& b) {
  if (batch_of_arg(n, b, 0) != 0 || rank_of(n.inputs[n.input_of_arg(0)]) < 2) return std::nullopt;
  const int64_t reduction = int_arg(n, 3, 1);
  const int self = n.input_of_arg(0), target = n.input_of_arg(1);
  if (self < 0 || target < 0 || (b[target] && b[target] != 0)) return std::nullopt;
  if (n.inputs[target].sizes.empty() || n.inputs[target].sizes[0] != n.inputs[self].sizes[0]) return std::nullopt;
  ShardDecision d = whole_inputs(n);
  d.inputs[self] = {true, 0};
  d.inputs[target] = {true, 0};
  for (size_t k = 0; k < n.outputs.size(); ++k) {
    // output: per row (none) or a sum over the rows; total_weight: a sum over the rows
    if (n.output_rets[k] == 0 && reduction == 0) d.outputs.push_back(shard(0));
    else d.outputs.push_back(partial());
  }
  d.loss_mean = reduction == 1;
  if (d.loss_mean && (n.output_of_ret(0) < 0 || n.output_of_ret(1) < 0)) return std::nullopt;
  return d;
}

// nll_loss_backward(grad_output, self, target, weight, reduction, ignore_index, total_weight)
std::optional<ShardDecision> nll_loss_backward(const Node& n, const BatchDims& b) {
  if (batch_of_arg(n, b, 1) != 0) return std::nullopt;
  const int64_t reduction = int_arg(n, 4, 1);
  return reduction == 0 ? same_rows(n, b, {0, 1, 2}) : same_rows(n, b, {1, 2});
}

// mse_loss(self, target, reduction); mse_loss_backward(grad_output, self, target, reduction)
std::optional<ShardDecision> mse_loss(const Node& n, const BatchDims& b, bool backward) {
  const int self = backward ? 1 : 0;
  const int64_t reduction = int_arg(n, backward ? 3 : 2, 1);
  if (!batch_of_arg(n, b, self)) return std::nullopt;
  if (reduction == 0) return pointwise(n, b);
  const int x = n.input_of_arg(self), y = n.input_of_arg(self + 1);
  const auto bd = batch_of_arg(n, b, self);
  if (x < 0 || y < 0 || n.inputs[x].sizes != n.inputs[y].sizes || (b[y] && b[y] != bd)) return std::nullopt;
  ShardDecision d = whole_inputs(n);
  d.inputs[x] = {true, *bd};
  d.inputs[y] = {true, *bd};
  // The loss: a sum over the rows (a mean: each device's share of it). Its gradient divides by the global
  // count where the local kernel divided by the local one.
  if (backward) d.outputs.push_back(shard(*bd, reduction == 1));
  else d.outputs.push_back(partial(reduction == 1));
  return d;
}

}  // namespace

void add_loss_rules(RuleTable& t) {
  t.emplace("aten::nll_loss_forward", nll_loss);
  t.emplace("aten::nll_loss_backward", nll_loss_backward);
  t.emplace("aten::nll_loss2d_forward", nll_loss);
  t.emplace("aten::nll_loss2d_backward", nll_loss_backward);
  t.emplace("aten::mse_loss", [](const Node& n, const BatchDims& b) { return mse_loss(n, b, false); });
  t.emplace("aten::mse_loss_backward", [](const Node& n, const BatchDims& b) { return mse_loss(n, b, true); });
}

}  // namespace moreh::scheduler
