#include "scheduler/analysis/linear_pairs.h"

#include <optional>
#include <set>

namespace moreh::scheduler {

using runtime::Node;
using runtime::TensorRef;

namespace {

struct Linear {
  uint32_t weight = 0;
  int64_t bias = -1;
  int64_t in = 0, out = 0;
  int x = 0;  // the input holding the activations
};

// A whole 2-D weight [out, in] read as its transpose [in, out].
bool transposed_weight(const TensorRef& r, uint64_t bytes) {
  return r.sizes.size() == 2 && r.offset == 0 && r.strides[0] == 1 && r.strides[1] == r.sizes[0] &&
         static_cast<uint64_t>(r.sizes[0] * r.sizes[1]) * r.itemsize == bytes;
}

std::optional<Linear> linear(const Node& n, const std::vector<uint32_t>& slots, const runtime::CanonicalGraph& cg) {
  static const runtime::OpId kAddmm = runtime::intern_op("aten::addmm"), kMm = runtime::intern_op("aten::mm");
  const bool addmm = n.op == kAddmm && n.inputs.size() == 3, mm = n.op == kMm && n.inputs.size() == 2;
  if (!(addmm || mm) || n.outputs.size() != 1 || !n.written.empty()) return std::nullopt;
  const int x = addmm ? 1 : 0, w = x + 1;
  const TensorRef& wr = n.inputs[w];
  if (!transposed_weight(wr, cg.buffers[slots[w]].bytes) || n.inputs[x].sizes.size() != 2) return std::nullopt;
  Linear l{slots[w], -1, wr.sizes[0], wr.sizes[1], x};
  if (slots[w] == slots[x]) return std::nullopt;
  if (addmm) {
    const TensorRef& b = n.inputs[0];
    if (b.sizes.size() != 1 || b.sizes[0] != l.out || b.strides[0] != 1 || b.offset != 0 ||
        static_cast<uint64_t>(l.out) * b.itemsize != cg.buffers[slots[0]].bytes)
      return std::nullopt;
    l.bias = slots[0];
  }
  return l;
}

int64_t numel(const TensorRef& r) {
  int64_t n = 1;
  for (int64_t s : r.sizes) n *= s;
  return n;
}

}  // namespace

std::vector<LinearPair> find_linear_pairs(const runtime::StepGraph& graph, const runtime::CanonicalGraph& cg) {
  const auto& nodes = graph.nodes();
  // The first node after `after` that reads slot s.
  auto first_reader = [&](uint32_t s, size_t after) -> std::optional<size_t> {
    for (size_t i = after + 1; i < nodes.size(); ++i)
      for (uint32_t t : cg.node_inputs[i])
        if (t == s) return i;
    return std::nullopt;
  };
  std::vector<LinearPair> pairs;
  std::set<uint32_t> taken;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const auto first = linear(nodes[i], cg.node_inputs[i], cg);
    if (!first) continue;
    const int64_t elems = numel(nodes[i].outputs[0]);
    uint32_t current = cg.node_outputs[i][0];
    size_t at = i;
    while (true) {
      const auto next = first_reader(current, at);
      if (!next) break;
      const Node& n = nodes[*next];
      const auto& in = cg.node_inputs[*next];
      if (const auto second = linear(n, in, cg)) {
        if (in[second->x] == current && second->in == first->out && numel(n.inputs[second->x]) == elems &&
            !taken.count(first->weight) && !taken.count(second->weight) &&
            (first->bias < 0 || !taken.count(static_cast<uint32_t>(first->bias))) && first->weight != second->weight) {
          pairs.push_back({static_cast<uint32_t>(i), static_cast<uint32_t>(*next), first->weight, first->bias,
                           second->weight, first->out, second->out});
          taken.insert(first->weight);
          taken.insert(second->weight);
          if (first->bias >= 0) taken.insert(static_cast<uint32_t>(first->bias));
        }
        break;
      }
      // An elementwise op of the activations alone (dropout also gives its mask).
      const bool elementwise = runtime::op_facts(n.op).pointwise || runtime::op_facts(n.op).seeded;
      if (!elementwise || !n.written.empty() || n.outputs.empty() || numel(n.outputs[0]) != elems) break;
      bool only = true;
      for (uint32_t t : in) only = only && t == current;
      if (!only) break;
      current = cg.node_outputs[*next][0];
      at = *next;
    }
  }
  return pairs;
}

}  // namespace moreh::scheduler
