#include "scheduler/sharding/sharding_rules.h"

#include "scheduler/sharding/rule_families.h"

namespace moreh::scheduler {
namespace {

const RuleTable& rules() {
  static const RuleTable* table = [] {
    auto* t = new RuleTable;
    for (auto add : {add_pointwise_rules, add_matmul_rules, add_reduction_rules, add_norm_rules, add_loss_rules,
                     add_embedding_rules, add_shape_rules, add_attention_rules, add_conv_pool_rules})
      add(*t);
    return t;
  }();
  return *table;
}

}  // namespace

std::optional<ShardDecision> shard_rule(const runtime::Node& node, const BatchDims& batch_dims) {
  const auto& table = rules();
  const std::string& name = runtime::op_name(node.op);
  // The table's rules handle their ops' randomness (dropout draws the whole batch's mask, attention splits
  // only without dropout). Other random ops would draw the same numbers on every device.
  auto it = table.find(name);
  if (it != table.end()) return it->second(node, batch_dims);
  if (runtime::op_facts(node.op).seeded) return std::nullopt;
  if (runtime::op_facts(node.op).pointwise) return pointwise(node, batch_dims);
  return std::nullopt;
}

bool has_rule(runtime::OpId op) { return runtime::op_facts(op).pointwise || rules().count(runtime::op_name(op)) > 0; }

}  // namespace moreh::scheduler
