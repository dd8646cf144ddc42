#include "scheduler/lowering/stage_cut.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>

#include "runtime/base/errors.h"

namespace moreh::scheduler {

using runtime::BufferOrigin;
using runtime::Node;

namespace {

int64_t numel(const runtime::Dims& sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  return n;
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

}  // namespace

double node_cost(const Node& node) {
  double bytes = 0;
  for (const auto& o : node.outputs) bytes += static_cast<double>(numel(o.sizes) * o.itemsize);
  for (uint16_t w : node.written) bytes += static_cast<double>(numel(node.inputs[w].sizes) * node.inputs[w].itemsize);
  // Multiply-adds: an output element of a matmul takes the contraction's length of them.
  double macs = 0;
  const std::string_view name = runtime::op_name(node.op);
  if (!node.outputs.empty() && node.inputs.size() >= 2) {
    const auto& a = node.inputs[node.inputs.size() - 2];
    if ((starts_with(name, "aten::mm") || starts_with(name, "aten::addmm") || starts_with(name, "aten::bmm") ||
         starts_with(name, "aten::baddbmm")) && !a.sizes.empty())
      macs = static_cast<double>(numel(node.outputs[0].sizes)) * static_cast<double>(a.sizes.back());
  }
  if (name.find("scaled_dot_product") != std::string_view::npos && !node.inputs.empty() &&
      node.inputs[0].sizes.size() >= 2) {
    const auto& q = node.inputs[0].sizes;  // (batch, heads, L, E): QK^T and PV, each L × L × E per head
    const double l = static_cast<double>(q[q.size() - 2]);
    macs = 2.0 * static_cast<double>(numel(q)) * l;
    if (name.find("backward") != std::string_view::npos) macs *= 2;
  }
  return bytes + macs / 8.0;
}

// Cuts the forward pass's computing nodes where the cost reaches each stage's share, each cut moved within
// 10% of that point to where the fewest bytes cross it.
static void cut_by_cost(const std::vector<Node>& nodes, const runtime::CanonicalGraph& cg, const std::vector<size_t>& compute,
                 const std::vector<std::vector<uint32_t>>& reads, int stages, StageCut& cut) {
  const size_t num_slots = cg.buffers.size();
  std::vector<double> prefix(compute.size() + 1, 0);
  for (size_t k = 0; k < compute.size(); ++k) prefix[k + 1] = prefix[k] + node_cost(nodes[compute[k]]);
  const double total = prefix.back();
  // Bytes crossing a cut before compute[k]: values made by an earlier forward node and read by a later one.
  std::vector<int64_t> made(num_slots, -1), last_read(num_slots, -1);
  for (size_t k = 0; k < compute.size(); ++k) {
    const size_t i = compute[k];
    for (uint32_t s : reads[i])
      if (made[s] >= 0) last_read[s] = static_cast<int64_t>(k);
    for (uint32_t s : cg.node_outputs[i])
      if (made[s] < 0) made[s] = static_cast<int64_t>(k);
    for (uint16_t w : nodes[i].written)
      if (made[cg.node_inputs[i][w]] < 0) made[cg.node_inputs[i][w]] = static_cast<int64_t>(k);
  }
  auto crossing = [&](size_t k) {
    uint64_t bytes = 0;
    for (size_t s = 0; s < num_slots; ++s)
      if (made[s] >= 0 && made[s] < static_cast<int64_t>(k) && last_read[s] >= static_cast<int64_t>(k))
        bytes += cg.buffers[s].bytes;
    return bytes;
  };
  std::vector<size_t> begin{0};  // index into `compute` where each stage begins
  for (int j = 1; j < stages; ++j) {
    const double target = total * j / stages, window = 0.1 * total / stages;
    const size_t lo = begin.back() + 1, hi = compute.size() - static_cast<size_t>(stages - j);
    size_t best = lo;
    double best_distance = std::numeric_limits<double>::infinity();
    for (size_t k = lo; k <= hi; ++k) {  // the balanced point
      const double distance = std::abs(prefix[k] - target);
      if (distance < best_distance) best = k, best_distance = distance;
    }
    uint64_t best_bytes = crossing(best);
    for (size_t k = lo; k <= hi; ++k) {  // the fewest crossing bytes near it
      if (std::abs(prefix[k] - target) > window) continue;
      const uint64_t bytes = crossing(k);
      if (bytes < best_bytes || (bytes == best_bytes && std::abs(prefix[k] - target) < std::abs(prefix[best] - target)))
        best = k, best_bytes = bytes;
    }
    begin.push_back(best);
    cut.cut_bytes.push_back(best_bytes);
  }
  begin.push_back(compute.size());
  for (int j = 0; j < stages; ++j) {
    cut.starts.push_back(compute[begin[j]]);
    cut.stage_cost.push_back(prefix[begin[j + 1]] - prefix[begin[j]]);
    for (size_t k = begin[j]; k < begin[j + 1]; ++k) cut.node_stage[compute[k]] = j;
  }
}

StageCut cut_stages(const runtime::StepGraph& graph, const runtime::CanonicalGraph& cg, int stages,
                    const std::vector<int>& placed) {
  const auto& nodes = graph.nodes();
  const size_t n = nodes.size(), num_slots = cg.buffers.size();
  StageCut cut;
  cut.node_stage.assign(n, -1);

  // Which nodes only write (fresh values: uploads, fills, zeros), and who last wrote each slot before a node.
  std::vector<bool> defined(num_slots, false), source(n, false);
  std::vector<int64_t> writer(num_slots, -1);             // the latest node that wrote the slot
  std::vector<std::vector<int64_t>> reads_from(n);        // per node: the writers of what it reads (-1: none)
  std::vector<std::vector<uint32_t>> reads(n);            // per node: the defined slots it reads
  for (size_t s = 0; s < num_slots; ++s) defined[s] = cg.buffers[s].origin == BufferOrigin::kMaterialized;
  for (size_t i = 0; i < n; ++i) {
    const Node& node = nodes[i];
    const auto& in = cg.node_inputs[i];
    bool only_writes = true;
    for (size_t k = 0; k < in.size(); ++k) {
      const bool written = std::find(node.written.begin(), node.written.end(), k) != node.written.end();
      if (written && !defined[in[k]]) continue;  // initialized here
      only_writes = false;
      reads[i].push_back(in[k]);
      reads_from[i].push_back(writer[in[k]]);
    }
    source[i] = only_writes;
    for (uint16_t w : node.written) {
      defined[in[w]] = true;
      writer[in[w]] = static_cast<int64_t>(i);
    }
    for (uint32_t s : cg.node_outputs[i]) {
      defined[s] = true;
      writer[s] = static_cast<int64_t>(i);
    }
  }

  // The forward pass ends where the backward pass's seed (a constant scalar, loss.backward()'s ones) is made
  // after a scalar result (the loss).
  cut.forward_end = n;
  bool scalar_result = false;
  for (size_t i = 0; i < n && cut.forward_end == n; ++i) {
    const Node& node = nodes[i];
    bool writes_scalar = false;
    for (const auto& o : node.outputs) writes_scalar = writes_scalar || o.sizes.empty();
    for (uint16_t w : node.written) writes_scalar = writes_scalar || node.inputs[w].sizes.empty();
    if (source[i] && writes_scalar && scalar_result) cut.forward_end = i;
    if (!source[i] && writes_scalar && !node.host_input) scalar_result = true;
  }

  // The forward pass's computing nodes.
  std::vector<size_t> compute;
  for (size_t i = 0; i < cut.forward_end; ++i)
    if (!source[i]) compute.push_back(i);
  auto placed_stage = [&](uint32_t s) { return s < placed.size() ? placed[s] : -1; };
  bool follows_placement = false;  // parameters already lie on stages: the forward pass goes where they are
  for (size_t i : compute)
    for (size_t k = 0; k < reads[i].size(); ++k)
      if (reads_from[i][k] < 0 && placed_stage(reads[i][k]) >= 0) follows_placement = true;
  auto made_on = [&](int64_t w) { return w >= 0 && !source[w] ? cut.node_stage[w] : -1; };
  if (follows_placement) {
    cut.stage_cost.assign(stages, 0);
    std::vector<int64_t> first(stages, -1);
    for (size_t i : compute) {
      int stage = -1;
      for (size_t k = 0; k < reads[i].size(); ++k) {
        stage = std::max(stage, made_on(reads_from[i][k]));
        if (reads_from[i][k] < 0) stage = std::max(stage, placed_stage(reads[i][k]));
      }
      cut.node_stage[i] = stage;  // -1: placed with its first reader below
      if (stage >= 0) {
        cut.stage_cost[stage] += node_cost(nodes[i]);
        if (first[stage] < 0) first[stage] = static_cast<int64_t>(i);
      }
    }
    for (int j = 0; j < stages; ++j) cut.starts.push_back(first[j] < 0 ? cut.forward_end : static_cast<size_t>(first[j]));
  }
  if (!follows_placement && compute.size() < static_cast<size_t>(stages)) {
    // Too few ops to fill every stage (a step that only makes values): one op per stage.
    cut.stage_cost.assign(stages, 0);
    for (int j = 0; j < stages; ++j) {
      const size_t k = std::min(static_cast<size_t>(j), compute.size());
      cut.starts.push_back(k < compute.size() ? compute[k] : cut.forward_end);
      if (k < compute.size() && static_cast<size_t>(j) == k) {
        cut.node_stage[compute[k]] = j;
        cut.stage_cost[j] = node_cost(nodes[compute[k]]);
      }
    }
  } else if (!follows_placement) {
    cut_by_cost(nodes, cg, compute, reads, stages, cut);
  }

  // A value's stage: the stage of the node that made it, for values made by placed nodes; a parameter's
  // (a value from before the step, or one an upload made) is that of its first forward reader.
  std::vector<int> anchor(num_slots, -1);
  for (size_t s = 0; s < num_slots; ++s) anchor[s] = placed_stage(static_cast<uint32_t>(s));
  for (size_t i : compute)
    for (uint32_t s : reads[i])
      if (anchor[s] < 0) anchor[s] = cut.node_stage[i];
  // A forward value's stage for the backward pass: the latest stage whose forward ops read it (a layer's
  // saved input is read by the layer), else the stage that made it.
  std::vector<int> forward_stage(num_slots, -1);
  for (size_t i : compute)
    for (uint32_t s : reads[i]) forward_stage[s] = std::max(forward_stage[s], cut.node_stage[i]);
  // A node that updates a value with a stage in place (a parameter, an optimizer's state) runs there, so that
  // parameters and their state never move.
  auto writer_before = [&](size_t i, uint32_t s) -> int64_t {
    for (size_t k = 0; k < reads[i].size(); ++k)
      if (reads[i][k] == s) return reads_from[i][k];
    return -1;
  };
  auto written_anchor = [&](size_t i) {
    for (uint16_t w : nodes[i].written) {
      const uint32_t s = cg.node_inputs[i][w];
      if (anchor[s] >= 0 && (writer_before(i, s) < 0 || source[writer_before(i, s)])) return anchor[s];
    }
    return -1;
  };
  for (size_t i = 0; i < n; ++i) {
    if (source[i]) continue;
    if (const int a = written_anchor(i); a >= 0) {
      cut.node_stage[i] = a;
      continue;
    }
    if (i < cut.forward_end) continue;
    // Elsewhere in the backward pass and the optimizer: the earliest stage among the values it reads (a
    // value the forward pass read counts at its forward stage).
    int stage = -1;
    for (size_t k = 0; k < reads[i].size(); ++k) {
      const uint32_t s = reads[i][k];
      const int m = forward_stage[s] >= 0 ? forward_stage[s] : made_on(reads_from[i][k]) >= 0 ? made_on(reads_from[i][k]) : anchor[s];
      if (m >= 0) stage = stage < 0 ? m : std::min(stage, m);
    }
    cut.node_stage[i] = stage;  // -1: placed with its first reader below
  }
  // The rest run where what they write is first read (latest first, so that a chain of them follows its end).
  std::vector<int> first_reader(num_slots, -1);
  for (size_t i = n; i-- > 0;) {
    if (cut.node_stage[i] < 0) {
      int stage = -1;
      for (uint32_t s : cg.node_outputs[i])
        if (first_reader[s] >= 0) stage = first_reader[s];
      for (uint16_t w : nodes[i].written)
        if (first_reader[cg.node_inputs[i][w]] >= 0) stage = first_reader[cg.node_inputs[i][w]];
      if (stage < 0) stage = 0;  // never read in the step
      cut.node_stage[i] = stage;
    }
    for (uint32_t s : reads[i]) first_reader[s] = cut.node_stage[i];
  }
  return cut;
}

}  // namespace moreh::scheduler
