#include "scheduler/fusion/elementwise_fusion.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <stdexcept>
#include <unordered_map>

#include "scheduler/fusion/fusion_rules.h"

namespace moreh::scheduler {

using runtime::Buffer;
using runtime::DataType;
using runtime::Dims;
using runtime::ElementwiseKernel;
using runtime::ElementwiseValue;
using runtime::FusedLaunch;
using runtime::InputLayout;
using runtime::Node;
using runtime::TensorRef;

namespace {

bool same_window(const TensorRef& a, const TensorRef& b) {
  return a.buffer == b.buffer && a.offset == b.offset && a.dtype == b.dtype && a.sizes == b.sizes &&
         a.strides == b.strides;
}

bool row_major(const TensorRef& r) {
  int64_t expected = 1;
  for (size_t d = r.sizes.size(); d-- > 0;) {
    if (r.sizes[d] != 1 && r.strides[d] != expected) return false;
    expected *= r.sizes[d];
  }
  return true;
}

uint64_t numel(const Dims& sizes) {
  uint64_t n = 1;
  for (int64_t s : sizes) n *= static_cast<uint64_t>(s);
  return n;
}

// A tensor's strides over the group's shape (0 where it broadcasts), or nothing when it does not broadcast.
std::optional<std::vector<int64_t>> strides_over(const TensorRef& r, const Dims& shape) {
  if (r.sizes.size() > shape.size() || r.strides.size() != r.sizes.size()) return std::nullopt;
  std::vector<int64_t> strides(shape.size(), 0);
  const size_t lead = shape.size() - r.sizes.size();
  for (size_t j = 0; j < r.sizes.size(); ++j) {
    const size_t d = lead + j;
    if (r.sizes[j] == shape[d]) {
      strides[d] = shape[d] == 1 ? 0 : r.strides[j];
    } else if (r.sizes[j] != 1) {
      return std::nullopt;
    }
  }
  return strides;
}

// What a node that may join a group produces: its one fresh output, or the one input it writes.
struct Candidate {
  const FusionRule* rule = nullptr;
  const TensorRef* result = nullptr;
  bool fresh = false;
  uint16_t index = 0;  // the output, or the written input
  DataType type = DataType::kFloat32;
  size_t scalars = 0;
};

std::optional<Candidate> candidate_of(const Node& n) {
  Candidate c;
  c.rule = fusion_rule(n.op);
  if (!c.rule || n.host_input) return std::nullopt;
  if (n.outputs.size() == 1 && n.written.empty()) {
    c.fresh = true;
    c.result = &n.outputs[0];
  } else if (n.outputs.empty() && n.written.size() == 1) {
    c.index = n.written[0];
    c.result = &n.inputs[c.index];
  } else {
    return std::nullopt;
  }
  const auto type = runtime::data_type_of(c.result->dtype);
  if (!type || !row_major(*c.result) || numel(c.result->sizes) == 0 ||
      c.result->sizes.size() > static_cast<size_t>(runtime::kElementwiseMaxRank))
    return std::nullopt;
  c.type = *type;
  // Every input a known type that broadcasts to the result; an input the node writes is its result's window.
  ElementwiseKernel scratch(static_cast<int>(c.result->sizes.size()));
  std::vector<ElementwiseValue> values;
  for (const TensorRef& in : n.inputs) {
    const auto t = runtime::data_type_of(in.dtype);
    if (!t || !strides_over(in, c.result->sizes)) return std::nullopt;
    if (!c.fresh && in.buffer == c.result->buffer && !same_window(in, *c.result)) return std::nullopt;
    values.push_back(scratch.input(*t));
  }
  // The rule on a scratch kernel: types and attributes it cannot take show here, before any group is touched.
  FusionLowering lowering{scratch, n, c.type, [&](size_t i) { return values.at(i); },
                          [&](size_t, DataType t) {
                            ++c.scalars;
                            return scratch.scalar(t);
                          }};
  try {
    const auto v = (*c.rule)(lowering);
    if (!v) return std::nullopt;
    scratch.output(*v, c.type);
  } catch (const std::invalid_argument&) {
    return std::nullopt;
  }
  return c;
}

struct Group {
  Dims shape;
  std::unique_ptr<ElementwiseKernel> kernel;
  FusedLaunch launch;
  std::vector<std::vector<int64_t>> input_strides;  // per kernel input; empty when contiguous
  struct Written {
    const TensorRef* window;
    ElementwiseValue value;
    FusedLaunch::Tensor where;
    uint32_t slot;
  };
  std::vector<Written> written;  // in the order first written
  std::unordered_map<const Buffer*, size_t> written_at;
  struct Read {
    const TensorRef* window;
    ElementwiseValue value;
  };
  std::unordered_map<const Buffer*, std::vector<Read>> reads;  // buffers read from memory, by window
  std::unordered_map<uint32_t, uint32_t> member_reads;         // slot -> reads by the group's nodes
  size_t parameter_bytes = 16;                                  // count and the index-width flag
  bool broken = false;

  explicit Group(const Dims& s) : shape(s), kernel(std::make_unique<ElementwiseKernel>(static_cast<int>(s.size()))) {}

  // Whether node `n` (not joining) must not move across this group: it reads what the group writes, or
  // writes what the group reads.
  bool conflicts_with(const Node& n) const {
    for (const TensorRef& in : n.inputs)
      if (written_at.count(in.buffer.get())) return true;
    for (uint16_t w : n.written)
      if (reads.count(n.inputs[w].buffer.get())) return true;
    return false;
  }

  // Whether `n` can join: every window of a buffer the group writes is the written window, and the kernel's
  // parameters stay within the limits.
  bool admits(const Node& n, const Candidate& c, const FusionLimits& limits) const {
    if (launch.nodes.size() >= limits.max_nodes) return false;
    for (const TensorRef& in : n.inputs) {
      auto it = written_at.find(in.buffer.get());
      if (it != written_at.end() && !same_window(in, *written[it->second].window)) return false;
    }
    if (!c.fresh) {
      auto it = reads.find(c.result->buffer.get());
      if (it != reads.end())
        for (const Read& r : it->second)
          if (!same_window(*r.window, *c.result)) return false;
    }
    const size_t rank = shape.size();
    const size_t more = n.inputs.size() * 8 * (1 + rank) + c.scalars * 8 + 8;
    return parameter_bytes + more <= limits.max_parameter_bytes;
  }
};

class Fuser {
 public:
  Fuser(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical, const FusionLimits& limits)
      : nodes_(graph.nodes()), canonical_(canonical), limits_(limits) {
    result_.group_of.assign(nodes_.size(), -1);
    result_.runs_at.resize(nodes_.size());
    for (size_t n = 0; n < nodes_.size(); ++n) result_.runs_at[n] = static_cast<uint32_t>(n);
    result_.unstored.assign(canonical.buffers.size(), false);
    reads_.assign(canonical.buffers.size(), 0);
    for (const auto& slots : canonical.node_inputs)
      for (uint32_t s : slots) ++reads_[s];
  }

  FusionResult run() {
    for (size_t n = 0; n < nodes_.size(); ++n) visit(static_cast<uint32_t>(n));
    for (auto& g : open_) close(*g, false);
    open_.clear();
    if (limits_.early_groups) hoist();
    return std::move(result_);
  }

 private:
  static Group* of_shape(const std::vector<std::unique_ptr<Group>>& groups, const Dims& shape) {
    for (auto& g : groups)
      if (g->shape == shape) return g.get();
    return nullptr;
  }

  void visit(uint32_t n) {
    const Node& node = nodes_[n];
    const auto c = candidate_of(node);
    Group* const target = c ? of_shape(open_, c->result->sizes) : nullptr;
    for (size_t i = open_.size(); i-- > 0;) {
      if (open_[i].get() == target || !open_[i]->conflicts_with(node)) continue;
      close(*open_[i], false);
      open_.erase(open_.begin() + static_cast<std::ptrdiff_t>(i));
    }
    if (c) add(open_, target, n, *c, false);
  }

  // Joins n to `target` (its shape's open group among `groups`, or null); a full group is closed first and a
  // new one started.
  void add(std::vector<std::unique_ptr<Group>>& groups, Group* target, uint32_t n, const Candidate& c, bool early) {
    if (target && !target->admits(nodes_[n], c, limits_)) {
      close(*target, early);
      std::erase_if(groups, [&](const auto& g) { return g.get() == target; });
      target = nullptr;
    }
    if (!target) {
      groups.push_back(std::make_unique<Group>(c.result->sizes));
      target = groups.back().get();
    }
    join(*target, n, c);
  }

  void join(Group& g, uint32_t n, const Candidate& c) {
    const Node& node = nodes_[n];
    FusionLowering lowering{*g.kernel, node, c.type,
                            [&](size_t i) { return input(g, n, i); },
                            [&](size_t attr, DataType t) {
                              g.launch.scalars.push_back({n, static_cast<uint16_t>(attr)});
                              g.parameter_bytes += 8;
                              return g.kernel->scalar(t);
                            }};
    std::optional<ElementwiseValue> v;
    try {
      v = (*c.rule)(lowering);
      if (v) v = g.kernel->cast(*v, c.type);
    } catch (const std::invalid_argument&) {
      v.reset();
    }
    if (!v) {  // the scratch lowering took it: a rule that is not deterministic; keep every node unfused
      g.broken = true;
      return;
    }
    for (uint32_t s : canonical_.node_inputs[n]) ++g.member_reads[s];
    const Buffer* b = c.result->buffer.get();
    auto it = g.written_at.find(b);
    if (it != g.written_at.end()) {
      g.written[it->second].value = *v;
    } else {
      const uint32_t slot = c.fresh ? canonical_.node_outputs[n][c.index] : canonical_.node_inputs[n][c.index];
      g.written_at.emplace(b, g.written.size());
      g.written.push_back({c.result, *v, {n, c.index, c.fresh}, slot});
      g.parameter_bytes += 8;
    }
    g.launch.nodes.push_back(n);
  }

  ElementwiseValue input(Group& g, uint32_t n, size_t i) {
    const TensorRef& r = nodes_[n].inputs[i];
    const Buffer* b = r.buffer.get();
    if (auto it = g.written_at.find(b); it != g.written_at.end()) return g.written[it->second].value;
    auto& windows = g.reads[b];
    for (const auto& w : windows)
      if (same_window(*w.window, r)) return w.value;
    const std::vector<int64_t> strides = *strides_over(r, g.shape);
    const std::vector<int64_t> sizes(g.shape.begin(), g.shape.end());
    const InputLayout layout = InputLayout::of(sizes, strides);
    const ElementwiseValue v = g.kernel->input(*runtime::data_type_of(r.dtype), layout);
    g.launch.inputs.push_back({n, static_cast<uint16_t>(i), false});
    g.input_strides.push_back(layout.strided ? strides : std::vector<int64_t>{});
    g.parameter_bytes += 8 * (1 + (layout.strided ? g.shape.size() : 0));
    windows.push_back({&r, v});
    return v;
  }

  // The early groups, after the pass above: nodes it left alone that may run before their place.
  void hoist() {
    // Per buffer, the first node that writes (or produces) it and the first that touches it at all.
    std::unordered_map<const Buffer*, uint32_t> first_write, first_touch;
    for (uint32_t n = 0; n < nodes_.size(); ++n) {
      const Node& node = nodes_[n];
      for (const TensorRef& in : node.inputs) first_touch.try_emplace(in.buffer.get(), n);
      for (uint16_t w : node.written) first_write.try_emplace(node.inputs[w].buffer.get(), n);
      for (const TensorRef& out : node.outputs) {
        first_write.try_emplace(out.buffer.get(), n);
        first_touch.try_emplace(out.buffer.get(), n);
      }
    }
    auto before = [](const std::unordered_map<const Buffer*, uint32_t>& first, const Buffer* b, uint32_t n) {
      auto it = first.find(b);
      return it != first.end() && it->second < n;
    };
    std::vector<std::unique_ptr<Group>> groups;  // one open group per shape
    for (uint32_t n = 0; n < nodes_.size(); ++n) {
      if (result_.group_of[n] >= 0) continue;
      const Node& node = nodes_[n];
      const auto c = candidate_of(node);
      if (!c) continue;
      bool movable = true;
      for (size_t i = 0; i < node.inputs.size() && movable; ++i) {
        const Buffer* b = node.inputs[i].buffer.get();
        const bool result = !c->fresh && i == c->index;
        const uint32_t slot = canonical_.node_inputs[n][i];
        // What it reads holds its value from the start (and has memory); what it writes in place, nothing
        // before it touched.
        movable = result ? !before(first_touch, b, n)
                         : !before(first_write, b, n) &&
                               canonical_.buffers[slot].origin != runtime::BufferOrigin::kUnmaterialized;
      }
      if (!movable) continue;
      add(groups, of_shape(groups, c->result->sizes), n, *c, true);
    }
    for (auto& g : groups) close(*g, true);
  }

  void close(Group& g, bool early) {
    if (g.broken || g.launch.nodes.size() < limits_.min_nodes) return;
    std::vector<uint32_t> unstored;
    for (const auto& w : g.written) {
      const bool needed = !w.where.fresh || canonical_.buffers[w.slot].live_after ||
                          reads_[w.slot] > g.member_reads[w.slot];
      if (!needed) {
        unstored.push_back(w.slot);
        continue;
      }
      g.kernel->output(w.value, *runtime::data_type_of(w.window->dtype));
      g.launch.outputs.push_back(w.where);
    }
    if (g.launch.outputs.empty()) return;  // nothing the step keeps: run the nodes as they are
    for (uint32_t s : unstored) result_.unstored[s] = true;
    auto& shape = g.launch.shape;
    shape.count = numel(g.shape);
    if (!g.kernel->contiguous()) {
      shape.sizes.assign(g.shape.begin(), g.shape.end());
      shape.strides = std::move(g.input_strides);
    }
    g.kernel->freeze();  // launched every step: its key and hash are computed once
    g.launch.kernel = std::shared_ptr<const ElementwiseKernel>(std::move(g.kernel));
    const auto index = static_cast<int32_t>(result_.launches.size());
    const uint32_t at = early ? g.launch.nodes.front() : g.launch.nodes.back();
    for (uint32_t m : g.launch.nodes) {
      result_.group_of[m] = index;
      result_.runs_at[m] = at;
    }
    result_.fused_nodes += g.launch.nodes.size();
    result_.launches.push_back(std::move(g.launch));
  }

  const std::vector<Node>& nodes_;
  const runtime::CanonicalGraph& canonical_;
  const FusionLimits& limits_;
  FusionResult result_;
  std::vector<uint32_t> reads_;  // slot -> reads by every node of the step
  std::vector<std::unique_ptr<Group>> open_;
};

}  // namespace

FusionResult fuse_elementwise(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                              const FusionLimits& limits) {
  return Fuser(graph, canonical, limits).run();
}

}  // namespace moreh::scheduler
