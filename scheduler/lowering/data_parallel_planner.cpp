#include "scheduler/lowering/data_parallel_planner.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "runtime/base/spdlog_logger.h"
#include "scheduler/lowering/batch_split.h"
#include "scheduler/lowering/liveness.h"
#include "scheduler/lowering/memory_model.h"
#include "scheduler/lowering/optimizer_sharding.h"

namespace moreh::scheduler {

using runtime::Instruction;
using runtime::RowRange;
using Kind = Instruction::Kind;

namespace {

// Each piece of the split is one device: the SPMD steps become one program per device, with the bytes its
// kernels write and its collectives send (the memory model gives each program's peak).
class Emission {
 public:
  Emission(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical, const BatchSplit& split,
           int devices, int64_t rows)
      : graph_(graph), cg_(canonical), split_(split), steps_(split.steps), n_(devices), rows_(rows) {}

  // The slots an SPMD step touches.
  void touched(const SplitStep& st, std::vector<uint32_t>& out) const {
    out.clear();
    if (st.kind == Kind::kLaunch) {
      for (uint32_t s : cg_.node_inputs[st.index]) out.push_back(s);
      for (uint32_t s : cg_.node_outputs[st.index]) out.push_back(s);
      return;
    }
    if (st.kind == Kind::kRelease) return;
    out.push_back(st.index);
    if (st.kind == Kind::kMultiply || st.kind == Kind::kDivide) out.push_back(st.aux);
  }

  PlannedStep run() {
    const size_t num_slots = cg_.buffers.size();
    // Where each slot's value is dead: after its last touch, or before a node that runs again writes it.
    const std::vector<std::vector<uint32_t>> release_after = dead_after(
        steps_.size(), num_slots, [&](size_t i, std::vector<uint32_t>& t, std::vector<uint32_t>& fresh) {
          touched(steps_[i], t);
          if (steps_[i].kind == Kind::kLaunch)
            fresh.assign(cg_.node_outputs[steps_[i].index].begin(), cg_.node_outputs[steps_[i].index].end());
          else if (steps_[i].kind == Kind::kAllocate)  // a first binding (again, for a node run again)
            fresh.push_back(steps_[i].index);
        });
    PlannedStep plan;
    plan.graph_hash = cg_.hash;
    plan.num_nodes = graph_.size();
    plan.num_devices = n_;
    plan.programs.resize(n_);
    for (int d = 0; d < n_; ++d) plan.programs[d].device = d;
    std::vector<uint64_t> work(n_, 0);  // bytes the device's kernels write: the cost model's proxy for work
    uint64_t comm_bytes = 0;
    const double ring = n_ > 1 ? 2.0 * (n_ - 1) / n_ : 0.0;
    for (size_t i = 0; i < steps_.size(); ++i) {
      const SplitStep& st = steps_[i];
      for (int d = 0; d < n_; ++d) {
        auto& prog = plan.programs[d];
        Instruction ins{st.kind, st.index, st.aux};
        switch (st.kind) {
          case Kind::kAllocate:
            ins.aux = static_cast<uint32_t>(prog.sizes.size());
            prog.sizes.push_back(st.bytes[d]);
            break;
          case Kind::kLaunch:
            if (!st.launches.empty()) {
              prog.launches.push_back(st.launches[d]);
              ins.aux = static_cast<uint32_t>(prog.launches.size());
            }
            for (size_t k = 0; k < cg_.node_outputs[st.index].size(); ++k) {
              const uint32_t s = cg_.node_outputs[st.index][k];
              const bool split = state_after_is_shard(s);
              const int64_t b = split ? static_cast<int64_t>(split_.slots[s].row_bytes * range(d).count)
                                      : static_cast<int64_t>(bytes(s));
              work[d] += static_cast<uint64_t>(b);
            }
            break;
          case Kind::kScale:
            ins.aux = static_cast<uint32_t>(prog.factors.size());
            prog.factors.push_back(st.factors[d]);
            break;
          default: break;
        }
        prog.code.push_back(ins);
      }
      if (st.kind == Kind::kAllReduce) comm_bytes += static_cast<uint64_t>(ring * bytes(st.index));
      if (st.kind == Kind::kAllGather || st.kind == Kind::kBroadcast)
        comm_bytes += static_cast<uint64_t>((n_ - 1) * bytes(st.index) / n_);
      for (uint32_t s : release_after[i])
        if (!cg_.buffers[s].live_after)
          for (int d = 0; d < n_; ++d) plan.programs[d].code.push_back({Kind::kRelease, s});
    }
    plan.slots = split_.slots;
    for (auto& program : plan.programs) program.peak_bytes = program_peak(plan, program, &graph_, cg_);
    plan.final_placements = split_.final_placements;
    plan.slots = split_.slots;
    plan.report.replicated_fallbacks = split_.replicated_fallbacks;
    plan.report.fallback_ops = split_.fallback_ops;
    plan.report.collective_bytes_per_device = comm_bytes;
    plan.report.work_bytes_per_device = *std::max_element(work.begin(), work.end());
    plan.report.fallback_details = split_.fallback_details;
    return plan;
  }

  uint64_t bytes(uint32_t s) const { return cg_.buffers[s].bytes; }
  RowRange range(int d) const { return runtime::split_rows(rows_, n_, d); }
  bool state_after_is_shard(uint32_t s) const { return split_.slots[s].row_bytes != 0; }

  const runtime::StepGraph& graph_;
  const runtime::CanonicalGraph& cg_;
  const BatchSplit& split_;
  const std::vector<SplitStep>& steps_;
  const int n_;
  const int64_t rows_;
};

}  // namespace

PlannedStep compile_data_parallel_plan(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                         int devices, const std::vector<int64_t>& candidate_rows,
                                         bool distribute_param, const std::vector<uint32_t>* order,
                                         uint64_t available_bytes, bool distribute_low_prec_param) {
  auto start = std::chrono::steady_clock::now();
  // Each candidate batch (and no split at all) is lowered; the cheapest by a simple cost model wins: the
  // bytes the busiest device's kernels write plus the bytes it sends, with a fallback weighing as much as
  // moving everything it wrote twice. Lowering takes well under a millisecond for a GPT step.
  std::optional<PlannedStep> best;
  int64_t rows = 0;
  auto cost = [](const PlannedStep& p) {
    return static_cast<double>(p.report.work_bytes_per_device) + static_cast<double>(p.report.collective_bytes_per_device) +
           1e3 * static_cast<double>(p.report.replicated_fallbacks);
  };
  std::vector<int64_t> candidates{0};
  for (int64_t r : candidate_rows)
    if (r >= devices && std::find(candidates.begin(), candidates.end(), r) == candidates.end()) candidates.push_back(r);
  std::string tried;
  for (int64_t r : candidates) {
    std::vector<RowRange> pieces;
    for (int d = 0; d < devices; ++d) pieces.push_back(runtime::split_rows(r, devices, d));
    auto lower = [&](bool params_in_rows) {
      BatchSplit split = split_batch(graph, canonical, pieces, r, order);
      OptimizerSharding sharding;
      const bool sharded = distribute_param || distribute_low_prec_param;
      if (sharded)
        sharding = shard_optimizer(graph, canonical, split, devices, {},
                                   {.optimizer = distribute_param,
                                    .params_in_rows = params_in_rows,
                                    .low_precision = distribute_low_prec_param});
      PlannedStep p = Emission(graph, canonical, split, devices, r).run();
      if (sharded) p.report.summary = describe(sharding, devices);
      return p;
    };
    PlannedStep p = lower(false);
    // ZeRO-3 where memory demands it: when the ZeRO-2 plan's peak does not fit what the devices have free,
    // the parameters rest in rows and are gathered for each pass, if that lowers the peak.
    if (distribute_param && available_bytes > 0 && max_peak_bytes(p) > available_bytes) {
      PlannedStep q = lower(true);
      if (max_peak_bytes(q) < max_peak_bytes(p)) {
        q.report.summary += fmt::format(" (ZeRO-2's peak +{} bytes is over the {} bytes free)", max_peak_bytes(p), available_bytes);
        p = std::move(q);
      }
    }
    tried += fmt::format("{}{}: {:.0f}", tried.empty() ? "" : ", ", r ? fmt::format("batch {}", r) : "not split", cost(p));
    if (!best || cost(p) < cost(*best)) {
      best = std::move(p);
      rows = r;
    }
  }
  PlannedStep plan = std::move(*best);
  for (const auto& line : plan.report.fallback_details) runtime::log().debug("{}", line);
  plan.report.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  uint64_t peak = 0;
  for (const auto& p : plan.programs) peak = std::max(peak, p.peak_bytes);
  plan.report.summary = fmt::format(
      "{} ops on {} devices, {}, {} collective bytes per device, {} replicated fallback op(s), peak +{} bytes per device "
      "(cost of candidates: {})",
      plan.num_nodes, devices, rows ? fmt::format("batch {} split by rows", rows) : std::string("not split (replicated)"),
      plan.report.collective_bytes_per_device, plan.report.replicated_fallbacks, peak, tried) + plan.report.summary;
  plan.report.split_rows = rows;
  return plan;
}

}  // namespace moreh::scheduler
