#include "scheduler/sharding/rule_helpers.h"

#include <algorithm>

namespace moreh::scheduler {

using runtime::Attribute;
using runtime::Node;

int64_t int_arg(const Node& n, int arg, int64_t fallback) {
  const Attribute* a = n.attr_of_arg(arg);
  if (a && std::holds_alternative<int64_t>(*a)) return std::get<int64_t>(*a);
  if (a && std::holds_alternative<bool>(*a)) return std::get<bool>(*a);
  return fallback;
}

double step_value_arg(const Node& n, int arg) {
  const Attribute* a = n.attr_of_arg(arg);
  if (a && std::holds_alternative<runtime::StepValue>(*a)) return std::get<runtime::StepValue>(*a).value;
  return 0;
}

// A dim list argument (None or [] means every dim), normalized against `rank`.
std::vector<int> dims_arg(const Node& n, int arg, int rank) {
  std::vector<int> dims;
  const Attribute* a = n.attr_of_arg(arg);
  if (a && std::holds_alternative<std::vector<int64_t>>(*a)) {
    for (int64_t d : std::get<std::vector<int64_t>>(*a)) dims.push_back(static_cast<int>(d < 0 ? d + rank : d));
  } else if (a && std::holds_alternative<int64_t>(*a)) {
    int64_t d = std::get<int64_t>(*a);
    dims.push_back(static_cast<int>(d < 0 ? d + rank : d));
  }
  if (dims.empty())
    for (int d = 0; d < rank; ++d) dims.push_back(d);
  return dims;
}

int rank_of(const runtime::TensorRef& r) { return static_cast<int>(r.sizes.size()); }

int normalize(int64_t dim, int rank) { return static_cast<int>(dim < 0 ? dim + rank : dim); }

// The input (by schema argument) and the dim where its batch lies, if it is split.
std::optional<int> batch_of_arg(const Node& n, const BatchDims& b, int arg) {
  int i = n.input_of_arg(arg);
  return i < 0 ? std::nullopt : b[i];
}

ShardDecision whole_inputs(const Node& n) {
  ShardDecision d;
  d.inputs.assign(n.inputs.size(), InputUse{});
  return d;
}

OutputSpec shard(int dim, bool scale) { return {OutputSpec::Kind::kShard, dim, scale}; }
OutputSpec partial(bool scale) { return {OutputSpec::Kind::kPartial, 0, scale}; }

// Ops where every listed input has the batch on the same dim as the first, and every output keeps it.
std::optional<ShardDecision> same_rows(const Node& n, const BatchDims& b, std::vector<int> batch_args,
                                       std::vector<int> partial_rets, std::vector<int> local_rets, bool groups) {
  std::optional<int> dim;
  for (int arg : batch_args) {
    auto x = batch_of_arg(n, b, arg);
    if (x) {
      if (dim && *dim != *x) return std::nullopt;
      dim = x;
    }
  }
  if (!dim) return std::nullopt;
  ShardDecision d = whole_inputs(n);
  int rows_extent = -1;
  for (int arg : batch_args) {
    int i = n.input_of_arg(arg);
    if (i < 0) continue;
    if (*dim >= rank_of(n.inputs[i])) return std::nullopt;
    int64_t s = n.inputs[i].sizes[*dim];
    if (rows_extent < 0) rows_extent = static_cast<int>(s);
    else if (s != rows_extent && !(groups && s > 0 && rows_extent % s == 0)) return std::nullopt;
    d.inputs[i] = {true, *dim};
  }
  for (size_t k = 0; k < n.outputs.size(); ++k) {
    int ret = n.output_rets.size() > k ? n.output_rets[k] : static_cast<int>(k);
    if (std::find(partial_rets.begin(), partial_rets.end(), ret) != partial_rets.end()) d.outputs.push_back(partial());
    else if (std::find(local_rets.begin(), local_rets.end(), ret) != local_rets.end())
      d.outputs.push_back({OutputSpec::Kind::kLocal, 0, false});
    else if (*dim < rank_of(n.outputs[k])) d.outputs.push_back(shard(*dim));
    else return std::nullopt;
  }
  return d;
}

}  // namespace moreh::scheduler
