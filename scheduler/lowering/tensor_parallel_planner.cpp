#include "scheduler/lowering/tensor_parallel_planner.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <set>

#include "runtime/base/spdlog_logger.h"
#include "scheduler/analysis/linear_pairs.h"
#include "scheduler/lowering/memory_model.h"
#include "scheduler/lowering/data_parallel_planner.h"
#include "scheduler/lowering/spmd_emission.h"

namespace moreh::scheduler {

namespace {

// The optimizer's state that the step makes (AdamW's first step: torch.zeros_like of every parameter, all of it
// before the first update) is split as its parameter is, so that it is made in its parts rather than whole and
// then cut. Values an elementwise op reads or writes element for element (the same sizes and strides over the
// whole buffer; a _foreach_ op's element e with element e) are joined; a value no op has written before the step
// (origin kUnmaterialized) joined to seeded ones that all split alike takes their seed. AdamW's exp_avg meets its
// parameter in addcdiv_, exp_avg_sq meets the gradient, which meets exp_avg.
void seed_state_beside_parameters(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                  SplitSeeds& seeds) {
  const auto& nodes = graph.nodes();
  std::vector<uint32_t> parent(canonical.buffers.size());
  for (uint32_t s = 0; s < parent.size(); ++s) parent[s] = s;
  auto find = [&](uint32_t s) {
    while (parent[s] != s) s = parent[s] = parent[parent[s]];
    return s;
  };
  auto whole = [&](const runtime::TensorRef& r, uint32_t slot) {
    int64_t n = 1;
    for (int64_t z : r.sizes) n *= z;
    return r.offset == 0 && static_cast<uint64_t>(n) * r.itemsize == canonical.buffers[slot].bytes;
  };
  for (size_t i = 0; i < nodes.size(); ++i) {
    const runtime::Node& n = nodes[i];
    static const std::set<runtime::OpId> kCopies = {runtime::intern_op("aten::copy_"), runtime::intern_op("aten::clone"),
                                                    runtime::intern_op("aten::_to_copy")};
    if (!runtime::op_facts(n.op).pointwise && !kCopies.count(n.op)) continue;
    const runtime::ListElements lists = runtime::list_elements(n);
    const auto& in = canonical.node_inputs[i];
    const auto& out = canonical.node_outputs[i];
    // (element, first ref and slot of it): per list element, or one group for the whole op.
    std::map<int, std::pair<const runtime::TensorRef*, uint32_t>> first;
    auto join = [&](int element, const runtime::TensorRef& r, uint32_t slot) {
      if (!whole(r, slot)) return;
      auto [it, fresh] = first.try_emplace(element, &r, slot);
      if (fresh) return;
      const runtime::TensorRef& f = *it->second.first;
      if (f.sizes == r.sizes && f.strides == r.strides) parent[find(slot)] = find(it->second.second);
    };
    for (size_t x = 0; x < in.size(); ++x) join(lists.length ? lists.inputs[x] : 0, n.inputs[x], in[x]);
    for (size_t o = 0; o < out.size(); ++o) join(lists.length ? lists.outputs[o] : 0, n.outputs[o], out[o]);
  }
  std::map<uint32_t, std::optional<SplitLayout>> layout;  // per class: its seeds' one layout (nullopt: several)
  for (const auto& [slot, l] : seeds) {
    auto [it, fresh] = layout.try_emplace(find(slot), l);
    if (!fresh && it->second != l) it->second.reset();
  }
  for (uint32_t s = 0; s < canonical.buffers.size(); ++s) {
    if (canonical.buffers[s].origin != runtime::BufferOrigin::kUnmaterialized || seeds.count(s)) continue;
    const auto it = layout.find(find(s));
    if (it != layout.end() && it->second) seeds[s] = *it->second;
  }
}

}  // namespace

SplitSeeds tensor_parallel_seeds(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                 int devices, int* pairs, const std::vector<LinearPair>* known) {
  SplitSeeds seeds;
  int used = 0;
  std::vector<LinearPair> found;
  if (!known) found = find_linear_pairs(graph, canonical);
  for (const LinearPair& p : known ? *known : found) {
    if (p.hidden % devices != 0 || p.hidden < devices) continue;  // even parts only
    seeds.insert(p.seeds.begin(), p.seeds.end());
    ++used;
  }
  if (pairs) *pairs = used;
  seed_state_beside_parameters(graph, canonical, seeds);
  return seeds;
}

PlannedStep compile_tensor_parallel_plan(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                         const TensorParallelOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const int tp = options.tp, dp = std::max(options.dp, 1), devices = tp * dp;
  int pairs = 0;
  const SplitSeeds seeds = tensor_parallel_seeds(graph, canonical, tp, &pairs, options.linear_pairs);
  // The batch: each candidate that every replica gets an equal part of (the tensor splits' layouts are a
  // piece's, the same on every replica), and no split at all; the cheapest by spmd_cost wins.
  std::vector<int64_t> candidates{0};
  if (dp > 1)
    for (int64_t r : options.candidate_rows)
      if (r >= dp && r % dp == 0 && std::find(candidates.begin(), candidates.end(), r) == candidates.end())
        candidates.push_back(r);
  std::optional<PlannedStep> best;
  int64_t rows = 0;
  std::string tried;
  for (int64_t r : candidates) {
    std::vector<runtime::RowRange> pieces;
    for (int p = 0; p < dp; ++p) pieces.push_back(r ? runtime::split_rows(r, dp, p) : runtime::RowRange{});
    PlannedStep p = lower_candidate(graph, canonical, pieces, r, devices,
                                    {.order = options.order,
                                     .tensor = {&seeds, tp},
                                     .distribute_param = options.distribute_param,
                                     .distribute_low_prec_param = options.distribute_low_prec_param,
                                     .available_bytes = options.available_bytes,
                                     .representative = options.representative});
    if (dp > 1)
      tried += fmt::format("{}{}: {:.0f}", tried.empty() ? "" : ", ", r ? fmt::format("batch {}", r) : "not split",
                           spmd_cost(p));
    if (!best || spmd_cost(p) < spmd_cost(*best)) {
      best = std::move(p);
      rows = r;
    }
  }
  PlannedStep plan = std::move(*best);
  const std::string sharding = plan.report.summary;  // the optimizer's sharding, when asked
  for (const auto& line : plan.report.fallback_details) runtime::log().debug("{}", line);
  plan.report.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const std::string batch = dp == 1    ? std::string()
                            : rows > 0 ? fmt::format("batch {} split by rows over {} replicas, ", rows, dp)
                                       : fmt::format("batch not split ({} replicas run all of it), ", dp);
  plan.report.summary = fmt::format(
      "{} ops on {} devices, {}tensor parallel: {} linear pair(s) split over {} ranks (first weight by output "
      "features, second by input features), {} collective bytes per device, {} replicated fallback op(s), peak +{} "
      "bytes per device",
      plan.num_nodes, devices, batch, pairs, tp, plan.report.collective_bytes_per_device,
      plan.report.replicated_fallbacks, max_peak_bytes(plan));
  if (!tried.empty()) plan.report.summary += fmt::format(" (cost of candidates: {})", tried);
  plan.report.summary += sharding;
  if (dp == 1 && (options.distribute_param || options.distribute_low_prec_param))
    plan.report.summary += "; distribute_param / distribute_low_prec_param: no data-parallel replicas to shard over";
  plan.report.split_rows = rows;
  return plan;
}

}  // namespace moreh::scheduler
