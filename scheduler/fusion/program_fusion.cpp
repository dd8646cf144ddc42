#include "scheduler/fusion/program_fusion.h"

#include <algorithm>
#include <unordered_set>
#include <vector>

namespace moreh::scheduler {

using runtime::Instruction;
using runtime::LocalLaunch;
using runtime::Node;
using runtime::TensorRef;
using Kind = Instruction::Kind;

namespace {

// One device's program as a step graph of its own: its launches on its local windows, and a node for each
// collective or piece of the plan's arithmetic, which writes its slot (and reads the other one it names).
struct DeviceGraph {
  runtime::StepGraph graph;
  std::vector<size_t> position;                 // local node -> instruction in the program
  std::vector<int64_t> node;                    // local node -> the step graph's node (-1: not a launch)
  std::vector<const LocalLaunch*> local;        // local node -> its launch on this device's rows, if split
};

TensorRef whole_slot(const runtime::CanonicalGraph& cg, uint32_t s) {
  TensorRef r;
  r.buffer = cg.bindings.at(s);
  r.sizes = {static_cast<int64_t>(cg.buffers.at(s).bytes)};
  r.strides = {1};
  r.dtype = -1;  // no element type the rules know: never fused
  r.itemsize = 1;
  return r;
}

DeviceGraph device_graph(const runtime::StepGraph& step, const runtime::CanonicalGraph& cg,
                         const runtime::DeviceProgram& program) {
  static const runtime::OpId kProgramStep = runtime::intern_op("moreh::program_step");
  DeviceGraph g;
  const auto& nodes = step.nodes();
  for (size_t p = 0; p < program.code.size(); ++p) {
    const Instruction& ins = program.code[p];
    if (ins.kind == Kind::kAllocate || ins.kind == Kind::kRelease) continue;
    Node n;
    const LocalLaunch* local = nullptr;
    if (ins.kind == Kind::kLaunch) {
      n = nodes.at(ins.index);
      if (ins.aux != 0) {
        local = &program.launches.at(ins.aux - 1);
        for (size_t i = 0; i < n.inputs.size(); ++i) {
          n.inputs[i].offset = local->inputs[i].offset;
          n.inputs[i].sizes = local->inputs[i].sizes;
        }
        for (size_t k = 0; k < n.outputs.size(); ++k) {
          n.outputs[k].offset = local->outputs[k].offset;
          n.outputs[k].sizes = local->outputs[k].sizes;
        }
      }
    } else {
      n.op = kProgramStep;
      n.inputs.push_back(whole_slot(cg, ins.index));
      n.input_args.push_back(0);
      n.written.push_back(0);
      if (ins.kind == Kind::kMultiply || ins.kind == Kind::kDivide) {
        n.inputs.push_back(whole_slot(cg, ins.aux));
        n.input_args.push_back(1);
      }
    }
    g.graph.append(std::move(n));
    g.position.push_back(p);
    g.node.push_back(ins.kind == Kind::kLaunch ? static_cast<int64_t>(ins.index) : -1);
    g.local.push_back(local);
  }
  return g;
}

}  // namespace

void fuse_device_programs(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                          PlannedStep& plan, const FusionLimits& limits) {
  for (auto& program : plan.programs) {
    const DeviceGraph g = device_graph(graph, canonical, program);
    const runtime::CanonicalGraph local_cg = runtime::CanonicalGraph::build(g.graph);
    // A device's program allocates and releases as it goes: its groups run where their last node stood.
    FusionLimits program_limits = limits;
    program_limits.early_groups = false;
    FusionResult r = fuse_elementwise(g.graph, local_cg, program_limits);
    const size_t code_size = program.code.size();
    std::vector<int32_t> fused_at(code_size, -1);
    std::vector<bool> skip(code_size, false);
    std::vector<int64_t> release_to(code_size, -1);  // a release inside a group's span waits for its kernel
    for (auto& f : r.launches) {
      // The kernel in the step graph's terms: its nodes, with this device's offsets.
      auto translate = [&](runtime::FusedLaunch::Tensor& t, bool output) {
        const LocalLaunch* local = g.local[t.node];
        if (local) t.offset = (output && t.fresh ? local->outputs : local->inputs).at(t.index).offset;
        t.node = static_cast<uint32_t>(g.node[t.node]);
      };
      for (auto& t : f.inputs) translate(t, false);
      for (auto& t : f.outputs) translate(t, true);
      for (auto& sc : f.scalars) sc.node = static_cast<uint32_t>(g.node[sc.node]);
      const size_t first = g.position[f.nodes.front()], last = g.position[f.nodes.back()];
      for (auto& m : f.nodes) m = static_cast<uint32_t>(g.node[m]);
      std::unordered_set<uint32_t> slots;
      for (uint32_t n : f.nodes) {
        slots.insert(canonical.node_inputs[n].begin(), canonical.node_inputs[n].end());
        slots.insert(canonical.node_outputs[n].begin(), canonical.node_outputs[n].end());
      }
      for (size_t p = first + 1; p < last; ++p)
        if (program.code[p].kind == Kind::kRelease && slots.count(program.code[p].index))
          release_to[p] = std::max<int64_t>(release_to[p], static_cast<int64_t>(last));
    }
    for (size_t i = 0; i < r.group_of.size(); ++i) {
      if (r.group_of[i] < 0) continue;
      if (r.runs_at[i] == i) fused_at[g.position[i]] = r.group_of[i];
      else skip[g.position[i]] = true;
    }
    // The program again: kernels where their groups end, the releases a group still needed after it.
    std::vector<Instruction> code;
    code.reserve(code_size);
    std::vector<std::vector<Instruction>> moved(code_size);
    uint64_t launches = 0;
    for (size_t p = 0; p < code_size; ++p) {
      const Instruction& ins = program.code[p];
      if (ins.kind == Kind::kRelease && release_to[p] >= 0) {
        moved[static_cast<size_t>(release_to[p])].push_back(ins);
      } else if (fused_at[p] >= 0) {
        code.push_back({Kind::kFused, static_cast<uint32_t>(fused_at[p])});
        ++launches;
      } else if (!skip[p]) {
        code.push_back(ins);
        launches += ins.kind == Kind::kLaunch;
      }
      for (const Instruction& m : moved[p]) code.push_back(m);
    }
    program.code = std::move(code);
    program.fused = std::move(r.launches);
    if (program.device == 0) {
      plan.report.fused_nodes = r.fused_nodes;
      plan.report.launches = launches;
    }
  }
}

}  // namespace moreh::scheduler
