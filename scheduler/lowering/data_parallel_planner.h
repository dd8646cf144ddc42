// Batch splitting over N devices (DESIGN.md §2.5, MoAI's default: "divide the total batch size into N
// parts"): the step's data inputs are split by rows, sharding propagation carries the split through the
// graph with the rules of sharding_rules.h, partial sums are all-reduced where a replicated consumer needs
// them, and ops with no rule run replicated on gathered inputs. The result is one program per device,
// every program the same instructions over that device's local shapes.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "runtime/plan/program.h"
#include "scheduler/lowering/batch_split.h"
#include "scheduler/plan_report.h"

namespace moreh::scheduler {

// One candidate batch of `rows` rows in `pieces` (one per replica), lowered for `devices` devices: split (with
// tensor parallelism beside it when `tensor` says so), the optimizer sharded over the replicas as asked, and
// emitted. With distribute_param, a plan whose peak is over `available_bytes` (0: unknown) rests the
// parameters in rows (ZeRO-3) if that lowers the peak.
struct CandidateOptions {
  const std::vector<uint32_t>* order = nullptr;
  TensorSplit tensor{};
  bool distribute_param = false, distribute_low_prec_param = false;
  uint64_t available_bytes = 0;
  // Two devices' programs stand for all where every piece has as many rows (emit_spmd_plan): the search's.
  bool representative = false;
};
PlannedStep lower_candidate(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                            const std::vector<runtime::RowRange>& pieces, int64_t rows, int devices,
                            const CandidateOptions& options);

// `candidate_rows`: batch sizes to try (the leading dims of the step's host copies, step_analysis.h); the
// plan keeps the cheapest of them and of not splitting at all (every device runs the whole step).
// `distribute_param`: the optimizer's state and updates sharded over the devices (optimizer_sharding.h).
// `order`: the nodes in the order they run, some twice (recomputation.h); nullptr: as recorded.
// `available_bytes`: the least free memory of a device (0: unknown); with distribute_param, a plan whose peak
// is over it rests the parameters in rows (ZeRO-3) if that lowers the peak. `distribute_low_prec_param`:
// autocast's low-precision copies of the parameters made on each device's rows and gathered for each pass.
// `representative`: two devices' programs stand for all where they can (PlanRequest::representative).
PlannedStep compile_data_parallel_plan(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                         int devices, const std::vector<int64_t>& candidate_rows,
                                         bool distribute_param = false, const std::vector<uint32_t>* order = nullptr,
                                         uint64_t available_bytes = 0, bool distribute_low_prec_param = false,
                                         bool representative = false);

}  // namespace moreh::scheduler
