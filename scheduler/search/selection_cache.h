// Advanced Parallelization's selections kept across runs: a file per step graph and flavor under
// <config_dir>/ap/, so that the second run of a script takes the layout the first one chose without searching.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "runtime/config/parallel_config.h"
#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"

namespace moreh::scheduler {

// A hash of the step graph that another process recording the same script gets too: op names (not this
// process's op ids), the slots each node reads and writes, shapes, strides, types, and the buffers' sizes.
uint64_t stable_graph_hash(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical);

class SelectionCache {
 public:
  // `dir` empty: nothing is kept.
  explicit SelectionCache(std::string dir) : dir_(std::move(dir)) {}
  // The layout selected earlier for this graph on `devices` devices of `flavor`; nullopt when there is none or
  // its file cannot be read back (then it is searched again).
  std::optional<runtime::ParallelConfig> find(uint64_t graph_hash, const std::string& flavor, int devices) const;
  // Keeps `config`; false (and nothing kept) when the directory cannot be written.
  bool store(uint64_t graph_hash, const std::string& flavor, int devices, const runtime::ParallelConfig& config) const;
  std::string path(uint64_t graph_hash, const std::string& flavor, int devices) const;

 private:
  std::string dir_;
};

}  // namespace moreh::scheduler
