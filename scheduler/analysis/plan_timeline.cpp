#include "scheduler/analysis/plan_timeline.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <utility>

#include "scheduler/lowering/stage_cut.h"

namespace moreh::scheduler {

using runtime::Instruction;
using Kind = Instruction::Kind;

namespace {

bool is_collective(Kind k) {
  return k == Kind::kAllReduce || k == Kind::kAllGather || k == Kind::kBroadcast || k == Kind::kReduceScatter;
}

}  // namespace

PlanTimeline simulate_plan(const runtime::Plan& plan, const runtime::StepGraph& graph) {
  const size_t n = plan.programs.size();
  PlanTimeline t;
  t.busy.assign(n, 0);
  std::vector<double> clock(n, 0);
  std::vector<size_t> pc(n, 0);
  std::map<int, size_t> index_of;  // device -> program
  for (size_t i = 0; i < n; ++i) index_of[plan.programs[i].device] = i;
  // Messages sent: (sender, receiver) -> times, in order; how many each receiver has taken.
  std::map<std::pair<int, int>, std::vector<double>> sent;
  std::map<std::pair<int, int>, size_t> taken;
  // Collectives: per group, the k-th collective's arrivals.
  struct Meeting {
    std::vector<bool> arrived;
    size_t count = 0;
    double start = 0;
  };
  std::map<std::pair<int, size_t>, Meeting> meetings;
  std::map<std::pair<size_t, int>, size_t> done_in_group;  // (program, group) -> collectives finished
  auto group_size = [&](int g) { return g == 0 ? n : plan.groups.at(g - 1).size(); };
  bool progress = true;
  while (progress) {
    progress = false;
    for (size_t i = 0; i < n; ++i) {
      const auto& prog = plan.programs[i];
      while (pc[i] < prog.code.size()) {
        const Instruction& ins = prog.code[pc[i]];
        if (ins.kind == Kind::kLaunch || ins.kind == Kind::kFused) {
          double cost = 0;
          if (ins.kind == Kind::kLaunch) {
            cost = node_cost(graph.nodes().at(ins.index));
            if (ins.aux) {
              const auto& l = prog.launches.at(ins.aux - 1);
              if (l.batch_rows > 0) cost *= static_cast<double>(l.rows.count) / static_cast<double>(l.batch_rows);
            }
          } else {
            for (uint32_t node : prog.fused.at(ins.index).nodes) cost += node_cost(graph.nodes().at(node));
          }
          clock[i] += cost;
          t.busy[i] += cost;
        } else if (ins.kind == Kind::kSend) {
          sent[{prog.device, static_cast<int>(ins.aux)}].push_back(clock[i]);
        } else if (ins.kind == Kind::kRecv) {
          const std::pair<int, int> key{static_cast<int>(ins.aux), prog.device};
          const auto& times = sent[key];
          if (taken[key] >= times.size()) break;  // not sent yet
          clock[i] = std::max(clock[i], times[taken[key]++]);
        } else if (is_collective(ins.kind)) {  // the k-th collective of its group: all members meet
          const size_t k = done_in_group[{i, ins.group}];
          Meeting& m = meetings[{ins.group, k}];
          if (m.arrived.empty()) m.arrived.assign(n, false);
          if (!m.arrived[i]) {
            m.arrived[i] = true;
            ++m.count;
            m.start = std::max(m.start, clock[i]);
          }
          if (m.count < group_size(ins.group)) break;
          clock[i] = std::max(clock[i], m.start);
          ++done_in_group[{i, ins.group}];
        }
        ++pc[i];
        progress = true;
      }
    }
  }
  for (size_t i = 0; i < n; ++i)
    if (pc[i] < plan.programs[i].code.size()) {
      t.stuck = fmt::format("device {} waits at instruction {} forever", plan.programs[i].device, pc[i]);
      break;
    }
  t.makespan = *std::max_element(clock.begin(), clock.end());
  double total = 0;
  for (double b : t.busy) total += b;
  t.idle_fraction = t.makespan > 0 ? 1.0 - total / (static_cast<double>(n) * t.makespan) : 0.0;
  return t;
}

}  // namespace moreh::scheduler
