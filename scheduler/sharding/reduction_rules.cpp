// Reductions and softmax: over the batch a partial sum (a mean scaled by the share), over other dims the
// rows stay split; softmax along a dim other than the batch.
#include "scheduler/sharding/rule_families.h"

#include <algorithm>

#include "scheduler/sharding/rule_helpers.h"

namespace moreh::scheduler {

using runtime::Attribute;
using runtime::Node;

namespace {

// sum / mean over dims: the batch reduced -> a partial sum (a mean scaled by the device's share); kept ->
// the batch moves left past the reduced dims unless keepdim.
std::optional<ShardDecision> reduction(const Node& n, const BatchDims& b, bool mean, int dim_arg, int keepdim_arg) {
  if (!b[0] || n.outputs.size() != 1) return std::nullopt;
  const int rank = rank_of(n.inputs[0]);
  const int bd = *b[0];
  std::vector<int> dims = dim_arg >= 0 ? dims_arg(n, dim_arg, rank) : dims_arg(n, -1, rank);
  const bool keepdim = keepdim_arg >= 0 && int_arg(n, keepdim_arg, 0) != 0;
  ShardDecision d = whole_inputs(n);
  d.inputs[0] = {true, bd};
  if (std::find(dims.begin(), dims.end(), bd) != dims.end()) {
    d.outputs.push_back(partial(mean));
  } else {
    int out = bd;
    if (!keepdim)
      for (int r : dims)
        if (r < bd) --out;
    d.outputs.push_back(shard(out));
  }
  return d;
}

// all / any / amax / amin / logsumexp over dims other than the batch's: the rows stay split. (Over the
// batch they would need a max- or and-reduction across devices: no rule, they run replicated.)
std::optional<ShardDecision> reduce_other_dims(const Node& n, const BatchDims& b, int dim_arg, int keepdim_arg) {
  if (!b[0] || n.outputs.size() != 1) return std::nullopt;
  const int rank = rank_of(n.inputs[0]);
  std::vector<int> dims = dims_arg(n, dim_arg, rank);
  if (std::find(dims.begin(), dims.end(), *b[0]) != dims.end()) return std::nullopt;
  return reduction(n, b, false, dim_arg, keepdim_arg);
}

// softmax-like ops over `dim`: fine unless they normalize across the batch.
std::optional<ShardDecision> along_dim(const Node& n, const BatchDims& b, std::vector<int> batch_args, int dim_arg) {
  auto first = batch_of_arg(n, b, batch_args[0]);
  int i = n.input_of_arg(batch_args[0]);
  if (!first || i < 0) return std::nullopt;
  if (normalize(int_arg(n, dim_arg, -1), rank_of(n.inputs[i])) == *first) return std::nullopt;
  return same_rows(n, b, std::move(batch_args));
}

}  // namespace

void add_reduction_rules(RuleTable& t) {
  t.emplace("aten::sum.dim_IntList", [](const Node& n, const BatchDims& b) { return reduction(n, b, false, 1, 2); });
  t.emplace("aten::sum", [](const Node& n, const BatchDims& b) { return reduction(n, b, false, -1, -1); });
  t.emplace("aten::mean.dim", [](const Node& n, const BatchDims& b) { return reduction(n, b, true, 1, 2); });
  t.emplace("aten::mean", [](const Node& n, const BatchDims& b) { return reduction(n, b, true, -1, -1); });
  t.emplace("aten::_log_softmax", [](const Node& n, const BatchDims& b) { return along_dim(n, b, {0}, 1); });
  t.emplace("aten::_softmax", [](const Node& n, const BatchDims& b) { return along_dim(n, b, {0}, 1); });
  t.emplace("aten::_log_softmax_backward_data", [](const Node& n, const BatchDims& b) { return along_dim(n, b, {0, 1}, 2); });
  t.emplace("aten::_softmax_backward_data", [](const Node& n, const BatchDims& b) { return along_dim(n, b, {0, 1}, 2); });
  t.emplace("aten::all.dim", [](const Node& n, const BatchDims& b) { return reduce_other_dims(n, b, 1, 2); });
  t.emplace("aten::any.dim", [](const Node& n, const BatchDims& b) { return reduce_other_dims(n, b, 1, 2); });
  t.emplace("aten::amax", [](const Node& n, const BatchDims& b) { return reduce_other_dims(n, b, 1, 2); });
  t.emplace("aten::amin", [](const Node& n, const BatchDims& b) { return reduce_other_dims(n, b, 1, 2); });
  t.emplace("aten::logsumexp", [](const Node& n, const BatchDims& b) { return reduce_other_dims(n, b, 1, 2); });
}

}  // namespace moreh::scheduler
