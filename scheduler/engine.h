// The engine behind the virtual device: it owns the pending step graph, flushes it at step boundaries
// (canonicalize -> plan cache or compile -> submit to the devices), and answers memory questions.
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "runtime/memory/buffer.h"
#include "runtime/comm/communicator.h"
#include "runtime/config/config.h"
#include "runtime/device/device.h"
#include "runtime/cluster/remote_cluster.h"
#include "runtime/exec/executor.h"
#include "scheduler/plan_report.h"
#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "runtime/config/process_registry.h"
#include "runtime/memory/virtual_memory.h"
#include "scheduler/fusion/elementwise_fusion.h"
#include "scheduler/plan_cache.h"
#include "scheduler/search/device_profile.h"
#include "scheduler/search/parallel_search.h"

namespace moreh::scheduler {

struct EngineStats {
  uint64_t recorded_ops = 0;   // nodes recorded since start
  uint64_t eager_ops = 0;      // ops that forced a flush and ran on materialized data
  uint64_t flushes = 0;        // non-empty step graphs flushed
  uint64_t cache_hits = 0, cache_misses = 0;
  uint64_t last_graph_ops = 0;
  uint64_t last_graph_hash = 0;
  double last_compile_ms = 0, total_compile_ms = 0;
  // The batch size of the last flushed step if its graph recurs, else 0 (scheduler/analysis/step_analysis.h).
  int64_t last_batch_size = 0;
  // With several devices: ops that had no sharding rule and ran replicated on gathered inputs.
  uint64_t replicated_fallbacks = 0, last_replicated_fallbacks = 0;
  // The last flushed step: kernels it launches, and nodes that ran inside fused elementwise kernels.
  uint64_t last_launches = 0, last_fused_ops = 0;
  // Host reads answered without ending the step (a mask check computed from values the host has).
  uint64_t reads_without_step = 0;
};

class Engine {
 public:
  // `cluster`: the workers whose devices are among `devices` (MOREH_WORKERS); it joins them.
  Engine(runtime::Config config, std::vector<std::unique_ptr<runtime::PhysicalDevice>> devices,
         std::unique_ptr<runtime::RemoteCluster> cluster = nullptr);
  ~Engine();
  // The process's engine, made on first use from the environment (a malformed MOREH_* throws ConfigError).
  static Engine& global();
  // Whether the kernel provider can run CUDA devices (the backend's torch has CUDA): set before the first
  // global() so that the engine may choose GPUs.
  static void set_cuda_kernels_available(bool available) { cuda_kernels_flag().store(available); }
  static bool cuda_kernels_available() { return cuda_kernels_flag().load(); }

  const runtime::Config& config() const { return config_; }
  bool plan_only() const { return config_.plan_only; }
  void set_kernel_provider(runtime::KernelProvider* provider);
  // How kernel payloads travel to workers (with MOREH_WORKERS); set by the backend with its provider.
  void set_payload_codec(const runtime::PayloadCodec* codec);
  const runtime::RemoteCluster* cluster() const { return cluster_.get(); }
  // Each device's machine for the cost model's links (empty: all in this process).
  std::vector<int> node_of_devices() const { return cluster_ ? cluster_->node_of_devices() : std::vector<int>{}; }
  // A range opened around each device program's run, on the device's thread (runtime/exec/executor.h).
  void set_program_scope(runtime::Executor::ProgramScope scope);
  runtime::PhysicalDevice& device(int index = 0) { return *devices_.at(index); }
  size_t num_devices() const { return devices_.size(); }
  // The virtual device's memory: the sum over its physical devices.
  uint64_t memory_used() const;
  uint64_t memory_capacity() const;

  // The moreh-smi entry of this process (<config_dir>/run/<pid>.json), kept by a background thread.
  void start_registry();
  void stop_registry();
  runtime::VirtualMemory& virtual_memory() { return vm_; }

  std::shared_ptr<runtime::Buffer> new_buffer(uint64_t bytes);

  // Appends a node (marks what it writes as defined); flushes when MOREH_MAX_PENDING_OPS is reached.
  void record(runtime::Node node);
  // Compiles (or finds) and submits the pending graph; does not wait. Throws OutOfMemoryError when the
  // step cannot fit; then nothing of it runs and its fresh outputs carry the error.
  void flush();
  // flush(), then waits for every device (bounded by MOREH_SYNC_TIMEOUT); rethrows a failed step's error.
  void synchronize();
  size_t pending_ops() const;
  // An op that ended the step graph and ran eagerly (its name, for the run's events).
  void note_eager_op(std::string_view op = {});
  // The run's first and last events (runtime/base/event_log.h): the process, its flavor and devices; its totals.
  void emit_run_start() const;
  void emit_run_end() const;
  // The pending nodes that `buffer`'s value depends on, in recorded order (what a host read of it needs run),
  // when there are at most `limit` of them; nullopt when there are more. Empty when nothing pending writes it.
  std::optional<std::vector<runtime::Node>> pending_dependencies(const runtime::Buffer& buffer, size_t limit) const;
  // Waits for every submitted step without flushing the pending one (bounded by MOREH_SYNC_TIMEOUT); rethrows a
  // failed step's error as synchronize() does.
  void wait_submitted();
  // A host read answered without running the pending step (the backend computed the value from what the host
  // already has); counted in stats().
  void note_read_without_step();

  EngineStats stats() const;
  // Makes device 0 hold b's whole value (gathering rows, summing partial values) and the only copy: for
  // host reads and eager ops, which use device 0's memory. Call with the devices idle (after synchronize).
  void bring_home(runtime::Buffer& b);
  // A host read: b's whole value copied into `dst` (b.bytes()) from where the last plan left it over the
  // devices, which keep it so; false at home or with one device (read device 0's block after bring_home).
  // MOREH_PLAN_ONLY: zeros (nothing ran).
  bool read_to_host(const runtime::Buffer& b, void* dst);
  double replay_host_ms() const { return static_cast<double>(executor_.replay_ns()) / 1e6; }
  // Bytes the devices have sent in collectives and messages since the engine started (0 with one device).
  uint64_t collective_bytes() const {
    return (communicator_ ? communicator_->total_bytes_sent() : 0) + executor_.group_bytes_sent();
  }
  // The same, per device.
  std::vector<uint64_t> bytes_sent_by_device() const {
    std::vector<uint64_t> out(devices_.size(), 0);
    if (communicator_)
      for (size_t d = 0; d < out.size(); ++d) out[d] = communicator_->traffic(static_cast<int>(d)).bytes_sent;
    executor_.add_group_bytes_by_device(out);
    return out;
  }
  // Advanced Parallelization: the next step with a batch (and none chosen by hand) searches the layouts
  // (search/parallel_search.h), or takes the one an earlier run selected for its graph.
  void set_advanced_parallelization(bool enabled);
  bool advanced_parallelization() const;
  // The host profile's micro-benchmark (the backend runs it with its kernels, on first need).
  void set_host_calibration(HostCalibration calibrate);
  // The profile the cost simulator times steps with (MOREH_DEVICE_PROFILE; host devices measured once).
  DeviceProfile device_profile();
  // The last layout search (nullptr before any).
  std::shared_ptr<const SearchResult> last_search() const;
  // The parallel layout chosen by hand (torch.moreh.option.set_parallelism, MOREH_PARALLELISM): checked
  // against the devices and what this build runs (ConfigError naming the field, nothing changed), then
  // logged with MoAI's two lines and the rank table, and written to advanced_parallelization_selected_config.dump
  // in the working directory. Steps recorded before it are planned as they were recorded.
  void set_parallelism(const runtime::ParallelConfig& config);
  runtime::ParallelConfig parallelism() const;
  // Whether single-device steps fuse their elementwise nodes (MOREH_FUSION; auto: on GPUs with NVRTC).
  bool fusion_enabled() const;
  // The plan of the last flushed step (nullptr before any).
  std::shared_ptr<const PlannedStep> last_plan() const;
  // Turns fusion on or off from here on (flushes first); plans with and without it are cached apart.
  // Throws Error when the devices cannot run fused kernels (a GPU without NVRTC).
  void set_fusion_enabled(bool enabled);

 private:
  void flush_locked();
  // The step event of a plan about to run (or be held, plan-only): runtime/base/event_log.h.
  void emit_step_locked(const PlannedStep& plan, const runtime::StepGraph& graph, uint64_t hash, bool cache_hit);
  uint64_t eager_ops_at_last_step_ = 0;
  void wait_locked();
  // One device's plans read every launch's offsets from the step's nodes: a view's offset is step data there
  // (runtime/graph/canonical_graph.h). Batch splitting computes per-device offsets into its plans.
  runtime::CanonicalGraph::Offsets offset_keying() const {
    return devices_.size() == 1 ? runtime::CanonicalGraph::Offsets::kRelative : runtime::CanonicalGraph::Offsets::kAbsolute;
  }
  std::shared_ptr<PlannedStep> compile_locked(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical);
  // The first program of `plan` that does not fit its device's free memory (less the margin AP keeps, when
  // `with_margin`), or nullptr.
  const runtime::DeviceProgram* first_overflow(const runtime::Plan& plan, bool with_margin = false) const;
  // How many of `graph`'s first ops fit in memory when planned alone (the whole graph does not).
  size_t longest_fitting_prefix(const runtime::StepGraph& graph);
  FusionLimits fusion_limits() const;
  void log_layout_once();
  // Brings to device 0 the step's values that an earlier layout left where this one cannot start from;
  // true when there were any.
  bool bring_home_misplaced_locked(const runtime::CanonicalGraph& canonical);
  // The same for values that some of `layouts` cannot start from.
  bool bring_home_for_layouts_locked(const runtime::CanonicalGraph& canonical,
                                     const std::vector<runtime::ParallelSizes>& layouts);
  // Whether `graph` is a step AP chooses a layout for: several devices, no layout chosen by hand, a batch.
  bool searchable_locked(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical) const;
  // AP for `graph`: the layout selected by an earlier run for it, or the search; adopts the selected layout and
  // returns its plan (nullptr when a cached selection is taken: the caller compiles it; or when nothing fits,
  // with last_search_ saying why). `canonical` is rebuilt when values had to come home first.
  // `after_out_of_memory`: the step did not fit its layout; no earlier selection is taken, nothing is brought
  // home, and only the candidates that can start from the values' placements are tried.
  std::shared_ptr<PlannedStep> choose_layout_locked(const runtime::StepGraph& graph, runtime::CanonicalGraph& canonical,
                                                    const std::string& reason, bool after_out_of_memory);
  // MOREH_PLAN_ONLY: instead of running a planned step, binds to each value the script keeps blocks that account
  // for what the plan leaves on each device (and hold no memory).
  void hold_planned_locked(const runtime::Plan& plan, const runtime::CanonicalGraph& canonical);
  // gather_home, or in plan-only mode its accounting (device 0 holds the whole value).
  void gather_home_locked(runtime::Buffer& b);
  // Makes `config` the layout from here on: the log lines, the dump, the rank table.
  // `after_selection`: a line logged after the configuration's (AP's "train: true").
  void adopt_layout_locked(const runtime::ParallelConfig& config, const char* after_selection = nullptr);
  DeviceProfile device_profile_locked();

  runtime::Config config_;
  runtime::VirtualMemory vm_;
  std::vector<std::unique_ptr<runtime::PhysicalDevice>> devices_;
  std::unique_ptr<runtime::RemoteCluster> cluster_;  // before executor_: the executor sends it steps
  runtime::Executor executor_;
  mutable std::recursive_mutex mu_;  // recursive: a flush may free storages whose release records nothing
  runtime::StepGraph pending_;
  PlanCache cache_;
  EngineStats stats_;
  std::shared_ptr<const PlannedStep> last_plan_;
  std::exception_ptr deferred_error_;  // a failed step noticed while a flush waited for memory
  bool advanced_parallelization_ = false;
  bool parallelism_by_hand_ = false;  // set_parallelism / MOREH_PARALLELISM: AP does not override it
  bool layout_searched_ = false;      // AP chose (or loaded) the layout of this process
  HostCalibration host_calibration_;
  std::optional<DeviceProfile> profile_;
  std::shared_ptr<const SearchResult> last_search_;
  std::unordered_set<uint64_t> oom_searched_;  // graphs × layouts that ran out of memory and were searched
  std::unique_ptr<runtime::ProcessRegistry> registry_;
  std::unique_ptr<runtime::Communicator> communicator_;
  bool layout_logged_ = false;
  runtime::ParallelConfig parallelism_;
  uint64_t layout_key_ = 0;  // mixed into plan keys: another layout, other plans (0: the default layout)
  bool collectives_lost_logged_ = false;
  bool fusion_enabled_ = false;
  static std::atomic<bool>& cuda_kernels_flag();
};

}  // namespace moreh::scheduler
