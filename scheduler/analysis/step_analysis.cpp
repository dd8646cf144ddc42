#include "scheduler/analysis/step_analysis.h"

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
  // Host copies that a later node of the step writes again are state being set up (the parameters that
  // model.to("moreh") uploads and the optimizer then updates in the same graph), not the step's data:
  // they decide the batch size only when the step has no other host copy.
  std::vector<int> last_write(canonical.buffers.size(), -1);
  for (size_t i = 0; i < nodes.size(); ++i)
    for (uint16_t w : nodes[i].written) last_write[canonical.node_inputs[i][w]] = static_cast<int>(i);
  std::vector<std::pair<int64_t, int>> state_counts;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const runtime::Node& n = nodes[i];
    if (!n.host_input) continue;
    for (uint16_t w : n.written) {
      const uint32_t slot = canonical.node_inputs[i][w];
      if (a.roles[slot] == BufferRole::kDataInput) continue;
      a.roles[slot] = BufferRole::kDataInput;
      a.data_inputs.push_back(slot);
      const runtime::TensorRef& ref = n.inputs[w];
      if (ref.sizes.empty() || ref.sizes[0] == 0) continue;  // an empty tensor carries no batch
      auto& into = last_write[slot] > static_cast<int>(i) ? state_counts : counts;
      auto it = std::find_if(into.begin(), into.end(), [&](const auto& c) { return c.first == ref.sizes[0]; });
      if (it == into.end()) into.emplace_back(ref.sizes[0], 1);
      else ++it->second;
    }
  }
  const bool only_state = counts.empty();
  if (only_state) counts = std::move(state_counts);
  std::stable_sort(counts.begin(), counts.end(), [](const auto& x, const auto& y) { return x.second > y.second; });
  for (const auto& c : counts) a.batch_sizes.push_back(c.first);
  if (!a.batch_sizes.empty()) a.batch_size = a.batch_sizes.front();
  a.split_rows = only_state ? 0 : a.batch_size;
  return a;
}

}  // namespace moreh::scheduler
