// What the sharding rule families share: reading a node's arguments by schema position, and the decisions
// most rules build on (every input whole; outputs split, partial or per device; rows that stay split).
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "scheduler/sharding/sharding_rules.h"

namespace moreh::scheduler {

// An integer (or bool) attribute at schema argument `arg`, else `fallback`.
int64_t int_arg(const runtime::Node& n, int arg, int64_t fallback);
// A floating-point attribute (step data) at `arg`, else 0.
double step_value_arg(const runtime::Node& n, int arg);
// A dim list argument (None or [] means every dim), normalized against `rank`.
std::vector<int> dims_arg(const runtime::Node& n, int arg, int rank);
int rank_of(const runtime::TensorRef& r);
int normalize(int64_t dim, int rank);
// Where the batch lies in the input that is schema argument `arg`, if it is split.
std::optional<int> batch_of_arg(const runtime::Node& n, const BatchDims& b, int arg);
// A decision with every input whole and no outputs yet.
ShardDecision whole_inputs(const runtime::Node& n);
OutputSpec shard(int dim, bool scale = false);
OutputSpec partial(bool scale = false);
// Every input of `batch_args` has the batch on the same dim as the first, and every output keeps it (the
// returns in `partial_rets` become partial sums, those in `local_rets` per-device values). The inputs'
// extents along that dim are equal, or (`groups`) each divides the first one's: grouped-query attention's
// key heads, each serving a group of query heads, split into as many even parts as those.
std::optional<ShardDecision> same_rows(const runtime::Node& n, const BatchDims& b, std::vector<int> batch_args,
                                       std::vector<int> partial_rets = {}, std::vector<int> local_rets = {},
                                       bool groups = false);

}  // namespace moreh::scheduler
