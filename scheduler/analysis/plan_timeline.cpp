#include "scheduler/analysis/plan_timeline.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <memory>
#include <utility>

#include "scheduler/lowering/memory_model.h"
#include "scheduler/lowering/stage_cut.h"

namespace moreh::scheduler {

using runtime::Instruction;
using Kind = Instruction::Kind;

namespace {

bool is_collective(Kind k) {
  return k == Kind::kAllReduce || k == Kind::kAllGather || k == Kind::kBroadcast || k == Kind::kReduceScatter;
}

// Node costs, communication free.
class CostUnits final : public StepTiming {
 public:
  KernelTime kernel(const runtime::Node& node, const runtime::LocalLaunch*, double share) const override {
    return {node_cost(node) * share, 0};
  }
};

PlanTimeline simulate(const runtime::Plan& plan, const runtime::StepGraph& graph,
                      const runtime::CanonicalGraph* canonical, const StepTiming& timing) {
  const size_t n = plan.programs.size();
  PlanTimeline t;
  t.busy.assign(n, 0);
  t.communication.assign(n, 0);
  std::vector<double> clock(n, 0);
  double overhead = 0;  // the kernels' fixed costs, over every device
  std::vector<size_t> pc(n, 0);
  // Each device's blocks as its program runs: what a collective or a message moves.
  std::vector<std::unique_ptr<DeviceMemory>> memory(n);
  if (canonical)
    for (size_t i = 0; i < n; ++i)
      memory[i] = std::make_unique<DeviceMemory>(plan, plan.programs[i].device, &graph, *canonical);
  auto held = [&](size_t i, uint32_t slot) { return memory[i] ? static_cast<double>(memory[i]->held(slot)) : 0.0; };
  // Group 0 is every device of the plan, those left out of a plan of two lanes' programs too (its collectives'
  // cost depends on how many take part; PlanReport::stand_ins).
  std::vector<int> all_devices;
  for (const auto& p : plan.programs) all_devices.push_back(p.device);
  for (int d = 0; static_cast<int>(all_devices.size()) < plan.num_devices && d < plan.num_devices; ++d)
    if (std::find(all_devices.begin(), all_devices.end(), d) == all_devices.end()) all_devices.push_back(d);
  // Messages sent: (sender, receiver) -> arrival times, in order; how many each receiver has taken.
  std::map<std::pair<int, int>, std::vector<double>> sent;
  std::map<std::pair<int, int>, size_t> taken;
  // Collectives: per group, the k-th collective's arrivals and its duration (the largest block's).
  struct Meeting {
    std::vector<bool> arrived;
    size_t count = 0;
    double start = 0, bytes = 0;
  };
  std::map<std::pair<int, size_t>, Meeting> meetings;
  std::map<std::pair<size_t, int>, size_t> done_in_group;  // (program, group) -> collectives finished
  // A collective's members are the group's devices that have a program. A plan of two lanes' programs (the
  // search's, PlanReport::stand_ins) leaves the others out: they do what a stand-in does at the same time,
  // so the members here meet alone, and the machine runs `copies` times the work seen here.
  std::vector<bool> present;
  for (const auto& p : plan.programs) {
    if (p.device >= static_cast<int>(present.size())) present.resize(static_cast<size_t>(p.device) + 1, false);
    if (p.device >= 0) present[static_cast<size_t>(p.device)] = true;
  }
  std::vector<size_t> members(plan.groups.size(), 0);
  for (size_t g = 0; g < plan.groups.size(); ++g)
    for (int d : plan.groups[g])
      members[g] += d >= 0 && static_cast<size_t>(d) < present.size() && present[static_cast<size_t>(d)] ? 1 : 0;
  // Fewer programs than devices: the others are left out (with groups or without, as batch splitting's plans).
  const double copies =
      n > 0 && plan.num_devices > static_cast<int>(n) ? static_cast<double>(plan.num_devices) / n : 1.0;
  auto group_size = [&](int g) { return g == 0 ? n : members.at(static_cast<size_t>(g - 1)); };
  bool progress = true;
  while (progress) {
    progress = false;
    for (size_t i = 0; i < n; ++i) {
      const auto& prog = plan.programs[i];
      while (pc[i] < prog.code.size()) {
        const Instruction& ins = prog.code[pc[i]];
        double bytes_before = 0;
        if (ins.kind == Kind::kLaunch || ins.kind == Kind::kFused) {
          KernelTime cost;
          auto add = [&cost](KernelTime k) {
            cost.seconds += k.seconds;
            cost.overhead += k.overhead;
          };
          if (ins.kind == Kind::kLaunch) {
            double share = 1;
            const runtime::LocalLaunch* local = ins.aux ? &prog.launches.at(ins.aux - 1) : nullptr;
            if (local && local->batch_rows > 0)
              share = static_cast<double>(local->rows.count) / static_cast<double>(local->batch_rows);
            add(timing.kernel(graph.nodes().at(ins.index), local, share));
          } else {
            for (uint32_t node : prog.fused.at(ins.index).nodes) add(timing.kernel(graph.nodes().at(node), nullptr, 1));
          }
          clock[i] += cost.seconds;
          t.busy[i] += cost.seconds;
          overhead += cost.overhead;
        } else if (ins.kind == Kind::kScale || ins.kind == Kind::kMultiply || ins.kind == Kind::kDivide) {
          // A scale or a division passes over the slot's block; a multiply combines two scalars.
          const double took = ins.kind == Kind::kMultiply ? timing.scalar_kernel() : timing.block_pass(held(i, ins.index));
          clock[i] += took;
          t.busy[i] += took;
          overhead += timing.scalar_kernel();
        } else if (ins.kind == Kind::kSend) {
          const double bytes = ins.range ? static_cast<double>(prog.ranges.at(ins.range - 1).bytes) : held(i, ins.index);
          const int to = static_cast<int>(ins.aux);
          sent[{prog.device, to}].push_back(clock[i] + timing.message(bytes, prog.device, to));
        } else if (ins.kind == Kind::kRecv) {
          const std::pair<int, int> key{static_cast<int>(ins.aux), prog.device};
          const auto& times = sent[key];
          if (taken[key] >= times.size()) break;  // not sent yet
          const double arrival = times[taken[key]++];
          if (arrival > clock[i]) t.communication[i] += arrival - clock[i];
          clock[i] = std::max(clock[i], arrival);
        } else if (is_collective(ins.kind)) {  // the k-th collective of its group: all members meet
          // A range: the micro-batch's rows it sums (a pipeline's tensor-parallel sum), not the whole block.
          const double ranged = ins.range ? static_cast<double>(prog.ranges.at(ins.range - 1).bytes) : -1;
          bytes_before = ranged >= 0 ? ranged : held(i, ins.index);
          const size_t k = done_in_group[{i, ins.group}];
          Meeting& m = meetings[{ins.group, k}];
          if (m.arrived.empty()) m.arrived.assign(n, false);
          if (!m.arrived[i]) {
            m.arrived[i] = true;
            ++m.count;
            m.start = std::max(m.start, clock[i]);
            if (memory[i] && ranged < 0) {  // the whole value's bytes on this device: before a reduction, after a gather
              DeviceMemory after = *memory[i];
              after.apply(prog, ins);
              m.bytes = std::max({m.bytes, bytes_before, static_cast<double>(after.held(ins.index))});
            } else {
              m.bytes = std::max(m.bytes, bytes_before);
            }
          }
          if (m.count < group_size(ins.group)) break;
          const double took = timing.collective(ins.kind, m.bytes, ins.group == 0 ? all_devices : plan.groups.at(ins.group - 1));
          t.communication[i] += took + (m.start - clock[i]);
          clock[i] = m.start + took;
          ++done_in_group[{i, ins.group}];
        }
        if (memory[i]) memory[i]->apply(prog, ins);
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
  t.makespan = n ? *std::max_element(clock.begin(), clock.end()) : 0;
  double total = 0;
  for (double b : t.busy) total += b;
  // Devices that share their compute (host devices on one machine's cores) take turns beyond its concurrency.
  const int running = static_cast<int>(std::lround(static_cast<double>(n) * copies));
  const double work = total * copies, fixed = overhead * copies;
  if (const double speedup = timing.speedup(running); speedup < static_cast<double>(running))
    t.makespan = std::max(t.makespan, (work - fixed) / speedup + fixed / timing.overhead_parallelism(running));
  t.idle_fraction = t.makespan > 0 ? 1.0 - total / (static_cast<double>(n) * t.makespan) : 0.0;
  return t;
}

}  // namespace

PlanTimeline simulate_plan(const runtime::Plan& plan, const runtime::StepGraph& graph) {
  return simulate(plan, graph, nullptr, CostUnits());
}

PlanTimeline simulate_plan(const runtime::Plan& plan, const runtime::StepGraph& graph,
                           const runtime::CanonicalGraph& canonical, const StepTiming& timing) {
  return simulate(plan, graph, &canonical, timing);
}

}  // namespace moreh::scheduler
