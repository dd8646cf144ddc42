// The sharding rules by op family, each in its own file (DTensor's _ops/ layout): a family adds its ops'
// rules to the table shard_rule() looks an op up in.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>

#include "scheduler/sharding/sharding_rules.h"

namespace moreh::scheduler {

// The strategy for one op: how it runs on each device's rows given where the batch lies in its inputs
// (nullopt: it cannot, and runs on gathered inputs).
using ShardRule = std::function<std::optional<ShardDecision>(const runtime::Node&, const BatchDims&)>;
using RuleTable = std::unordered_map<std::string, ShardRule>;

void add_pointwise_rules(RuleTable& t);   // pointwise_rules.cpp
void add_matmul_rules(RuleTable& t);      // matmul_rules.cpp
void add_reduction_rules(RuleTable& t);   // reduction_rules.cpp
void add_norm_rules(RuleTable& t);        // norm_rules.cpp
void add_loss_rules(RuleTable& t);        // loss_rules.cpp
void add_embedding_rules(RuleTable& t);   // embedding_rules.cpp
void add_shape_rules(RuleTable& t);       // shape_rules.cpp
void add_attention_rules(RuleTable& t);   // attention_rules.cpp
void add_conv_pool_rules(RuleTable& t);   // conv_pool_rules.cpp

// Any pointwise op (torch's `pointwise` tag): the rule for ops the table does not name.
std::optional<ShardDecision> pointwise(const runtime::Node& n, const BatchDims& b);

}  // namespace moreh::scheduler
