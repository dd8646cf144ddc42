// Advanced Parallelization's candidates (DESIGN.md §2.5): every layout of MoAI's configuration line that the
// devices and the step's batch can hold, each distinct plan once, before any is lowered.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/config/parallel_config.h"

namespace moreh::scheduler {

struct CandidateSpace {
  int devices = 1;
  int64_t batch = 0;             // the step's batch (rows); 0: unknown, nothing splits it
  bool autocast = false;         // the step casts parameters (distribute_low_prec_param has copies to shard)
  int max_micro_batches = 8;     // per replica, with pipeline stages
  // Micro-batches without pipeline stages too (a replica accumulates its gradients over them): what lets a big
  // batch fit when every layout of whole micro-batches is over the memory.
  bool micro_batches_without_stages = false;
};

// The candidates, in a stable order (fewest stages and TP ranks first). Every dp × pp × tp factorisation of the
// devices whose replicas each get an equal part of the batch; with stages (or with micro_batches_without_stages),
// each divisor of a replica's rows up to `max_micro_batches` as micro-batches; recomputation on and off; with replicas, distribute_param on and off, and
// under autocast distribute_low_prec_param too. Pruned as duplicates of another candidate's plan: sharding over a
// single replica (nothing to shard over), and layouts that would leave a replica without rows. Each is checked by
// runtime::parallel_layout.
std::vector<runtime::ParallelConfig> enumerate_candidates(const CandidateSpace& space);

}  // namespace moreh::scheduler
