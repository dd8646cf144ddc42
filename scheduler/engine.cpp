#include "scheduler/engine.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <unordered_set>

#include "runtime/base/errors.h"
#include "runtime/base/event_log.h"
#include "runtime/base/fork_guard.h"
#include "runtime/base/spdlog_logger.h"
#include "runtime/comm/communicator_choice.h"
#ifdef MOREH_WITH_NVRTC
#include "runtime/cuda/kernel_cache.h"
#include "runtime/cuda/nvrtc.h"
#endif
#include "runtime/device/physical_devices.h"
#include "runtime/exec/gather_home.h"
#include "runtime/plan/rank_layout.h"
#include "scheduler/analysis/backward_seeds.h"
#include "scheduler/analysis/peak_explanation.h"
#include "scheduler/analysis/step_analysis.h"
#include "scheduler/lowering/plan_step.h"
#include "scheduler/search/candidates.h"
#include "scheduler/search/search_report.h"
#include "scheduler/search/selection_cache.h"
#include "scheduler/search/step_cost.h"

namespace moreh::scheduler {

using namespace moreh::runtime;

namespace {

constexpr uint64_t kPlanOnlyAddressBase = 0x100000000000ull, kPlanOnlyAddressSpace = 1ull << 46;  // 64 TiB

std::vector<PhysicalDevice*> raw(const std::vector<std::unique_ptr<PhysicalDevice>>& devices) {
  std::vector<PhysicalDevice*> out;
  for (const auto& d : devices) out.push_back(d.get());
  return out;
}

std::chrono::milliseconds timeout_of(const Config& c) {
  constexpr double kMaxSeconds = 1e8;  // ~3 years: far below steady_clock's range
  return std::chrono::milliseconds(static_cast<int64_t>(std::min(c.sync_timeout_s, kMaxSeconds) * 1000.0));
}

// MOREH_LOG_LEVEL=trace: every compiled graph, a line per node (op, input slots and shapes, outputs).
void trace_graph(const StepGraph& graph, const CanonicalGraph& canonical, const Plan& plan) {
  const auto& nodes = graph.nodes();
  std::vector<int> fused_in(nodes.size(), -1);  // node -> its fused kernel
  if (plan.programs.size() == 1) {
    const auto& fused = plan.programs[0].fused;
    for (size_t k = 0; k < fused.size(); ++k)
      for (uint32_t n : fused[k].nodes) fused_in[n] = static_cast<int>(k);
  }
  for (size_t n = 0; n < nodes.size(); ++n) {
    std::string ins, outs;
    for (size_t i = 0; i < nodes[n].inputs.size(); ++i)
      ins += fmt::format("{}s{}[{}]", i ? " " : "", canonical.node_inputs[n][i], fmt::join(nodes[n].inputs[i].sizes, "x"));
    for (size_t k = 0; k < nodes[n].outputs.size(); ++k)
      outs += fmt::format("{}s{}[{}]", k ? " " : "", canonical.node_outputs[n][k], fmt::join(nodes[n].outputs[k].sizes, "x"));
    log().trace("  #{} {} ({}) -> ({}){}{}", n, op_name(nodes[n].op), ins, outs, nodes[n].host_input ? " host" : "",
                fused_in[n] >= 0 ? fmt::format(" [fused {}]", fused_in[n]) : std::string());
  }
}

// MOREH_FUSION: on GPUs fused kernels save launches and memory traffic; on host devices the evaluator that
// runs them is slower than ATen's vectorized kernels, so auto leaves them to tests (on).
bool fusion_wanted(FusionChoice choice, DeviceKind kind) {
  if (choice == FusionChoice::kOff) return false;
  if (kind == DeviceKind::kHost) return choice == FusionChoice::kOn;
#ifdef MOREH_WITH_NVRTC
  if (cuda::nvrtc_available()) return true;
  log().warn("moreh: elementwise fusion is off: NVRTC cannot be loaded ({})", cuda::nvrtc_unavailable_reason());
#endif
  return false;
}

}  // namespace

Engine::Engine(Config config, std::vector<std::unique_ptr<PhysicalDevice>> devices,
               std::unique_ptr<RemoteCluster> cluster)
    : config_(std::move(config)),
      // Plan-only steps may name far more bytes than any machine holds (a big batch's activations): their
      // addresses, never dereferenced, get a larger space.
      vm_(config_.plan_only ? kPlanOnlyAddressBase : VirtualMemory::kDefaultBase,
          config_.plan_only ? kPlanOnlyAddressSpace : VirtualMemory::kDefaultSize),
      devices_(std::move(devices)),
      cluster_(std::move(cluster)),
      executor_(raw(devices_), nullptr),
      cache_(config_.graph_cache_size) {
  fusion_enabled_ = fusion_wanted(config_.fusion, devices_.empty() ? DeviceKind::kHost : devices_[0]->kind());
#ifdef MOREH_WITH_NVRTC
  if (!devices_.empty() && devices_[0]->kind() == DeviceKind::kCuda)
    cuda::KernelCache::instance().set_disk_dir(config_.kernel_cache_dir);  // kernels compiled by earlier runs
#endif
  if (config_.device_profile != "auto" && config_.device_profile != "host" && !named_profile(config_.device_profile))
    throw ConfigError(fmt::format("MOREH_DEVICE_PROFILE='{}' is not valid: expected auto, host or one of {}",
                                  config_.device_profile, fmt::join(profile_names(), ", ")));
  communicator_ = cluster_ ? cluster_->make_communicator(raw(devices_)) : make_communicator(config_, raw(devices_));
  if (communicator_) executor_.set_communicator(communicator_.get());
  if (cluster_) executor_.set_remote_runner(cluster_.get());
  if (config_.parallelism) set_parallelism(*config_.parallelism);  // MOREH_PARALLELISM
  if (config_.plan_only)
    log().info("MOREH_PLAN_ONLY: steps are recorded and planned over {} virtual device(s) of {} bytes ({} profile), "
               "not run; host reads give zeros",
               devices_.size(), devices_.empty() ? 0 : devices_[0]->capacity(), config_.device_profile);
}

Engine::~Engine() {
  try {
    for (auto& d : devices_) d->synchronize(timeout_of(config_));
  } catch (...) {
  }
}

std::atomic<bool>& Engine::cuda_kernels_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}

Engine& Engine::global() {
  static Engine* engine = [] {
    Config config = Config::from_env();
    init_logging(config);
    if (!config.workers.empty()) {
      // This process is node 0 of a job over the workers (runtime/cluster/remote_cluster.h).
      if (config.plan_only) throw ConfigError("MOREH_PLAN_ONLY and MOREH_WORKERS: plan-only steps run nowhere");
      if (config.device_kind == DeviceKindChoice::kCuda)
        throw ConfigError("MOREH_WORKERS: workers serve host devices only (MOREH_DEVICE_KIND=cuda)");
      install_fork_guard();
      auto cluster = std::make_unique<RemoteCluster>(config);
      auto devices = cluster->make_devices();
      log().info("moreh: {} device(s): this process's host:0 and {} on {} worker(s)", devices.size(),
                 devices.size() - 1, cluster->job().workers());
      auto* made = new Engine(std::move(config), std::move(devices), std::move(cluster));
      made->start_registry();
      made->emit_run_start();
      return made;
    }
    if (config.plan_only) {
      // Virtual devices: host devices whose memory is only accounted (a named GPU's, with its profile).
      config.device_kind = DeviceKindChoice::kHost;
      if (const auto gpu = named_profile(config.device_profile); gpu && !config.host_memory_capacity_set)
        config.host_memory_capacity = gpu->memory_bytes;
    }
    install_fork_guard();  // the devices start threads: a forked child must not use them
    DeviceChoice choice = make_physical_devices(config, cuda_kernels_available());
    if (!choice.fallback_reason.empty())
      log().info("moreh: no CUDA device is used ({}); {} host device(s) stand in", choice.fallback_reason,
                 choice.devices.size());
    std::vector<std::string> names;
    for (const auto& d : choice.devices) names.push_back(d->name());
    log().debug("moreh engine: flavor {} (from {}): {}, {} bytes each", config.flavor.name, config.flavor_source,
                fmt::join(names, ", "), choice.devices.front()->capacity());
    auto* made = new Engine(std::move(config), std::move(choice.devices));  // lives for the process
    made->start_registry();
    made->emit_run_start();
    return made;
  }();
  // Removes the registry entry at exit (after Python's atexit, which does the same, or without Python), and
  // closes the run's events with its end.
  static struct RegistryRemover {
    ~RegistryRemover() {
      engine->stop_registry();
      engine->emit_run_end();
    }
  } remover;
  return *engine;
}

uint64_t Engine::memory_used() const {
  uint64_t sum = 0;
  for (const auto& d : devices_) sum += d->used();
  return sum;
}

uint64_t Engine::memory_capacity() const {
  uint64_t sum = 0;
  for (const auto& d : devices_) sum += d->capacity();
  return sum;
}

void Engine::start_registry() {
  if (registry_) return;
  registry_ = std::make_unique<ProcessRegistry>(
      config_.config_dir + "/run",
      [this] {
        RegistrySnapshot snap{config_.flavor.name, {}};
        for (const auto& d : devices_) snap.devices.push_back({d->name(), d->used(), d->capacity(), d->busy_ns()});
        return snap;
      },
      std::chrono::milliseconds(1000));
}

void Engine::stop_registry() {
  if (registry_) registry_->stop();
}

void Engine::set_kernel_provider(KernelProvider* provider) { executor_.set_provider(provider); }

void Engine::set_payload_codec(const PayloadCodec* codec) {
  if (cluster_) cluster_->set_payload_codec(codec);
}

void Engine::set_program_scope(Executor::ProgramScope scope) { executor_.set_program_scope(std::move(scope)); }

std::shared_ptr<Buffer> Engine::new_buffer(uint64_t bytes) { return std::make_shared<Buffer>(vm_, bytes, static_cast<int>(devices_.size())); }

void Engine::record(Node node) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  for (auto& out : node.outputs) out.buffer->mark_defined();
  for (uint16_t w : node.written) {
    auto& buffer = *node.inputs[w].buffer;
    if (!buffer.defined()) node.initializes.push_back(w);
    buffer.mark_defined();
  }
  pending_.append(std::move(node));
  ++stats_.recorded_ops;
  if (pending_.size() >= config_.max_pending_ops) {
    log().debug("moreh: {} pending ops reached MOREH_MAX_PENDING_OPS; flushing", pending_.size());
    flush_locked();
  }
}

void Engine::flush() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  flush_locked();
}

std::shared_ptr<PlannedStep> Engine::compile_locked(const StepGraph& graph, const CanonicalGraph& canonical) {
  uint64_t available = UINT64_MAX;
  for (const auto& d : devices_) available = std::min(available, d->capacity() > d->used() ? d->capacity() - d->used() : 0);
  // A layout AP chose (now, or in an earlier run whose selection was kept) is planned as the search planned
  // it: recomputation keeps the longest tail that fits the devices less the margin (PlanRequest::fits). One
  // chosen by hand keeps the lowest peak.
  std::function<bool(const PlannedStep&)> fits;
  if (!parallelism_by_hand_ && parallelism_.recomputation)
    fits = [this](const PlannedStep& plan) { return first_overflow(plan, /*with_margin=*/true) == nullptr; };
  return plan_step({.graph = graph,
                    .canonical = canonical,
                    .devices = static_cast<int>(devices_.size()),
                    .parallelism = parallelism_,
                    .fusion = fusion_enabled_,
                    .fusion_limits = fusion_limits(),
                    .available_bytes = devices_.empty() ? 0 : std::max<uint64_t>(available, 1),
                    .fits = std::move(fits)});
}

const DeviceProgram* Engine::first_overflow(const Plan& plan, bool with_margin) const {
  for (const auto& program : plan.programs) {
    const PhysicalDevice& dev = *devices_.at(program.device);
    const uint64_t margin = with_margin ? config_.memory_margin(dev.capacity()) : 0;
    if (dev.used() + program.peak_bytes + margin > dev.capacity()) return &program;
  }
  return nullptr;
}

size_t Engine::longest_fitting_prefix(const StepGraph& graph) {
  // A prefix's peak never exceeds a longer prefix's (its buffers are released no later), so the ops that fit
  // are found by bisection; each probe plans the prefix alone, without the cache.
  auto fits = [&](size_t count) {
    StepGraph prefix;
    for (size_t i = 0; i < count; ++i) prefix.append(graph.nodes()[i]);
    CanonicalGraph canonical = CanonicalGraph::build(prefix, offset_keying());
    return first_overflow(*compile_locked(prefix, canonical)) == nullptr;
  };
  size_t lo = 0, hi = graph.size() - 1;  // the whole graph does not fit
  while (lo < hi) {
    const size_t mid = lo + (hi - lo + 1) / 2;
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

void Engine::flush_locked() {
  if (pending_.empty()) return;
  auto graph = std::make_shared<StepGraph>(std::move(pending_));
  pending_ = StepGraph();
  CanonicalGraph canonical = CanonicalGraph::build(*graph, offset_keying());
  if (devices_.size() > 1 && bring_home_misplaced_locked(canonical))
    canonical = CanonicalGraph::build(*graph, offset_keying());  // their placements are in the hash

  // Advanced Parallelization chooses the layout at the first step with a batch.
  std::shared_ptr<PlannedStep> searched;
  bool nothing_fits = false;  // this step's search found no layout that fits: the out-of-memory path need not search
  if (advanced_parallelization_ && !layout_searched_ && searchable_locked(*graph, canonical)) {
    layout_searched_ = true;
    searched = choose_layout_locked(*graph, canonical, "Advanced Parallelization is enabled", false);
    nothing_fits = !searched && last_search_ && last_search_->selected < 0;
  }
  // A graph planned with and without fusion, or under another layout, has another plan: the key says which.
  auto key_of = [&] {
    const uint64_t key = fusion_enabled_ ? canonical.hash ^ 0x9e3779b97f4a7c15ull : canonical.hash;
    return key ^ layout_key_;
  };
  auto take_compiled = [&](std::shared_ptr<PlannedStep> compiled) {
    if (devices_.size() > 1) log_layout_once();
    if (compiled->report.replicated_fallbacks > 0)
      log().info("{} op(s) had no sharding rule and ran replicated on gathered inputs: {}",
                 compiled->report.replicated_fallbacks, fmt::join(compiled->report.fallback_ops, ", "));
    log().info("Step graph {:016x} compiled in {:.3f} ms: {}", canonical.hash, compiled->report.compile_ms,
               compiled->report.summary);
    if (log().should_log(spdlog::level::debug) && !compiled->programs.empty()) {  // the largest peak, explained
      const auto& top = *std::max_element(compiled->programs.begin(), compiled->programs.end(),
                                           [](const auto& a, const auto& b) { return a.peak_bytes < b.peak_bytes; });
      log().debug("Step graph {:016x}: {}", canonical.hash, explain_peak(*compiled, top, *graph, canonical));
    }
    if (log().should_log(spdlog::level::trace)) trace_graph(*graph, canonical, *compiled);
    // A GPU compiles the plan's fused kernels in the background while the step is submitted.
    for (const auto& program : compiled->programs)
      for (const auto& f : program.fused) devices_.at(program.device)->prepare_elementwise(f.kernel);
    if (compiled->num_devices > 1) compiled->report.timeline = simulate_plan(*compiled, *graph);
    if (profile_) compiled->report.predicted_ms = predict_step(*compiled, *graph, canonical, ProfileTiming(*profile_, static_cast<int>(devices_.size()), node_of_devices())).seconds * 1e3;
    stats_.last_compile_ms = compiled->report.compile_ms;
    stats_.total_compile_ms += compiled->report.compile_ms;
    cache_.insert(key_of(), compiled);
    return std::shared_ptr<const PlannedStep>(compiled);
  };
  std::shared_ptr<const PlannedStep> plan = cache_.find(key_of());
  const bool cache_hit = plan != nullptr;
  if (plan) log().debug("Step graph {:016x} found in the plan cache ({} ops)", canonical.hash, plan->num_nodes);
  else plan = take_compiled(searched ? searched : compile_locked(*graph, canonical));
  stats_.cache_hits = cache_.hits();
  stats_.cache_misses = cache_.misses();

  for (const auto& program : plan->programs) {
    PhysicalDevice& dev = *devices_.at(program.device);
    if (dev.used() + program.peak_bytes > dev.capacity() && dev.busy()) {
      try {
        dev.synchronize(timeout_of(config_));  // earlier steps may still hold memory they are about to free
      } catch (...) {
        if (!deferred_error_) deferred_error_ = std::current_exception();  // reported by synchronize()
      }
    }
  }
  std::string no_layout_fits;
  auto say_no_layout_fits = [&] {
    const int least = last_search_->least_memory();
    if (least < 0) return;
    const CandidateResult& c = last_search_->candidates[static_cast<size_t>(least)];
    no_layout_fits = fmt::format(
        "No parallel layout fits either: the one needing the least memory ({}) needs {} bytes on a device of "
        "{} bytes (less a margin of {}). Lower the batch size, or pick a flavor with more or larger devices "
        "(moreh-switch-model).",
        format_parallel_config(c.config), c.max_peak(), devices_[0]->capacity(),
        config_.memory_margin(devices_[0]->capacity()));
    log().error("{}", no_layout_fits);
  };
  if (nothing_fits && first_overflow(*plan)) {
    say_no_layout_fits();  // the search that just ran tried every layout the out-of-memory search would
  } else if (const DeviceProgram* over = first_overflow(*plan);
             over && devices_.size() > 1 && oom_searched_.insert(canonical.hash ^ layout_key_).second &&
             searchable_locked(*graph, canonical)) {
    // Automatic model parallelism: the layout does not fit, others may.
    const PhysicalDevice& dev = *devices_.at(over->device);
    log().warn("This step needs {} bytes more on {} under the current layout ({}), which has {} bytes free: "
               "searching the layouts that fit (pipeline stages, tensor parallelism, sharded parameters) instead "
               "of raising OUT_OF_MEMORY",
               over->peak_bytes, dev.name(), format_parallel_config(parallelism_), dev.available());
    layout_searched_ = true;
    if (std::shared_ptr<PlannedStep> found = choose_layout_locked(*graph, canonical, "the step ran out of memory", true)) {
      plan = cache_.find(key_of());
      if (!plan) plan = take_compiled(found);
    } else if (last_search_) {
      say_no_layout_fits();
    }
  }
  if (const DeviceProgram* over = first_overflow(*plan);
      over && no_layout_fits.empty() && devices_.size() > 1 && !parallelism_by_hand_ &&
      !(parallelism_ == ParallelConfig{}) && analyze_step(*graph, canonical).split_rows == 0) {
    // A step without a batch (an optimizer's update recorded on its own, after the script read a value) under
    // the layout AP chose for the training step: that search never saw it, and none is run for it.
    no_layout_fits = fmt::format(
        "This step has no batch to split (an update recorded as a step of its own, after the script read a value "
        "before optimizer.step()), so no layout was searched for it; the layout in use ({}) was chosen by Advanced "
        "Parallelization for the training step, whose search did not see this one. Read values after "
        "optimizer.step() so that one step holds both, lower the batch size, or pick a flavor with more or larger "
        "devices (moreh-switch-model).",
        format_parallel_config(parallelism_));
    log().error("{}", no_layout_fits);
  }
  if (const DeviceProgram* over = first_overflow(*plan)) {
    // As on a GPU, the ops before the one that runs out of memory run and the rest do not: every value that
    // existed before (uploads and parameters recorded in this step included) survives, and only what the ops
    // that did not run would have produced carries the error.
    PhysicalDevice& dev = *devices_.at(over->device);
    OutOfMemoryError oom(dev.name(), over->peak_bytes, dev.available(), dev.capacity(), no_layout_fits);
    const size_t kept = longest_fitting_prefix(*graph);
    log().error("A step of {} ops needs {} bytes more on {}; {} bytes are free. Its first {} ops run; the rest were "
                "not run.",
                graph->size(), over->peak_bytes, dev.name(), dev.available(), kept);
    emit_event("out_of_memory",
               fmt::format("\"graph\": \"{:016x}\", \"ops\": {}, \"device\": {}, \"needs_bytes\": {}, "
                           "\"free_bytes\": {}, \"capacity_bytes\": {}, \"ops_run\": {}, \"layout\": {}",
                           canonical.hash, graph->size(), json_string(dev.name()), over->peak_bytes, dev.available(),
                           dev.capacity(), kept, json_string(format_parallel_config(parallelism_))));
    if (kept > 0) {
      for (size_t i = 0; i < kept; ++i) pending_.append(graph->nodes()[i]);
      flush_locked();
    }
    mark_step_failed(*graph, kept, oom.what());
    throw oom;
  }
  ++stats_.flushes;
  stats_.last_graph_ops = graph->size();
  stats_.last_graph_hash = canonical.hash;
  last_plan_ = plan;
  stats_.last_launches = plan->report.launches ? plan->report.launches : graph->size();
  stats_.last_fused_ops = plan->report.fused_nodes;
  // A recurring step's data inputs are its per-step data; MoAI warns when their batch sizes differ.
  if (++plan->report.uses == 2 && plan->report.batch_sizes.size() > 1)
    log().warn("Various batch size detected : {}", fmt::join(plan->report.batch_sizes, ", "));
  stats_.last_batch_size = plan->report.uses >= 2 && !plan->report.batch_sizes.empty() ? plan->report.batch_sizes.front() : 0;
  if (plan->num_devices > 1) {
    // Where each buffer will be once this step has run: the next plan and host reads start from there.
    for (size_t i = 0; i < canonical.bindings.size(); ++i) canonical.bindings[i]->set_placement(plan->final_placements[i]);
    stats_.replicated_fallbacks += plan->report.replicated_fallbacks;
    stats_.last_replicated_fallbacks = plan->report.replicated_fallbacks;
  }
  emit_step_locked(*plan, *graph, canonical.hash, cache_hit);
  if (config_.plan_only) {
    hold_planned_locked(*plan, canonical);
    return;
  }
  executor_.submit(StepExecution{.plan = plan,
                                 .graph = graph,
                                 .bindings = std::move(canonical.bindings),
                                 .step = stats_.flushes});
}

void Engine::emit_run_start() const {
  if (!events_enabled()) return;
  std::string command;  // the process's arguments, as /proc gives them
  if (std::FILE* f = std::fopen("/proc/self/cmdline", "rb")) {
    char buf[4096];
    size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) command.append(buf, n);
    std::fclose(f);
    while (!command.empty() && command.back() == '\0') command.pop_back();
    std::replace(command.begin(), command.end(), '\0', ' ');
  }
  std::vector<std::string> names;
  for (const auto& d : devices_) names.push_back(json_string(d->name()));
  const std::string& facts = run_facts();
  emit_event("run_start",
             fmt::format("\"pid\": {}, \"command\": {}, \"log\": {}, \"flavor\": {}, \"flavor_source\": {}, "
                         "\"devices\": [{}], \"device_memory\": {}, \"plan_only\": {}{}{}",
                         getpid(), json_string(command), json_string(log_file_path()), json_string(config_.flavor.name),
                         json_string(config_.flavor_source), fmt::join(names, ", "),
                         devices_.empty() ? 0 : devices_[0]->capacity(), config_.plan_only ? "true" : "false",
                         facts.empty() ? "" : ", ", facts));
}

void Engine::emit_run_end() const {
  if (!events_enabled()) return;
  const EngineStats s = stats();
  emit_event("run_end", fmt::format("\"steps\": {}, \"recorded_ops\": {}, \"eager_ops\": {}, \"cache_hits\": {}, "
                                    "\"cache_misses\": {}, \"compile_ms\": {:.3f}",
                                    s.flushes, s.recorded_ops, s.eager_ops, s.cache_hits, s.cache_misses,
                                    s.total_compile_ms));
}

void Engine::emit_step_locked(const PlannedStep& plan, const StepGraph& graph, uint64_t hash, bool cache_hit) {
  if (!events_enabled()) return;
  std::vector<uint64_t> peaks(devices_.size(), 0), used;
  for (const auto& d : devices_) used.push_back(d->used());
  for (const auto& p : plan.programs)
    if (static_cast<size_t>(p.device) < peaks.size()) peaks[static_cast<size_t>(p.device)] = p.peak_bytes;
  std::vector<std::string> fallbacks;
  for (const auto& op : plan.report.fallback_ops) fallbacks.push_back(json_string(op));
  const uint64_t eager = stats_.eager_ops - eager_ops_at_last_step_;
  eager_ops_at_last_step_ = stats_.eager_ops;
  emit_event("step", fmt::format(
      "\"step\": {}, \"graph\": \"{:016x}\", \"ops\": {}, \"cache\": \"{}\", \"compile_ms\": {:.3f}, "
      "\"launches\": {}, \"fused_ops\": {}, \"eager_ops_before\": {}, \"devices\": {}, \"layout\": {}, "
      "\"replicated_fallbacks\": {}, \"fallback_ops\": [{}], \"peak_bytes\": [{}], \"used_bytes\": [{}], "
      "\"collective_bytes_per_device\": {}, \"predicted_ms\": {:.4f}, \"plan_only\": {}",
      stats_.flushes, hash, graph.size(), cache_hit ? "hit" : "miss", cache_hit ? 0.0 : plan.report.compile_ms,
      plan.report.launches ? plan.report.launches : graph.size(), plan.report.fused_nodes, eager, plan.num_devices,
      json_string(parallelism_ == ParallelConfig{} ? std::string() : format_parallel_config(parallelism_)),
      plan.report.replicated_fallbacks, fmt::join(fallbacks, ", "), fmt::join(peaks, ", "),
      fmt::join(used, ", "), plan.report.collective_bytes_per_device, plan.report.predicted_ms,
      config_.plan_only ? "true" : "false"));
}

void Engine::hold_planned_locked(const Plan& plan, const CanonicalGraph& canonical) {
  // What each device holds once the step would have run: the values the script keeps, as the plan leaves them,
  // as blocks that count against the device's memory and hold none.
  const int n = static_cast<int>(devices_.size());
  for (size_t s = 0; s < canonical.bindings.size(); ++s) {
    Buffer& b = *canonical.bindings[s];
    for (int d = 0; d < n; ++d) {
      const uint64_t want = b.frontend_alive() ? placement_bytes(plan.final_placements.empty() ? Placement{PlacementKind::kHome}
                                                                                              : plan.final_placements[s],
                                                                 b.bytes(), n, d)
                                               : 0;
      const PhysicalBlock* have = b.memory(d);
      if (have && have->bytes() == want && have->data() == nullptr) continue;
      b.unbind(d);
      if (want > 0) b.bind(d, devices_[static_cast<size_t>(d)]->adopt(nullptr, want, nullptr));
    }
  }
}

void Engine::gather_home_locked(Buffer& b) {
  if (!config_.plan_only) {
    gather_home(b, raw(devices_));
    return;
  }
  for (int d = 1; d < static_cast<int>(devices_.size()); ++d) b.unbind(d);
  if (!b.memory(0) || b.memory(0)->bytes() != b.bytes()) {
    b.unbind(0);
    b.bind(0, devices_[0]->adopt(nullptr, b.bytes(), nullptr));
  }
  b.set_placement({PlacementKind::kHome});
}

bool Engine::bring_home_misplaced_locked(const CanonicalGraph& canonical) {
  // A value that an earlier step under another layout left on its devices (set_parallelism between steps).
  return bring_home_for_layouts_locked(canonical, {parallel_layout(parallelism_, static_cast<int>(devices_.size()))});
}

bool Engine::bring_home_for_layouts_locked(const CanonicalGraph& canonical, const std::vector<ParallelSizes>& layouts) {
  std::vector<Buffer*> misplaced;
  for (size_t s = 0; s < canonical.bindings.size(); ++s) {
    if (canonical.buffers[s].origin != BufferOrigin::kMaterialized) continue;
    for (const ParallelSizes& layout : layouts)
      if (!plan_accepts(canonical.bindings[s]->placement(), layout)) {
        misplaced.push_back(canonical.bindings[s].get());
        break;
      }
  }
  if (misplaced.empty()) return false;
  wait_locked();  // the steps that placed them have run
  for (Buffer* b : misplaced) gather_home_locked(*b);
  log().debug("{} value(s) placed under another layout were brought to device 0 before planning", misplaced.size());
  return true;
}

bool Engine::searchable_locked(const StepGraph& graph, const CanonicalGraph& canonical) const {
  return devices_.size() > 1 && !parallelism_by_hand_ && analyze_step(graph, canonical).split_rows > 0;
}

std::shared_ptr<PlannedStep> Engine::choose_layout_locked(const StepGraph& graph, CanonicalGraph& canonical,
                                                          const std::string& reason, bool after_out_of_memory) {
  const int n = static_cast<int>(devices_.size());
  const uint64_t graph_hash = stable_graph_hash(graph, canonical);
  const SelectionCache selections(config_.ap_cache ? config_.config_dir + "/ap" : std::string());
  const char* train = backward_seeds(graph, canonical).empty() ? "train: false" : "train: true";
  if (!after_out_of_memory) {
    if (std::optional<ParallelConfig> earlier = selections.find(graph_hash, config_.flavor.name, n)) {
      log().info("Advanced Parallelization: graph {:016x} on {} was searched by an earlier run ({}); its "
                 "selection is taken without a search.",
                 graph_hash, config_.flavor.name, selections.path(graph_hash, config_.flavor.name, n));
      emit_event("ap", fmt::format("\"reason\": {}, \"graph\": \"{:016x}\", \"devices\": {}, \"cached\": {}, "
                                   "\"selected\": {}",
                                   json_string(reason), graph_hash, n,
                                   json_string(selections.path(graph_hash, config_.flavor.name, n)),
                                   json_string(format_parallel_config(*earlier))));
      adopt_layout_locked(*earlier, train);
      if (bring_home_misplaced_locked(canonical)) canonical = CanonicalGraph::build(graph, offset_keying());
      return nullptr;
    }
  }
  const CandidateSpace space{.devices = n, .batch = step_rows(graph, canonical), .autocast = false};
  // Every candidate starts from where the values are: those that some cannot start from come home first when
  // the devices have room for it (AP's first step); after an out-of-memory step, only the candidates that can
  // start from them are tried.
  std::function<bool(const ParallelConfig&)> admissible;
  if (!after_out_of_memory) {
    std::vector<ParallelSizes> layouts;
    for (const ParallelConfig& c : enumerate_candidates(space)) layouts.push_back(parallel_layout(c, n));
    if (bring_home_for_layouts_locked(canonical, layouts)) canonical = CanonicalGraph::build(graph, offset_keying());
  } else {
    admissible = [&](const ParallelConfig& c) {
      const ParallelSizes layout = parallel_layout(c, n);
      for (size_t s = 0; s < canonical.bindings.size(); ++s)
        if (canonical.buffers[s].origin == BufferOrigin::kMaterialized &&
            !plan_accepts(canonical.bindings[s]->placement(), layout))
          return false;
      return true;
    };
  }
  for (auto& d : devices_) {  // what the devices hold once earlier steps are done
    try {
      d->synchronize(timeout_of(config_));
    } catch (...) {
      if (!deferred_error_) deferred_error_ = std::current_exception();
    }
  }
  std::vector<uint64_t> used;
  for (const auto& d : devices_) used.push_back(d->used());
  const uint64_t capacity = devices_[0]->capacity();
  const ProfileTiming timing(device_profile_locked(), n, node_of_devices());
  const SearchRequest request{.graph = graph,
                              .canonical = canonical,
                              .devices = n,
                              .used_bytes = used,
                              .capacity = capacity,
                              .margin = config_.memory_margin(capacity),
                              .fusion = fusion_enabled_,
                              .fusion_limits = fusion_limits(),
                              .timing = timing,
                              .admissible = admissible,
                              .inadmissible_reason = "cannot start from where the previous layout left the step's "
                                                     "values (and there is no room to bring them to device 0)"};
  SearchResult result = search_parallel_layouts(request, [](SearchPhase phase, const SearchResult& r) {
    switch (phase) {
      case SearchPhase::kEnumerated:
        log().info("The number of candidates is {}.", r.candidates.size());
        log().info("Parallel Graph Compile start...");
        break;
      case SearchPhase::kWidened:
        log().info("No candidate fits the devices' memory: {} more with up to {} micro-batches per replica, also "
                   "without pipeline stages (gradients accumulated over them), are compiled too.",
                   r.widened, kWidenedMicroBatches);
        break;
      case SearchPhase::kLowered:
        log().info("Elapsed Time to compile all candidates = {} [ms]", static_cast<int64_t>(r.compile_ms));
        log().info("Parallel Graph Compile finished.");
        if (r.slower > 0)
          log().info("{} candidate(s) with recomputation were not compiled: the same layout without it fits, and "
                     "recomputation only adds time.", r.slower);
        if (r.larger > 0)
          log().info("{} candidate(s) without distribute_param were not compiled: the same layout with it holds "
                     "less and does not fit.", r.larger);
        if (r.over_anyway > 0)
          log().info("{} candidate(s) with recomputation were not compiled: the same layout without it is over the "
                     "memory in values recomputation does not drop.", r.over_anyway);
        log().info("The number of possible candidates is {}.", r.lowered_and_fitting);
        if (r.lowered_again > 0)
          log().info("{} of their plans were not kept (more than {} of this process's memory in all): they are "
                     "compiled again to be timed.", r.lowered_again,
                     fmt::format("{:.1f} GiB", static_cast<double>(default_kept_plan_bytes()) / (1 << 30)));
        log().info("SelectBestGraphFromCandidates start...");
        break;
      case SearchPhase::kTimed:
        log().info("Elapsed Time to compute cost for survived candidates = {} [ms]", static_cast<int64_t>(r.cost_ms));
        log().info("SelectBestGraphFromCandidates finished.");
        break;
    }
  });
  if (log().should_log(spdlog::level::debug)) {
    log().debug("Advanced Parallelization candidates ({}; costs from the {} profile):", reason, timing.profile().name);
    for (const auto& line : candidate_table(result, n)) log().debug("  {}", line);
  }
  const SearchContext context{.flavor = config_.flavor.name,
                              .devices = n,
                              .profile = timing.profile().name,
                              .graph_hash = graph_hash,
                              .reason = reason,
                              .capacity = capacity,
                              .margin = request.margin};
  const char* explanation = "advanced_parallelization_candidates.json";
  if (std::FILE* f = std::fopen(explanation, "w")) {
    const std::string text = candidates_json(result, context);
    const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    if (std::fclose(f) != 0 || !ok) log().warn("could not write {} in the working directory", explanation);
  } else {
    log().warn("could not write {} in the working directory: {}", explanation, std::strerror(errno));
  }
  if (events_enabled()) {  // the search, for moreh-log ap: every candidate's fate
    std::vector<std::string> rows;
    for (const auto& c : result.candidates)
      rows.push_back(fmt::format("{{\"config\": {}, \"dropped\": {}, \"peak_bytes\": {}, \"step_ms\": {:.4f}, "
                                 "\"tokens_per_s\": {:.1f}, \"bound_ms\": {:.4f}}}",
                                 json_string(format_parallel_config(c.config)),
                                 c.dropped.empty() ? std::string("null") : json_string(c.dropped), c.max_peak(),
                                 c.step_ms, c.tokens_per_s, c.bound_ms));
    const CandidateResult* chosen = result.selected >= 0 ? &result.candidates[static_cast<size_t>(result.selected)]
                                                          : nullptr;
    emit_event("ap", fmt::format(
        "\"reason\": {}, \"graph\": \"{:016x}\", \"devices\": {}, \"profile\": {}, \"capacity_bytes\": {}, "
        "\"margin_bytes\": {}, \"candidates\": {}, \"feasible\": {}, \"not_compiled\": {}, \"compile_ms\": {:.3f}, "
        "\"cost_ms\": {:.3f}, \"selected\": {}, \"predicted_ms\": {:.4f}, \"tokens_per_s\": {:.1f}, \"table\": [{}]",
        json_string(reason), graph_hash, n, json_string(timing.profile().name), capacity, request.margin,
        result.candidates.size(), result.feasible, result.slower + result.larger + result.over_anyway, result.compile_ms, result.cost_ms,
        chosen ? json_string(format_parallel_config(chosen->config)) : std::string("null"),
        chosen ? chosen->step_ms : 0.0, chosen ? chosen->tokens_per_s : 0.0, fmt::join(rows, ", ")));
  }
  std::shared_ptr<PlannedStep> plan;
  if (result.selected >= 0) {
    CandidateResult& chosen = result.candidates[static_cast<size_t>(result.selected)];
    plan = std::move(chosen.plan);
    log().info("Predicted step time {:.3f} ms ({:.0f} tokens/s) on the {} profile; {} of {} candidates fit{}; "
               "advanced_parallelization_candidates.json says why the others were dropped",
               chosen.step_ms, chosen.tokens_per_s, timing.profile().name, result.feasible, result.candidates.size(),
               result.slower ? fmt::format(" ({} more not compiled: recomputation where the layout fits without)",
                                           result.slower)
                             : std::string());
    adopt_layout_locked(chosen.config, train);
    if (!selections.store(graph_hash, config_.flavor.name, n, chosen.config) && config_.ap_cache)
      log().warn("could not keep the selection under {}; the next run searches again", config_.config_dir + "/ap");
  } else {
    log().warn("Advanced Parallelization: no candidate fits the devices' memory ({})", reason);
  }
  for (auto& c : result.candidates) c.plan.reset();
  last_search_ = std::make_shared<const SearchResult>(std::move(result));
  return plan;
}

void Engine::adopt_layout_locked(const ParallelConfig& config, const char* after_selection) {
  parallelism_ = config;
  layout_key_ = config == ParallelConfig{} ? 0 : std::hash<std::string>{}(format_parallel_config(config)) * 0x100000001b3ull;
  const std::string line = format_parallel_config(config);
  log().info("Configuration for parallelism is selected.");
  log().info("{}", line);
  if (after_selection) log().info("{}", after_selection);
  const char* dump = "advanced_parallelization_selected_config.dump";
  if (std::FILE* f = std::fopen(dump, "w")) {
    const bool ok = std::fprintf(f, "%s\n", line.c_str()) > 0;
    if (std::fclose(f) != 0 || !ok) log().warn("could not write {} in the working directory", dump);
  } else {
    log().warn("could not write {} in the working directory: {}", dump, std::strerror(errno));
  }
  layout_logged_ = false;
  log_layout_once();
}

void Engine::log_layout_once() {
  if (layout_logged_) return;
  layout_logged_ = true;
  std::vector<std::string> names;
  for (const auto& d : devices_) names.push_back(d->name());
  log().info("{}", device_count_line(static_cast<int>(devices_.size())));
  const ParallelSizes sizes = parallel_layout(parallelism_, static_cast<int>(devices_.size()));
  for (const auto& line : rank_layout_lines(sizes, names)) log().info("{}", line);
}

void Engine::set_parallelism(const ParallelConfig& config) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  parallel_layout(config, static_cast<int>(devices_.size()));  // throws for an impossible layout
  flush_locked();  // what was recorded so far is planned as it was recorded
  parallelism_by_hand_ = true;
  adopt_layout_locked(config);
}

ParallelConfig Engine::parallelism() const {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return parallelism_;
}

void Engine::bring_home(Buffer& b) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  gather_home_locked(b);
}

bool Engine::read_to_host(const Buffer& b, void* dst) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (config_.plan_only) {
    std::memset(dst, 0, b.bytes());
    return true;
  }
  return read_whole(b, raw(devices_), dst);
}

void Engine::synchronize() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  flush_locked();
  wait_locked();
}

void Engine::wait_submitted() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  wait_locked();
}

void Engine::note_read_without_step() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  ++stats_.reads_without_step;
}

std::optional<std::vector<Node>> Engine::pending_dependencies(const Buffer& buffer, size_t limit) const {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  const auto& nodes = pending_.nodes();
  std::unordered_set<const Buffer*> needed{&buffer};
  std::vector<size_t> taken;
  auto writes_needed = [&](const Node& n) {
    for (const auto& o : n.outputs)
      if (needed.count(o.buffer.get())) return true;
    for (uint16_t w : n.written)
      if (needed.count(n.inputs[w].buffer.get())) return true;
    return false;
  };
  for (size_t i = nodes.size(); i-- > 0;) {
    if (!writes_needed(nodes[i])) continue;
    if (taken.size() == limit) return std::nullopt;
    taken.push_back(i);
    for (const auto& in : nodes[i].inputs) needed.insert(in.buffer.get());  // in place: what it held before too
  }
  std::vector<Node> out;
  out.reserve(taken.size());
  for (size_t k = taken.size(); k-- > 0;) out.push_back(nodes[taken[k]]);
  return out;
}

void Engine::wait_locked() {
  // A failed step fails on every device that ran it: the error is reported once, and every device's copy
  // of it is taken, so that the next, unrelated reads do not raise it again.
  std::exception_ptr first = deferred_error_;
  deferred_error_ = nullptr;
  bool interrupted = false;  // an interrupt is what the user hears of, not the collectives it broke
  for (auto& d : devices_) {
    try {
      d->synchronize(timeout_of(config_));
    } catch (const InterruptedError&) {
      if (!interrupted) first = std::current_exception();
      interrupted = true;
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  // Every device is idle: a communicator that a failed step broke can start again for the next step.
  if (communicator_ && communicator_->broken()) {
    const std::string why = communicator_->broken_reason();
    if (communicator_->recover())
      log().info("moreh: collectives resume after a failed step ({})", why);
    else if (!collectives_lost_logged_ && (collectives_lost_logged_ = true))
      log().warn("moreh: the collectives cannot recover from a failed step ({}); steps over several devices "
                 "will fail until the process restarts", why);
  }
  if (!executor_.recover_groups() && !collectives_lost_logged_ && (collectives_lost_logged_ = true))
    log().warn("moreh: the collectives of a group of devices cannot recover from a failed step; steps over "
               "several devices will fail until the process restarts");
  if (first) std::rethrow_exception(first);
}

size_t Engine::pending_ops() const {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return pending_.size();
}

void Engine::note_eager_op(std::string_view op) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  ++stats_.eager_ops;
  if (events_enabled() && !op.empty()) emit_event("eager_op", "\"op\": " + json_string(op));
}

EngineStats Engine::stats() const {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return stats_;
}

void Engine::set_advanced_parallelization(bool enabled) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  advanced_parallelization_ = enabled;
}

void Engine::set_host_calibration(HostCalibration calibrate) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  host_calibration_ = std::move(calibrate);
}

DeviceProfile Engine::device_profile() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return device_profile_locked();
}

DeviceProfile Engine::device_profile_locked() {
  if (profile_) return *profile_;
  const std::string& name = config_.device_profile;
  const uint64_t capacity = devices_.empty() ? 0 : devices_[0]->capacity();
  if (name == "host" || (name == "auto" && (devices_.empty() || devices_[0]->kind() == DeviceKind::kHost))) {
    profile_ = host_profile(config_.config_dir + "/profiles/host.txt", host_calibration_, capacity);
  } else if (name == "auto") {
    std::optional<DeviceProfile> p = profile_for_device_name(devices_[0]->name());
    if (!p) {
      log().info("moreh: no profile matches {}; the cost simulator uses the H100's (MOREH_DEVICE_PROFILE picks one)",
                 devices_[0]->name());
      p = named_profile("h100");
    }
    profile_ = *p;
  } else {
    profile_ = *named_profile(name);
  }
  return *profile_;
}

std::shared_ptr<const SearchResult> Engine::last_search() const {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return last_search_;
}

FusionLimits Engine::fusion_limits() const {
  FusionLimits limits;
  limits.min_nodes = static_cast<size_t>(config_.fusion_min_ops);
  return limits;
}

std::shared_ptr<const PlannedStep> Engine::last_plan() const {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return last_plan_;
}

bool Engine::fusion_enabled() const {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return fusion_enabled_;
}

void Engine::set_fusion_enabled(bool enabled) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (enabled && !fusion_wanted(FusionChoice::kOn, devices_[0]->kind()))
    throw Error("fused elementwise kernels need NVRTC on " + devices_[0]->name() + ", and it cannot be loaded");
  flush_locked();  // what was recorded so far is planned as it was recorded
  fusion_enabled_ = enabled;
}

bool Engine::advanced_parallelization() const {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return advanced_parallelization_;
}

}  // namespace moreh::scheduler
