// Advanced Parallelization's search (DESIGN.md §2.5): every candidate layout lowered to per-device programs on
// a thread pool, those that do not fit a device's memory dropped, the rest timed by the cost simulator, the
// cheapest chosen; every candidate's fate kept for the log and the explanation.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/config/parallel_config.h"
#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "scheduler/fusion/elementwise_fusion.h"
#include "scheduler/plan_report.h"
#include "scheduler/search/step_cost.h"

namespace moreh::scheduler {

// How much of this process's memory lowered plans may take between the search's two phases, by default: a
// quarter of the machine's memory, at least 2 GiB (plans not kept are lowered again to be timed).
uint64_t default_kept_plan_bytes();

struct SearchRequest {
  const runtime::StepGraph& graph;
  const runtime::CanonicalGraph& canonical;
  int devices = 1;
  std::vector<uint64_t> used_bytes;  // per device: what it holds before the step
  uint64_t capacity = 0;             // one device's memory
  uint64_t margin = 0;               // kept free on every device (MOREH_MEMORY_MARGIN)
  bool fusion = false;
  FusionLimits fusion_limits;
  const ProfileTiming& timing;
  int threads = 0;                   // 0: the machine's cores
  int max_micro_batches = 8;
  // The most this process keeps of lowered plans between lowering and timing; past it, candidates that fit
  // are lowered again to be timed (a big model's many candidates would otherwise not fit the host's memory).
  uint64_t kept_plan_bytes = default_kept_plan_bytes();
  bool autocast = false;             // the step casts parameters to a low precision (else found in the graph)
  // Whether a candidate may be lowered (empty: all may); the others are dropped with `inadmissible_reason`.
  std::function<bool(const runtime::ParallelConfig&)> admissible;
  std::string inadmissible_reason;
  // Lower pipelines for phases 1 and 2 as two lanes' programs only where the lanes are alike
  // (PlanRequest::representative): 2/(dp·tp) of the work; the selected candidate is lowered for every device
  // after, its peaks and time measured on that plan (and, should it not fit after all, the next is taken).
  bool representative = true;
  // Candidates another one decides for are not lowered (their fate names it): one with recomputation where the
  // same layout without it fits (recomputation only adds time), one without distribute_param where every
  // sibling with it (less to hold) was lowered and none fits, one with recomputation where the same layout
  // without it is over the memory at a moment that holds no value of the forward pass. False: every one lowered.
  bool skip_dominated = true;
};

struct CandidateResult {
  runtime::ParallelConfig config;
  // Why it was dropped (empty: it fits and was timed): it cannot be lowered, or its peak exceeds a device.
  std::string dropped;
  // Per device: what it held before the step plus the step's peak (a device left out as its stand-in's when
  // the candidate was lowered for two lanes; the selected one's from its plan for every device).
  std::vector<uint64_t> peak_bytes;
  double step_ms = 0;                // predicted
  double tokens_per_s = 0;           // predicted: the step's tokens (samples where there are no tokens) per second
  double idle_fraction = 0, communication_ms = 0;
  double lower_ms = 0;               // lowering it to per-device programs, wall time on its pool thread
  double bound_ms = 0;               // a lower bound on step_ms from the graph alone (step_bound.h)
  // Not lowered (-1: lowered): the candidate that decided for it, and how.
  enum class Dominance : uint8_t {
    kNone,
    kSlower,  // it recomputes, and candidate dominated_by (the layout without recomputation) fits
    kLarger,  // it does not shard over the replicas, and dominated_by (with distribute_param) does not fit
    // it recomputes, and dominated_by (the layout without recomputation) is over a device's memory in values
    // recomputation does not drop: at a moment that device holds no value of the forward pass, or in its other
    // values alone at some moment (recomputation drops and makes only the forward pass's)
    kOverAnyway,
  };
  int dominated_by = -1;
  Dominance dominance = Dominance::kNone;
  std::shared_ptr<PlannedStep> plan;  // the selected candidate's (the others' are not kept)
  uint64_t max_peak() const;
};

struct SearchResult {
  std::vector<CandidateResult> candidates;  // in enumerate_candidates' order (the widened ones after)
  size_t widened = 0;                       // candidates added when none of the first fitted
  size_t lowered_and_fitting = 0;           // after the memory prune
  size_t lowered_again = 0;                 // fitting candidates whose plans were not kept (kept_plan_bytes)
  size_t feasible = 0;                      // candidates that fit and whose programs finish
  size_t slower = 0, larger = 0, over_anyway = 0;  // candidates not lowered (CandidateResult::Dominance)
  double compile_ms = 0, cost_ms = 0;       // the two phases' wall time
  int selected = -1;                        // the cheapest feasible candidate (-1: none fits)
  int64_t tokens_per_step = 0;
  // The candidate needing the least memory (the best a user could hope for when none fits).
  int least_memory() const;
};

// Where the search stands, for the log: the candidates enumerated, lowered (and pruned), timed.
// kWidened: none fitted, and the candidates with more micro-batches (kWidenedMicroBatches per replica at most,
// and without stages) were added and lowered.
enum class SearchPhase { kEnumerated, kWidened, kLowered, kTimed };
inline constexpr int kWidenedMicroBatches = 16;  // more makes plans of big models too large to hold
using SearchProgress = std::function<void(SearchPhase, const SearchResult&)>;

// Runs the search. The candidates come from enumerate_candidates over the step's batch; when none fits, those
// with up to kWidenedMicroBatches micro-batches per replica, with stages or without, are tried too. The selected
// one's config has batch_per_device filled in (rows per device and micro-batch) and its plan kept.
SearchResult search_parallel_layouts(const SearchRequest& request, const SearchProgress& progress = {});

// Whether the step casts parameters (values that existed before it and outlive it) to a narrower type:
// autocast's low-precision copies, which distribute_low_prec_param shards (optimizer_sharding.h's rule).
bool casts_parameters(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical);
// The step's batch rows: the leading dimension of its first data input that the script does not keep after the
// step (not a parameter model.to() uploads in the same graph); 0 for a step without a batch.
int64_t step_rows(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical);
// The step's tokens: that input's elements when it holds integer ids of at most 2 dimensions (a batch of
// sequences), else its rows (samples); 0 for a step without a batch.
int64_t step_tokens(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical);

}  // namespace moreh::scheduler
