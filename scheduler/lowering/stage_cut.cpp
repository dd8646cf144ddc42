#include "scheduler/lowering/stage_cut.h"

#include "scheduler/analysis/backward_seeds.h"
#include "scheduler/analysis/node_work.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <string_view>


namespace moreh::scheduler {

using runtime::BufferOrigin;
using runtime::Node;

namespace {

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

}  // namespace

bool splits_by_element(const Node& node) {
  if (!starts_with(runtime::op_name(node.op), "aten::_foreach_")) return false;
  const runtime::ListElements lists = runtime::list_elements(node);
  if (lists.length <= 1) return false;
  for (uint16_t w : node.written)
    if (lists.inputs[w] < 0) return false;  // a value every element writes (a found-inf flag)
  for (int e : lists.outputs)
    if (e < 0) return false;
  return true;
}

double node_cost(const Node& node) {
  const NodeWork w = node_work(node);
  return w.bytes_written + w.multiply_adds / 8.0;
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
  std::vector<std::vector<size_t>> read_input(n);         // per node: which input each of them is
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
      read_input[i].push_back(k);
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
  const std::vector<size_t> seeds = backward_seeds(graph, cg);
  cut.forward_end = seeds.empty() ? n : seeds.front();

  // The forward pass's computing nodes.
  std::vector<size_t> compute;
  for (size_t i = 0; i < cut.forward_end; ++i)
    if (!source[i]) compute.push_back(i);
  auto placed_stage = [&](uint32_t s) { return s < placed.size() ? placed[s] : -1; };
  bool follows_placement = false;  // parameters already lie on stages: the forward pass goes where they are
  for (size_t i : compute)
    for (size_t k = 0; k < reads[i].size(); ++k)
      if (reads_from[i][k] < 0 && placed_stage(reads[i][k]) >= 0) follows_placement = true;
  // The stage that made a value: its writer's, or for an op over lists split by element, that element's.
  std::map<std::pair<int64_t, uint32_t>, int> element_made;
  auto made_on = [&](int64_t w, uint32_t s) {
    if (w < 0 || source[w]) return -1;
    if (const auto it = element_made.find({w, s}); it != element_made.end()) return it->second;
    return cut.node_stage[w];
  };
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

  // A parameter's stage (a value from before the step, or one an upload made): where it lies already, else
  // its first forward reader's.
  std::vector<int> anchor(num_slots, -1);
  for (size_t s = 0; s < num_slots; ++s) anchor[s] = placed_stage(static_cast<uint32_t>(s));
  auto anchor_reads = [&](size_t i) {  // the first reader of a parameter gives it its stage
    if (cut.node_stage[i] < 0) return;
    for (size_t k = 0; k < reads[i].size(); ++k) {
      const int64_t w = reads_from[i][k];
      if ((w < 0 || source[w]) && anchor[reads[i][k]] < 0) anchor[reads[i][k]] = cut.node_stage[i];
    }
  };
  if (!follows_placement)
    for (size_t i : compute) anchor_reads(i);
  // A forward value's stage for the backward pass: the latest stage whose forward ops read it (a layer's
  // saved input is read by the layer), else the stage that made it.
  // Known once the forward pass's nodes have their stages (in-place updates of parameters may move them).
  std::vector<int> forward_stage(num_slots, -1);
  auto find_forward_stages = [&]() {
    for (size_t i : compute)
      for (uint32_t s : reads[i]) forward_stage[s] = std::max(forward_stage[s], cut.node_stage[i]);
  };
  // A value's stage as the backward pass and the optimizer see it.
  auto stage_of_read = [&](size_t i, size_t k) {
    const uint32_t s = reads[i][k];
    const int m = made_on(reads_from[i][k], s);
    return forward_stage[s] >= 0 ? forward_stage[s] : m >= 0 ? m : anchor[s];
  };
  // The stage for node i over the inputs `keep` admits (all of them, or one list element's), -1 when they do
  // not say. A node that updates a parameter (or an optimizer's state) in place runs on its stage, so that
  // they never move. In the forward pass that is all (the cut placed the rest). Elsewhere a node that
  // updates another value in place (a gradient scaled by the clipping factor, a residual gradient summed
  // into) runs where most of the bytes it reads are, the earlier stage on a tie; any other node at the
  // earliest stage among the values it reads (a value the forward pass read counts at its forward stage).
  auto rule_stage = [&](size_t i, const std::function<bool(size_t)>& keep, bool forward) {
    const auto& in = cg.node_inputs[i];
    bool writes = false;
    for (uint16_t w : nodes[i].written) {
      if (!keep(w)) continue;
      if (anchor[in[w]] >= 0) return anchor[in[w]];
      writes = true;
    }
    if (forward) return -1;
    std::map<int, uint64_t> bytes_on;
    int earliest = -1;
    for (size_t k = 0; k < reads[i].size(); ++k) {
      if (!keep(read_input[i][k])) continue;
      const int m = stage_of_read(i, k);
      if (m < 0) continue;
      bytes_on[m] += cg.buffers[reads[i][k]].bytes;
      earliest = earliest < 0 ? m : std::min(earliest, m);
    }
    if (!writes) return earliest;
    int best = -1;
    for (const auto& [stage, bytes] : bytes_on)
      if (best < 0 || bytes > bytes_on[best]) best = stage;
    return best;
  };
  const auto all = [](size_t) { return true; };
  cut.element_stage.assign(n, {});
  for (size_t i = 0; i < n; ++i) {
    if (i == cut.forward_end) find_forward_stages();
    if (source[i]) continue;
    if (splits_by_element(nodes[i])) {
      // Each list element on its own stage (a _foreach_ op over every parameter's gradient).
      const runtime::ListElements lists = runtime::list_elements(nodes[i]);
      const int whole = rule_stage(i, all, false);
      auto& stages = cut.element_stage[i];
      for (size_t e = 0; e < lists.length; ++e) {
        const int st = rule_stage(i, [&](size_t x) { return lists.inputs[x] == static_cast<int>(e); }, false);
        stages.push_back(st >= 0 ? st : std::max(whole, 0));
      }
      const auto& in = cg.node_inputs[i];
      for (size_t x = 0; x < in.size(); ++x)
        if (lists.inputs[x] >= 0) element_made[{static_cast<int64_t>(i), in[x]}] = stages[lists.inputs[x]];
      for (size_t k = 0; k < cg.node_outputs[i].size(); ++k)
        if (lists.outputs[k] >= 0) element_made[{static_cast<int64_t>(i), cg.node_outputs[i][k]}] = stages[lists.outputs[k]];
      cut.node_stage[i] = *std::min_element(stages.begin(), stages.end());
      continue;  // (its parameters are read by their own elements' nodes)
    }
    const bool forward = i < cut.forward_end;
    if (const int a = rule_stage(i, all, forward); a >= 0 || !forward) {
      cut.node_stage[i] = a;  // -1: placed with its first reader below
    } else if (follows_placement) {
      // The forward pass goes where its parameters lie: the latest stage among its inputs.
      int stage = -1;
      for (size_t k = 0; k < reads[i].size(); ++k) {
        stage = std::max(stage, made_on(reads_from[i][k], reads[i][k]));
        if (reads_from[i][k] < 0) stage = std::max(stage, placed_stage(reads[i][k]));
      }
      cut.node_stage[i] = stage;
    }
    anchor_reads(i);
  }
  if (follows_placement) {  // what the forward pass costs on each stage, and where each begins
    cut.stage_cost.assign(stages, 0);
    std::vector<int64_t> first(stages, -1);
    for (size_t i : compute) {
      const int stage = cut.node_stage[i];
      if (stage < 0) continue;
      cut.stage_cost[stage] += node_cost(nodes[i]);
      if (first[stage] < 0) first[stage] = static_cast<int64_t>(i);
    }
    for (int j = 0; j < stages; ++j) cut.starts.push_back(first[j] < 0 ? cut.forward_end : static_cast<size_t>(first[j]));
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
