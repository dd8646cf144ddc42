#include "scheduler/analysis/backward_seeds.h"

#include <algorithm>

namespace moreh::scheduler {

std::vector<size_t> backward_seeds(const runtime::StepGraph& graph, const runtime::CanonicalGraph& cg) {
  const auto& nodes = graph.nodes();
  std::vector<bool> defined(cg.buffers.size(), false);
  for (size_t s = 0; s < cg.buffers.size(); ++s) defined[s] = cg.buffers[s].origin == runtime::BufferOrigin::kMaterialized;
  std::vector<size_t> seeds;
  bool scalar_result = false;  // a computed scalar (a loss) since the last seed
  for (size_t i = 0; i < nodes.size(); ++i) {
    const runtime::Node& node = nodes[i];
    const auto& in = cg.node_inputs[i];
    // A source only writes: it reads nothing, or only inputs it gives their first value.
    bool source = true;
    for (size_t k = 0; k < in.size(); ++k) {
      const bool written = std::find(node.written.begin(), node.written.end(), k) != node.written.end();
      if (!(written && !defined[in[k]])) source = false;
    }
    bool writes_scalar = false;
    for (const auto& o : node.outputs) writes_scalar = writes_scalar || o.sizes.empty();
    for (uint16_t w : node.written) writes_scalar = writes_scalar || node.inputs[w].sizes.empty();
    if (source && writes_scalar && scalar_result) {
      seeds.push_back(i);
      scalar_result = false;
    } else if (!source && writes_scalar && !node.host_input) {
      scalar_result = true;
    }
    for (uint16_t w : node.written) defined[in[w]] = true;
    for (uint32_t s : cg.node_outputs[i]) defined[s] = true;
  }
  return seeds;
}

}  // namespace moreh::scheduler
