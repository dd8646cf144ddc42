// Shape ops that are nodes (views are not): cat along another dim than the batch's.
#include "scheduler/sharding/rule_families.h"

#include <algorithm>

#include "scheduler/sharding/rule_helpers.h"

namespace moreh::scheduler {

using runtime::Attribute;
using runtime::Node;

namespace {

// cat(tensors, dim): along another dim than the batch's.
std::optional<ShardDecision> cat(const Node& n, const BatchDims& b) {
  std::optional<int> dim;
  int64_t extent = 0;
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    if (!b[i]) continue;
    if (dim && *dim != *b[i]) return std::nullopt;
    dim = b[i];
    extent = n.inputs[i].sizes[*dim];
  }
  if (!dim || n.outputs.size() != 1) return std::nullopt;
  if (normalize(int_arg(n, 1, 0), rank_of(n.outputs[0])) == *dim) {
    // Along the split dim: when every input is split there alike, each device concatenates its parts, and the
    // output's split runs through one block per input (the backward's cat(dq, dk, dv) under tensor parallelism).
    ShardDecision d = whole_inputs(n);
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      if (!b[i] || *b[i] != *dim || n.inputs[i].sizes[*dim] != extent) return std::nullopt;
      d.inputs[i] = {true, *dim};
    }
    OutputSpec out = shard(*dim);
    out.concat_blocks = true;
    d.outputs.push_back(out);
    return d;
  }
  ShardDecision d = whole_inputs(n);
  for (size_t i = 0; i < n.inputs.size(); ++i) {  // the others are cut to the same rows
    if (n.inputs[i].sizes.size() == 1 && n.inputs[i].sizes[0] == 0) continue;  // cat skips legacy empty tensors
    if (rank_of(n.inputs[i]) <= *dim || n.inputs[i].sizes[*dim] != extent) return std::nullopt;
    d.inputs[i] = {true, *dim};
  }
  d.outputs.push_back(shard(*dim));
  return d;
}

}  // namespace

void add_shape_rules(RuleTable& t) {
  t.emplace("aten::cat", cat);
}

}  // namespace moreh::scheduler
