// Fusing the step graph's elementwise nodes into generated kernels (DESIGN.md §2.6: runtime-generated kernels
// for chains of elementwise ops). Nodes of one output shape join one group when the order of the step allows
// it: a chain (gelu's pieces, a backward's products) and independent nodes alike (an optimizer's updates of
// every parameter of one shape), in place or into fresh tensors. A group runs where its last node stood; a
// node in between that reads what the group writes, or writes what it reads, ends the group first. Values
// that only the group reads, and that the script no longer holds, are never stored.
//
// Then early groups: of the nodes still alone, those that read only values no node before them wrote, and
// write only a fresh tensor or one nothing before them touched, can run anywhere before their place. One
// kernel per shape takes them all, where the first stood: the bf16 casts of every layer's weights of one
// shape, under autocast, become one launch (their copies then live from the first cast on, as autocast's
// weight-cast cache keeps them in eager PyTorch).
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/plan/program.h"

namespace moreh::scheduler {

struct FusionLimits {
  size_t min_nodes = 2;            // a group of fewer nodes runs them as they are
  size_t max_nodes = 128;          // nodes per group
  size_t max_parameter_bytes = 3072;  // the kernel's parameters (CUDA takes 4 KiB)
  // Early groups: nodes left alone by the pass above whose inputs hold their values from the step's start
  // (autocast's weight casts) share one kernel per shape, run where the first of them stood.
  bool early_groups = true;
};

struct FusionResult {
  std::vector<runtime::FusedLaunch> launches;
  std::vector<int32_t> group_of;      // node -> its launch, or -1
  std::vector<uint32_t> runs_at;      // node -> where it runs (a group's last node for its members; an
                                      // early group's first)
  std::vector<bool> unstored;         // slot -> produced inside a group and never stored
  uint64_t fused_nodes = 0;
};

FusionResult fuse_elementwise(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                              const FusionLimits& limits = {});

}  // namespace moreh::scheduler
