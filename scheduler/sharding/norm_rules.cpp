// Normalization: layer norm over the trailing dims keeps the rows; batch norm in training keeps
// per-device statistics (as DDP without SyncBatchNorm).
#include "scheduler/sharding/rule_families.h"

#include <algorithm>

#include "scheduler/sharding/rule_helpers.h"

namespace moreh::scheduler {

using runtime::Attribute;
using runtime::Node;

namespace {

std::optional<ShardDecision> layer_norm(const Node& n, const BatchDims& b) {
  auto x = batch_of_arg(n, b, 0);
  const Attribute* ns = n.attr_of_arg(1);
  if (!x || !ns || !std::holds_alternative<std::vector<int64_t>>(*ns)) return std::nullopt;
  const int normalized = static_cast<int>(std::get<std::vector<int64_t>>(*ns).size());
  if (*x >= rank_of(n.inputs[n.input_of_arg(0)]) - normalized) return std::nullopt;
  return same_rows(n, b, {0});
}

std::optional<ShardDecision> layer_norm_backward(const Node& n, const BatchDims& b) {
  auto x = batch_of_arg(n, b, 1);
  if (!x) return std::nullopt;
  const Attribute* ns = n.attr_of_arg(2);
  if (!ns || !std::holds_alternative<std::vector<int64_t>>(*ns)) return std::nullopt;
  const int normalized = static_cast<int>(std::get<std::vector<int64_t>>(*ns).size());
  if (*x >= rank_of(n.inputs[n.input_of_arg(1)]) - normalized) return std::nullopt;
  return same_rows(n, b, {0, 1, 3, 4}, {1, 2});
}

// native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps) in training:
// per-device statistics, as DistributedDataParallel without SyncBatchNorm (docs/DATA_PARALLEL.md).
std::optional<ShardDecision> batch_norm(const Node& n, const BatchDims& b) {
  if (batch_of_arg(n, b, 0) != 0 || int_arg(n, 5, 0) == 0) return std::nullopt;
  auto d = same_rows(n, b, {0}, {}, {1, 2});
  if (!d) return std::nullopt;
  for (int arg : {3, 4}) {
    int i = n.input_of_arg(arg);
    if (i >= 0 && std::find(n.written.begin(), n.written.end(), i) != n.written.end()) d->written_local.push_back(i);
  }
  return d;
}

// native_batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd,
// train, eps, output_mask)
std::optional<ShardDecision> batch_norm_backward(const Node& n, const BatchDims& b) {
  if (batch_of_arg(n, b, 1) != 0 || int_arg(n, 7, 0) == 0) return std::nullopt;
  auto d = same_rows(n, b, {0, 1}, {1, 2});
  if (!d) return std::nullopt;
  for (int arg : {5, 6}) {
    int i = n.input_of_arg(arg);
    if (i >= 0) d->inputs[i] = {false, -1};  // -1: the per-device value as it is
  }
  return d;
}

}  // namespace

void add_norm_rules(RuleTable& t) {
  t.emplace("aten::native_layer_norm", layer_norm);
  t.emplace("aten::native_layer_norm_backward", layer_norm_backward);
  t.emplace("aten::native_batch_norm", batch_norm);
  t.emplace("aten::native_batch_norm_backward", batch_norm_backward);
}

}  // namespace moreh::scheduler
