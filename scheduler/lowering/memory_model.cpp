#include "scheduler/lowering/memory_model.h"

#include <algorithm>
#include <vector>

namespace moreh::scheduler {

using runtime::Instruction;
using Kind = Instruction::Kind;

namespace {

// Bytes from a buffer's start to the end of a view (a kernel's fresh output covers that much).
uint64_t view_end(const runtime::TensorRef& ref, int64_t offset, const runtime::Dims& sizes) {
  int64_t extent = 1;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 0) return 0;
    extent += (sizes[d] - 1) * ref.strides[d];
  }
  return static_cast<uint64_t>(offset + extent) * ref.itemsize;
}

}  // namespace

uint64_t program_peak(const runtime::DeviceProgram& program, const runtime::StepGraph& graph,
                      const runtime::CanonicalGraph& cg) {
  std::vector<int64_t> held(cg.buffers.size(), 0);
  int64_t total = 0, peak = 0;
  auto set = [&](uint32_t s, int64_t b) {
    total += b - held[s];
    held[s] = b;
    peak = std::max(peak, total);
  };
  auto transient = [&](int64_t b) { peak = std::max(peak, total + b); };
  for (const Instruction& ins : program.code) {
    const uint32_t s = ins.index;
    switch (ins.kind) {
      case Kind::kAllocate:
        set(s, static_cast<int64_t>(program.sizes.empty() ? cg.buffers[s].bytes : program.sizes.at(ins.aux)));
        break;
      case Kind::kRecv:
        if (held[s] == 0)
          set(s, static_cast<int64_t>(ins.range ? program.ranges.at(ins.range - 1).block_bytes : cg.buffers[s].bytes));
        break;
      case Kind::kBroadcast:
        if (held[s] == 0) set(s, static_cast<int64_t>(cg.buffers[s].bytes));
        break;
      case Kind::kAllGather:
        transient(static_cast<int64_t>(cg.buffers[s].bytes));
        set(s, static_cast<int64_t>(cg.buffers[s].bytes));
        break;
      case Kind::kRelease: set(s, 0); break;
      case Kind::kLaunch: {
        const auto& node = graph.nodes()[ins.index];
        const auto& outs = cg.node_outputs[ins.index];
        const runtime::LocalLaunch* local = ins.aux ? &program.launches.at(ins.aux - 1) : nullptr;
        int64_t fresh_joined = 0;
        std::vector<std::pair<uint32_t, int64_t>> bound;
        const bool by_element = local && !local->elements.empty();
        const runtime::ListElements lists = by_element ? runtime::list_elements(node) : runtime::ListElements{};
        for (size_t k = 0; k < outs.size(); ++k) {
          const uint32_t o = outs[k];
          int64_t b = static_cast<int64_t>(cg.buffers[o].bytes);
          if (by_element) {  // the outputs of its own list elements
            if (!std::binary_search(local->elements.begin(), local->elements.end(),
                                    static_cast<uint32_t>(std::max(lists.outputs[k], 0))))
              continue;
          } else if (local && k < local->outputs.size())
            b = std::min<int64_t>(b, static_cast<int64_t>(view_end(node.outputs[k], local->outputs[k].offset,
                                                                    local->outputs[k].sizes)));
          const bool joins = local && !local->joins.empty() &&
                             local->joins[k] != runtime::LocalLaunch::Join::kFresh && held[o] > 0;
          if (joins) fresh_joined += b;  // beside the block it joins, until it is added or copied in
          else bound.emplace_back(o, b);
        }
        for (const auto& [o, b] : bound) set(o, b);
        transient(fresh_joined);
        break;
      }
      default: break;
    }
  }
  return static_cast<uint64_t>(std::max<int64_t>(peak, 0));
}

}  // namespace moreh::scheduler
