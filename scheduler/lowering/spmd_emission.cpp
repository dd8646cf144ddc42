#include "scheduler/lowering/spmd_emission.h"

#include <algorithm>

#include "scheduler/lowering/liveness.h"
#include "scheduler/lowering/memory_model.h"

namespace moreh::scheduler {

using runtime::Instruction;
using runtime::RowRange;
using Kind = Instruction::Kind;

namespace {

// The SPMD steps become one program per device, with the bytes its kernels write and its collectives send
// (the memory model gives each program's peak).
class Emission {
 public:
  Emission(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical, const BatchSplit& split,
           int devices, int emitted)
      : graph_(graph), cg_(canonical), split_(split), steps_(split.steps), n_(devices), emitted_(emitted) {}

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
    plan.programs.resize(emitted_);
    for (int d = 0; d < emitted_; ++d) plan.programs[d].device = d;
    if (emitted_ < n_)
      for (int d = 0; d < n_; ++d) plan.report.stand_ins.push_back(std::min(d, emitted_ - 1));
    std::vector<uint64_t> work(n_, 0);  // bytes the device's kernels write: the cost model's proxy for work
    uint64_t comm_bytes = 0;
    // Tensor parallelism beside the batch split: collectives along one axis span a group, the tensor ranks of
    // a piece (groups 1..P) or a tensor rank's pieces (groups P+1..P+T).
    const int t = std::max(split_.tensor_ranks, 1), pieces = n_ / t;
    const bool mesh = t > 1 && pieces > 1;
    if (mesh) {
      for (int p = 0; p < pieces; ++p) {
        std::vector<int> g;
        for (int r = 0; r < t; ++r) g.push_back(p * t + r);
        plan.groups.push_back(std::move(g));
      }
      for (int r = 0; r < t; ++r) {
        std::vector<int> g;
        for (int p = 0; p < pieces; ++p) g.push_back(p * t + r);
        plan.groups.push_back(std::move(g));
      }
    }
    auto group_of = [&](SplitStep::Axis axis, int d) -> uint16_t {
      if (!mesh || axis == SplitStep::Axis::kAll) return 0;
      return static_cast<uint16_t>(axis == SplitStep::Axis::kTensor ? 1 + d / t : 1 + pieces + d % t);
    };
    auto members = [&](SplitStep::Axis axis) {
      return !mesh || axis == SplitStep::Axis::kAll ? n_ : axis == SplitStep::Axis::kTensor ? t : pieces;
    };
    for (size_t i = 0; i < steps_.size(); ++i) {
      const SplitStep& st = steps_[i];
      for (int d = 0; d < emitted_; ++d) {
        auto& prog = plan.programs[d];
        Instruction ins{st.kind, st.index, st.aux};
        ins.group = group_of(st.axis, d);
        if (st.geometry) {
          prog.geometries.push_back(*st.geometry);
          ins.aux = static_cast<uint32_t>(prog.geometries.size());
        }
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
              if (st.launches.empty() || k >= st.launches[d].outputs.size()) {
                work[d] += part_bytes(s, d);
                continue;
              }
              // What the device's view of the output covers.
              uint64_t elems = 1;
              for (int64_t size : st.launches[d].outputs[k].sizes) elems *= static_cast<uint64_t>(size);
              work[d] += elems * graph_.nodes()[st.index].outputs[k].itemsize;
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
      const int m = members(st.axis);
      const uint64_t whole = st.geometry ? runtime::whole_bytes(*st.geometry, bytes(st.index)) : bytes(st.index);
      if (st.kind == Kind::kAllReduce && m > 1) comm_bytes += static_cast<uint64_t>(2.0 * (m - 1) / m * whole);
      if (st.kind == Kind::kAllGather || st.kind == Kind::kBroadcast)
        comm_bytes += static_cast<uint64_t>((m - 1) * whole / m);
      for (uint32_t s : release_after[i])
        if (!cg_.buffers[s].live_after)
          for (int d = 0; d < emitted_; ++d) plan.programs[d].code.push_back({Kind::kRelease, s});
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
  // What device d holds of slot s once split (its rows of each block), else the whole value.
  uint64_t part_bytes(uint32_t s, int d) const {
    const runtime::SlotInfo& info = split_.slots[s];
    if (info.row_bytes == 0) return bytes(s);
    const uint64_t block_row = info.row_bytes * std::max<uint64_t>(info.outer, 1);
    return block_row * static_cast<uint64_t>(runtime::split_rows(static_cast<int64_t>(bytes(s) / block_row), n_, d).count);
  }

  const runtime::StepGraph& graph_;
  const runtime::CanonicalGraph& cg_;
  const BatchSplit& split_;
  const std::vector<SplitStep>& steps_;
  const int n_;
  const int emitted_;  // devices with a program: all, or two standing for all
};

}  // namespace

namespace {

bool same_refs(const std::vector<runtime::LocalRef>& a, const std::vector<runtime::LocalRef>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].sizes != b[i].sizes || a[i].strides != b[i].strides) return false;
  return true;
}

// Whether every device after device 1 runs each step as device 1 does: its views' shapes, rows, elements,
// allocations and factors (where a part divides unevenly, the devices differ, and each gets its program).
bool like_device_one(const BatchSplit& split, int devices) {
  for (const SplitStep& st : split.steps) {
    for (int d = 2; d < devices; ++d) {
      const auto i = static_cast<size_t>(d);
      if (st.kind == Kind::kLaunch && !st.launches.empty()) {
        const runtime::LocalLaunch &a = st.launches.at(i), &b = st.launches.at(1);
        if (!same_refs(a.inputs, b.inputs) || !same_refs(a.outputs, b.outputs) || a.rows.count != b.rows.count ||
            a.elements != b.elements || a.joins != b.joins || a.factors != b.factors)
          return false;
      }
      if (st.kind == Kind::kAllocate && st.bytes.at(i) != st.bytes.at(1)) return false;
      if (st.kind == Kind::kScale && st.factors.at(i) != st.factors.at(1)) return false;
    }
  }
  return true;
}

}  // namespace

PlannedStep emit_spmd_plan(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                           const BatchSplit& split, int devices, bool representative) {
  const bool two = representative && devices > 2 && like_device_one(split, devices);
  return Emission(graph, canonical, split, devices, two ? 2 : devices).run();
}

double spmd_cost(const PlannedStep& p) {
  return static_cast<double>(p.report.work_bytes_per_device) + static_cast<double>(p.report.collective_bytes_per_device) +
         1e3 * static_cast<double>(p.report.replicated_fallbacks);
}

}  // namespace moreh::scheduler
