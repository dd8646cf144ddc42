#include "scheduler/step_analysis.h"

#include <algorithm>
#include <utility>

namespace moreh::scheduler {

StepAnalysis analyze_step(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical) {
  StepAnalysis a;
  a.roles.resize(canonical.buffers.size(), BufferRole::kPersistent);
  for (size_t s = 0; s < canonical.buffers.size(); ++s)
    if (!canonical.buffers[s].live_after) a.roles[s] = BufferRole::kTemporary;

  std::vector<std::pair<int64_t, int>> counts;  // leading dimension -> data inputs with it
  const auto& nodes = graph.nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    const runtime::Node& n = nodes[i];
    if (!n.host_input) continue;
    for (uint16_t w : n.written) {
      const uint32_t slot = canonical.node_inputs[i][w];
      if (a.roles[slot] == BufferRole::kDataInput) continue;
      a.roles[slot] = BufferRole::kDataInput;
      a.data_inputs.push_back(slot);
      const runtime::TensorRef& ref = n.inputs[w];
      if (ref.sizes.empty()) continue;
      auto it = std::find_if(counts.begin(), counts.end(), [&](const auto& c) { return c.first == ref.sizes[0]; });
      if (it == counts.end()) counts.emplace_back(ref.sizes[0], 1);
      else ++it->second;
    }
  }
  std::stable_sort(counts.begin(), counts.end(), [](const auto& x, const auto& y) { return x.second > y.second; });
  for (const auto& c : counts) a.batch_sizes.push_back(c.first);
  if (!a.batch_sizes.empty()) a.batch_size = a.batch_sizes.front();
  return a;
}

}  // namespace moreh::scheduler
