// The matmul family: a split row operand gives split rows; a split contraction a partial sum.
#include "scheduler/sharding/rule_families.h"

#include <algorithm>

#include "scheduler/sharding/rule_helpers.h"

namespace moreh::scheduler {

using runtime::Attribute;
using runtime::Node;

namespace {

// mm / addmm / bmm / baddbmm: row operand split -> rows of the result; column operand split -> columns
// of the result (a column-parallel linear layer); a split contraction (mm, addmm) -> a partial sum, the
// bias added on one device.
std::optional<ShardDecision> matmul(const Node& n, const BatchDims& b, int self_arg, int other_arg, int bias_arg,
                                    bool batched) {
  auto a = batch_of_arg(n, b, self_arg), m = batch_of_arg(n, b, other_arg);
  const int ai = n.input_of_arg(self_arg), mi = n.input_of_arg(other_arg);
  if (ai < 0 || mi < 0) return std::nullopt;
  ShardDecision d = whole_inputs(n);
  if (batched) {  // bmm: the batch of matrices is split on both operands (a replicated one is cut)
    if ((a && *a != 0) || (m && *m != 0) || (!a && !m)) return std::nullopt;
    if (n.inputs[mi].sizes[0] != n.inputs[ai].sizes[0]) return std::nullopt;
    d.inputs[ai] = {true, 0};
    d.inputs[mi] = {true, 0};
    int bi = bias_arg >= 0 ? n.input_of_arg(bias_arg) : -1;
    if (bi >= 0) {
      const auto& s = n.inputs[bi].sizes;
      if (s.size() == 3 && s[0] == n.inputs[ai].sizes[0]) d.inputs[bi] = {true, 0};
      else if (b[bi]) return std::nullopt;
    }
    d.outputs.push_back(shard(0));
    return d;
  }
  if (a == 0 && !m) {
    d.inputs[ai] = {true, 0};
    int bi = bias_arg >= 0 ? n.input_of_arg(bias_arg) : -1;
    if (bi >= 0) {
      const auto& s = n.inputs[bi].sizes;
      if (s.size() == 2 && s[0] == n.inputs[ai].sizes[0] && s[0] != 1) d.inputs[bi] = {true, 0};
      else if (b[bi]) return std::nullopt;
    }
    d.outputs.push_back(shard(0));
    return d;
  }
  if (m == 1 && !a) {  // columns: the bias (a row of them, or a matrix) is cut to the same columns
    d.inputs[mi] = {true, 1};
    int bi = bias_arg >= 0 ? n.input_of_arg(bias_arg) : -1;
    if (bi >= 0) {
      const auto& s = n.inputs[bi].sizes;
      const int64_t cols = n.inputs[mi].sizes[1];
      if (s.size() == 1 && s[0] == cols && cols != 1) d.inputs[bi] = {true, 0};
      else if (s.size() == 2 && s[1] == cols && cols != 1) d.inputs[bi] = {true, 1};
      else if (b[bi]) return std::nullopt;
    }
    d.outputs.push_back(shard(1));
    return d;
  }
  // A split contraction: the side that is not split is cut to the same rows; a whole bias is added once.
  if ((a == 1 && (!m || m == 0)) || (!a && m == 0)) {
    if (n.inputs[ai].sizes.size() != 2 || n.inputs[ai].sizes[1] != n.inputs[mi].sizes[0]) return std::nullopt;
    int bi = bias_arg >= 0 ? n.input_of_arg(bias_arg) : -1;
    if (bi >= 0) {
      if (b[bi]) return std::nullopt;
      d.first_device_beta = 3;  // addmm(self, mat1, mat2, *, beta, alpha)
    }
    d.inputs[ai] = {true, 1};
    d.inputs[mi] = {true, 0};
    d.outputs.push_back(partial());
    return d;
  }
  return std::nullopt;
}

}  // namespace

void add_matmul_rules(RuleTable& t) {
  t.emplace("aten::mm", [](const Node& n, const BatchDims& b) { return matmul(n, b, 0, 1, -1, false); });
  t.emplace("aten::mm.out", [](const Node& n, const BatchDims& b) { return matmul(n, b, 0, 1, -1, false); });
  t.emplace("aten::addmm", [](const Node& n, const BatchDims& b) { return matmul(n, b, 1, 2, 0, false); });
  t.emplace("aten::bmm", [](const Node& n, const BatchDims& b) { return matmul(n, b, 0, 1, -1, true); });
  t.emplace("aten::baddbmm", [](const Node& n, const BatchDims& b) { return matmul(n, b, 1, 2, 0, true); });
}

}  // namespace moreh::scheduler
