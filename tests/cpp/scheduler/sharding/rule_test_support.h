// Nodes for the sharding rule tests: float32 tensors of given shapes over fresh buffers, and the batch
// dims of their inputs.
#pragma once
#include <memory>
#include <optional>
#include <vector>

#include "runtime/memory/virtual_memory.h"
#include "scheduler/sharding/sharding_rules.h"
#include "test_graph.h"

namespace moreh::testing {

struct RuleTest {
  runtime::VirtualMemory vm;
  // A tensor of `sizes` over a buffer of its own.
  runtime::TensorRef t(runtime::Dims sizes) {
    int64_t n = 1;
    for (int64_t s : sizes) n *= s;
    return shaped(std::make_shared<runtime::Buffer>(vm, static_cast<uint64_t>(std::max<int64_t>(n, 1)) * 4, 2), sizes);
  }
};

// The batch on dim `d` of every listed input, nothing elsewhere.
inline scheduler::BatchDims split(size_t inputs, std::vector<std::pair<size_t, int>> at) {
  scheduler::BatchDims b(inputs);
  for (const auto& [i, d] : at) b[i] = d;
  return b;
}

}  // namespace moreh::testing
