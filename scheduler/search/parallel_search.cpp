#include "scheduler/search/parallel_search.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <thread>

#include <unistd.h>

#include "runtime/base/data_type.h"
#include "scheduler/analysis/step_analysis.h"
#include "scheduler/analysis/backward_seeds.h"
#include "scheduler/lowering/memory_model.h"
#include "scheduler/lowering/optimizer_sharding.h"
#include "scheduler/lowering/plan_step.h"
#include "scheduler/lowering/recomputation.h"
#include "scheduler/search/candidates.h"
#include "scheduler/search/step_bound.h"

namespace moreh::scheduler {

uint64_t default_kept_plan_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  const uint64_t physical = pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
  return std::max<uint64_t>(uint64_t{2} << 30, physical / 4);
}

namespace {

double ms_since(std::chrono::steady_clock::time_point started) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
}

// Runs `task(i)` for i in [0, count) on a pool of `threads` threads and waits for all of them.
template <typename Task>
void run_on_pool(size_t count, int threads, const Task& task) {
  if (count == 0) return;
  const size_t workers = std::min<size_t>(count, static_cast<size_t>(std::max(threads, 1)));
  if (workers == 1) {
    for (size_t i = 0; i < count; ++i) task(i);
    return;
  }
  boost::asio::thread_pool pool(workers);
  for (size_t i = 0; i < count; ++i) boost::asio::post(pool, [&task, i] { task(i); });
  pool.join();
}

std::string bytes_text(uint64_t b) { return fmt::format("{:.1f} MiB", static_cast<double>(b) / (1024.0 * 1024.0)); }

// What a lowered plan takes in this process's memory (its programs' instructions and launches; what is shared
// with the graph not counted), from the vectors' capacities: an estimate from below (dims spilled to the heap and
// allocator overhead are not counted).
uint64_t plan_footprint(const PlannedStep& plan) {
  uint64_t bytes = sizeof(PlannedStep);
  for (const auto& program : plan.programs) {
    bytes += program.code.capacity() * sizeof(runtime::Instruction) + program.sizes.capacity() * sizeof(uint64_t) +
             program.factors.capacity() * sizeof(double) + program.ranges.capacity() * sizeof(runtime::ByteRange);
    bytes += program.launches.capacity() * sizeof(runtime::LocalLaunch);
    for (const auto& l : program.launches)
      bytes += (l.inputs.capacity() + l.outputs.capacity()) * sizeof(runtime::LocalRef) + l.joins.capacity() +
               l.into.capacity() * sizeof(int64_t) + l.factors.capacity() * sizeof(double) +
               l.int_args.capacity() * sizeof(std::pair<int, int64_t>);
  }
  return bytes;
}

}  // namespace

uint64_t CandidateResult::max_peak() const {
  return peak_bytes.empty() ? 0 : *std::max_element(peak_bytes.begin(), peak_bytes.end());
}

int SearchResult::least_memory() const {
  int best = -1;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (candidates[i].peak_bytes.empty()) continue;  // not lowered
    if (best < 0 || candidates[i].max_peak() < candidates[static_cast<size_t>(best)].max_peak()) best = static_cast<int>(i);
  }
  return best;
}

namespace {

// The host copy that writes a data input: a fresh output, or an input written in place (x.to(device) into a buffer).
const runtime::TensorRef* upload_of(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                    uint32_t slot) {
  for (size_t n = 0; n < graph.size(); ++n) {
    const runtime::Node& node = graph.nodes()[n];
    if (!node.host_input) continue;
    for (size_t k = 0; k < node.outputs.size(); ++k)
      if (canonical.node_outputs[n][k] == slot) return &node.outputs[k];
    for (uint16_t w : node.written)
      if (canonical.node_inputs[n][w] == slot) return &node.inputs[w];
  }
  return nullptr;
}

// The step's batch: among the data inputs, the one most like a batch: let go of by the script after the step
// (not a parameter model.to() uploads in the same graph), of two or more dimensions (a batch of samples, not a
// vector), with more than one row; ties go to the more frequent leading dimension, then the earlier input.
const runtime::TensorRef* batch_input(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                      const StepAnalysis& analysis) {
  const runtime::TensorRef* best = nullptr;
  int best_score = -1;
  for (int64_t rows : analysis.batch_sizes)
    for (uint32_t slot : analysis.data_inputs) {
      const runtime::TensorRef* ref = upload_of(graph, canonical, slot);
      if (!ref || ref->sizes.empty() || ref->sizes[0] != rows) continue;
      const int score = (canonical.buffers[slot].live_after ? 0 : 1) + (ref->sizes.size() >= 2 ? 1 : 0) + (rows > 1 ? 1 : 0);
      if (score > best_score) best = ref, best_score = score;
    }
  return best;
}

}  // namespace

bool casts_parameters(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical) {
  for (size_t n = 0; n < graph.size(); ++n)
    if (casts_a_parameter(graph.nodes()[n], canonical.node_inputs[n], canonical)) return true;
  return false;
}

int64_t step_rows(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical) {
  const StepAnalysis analysis = analyze_step(graph, canonical);
  if (analysis.split_rows <= 0) return 0;
  const runtime::TensorRef* ref = batch_input(graph, canonical, analysis);
  return ref ? ref->sizes[0] : analysis.split_rows;
}

int64_t step_tokens(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical) {
  const StepAnalysis analysis = analyze_step(graph, canonical);
  if (analysis.split_rows <= 0) return 0;
  const runtime::TensorRef* ref = batch_input(graph, canonical, analysis);
  if (!ref) return analysis.split_rows;
  const auto type = runtime::data_type_of(ref->dtype);
  if (!type || runtime::is_floating_point(*type) || ref->sizes.size() > 2) return ref->sizes[0];
  int64_t elements = 1;
  for (int64_t s : ref->sizes) elements *= s;
  return elements;
}

SearchResult search_parallel_layouts(const SearchRequest& r, const SearchProgress& progress) {
  SearchResult out;
  const int64_t rows = step_rows(r.graph, r.canonical);
  const CandidateSpace space{.devices = r.devices,
                             .batch = rows,
                             .autocast = r.autocast || casts_parameters(r.graph, r.canonical),
                             .max_micro_batches = r.max_micro_batches};
  std::vector<runtime::ParallelConfig> configs = enumerate_candidates(space);
  out.candidates.resize(configs.size());
  for (size_t i = 0; i < configs.size(); ++i) out.candidates[i].config = configs[i];
  if (progress) progress(SearchPhase::kEnumerated, out);
  out.tokens_per_step = step_tokens(r.graph, r.canonical);
  const int threads = r.threads > 0 ? r.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  uint64_t least_free = UINT64_MAX;
  for (int d = 0; d < r.devices; ++d) {
    const uint64_t used = static_cast<size_t>(d) < r.used_bytes.size() ? r.used_bytes[d] : 0;
    least_free = std::min(least_free, r.capacity > used + r.margin ? r.capacity - used - r.margin : 0);
  }
  const uint64_t limit = r.capacity > r.margin ? r.capacity - r.margin : 0;

  // Phase 1: lower every candidate, keep each one's peak per device; those over a device's memory are dropped.
  // The plans that fit are kept for phase 2 while they take less than kept_plan_bytes of this process's memory
  // (a big model's plans with many micro-batches take gigabytes each); past that a fitting candidate keeps only
  // its figures and is lowered again when it is timed.
  std::vector<std::shared_ptr<PlannedStep>> plans(configs.size());
  std::vector<char> fits(configs.size(), 0);
  std::vector<char> represented(configs.size(), 0);  // lowered as two lanes' programs (its figures from them)
  std::atomic<uint64_t> kept_bytes{0};
  std::atomic<size_t> lowered_again{0};
  // Each device's need under the plan: what it held before plus its program's peak; a device left out of a
  // plan of two lanes' programs needs what its stand-in's program does.
  auto peaks_of = [&](const PlannedStep& plan) {
    std::vector<uint64_t> peaks(static_cast<size_t>(r.devices), 0);
    std::vector<uint64_t> program_peak(peaks.size(), 0);
    std::vector<char> has(peaks.size(), 0);  // a device without a program (nor a stand-in) needs nothing more
    for (const auto& program : plan.programs)
      if (const auto d = static_cast<size_t>(program.device); d < peaks.size()) program_peak[d] = program.peak_bytes, has[d] = 1;
    for (size_t d = 0; d < peaks.size(); ++d) {
      const size_t from = plan.report.stand_ins.empty() ? d : static_cast<size_t>(plan.report.stand_ins.at(d));
      if (from < peaks.size() && has[from]) peaks[d] = (d < r.used_bytes.size() ? r.used_bytes[d] : 0) + program_peak[from];
    }
    return peaks;
  };
  auto over_limit = [&](const std::vector<uint64_t>& peaks, const char* what) {
    for (size_t d = 0; d < peaks.size(); ++d)
      if (peaks[d] > limit)
        return fmt::format("out of memory{}: needs {} on device {}, more than its {} less the margin of {}", what,
                           bytes_text(peaks[d]), d, bytes_text(r.capacity), bytes_text(r.margin));
    return std::string();
  };
  const StepBound bound(r.graph, r.canonical, r.timing, rows);
  for (size_t i = 0; i < configs.size(); ++i) out.candidates[i].bound_ms = bound.seconds(configs[i], r.devices) * 1e3;
  // Values the forward pass makes (before the last backward seed): what recomputation may drop and make again.
  // A layout without recomputation over a device's memory at a moment it holds none of them (the optimizer's
  // update, say) is over it with recomputation too: that moment comes the same. So is one whose values that
  // recomputation does not drop (under any checkpoint tail the planner tries) are over it on their own at some
  // moment: recomputation runs the same ops on them, in the same order on each device, and adds only forward
  // ops, which make none of them and end none of their lives sooner.
  // (Values the script keeps after the step, such as the loss, are never dropped.)
  std::vector<char> forward_made(r.canonical.buffers.size(), 0);
  auto made = [&](uint32_t slot) {
    const auto& b = r.canonical.buffers[slot];
    if (b.origin != runtime::BufferOrigin::kMaterialized && !b.live_after) forward_made[slot] = 1;
  };
  if (const std::vector<size_t> seeds = backward_seeds(r.graph, r.canonical); !seeds.empty())
    for (size_t n = 0; n < seeds.back(); ++n) {
      for (uint32_t slot : r.canonical.node_outputs[n]) made(slot);
      for (uint16_t w : r.graph.nodes()[n].written) made(r.canonical.node_inputs[n][w]);
    }
  const bool any_forward = std::find(forward_made.begin(), forward_made.end(), 1) != forward_made.end();
  // What recomputation may drop, without micro-batches and with them (plan_step's tails).
  std::array<std::vector<char>, 2> droppable;
  if (any_forward && r.skip_dominated &&
      std::any_of(configs.begin(), configs.end(), [](const auto& c) { return c.recomputation; })) {
    const StepAnalysis analysis = analyze_step(r.graph, r.canonical);
    for (size_t micro = 0; micro < droppable.size(); ++micro) {
      droppable[micro].assign(r.canonical.buffers.size(), 0);
      for (size_t tail : kCheckpointTails) {
        const Recomputation rc = plan_recomputation(r.graph, r.canonical, tail,
                                                    micro ? analysis.batch_sizes : std::vector<int64_t>{});
        for (size_t s = 0; s < rc.dropped.size() && s < droppable[micro].size(); ++s)
          if (rc.dropped[s]) droppable[micro][s] = 1;
      }
    }
  }
  std::vector<std::string> over_without_activations(configs.size());  // per candidate: where, when it is so
  auto over_outside_forward = [&](const PlannedStep& plan, const runtime::ParallelConfig& config) -> std::string {
    if (!any_forward) return {};
    std::vector<const runtime::DeviceProgram*> program_of(static_cast<size_t>(r.devices), nullptr);
    for (const auto& program : plan.programs)
      if (const auto d = static_cast<size_t>(program.device); d < program_of.size()) program_of[d] = &program;
    for (size_t d = 0; d < program_of.size(); ++d) {
      const size_t from = plan.report.stand_ins.empty() ? d : static_cast<size_t>(plan.report.stand_ins.at(d));
      const runtime::DeviceProgram* program = from < program_of.size() ? program_of[from] : nullptr;
      const uint64_t used = d < r.used_bytes.size() ? r.used_bytes[d] : 0;
      if (!program || used + program->peak_bytes <= limit) continue;
      const PeakMoment m = peak_moment(plan, *program, &r.graph, r.canonical);
      if (std::none_of(m.held.begin(), m.held.end(), [&](const auto& h) { return forward_made[h.first] != 0; }))
        return fmt::format("device {} needs {} at instruction {} of {}, holding no value of the forward pass", d,
                           bytes_text(used + m.bytes), m.instruction, program->code.size());
      const std::vector<char>& apart = droppable[config.num_micro_batches > 1 ? 1 : 0];
      if (apart.empty()) continue;
      const HeldMoment k = peak_without(plan, *program, &r.graph, r.canonical, apart);
      if (used + k.bytes > limit)
        return fmt::format("device {} holds {} of values recomputation does not drop at instruction {} of {}", d,
                           bytes_text(used + k.bytes), k.instruction, program->code.size());
    }
    return {};
  };
  // Tensor parallelism's linear pairs depend on the graph alone: found once for every candidate with TP.
  const std::vector<LinearPair> linear_pairs = find_linear_pairs(r.graph, r.canonical);
  auto lower_plan = [&](size_t i, bool representative) {
    return plan_step({.graph = r.graph,
                      .canonical = r.canonical,
                      .devices = r.devices,
                      .parallelism = configs[i],
                      .fusion = r.fusion,
                      .fusion_limits = r.fusion_limits,
                      .available_bytes = std::max<uint64_t>(least_free, 1),
                      .representative = representative,
                      .fits = [&](const PlannedStep& plan) { return over_limit(peaks_of(plan), "").empty(); },
                      .linear_pairs = &linear_pairs});
  };
  auto lower = [&](size_t i) {
    CandidateResult& c = out.candidates[i];
    if (r.admissible && !r.admissible(configs[i])) {
      c.dropped = r.inadmissible_reason;
      return;
    }
    const auto began = std::chrono::steady_clock::now();
    try {
      plans[i] = lower_plan(i, r.representative);
      c.lower_ms = ms_since(began);
    } catch (const std::exception& e) {
      c.lower_ms = ms_since(began);
      c.dropped = fmt::format("cannot be lowered: {}", e.what());
      return;
    }
    represented[i] = !plans[i]->report.stand_ins.empty();
    c.peak_bytes = peaks_of(*plans[i]);
    c.dropped = over_limit(c.peak_bytes, "");
    if (!c.dropped.empty()) {
      if (!configs[i].recomputation && r.skip_dominated) over_without_activations[i] = over_outside_forward(*plans[i], configs[i]);
      plans[i].reset();
      return;
    }
    fits[i] = 1;
    const uint64_t footprint = plan_footprint(*plans[i]);
    if (kept_bytes.fetch_add(footprint) + footprint > r.kept_plan_bytes) {
      kept_bytes.fetch_sub(footprint);
      plans[i].reset();
      ++lowered_again;
    }
  };
  // Candidates some other one decides for (SearchRequest::skip_dominated). A recomputing candidate's twin: the
  // same layout without recomputation (-1: none enumerated). A candidate without distribute_param's siblings:
  // the same layout with it (ZeRO over the replicas: less to hold).
  auto find = [&](runtime::ParallelConfig c) {
    const auto it = std::find(configs.begin(), configs.end(), c);
    return it == configs.end() ? -1 : static_cast<int>(it - configs.begin());
  };
  auto twin_of = [&](size_t i) {
    if (!r.skip_dominated || !configs[i].recomputation) return -1;
    runtime::ParallelConfig plain = configs[i];
    plain.recomputation = false;
    return find(plain);
  };
  auto zero_siblings = [&](size_t i) {
    std::vector<int> out;
    if (!r.skip_dominated || configs[i].distribute_param) return out;
    runtime::ParallelConfig zero = configs[i];
    zero.distribute_param = true;
    for (bool low : {configs[i].distribute_low_prec_param, !configs[i].distribute_low_prec_param}) {
      zero.distribute_low_prec_param = low;
      if (const int k = find(zero); k >= 0) out.push_back(k);
    }
    return out;
  };
  // Lowers candidates [first, end) in four waves: without recomputation before with it, with distribute_param
  // before without. A candidate with recomputation is lowered only where its twin does not fit (recomputation
  // runs the same programs and more: with the twin fitting it can only be slower); one without
  // distribute_param only where a sibling with it fits or was not lowered (without it there is more to hold).
  auto lower_from = [&](size_t first) {
    std::vector<std::vector<size_t>> waves(4);
    for (size_t i = first; i < configs.size(); ++i)
      waves[(twin_of(i) >= 0 ? 2 : 0) + (zero_siblings(i).empty() ? 0 : 1)].push_back(i);
    for (const auto& wave : waves) {
      std::vector<size_t> needed;
      for (size_t i : wave) {
        CandidateResult& c = out.candidates[i];
        if (const int twin = twin_of(i); twin >= 0 && fits[static_cast<size_t>(twin)]) {
          c.dominated_by = twin;
          c.dominance = CandidateResult::Dominance::kSlower;
          c.dropped = fmt::format("not lowered: recomputation only trades time for memory, and candidate {} (this "
                                  "layout without it) fits", twin);
          continue;
        }
        if (const int twin = twin_of(i); twin >= 0 && !over_without_activations[static_cast<size_t>(twin)].empty()) {
          c.dominated_by = twin;
          c.dominance = CandidateResult::Dominance::kOverAnyway;
          c.dropped = fmt::format("not lowered: candidate {} (this layout without recomputation) is over the memory "
                                  "where recomputation changes nothing: {}", twin,
                                  over_without_activations[static_cast<size_t>(twin)]);
          continue;
        }
        const std::vector<int> zero = zero_siblings(i);
        // Every sibling over the memory: lowered (its peak measured), or left out as over it anyway.
        const bool none_fits = !zero.empty() && std::all_of(zero.begin(), zero.end(), [&](int k) {
          const CandidateResult& sibling = out.candidates[static_cast<size_t>(k)];
          return !fits[static_cast<size_t>(k)] &&
                 (!sibling.peak_bytes.empty() || sibling.dominance == CandidateResult::Dominance::kOverAnyway);
        });
        if (none_fits) {
          c.dominated_by = zero.front();
          c.dominance = CandidateResult::Dominance::kLarger;
          c.dropped = fmt::format("not lowered: it holds more than candidate {} (this layout with distribute_param), "
                                  "which does not fit", zero.front());
          continue;
        }
        needed.push_back(i);
      }
      run_on_pool(needed.size(), threads, [&](size_t k) { lower(needed[k]); });
    }
  };
  auto started = std::chrono::steady_clock::now();
  lower_from(0);
  auto fitting = [&] { return static_cast<size_t>(std::count(fits.begin(), fits.end(), 1)); };
  if (fitting() == 0 && rows > 0) {
    // None fits: smaller micro-batches, with stages or without (a replica accumulating its gradients).
    CandidateSpace wide = space;
    wide.max_micro_batches = kWidenedMicroBatches;
    wide.micro_batches_without_stages = true;
    const size_t first = configs.size();
    for (const runtime::ParallelConfig& c : enumerate_candidates(wide))
      if (std::find(configs.begin(), first + configs.begin(), c) == first + configs.begin()) configs.push_back(c);
    out.widened = configs.size() - first;
    out.candidates.resize(configs.size());
    plans.resize(configs.size());
    fits.resize(configs.size(), 0);
    represented.resize(configs.size(), 0);
    over_without_activations.resize(configs.size());
    for (size_t i = first; i < configs.size(); ++i) {
      out.candidates[i].config = configs[i];
      out.candidates[i].bound_ms = bound.seconds(configs[i], r.devices) * 1e3;
    }
    if (progress) progress(SearchPhase::kWidened, out);
    lower_from(first);
  }
  out.compile_ms = ms_since(started);
  out.lowered_again = lowered_again;
  for (const auto& c : out.candidates) {
    out.slower += c.dominance == CandidateResult::Dominance::kSlower ? 1 : 0;
    out.larger += c.dominance == CandidateResult::Dominance::kLarger ? 1 : 0;
    out.over_anyway += c.dominance == CandidateResult::Dominance::kOverAnyway ? 1 : 0;
  }

  // Phase 2: the survivors' step on the simulator's clock.
  std::vector<size_t> survivors;
  for (size_t i = 0; i < configs.size(); ++i)
    if (fits[i]) survivors.push_back(i);
  out.lowered_and_fitting = survivors.size();
  if (progress) progress(SearchPhase::kLowered, out);
  started = std::chrono::steady_clock::now();
  auto time_each = [&](const std::vector<size_t>& which) {
    run_on_pool(which.size(), threads, [&](size_t k) {
      const size_t i = which[k];
      CandidateResult& c = out.candidates[i];
      std::shared_ptr<PlannedStep> plan = plans[i] ? plans[i] : lower_plan(i, r.representative);
      const StepCost cost = predict_step(*plan, r.graph, r.canonical, r.timing);
      if (!cost.stuck.empty()) {
        c.dropped = "its programs cannot finish: " + cost.stuck;
        return;
      }
      c.step_ms = cost.seconds * 1e3;
      c.idle_fraction = cost.idle_fraction;
      c.communication_ms = cost.communication_seconds * 1e3;
      c.tokens_per_s = cost.seconds > 0 ? static_cast<double>(out.tokens_per_step) / cost.seconds : 0;
    });
  };
  time_each(survivors);
  // A twin whose programs cannot finish leaves its recomputing sibling to be lowered and timed after all.
  std::vector<size_t> revived;
  for (size_t i = 0; i < configs.size(); ++i) {
    CandidateResult& c = out.candidates[i];
    if (c.dominance != CandidateResult::Dominance::kSlower ||
        out.candidates[static_cast<size_t>(c.dominated_by)].dropped.empty())
      continue;
    c.dominated_by = -1;
    c.dominance = CandidateResult::Dominance::kNone;
    --out.slower;
    c.dropped.clear();
    revived.push_back(i);
  }
  if (!revived.empty()) {
    run_on_pool(revived.size(), threads, [&](size_t k) { lower(revived[k]); });
    std::vector<size_t> fit;
    for (size_t i : revived)
      if (fits[i]) fit.push_back(i), survivors.push_back(i);
    time_each(fit);
    out.lowered_and_fitting = survivors.size();
  }
  out.cost_ms = ms_since(started);
  // The fastest; among equals (within a microsecond) the least memory, then the earlier (simpler) candidate.
  auto fastest = [&] {
    int selected = -1;
    for (size_t i : survivors) {
      const CandidateResult& c = out.candidates[i];
      if (!c.dropped.empty()) continue;
      if (selected < 0) {
        selected = static_cast<int>(i);
        continue;
      }
      const CandidateResult& best = out.candidates[static_cast<size_t>(selected)];
      if (c.step_ms < best.step_ms - 1e-3 || (c.step_ms <= best.step_ms + 1e-3 && c.max_peak() < best.max_peak()))
        selected = static_cast<int>(i);
    }
    return selected;
  };
  // The selected one runs: a plan of two lanes' programs is lowered again for every device, and its figures
  // are that plan's. Should it need more than its stand-ins said (it should not), the next fastest is taken.
  for (out.selected = fastest(); out.selected >= 0; out.selected = fastest()) {
    const size_t sel = static_cast<size_t>(out.selected);
    CandidateResult& chosen = out.candidates[sel];
    chosen.plan = represented[sel] ? nullptr : plans[sel];
    if (!chosen.plan) chosen.plan = lower_plan(sel, /*representative=*/false);
    if (represented[sel]) {  // lowered for every device only now: measured on that plan
      chosen.peak_bytes = peaks_of(*chosen.plan);
      const StepCost cost = predict_step(*chosen.plan, r.graph, r.canonical, r.timing);
      chosen.step_ms = cost.seconds * 1e3;
      chosen.idle_fraction = cost.idle_fraction;
      chosen.communication_ms = cost.communication_seconds * 1e3;
      chosen.tokens_per_s = cost.seconds > 0 ? static_cast<double>(out.tokens_per_step) / cost.seconds : 0;
      if (!cost.stuck.empty()) chosen.dropped = "its programs cannot finish: " + cost.stuck;
      else chosen.dropped = over_limit(chosen.peak_bytes, " once lowered for every device");
    }
    if (chosen.dropped.empty()) break;
    chosen.plan.reset();
  }
  out.feasible = 0;
  for (const auto& c : out.candidates) out.feasible += c.dropped.empty() ? 1 : 0;
  if (out.selected >= 0) {
    CandidateResult& chosen = out.candidates[static_cast<size_t>(out.selected)];
    const runtime::ParallelSizes sizes = runtime::parallel_layout(chosen.config, r.devices);
    const int64_t per = static_cast<int64_t>(sizes.dp) * chosen.config.num_micro_batches;
    if (rows > 0 && per > 0 && rows % per == 0) chosen.config.batch_per_device = static_cast<int>(rows / per);
  }
  if (progress) progress(SearchPhase::kTimed, out);
  return out;
}

}  // namespace moreh::scheduler
