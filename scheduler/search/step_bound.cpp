#include "scheduler/search/step_bound.h"

#include <algorithm>
#include <exception>
#include <limits>

#include "scheduler/lowering/pipeline_planner.h"
#include "scheduler/lowering/stage_cut.h"

namespace moreh::scheduler {

StepBound::StepBound(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                     const ProfileTiming& timing, int64_t rows)
    : graph_(graph), canonical_(canonical), rows_(rows), time_(graph.size(), 0.0) {
  for (size_t n = 0; n < graph.size(); ++n) {
    const KernelTime k = timing.kernel(graph.nodes()[n], nullptr, 1);
    time_[n] = std::max(0.0, k.seconds - k.overhead);  // the roofline, without the launch
  }
}

const StepBound::Stages& StepBound::stages(int pp, int tp) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (const auto it = cuts_.find({pp, tp}); it != cuts_.end()) return it->second;
  Stages& out = cuts_[{pp, tp}];
  out.all.assign(static_cast<size_t>(pp), 0.0);
  const size_t n = graph_.size();
  if (pp == 1) {
    for (double t : time_) out.all[0] += t;  // (an op over lists splits by element or rows: its parts add up)
    out.valid = true;
    return out;
  }
  StageCut cut;
  try {
    cut = cut_stages(graph_, canonical_, pp, placed_stages(canonical_, pp, tp));
  } catch (const std::exception&) {
    return out;  // not valid: the lowering says why
  }
  // Each node's in-step predecessors: the last writers of the slots it reads. An op over lists split by element
  // runs on several stages, its outputs each from its own elements: what it makes is not followed (no chain
  // through it, no dependence on an earlier stage), which only lowers the bound.
  std::vector<std::vector<uint32_t>> preds(n);
  std::vector<int64_t> writer(canonical_.buffers.size(), -1);
  std::vector<char> by_element(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const runtime::Node& node = graph_.nodes()[i];
    by_element[i] = !cut.element_stage.empty() && !cut.element_stage[i].empty();
    for (uint32_t slot : canonical_.node_inputs[i])
      if (writer[slot] >= 0 && !by_element[static_cast<size_t>(writer[slot])])
        preds[i].push_back(static_cast<uint32_t>(writer[slot]));
    for (uint16_t w : node.written) writer[canonical_.node_inputs[i][w]] = static_cast<int64_t>(i);
    for (uint32_t slot : canonical_.node_outputs[i]) writer[slot] = static_cast<int64_t>(i);
  }
  for (size_t i = 0; i < n; ++i) {
    const int stage = cut.node_stage[i];
    if (stage >= 0 && stage < pp && !by_element[i]) out.all[static_cast<size_t>(stage)] += time_[i];
  }
  // For each later stage s, the nodes of s on a micro-batch's way through the pipeline: they read what an earlier
  // stage made (so wait for the micro-batch's way there: `fill`, the longest chain of earlier stages' nodes
  // before them) and an earlier stage reads what they make (so the step lasts at least the way back after them:
  // `drain`). Sorted by fill, each with the least drain among those of at least its fill and their time so far.
  std::vector<std::vector<uint32_t>> succs(n);
  for (size_t i = 0; i < n; ++i)
    for (uint32_t p : preds[i]) succs[p].push_back(static_cast<uint32_t>(i));
  out.ways.assign(static_cast<size_t>(pp), {});
  std::vector<double> before(n), after(n);
  std::vector<char> reads_earlier(n), read_by_earlier(n);
  for (int s = 1; s < pp; ++s) {
    auto earlier = [&](size_t i) { return cut.node_stage[i] >= 0 && cut.node_stage[i] < s && !by_element[i]; };
    for (size_t i = 0; i < n; ++i) {
      double b = 0;
      bool e = false;
      for (uint32_t p : preds[i]) {
        b = std::max(b, before[p] + (earlier(p) ? time_[p] : 0.0));
        e = e || reads_earlier[p] || earlier(p);
      }
      before[i] = b;
      reads_earlier[i] = e;
    }
    for (size_t i = n; i-- > 0;) {
      double a = 0;
      bool e = false;
      for (uint32_t q : succs[i]) {
        a = std::max(a, after[q] + (earlier(q) ? time_[q] : 0.0));
        e = e || read_by_earlier[q] || earlier(q);
      }
      after[i] = a;
      read_by_earlier[i] = e;
    }
    std::vector<Way> ways;
    for (size_t i = 0; i < n; ++i)
      if (cut.node_stage[i] == s && !by_element[i] && reads_earlier[i] && read_by_earlier[i])
        ways.push_back({before[i], after[i], time_[i]});
    std::sort(ways.begin(), ways.end(), [](const Way& a, const Way& b) { return a.fill > b.fill; });
    double least_drain = std::numeric_limits<double>::infinity(), sum = 0;
    for (Way& w : ways) {
      least_drain = std::min(least_drain, w.drain);
      sum += w.time;
      w.drain = least_drain;
      w.time = sum;
    }
    out.ways[static_cast<size_t>(s)] = std::move(ways);
  }
  out.valid = true;
  return out;
}

double StepBound::seconds(const runtime::ParallelConfig& config, int devices) const {
  const int pp = std::max(config.num_stages, 1), tp = std::max(config.tp, 1);
  if (devices % (pp * tp) != 0) return 0;
  const int dp = devices / (pp * tp);
  const Stages& s = stages(pp, tp);
  if (!s.valid) return 0;
  const int64_t pieces = static_cast<int64_t>(dp) * std::max(config.num_micro_batches, 1);
  // A micro-batch's share of a contraction on one tensor rank: its rows are at least floor(rows / pieces).
  const double micro = rows_ > 0 ? static_cast<double>(rows_ / pieces) / static_cast<double>(rows_) / tp : 0.0;
  const double per_device = 1.0 / (static_cast<double>(dp) * tp);
  double bound = 0;
  for (double all : s.all) bound = std::max(bound, all * per_device);
  // A device of stage s cannot start the first of the nodes with at least fill F before a micro-batch has come
  // F; it runs them all (its share); after the last, a micro-batch's way back takes at least their least drain.
  for (const auto& ways : s.ways)
    for (const Way& w : ways) bound = std::max(bound, micro * (w.fill + w.drain) + w.time * per_device);
  return bound;
}

}  // namespace moreh::scheduler
