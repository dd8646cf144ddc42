// Pointwise ops (torch's `pointwise` tag, and the elementwise backward ops, dropout, copies, where and
// masked_fill): the batch stays where the split input has it, broadcast inputs are whole.
#include "scheduler/sharding/rule_families.h"

#include <algorithm>

#include "scheduler/sharding/rule_helpers.h"

namespace moreh::scheduler {

using runtime::Node;

// Every output of a pointwise op has the broadcast shape; the batch sits where the split input's does,
// counted from the right. Inputs of lower rank or size 1 there (broadcast) are taken whole.
std::optional<ShardDecision> pointwise(const Node& n, const BatchDims& b) {
  int lead = -1;
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    if (!b[i]) continue;
    auto numel = [&](size_t k) {
      int64_t e = 1;
      for (int64_t s : n.inputs[k].sizes) e *= s;
      return e;
    };
    if (lead < 0 || numel(i) > numel(static_cast<size_t>(lead))) lead = static_cast<int>(i);
  }
  if (lead < 0) return std::nullopt;
  const auto& shape = !n.outputs.empty() ? n.outputs[0].sizes : n.inputs[n.written.empty() ? lead : n.written[0]].sizes;
  const int rank = static_cast<int>(shape.size());
  const int k = *b[lead] + rank - rank_of(n.inputs[lead]);
  if (k < 0 || k >= rank) return std::nullopt;
  ShardDecision d = whole_inputs(n);
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    int a = k - (rank - rank_of(n.inputs[i]));
    if (a >= 0 && n.inputs[i].sizes[a] == shape[k] && shape[k] != 1) d.inputs[i] = {true, a};
    else if (b[i]) return std::nullopt;  // a split input that is not aligned with the output's batch
  }
  for (const auto& o : n.outputs) {
    if (rank_of(o) != rank) return std::nullopt;
    d.outputs.push_back(shard(k));
  }
  return d;
}

void add_pointwise_rules(RuleTable& t) {
  t.emplace("aten::native_dropout", [](const Node& n, const BatchDims& b) { return pointwise(n, b); });
  t.emplace("aten::native_dropout_backward", pointwise);
  t.emplace("aten::copy_", pointwise);
  t.emplace("aten::clone", pointwise);
  t.emplace("aten::_to_copy", pointwise);
  t.emplace("aten::gelu_backward", pointwise);
  t.emplace("aten::threshold_backward", pointwise);
  t.emplace("aten::silu_backward", pointwise);
  t.emplace("aten::tanh_backward", pointwise);
  t.emplace("aten::sigmoid_backward", pointwise);
  t.emplace("aten::where.self", pointwise);
  t.emplace("aten::where.self_out", pointwise);
  t.emplace("aten::masked_fill.Scalar", pointwise);
  t.emplace("aten::masked_fill.Tensor", pointwise);
  t.emplace("aten::masked_fill_.Scalar", pointwise);
  t.emplace("aten::masked_fill_.Tensor", pointwise);
  // A constant written over a tensor in place (torch.zeros_like's zero_): any part of it by itself.
  t.emplace("aten::zero_", pointwise);
  t.emplace("aten::fill_.Scalar", pointwise);
}

}  // namespace moreh::scheduler
