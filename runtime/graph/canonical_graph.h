// The canonical form of a step graph: buffers renumbered by first use and described by what a plan
// depends on (size, origin, whether the script still holds them), plus a hash of the whole. Two steps
// with the same hash run the same plan with different bindings.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/graph/step_graph.h"

namespace moreh::runtime {

enum class BufferOrigin : uint8_t {
  kMaterialized,    // exists on the device before the step (parameters, earlier results)
  kUnmaterialized,  // created before the step but never written (torch.empty): the plan allocates it
  kProduced,        // a fresh output of a node in this step
};

struct CanonicalBuffer {
  uint64_t bytes = 0;
  BufferOrigin origin = BufferOrigin::kMaterialized;
  bool live_after = true;  // the script still holds it at the boundary (persistent state, results)
};

struct CanonicalGraph {
  std::vector<CanonicalBuffer> buffers;                 // slot -> description
  std::vector<std::shared_ptr<Buffer>> bindings;        // slot -> this step's buffer
  std::vector<std::vector<uint32_t>> node_inputs;       // node -> slots of its inputs
  std::vector<std::vector<uint32_t>> node_outputs;      // node -> slots of its fresh outputs
  uint64_t hash = 0;

  // How a view's storage offset enters the hash. kRelative: only its distance from the buffer's first view in
  // the step, so a sliding window over one buffer (batches source[i:i+35]) is one graph whose offsets are step
  // data, like a learning rate; what aliases what stays in the hash. Right for plans that read each launch's
  // offsets from the step's own nodes (one device). kAbsolute: the offset itself (plans over several
  // devices compute per-device offsets from it).
  enum class Offsets : uint8_t { kAbsolute, kRelative };
  static CanonicalGraph build(const StepGraph& graph, Offsets offsets = Offsets::kAbsolute);
};

}  // namespace moreh::runtime
