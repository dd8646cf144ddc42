// Embedding lookups and index_select: split indices give split rows; the weight gradient is a partial sum.
#include "scheduler/sharding/rule_families.h"

#include <algorithm>

#include "scheduler/sharding/rule_helpers.h"

namespace moreh::scheduler {

using runtime::Attribute;
using runtime::Node;

namespace {

// embedding(weight, indices, padding_idx, scale_grad_by_freq, sparse)
std::optional<ShardDecision> embedding(const Node& n, const BatchDims& b) {
  auto idx = batch_of_arg(n, b, 1);
  if (!idx || b[n.input_of_arg(0)]) return std::nullopt;
  ShardDecision d = whole_inputs(n);
  d.inputs[n.input_of_arg(1)] = {true, *idx};
  d.outputs.push_back(shard(*idx));
  return d;
}

// embedding_dense_backward(grad_output, indices, num_weights, padding_idx, scale_grad_by_freq)
std::optional<ShardDecision> embedding_backward(const Node& n, const BatchDims& b) {
  if (int_arg(n, 4, 0) != 0) return std::nullopt;  // frequencies are counted over the whole batch
  auto idx = batch_of_arg(n, b, 1);
  auto g = batch_of_arg(n, b, 0);
  if (!idx || g != idx) return std::nullopt;
  ShardDecision d = whole_inputs(n);
  d.inputs[n.input_of_arg(0)] = {true, *idx};
  d.inputs[n.input_of_arg(1)] = {true, *idx};
  d.outputs.push_back(partial());
  return d;
}

// index_select(self, dim, index)
std::optional<ShardDecision> index_select(const Node& n, const BatchDims& b) {
  const int si = n.input_of_arg(0), ii = n.input_of_arg(2);
  const int dim = normalize(int_arg(n, 1, 0), rank_of(n.inputs[si]));
  ShardDecision d = whole_inputs(n);
  if (b[ii] && !b[si]) {
    if (*b[ii] != 0) return std::nullopt;
    d.inputs[ii] = {true, 0};
    d.outputs.push_back(shard(dim));
    return d;
  }
  if (b[si] && !b[ii] && *b[si] != dim) {
    d.inputs[si] = {true, *b[si]};
    d.outputs.push_back(shard(*b[si]));
    return d;
  }
  return std::nullopt;
}

}  // namespace

void add_embedding_rules(RuleTable& t) {
  t.emplace("aten::embedding", embedding);
  t.emplace("aten::embedding_dense_backward", embedding_backward);
  t.emplace("aten::index_select", index_select);
}

}  // namespace moreh::scheduler
