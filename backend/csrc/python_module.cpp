// torch_moreh._C: what the Python package needs from the engine.
#include <torch/csrc/Generator.h>
#include <torch/extension.h>
#include <unistd.h>

#include "backend/csrc/attention_choice.h"
#include "backend/csrc/device_hooks.h"
#include "backend/csrc/host_calibration.h"
#include "backend/csrc/host_kernel_provider.h"
#include "backend/csrc/interrupt_handler.h"
#ifdef MOREH_TORCH_CUDA
#include "backend/csrc/cuda_kernel_provider.h"
#endif
#include "backend/csrc/lazy_fallback.h"
#include "backend/csrc/moreh_storage.h"
#include "backend/csrc/payload_wire.h"
#include "backend/csrc/profiler_range.h"

#include "runtime/base/event_log.h"
#include "runtime/base/data_type.h"
#include "runtime/base/errors.h"
#include "runtime/base/fork_guard.h"
#include "runtime/host/host_device.h"
#include "runtime/base/logging.h"
#include "runtime/config/parallel_config.h"
#include "runtime/worker/worker_main.h"
#ifdef MOREH_WITH_NVRTC
#include "runtime/cuda/nvrtc.h"
#endif

namespace py = pybind11;
using namespace moreh;

namespace {

// The element types the runtime reduces and scales itself (collectives, shares of a mean).
void register_data_types() {
  runtime::register_data_type(static_cast<int8_t>(c10::ScalarType::Float), runtime::DataType::kFloat32);
  runtime::register_data_type(static_cast<int8_t>(c10::ScalarType::Double), runtime::DataType::kFloat64);
  runtime::register_data_type(static_cast<int8_t>(c10::ScalarType::BFloat16), runtime::DataType::kBFloat16);
  runtime::register_data_type(static_cast<int8_t>(c10::ScalarType::Half), runtime::DataType::kFloat16);
  runtime::register_data_type(static_cast<int8_t>(c10::ScalarType::Long), runtime::DataType::kInt64);
  runtime::register_data_type(static_cast<int8_t>(c10::ScalarType::Int), runtime::DataType::kInt32);
  runtime::register_data_type(static_cast<int8_t>(c10::ScalarType::Bool), runtime::DataType::kBool);
}

void init(const std::string& torch_version, const std::string& moreh_version) {
  // The run-start event (runtime/base/event_log.h) names them: the engine starts below.
  runtime::add_run_fact("torch", runtime::json_string(torch_version));
  runtime::add_run_fact("moreh", runtime::json_string(moreh_version));
  register_data_types();
#ifdef MOREH_TORCH_CUDA
  scheduler::Engine::set_cuda_kernels_available(true);
#endif
  auto& e = backend::engine();  // reads MOREH_* (a malformed value raises here, naming it)
  backend::install_interrupt_handler();
#ifdef MOREH_TORCH_CUDA
  if (e.device(0).kind() == runtime::DeviceKind::kCuda) e.set_kernel_provider(&backend::cuda_kernel_provider());
  else e.set_kernel_provider(&backend::host_kernel_provider());
#else
  e.set_kernel_provider(&backend::host_kernel_provider());
#endif
  e.set_payload_codec(&backend::aten_payload_codec());  // steps on workers (MOREH_WORKERS)
  backend::register_recorded_composites();
  e.set_program_scope(backend::profiler_program_scope());  // torch.profiler sees each device's runs
  e.set_host_calibration(&backend::measure_host);
}

py::dict stats() {
  auto s = backend::engine().stats();
  py::dict d;
  d["recorded_ops"] = s.recorded_ops;
  d["eager_ops"] = s.eager_ops;
  d["reads_without_step"] = s.reads_without_step;
  d["replicated_fallbacks"] = s.replicated_fallbacks;
  d["last_replicated_fallbacks"] = s.last_replicated_fallbacks;
  d["collective_bytes"] = backend::engine().collective_bytes();
  d["replay_host_ms"] = backend::engine().replay_host_ms();
  d["flushes"] = s.flushes;
  d["cache_hits"] = s.cache_hits;
  d["cache_misses"] = s.cache_misses;
  // With MOREH_WORKERS: plans uploaded to workers (once per plan and worker) and steps sent to them.
  const auto* cluster = backend::engine().cluster();
  d["plan_uploads"] = cluster ? cluster->plan_uploads() : 0;
  d["remote_steps"] = cluster ? cluster->steps_sent() : 0;
  d["control_bytes"] = cluster ? cluster->control_bytes() : 0;  // plan uploads and step requests, sent
  d["last_graph_ops"] = s.last_graph_ops;
  d["last_launches"] = s.last_launches;
  d["last_fused_ops"] = s.last_fused_ops;
  d["fusion"] = backend::engine().fusion_enabled();
  d["last_graph_hash"] = s.last_graph_hash;
  d["last_compile_ms"] = s.last_compile_ms;
  d["total_compile_ms"] = s.total_compile_ms;
  d["last_batch_size"] = s.last_batch_size;
  d["pending_ops"] = backend::engine().pending_ops();
  d["recorded_composites"] = backend::recorded_composite_count();
  d["meta_cache_misses"] = backend::meta_cache_misses();
  d["device_allocations"] = backend::engine().device(0).allocations();
  d["device_adoptions"] = backend::engine().device(0).adoptions();
  if (auto* host = dynamic_cast<runtime::HostDevice*>(&backend::engine().device(0))) {
    d["device_scratch_allocations"] = host->scratch_allocations();  // what kernels allocated themselves
    d["device_cache_hits"] = host->cache_hits();                    // allocations served by freed blocks
  }
  return d;
}

// The fused kernels of the last step's plan: their size, and their kernel parameters' bytes at launch.
py::list fused_kernels() {
  py::list out;
  auto plan = backend::engine().last_plan();
  if (!plan) return out;
  for (const auto& program : plan->programs) {
    for (const auto& f : program.fused) {
      runtime::ElementwiseArguments args = f.shape;  // any non-null pointers: only the parameters' layout counts
      static char dummy;
      args.inputs.assign(f.inputs.size(), &dummy);
      args.outputs.assign(f.outputs.size(), &dummy);
      for (runtime::DataType t : f.kernel->scalars())
        args.scalars.push_back(runtime::is_floating_point(t) ? runtime::ElementwiseScalar(0.0)
                                                              : runtime::ElementwiseScalar(int64_t{0}));
      auto params = f.kernel->parameters(args);
      size_t bytes = 0;
      for (size_t i = 0; i < params.count(); ++i) bytes = (bytes + 7) / 8 * 8 + params.size_of(i);
      py::dict d;
      d["name"] = f.kernel->function_name();
      d["nodes"] = f.nodes.size();
      d["inputs"] = f.inputs.size();
      d["outputs"] = f.outputs.size();
      d["scalars"] = f.scalars.size();
      d["parameter_bytes"] = bytes;
      d["source"] = f.kernel->source();
      out.append(d);
    }
  }
  return out;
}

// Compiles the last plan's fused kernels with NVRTC for compute capability `arch` (PTX; no GPU needed):
// the milliseconds of each compile.
py::list compile_fused_kernels(int arch) {
  py::list out;
#ifdef MOREH_WITH_NVRTC
  auto plan = backend::engine().last_plan();
  if (!plan) return out;
  for (const auto& program : plan->programs) {
    for (const auto& f : program.fused) {
      py::gil_scoped_release nogil;
      auto r = runtime::cuda::nvrtc_compile(f.kernel->source(), f.kernel->function_name(), arch,
                                            runtime::cuda::NvrtcOutput::kPtx);
      py::gil_scoped_acquire gil;
      out.append(r.milliseconds);
    }
  }
#else
  (void)arch;
  throw std::runtime_error("this build of moreh has no NVRTC");
#endif
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  py::register_exception<runtime::ConfigError>(m, "ConfigError", PyExc_ValueError);
  m.def("_init", &init, py::arg("torch_version") = "", py::arg("moreh_version") = "");
  // moreh-worker's whole life in a process that has torch's kernels (and no engine of its own): it runs the
  // steps clients send it on its host devices. Returns the exit code; the GIL is released while it serves.
  m.def("_worker_main", [](const std::vector<std::string>& args) {
    register_data_types();
    py::gil_scoped_release release;
    return runtime::worker_main(args, &backend::host_kernel_provider(), &backend::aten_payload_codec());
  });
  m.def("_flush", [] {
    py::gil_scoped_release nogil;
    backend::flush_step();
  });
  m.def("_synchronize", [] {
    py::gil_scoped_release nogil;
    backend::synchronize_device();
  });
  m.def("_stats", &stats);
  m.def("_in_forked_child", &runtime::in_forked_child);
  m.def("_pinned_host_memory_stats", [] {
    auto memory = backend::engine().device(0).pinned_host_memory();
    py::dict d;
    d["blocks"] = memory->block_count();
    d["pinned_bytes"] = memory->pinned_bytes();
    d["locked_bytes"] = memory->locked_bytes();
    return d;
  });
  // At interpreter exit: let submitted steps finish before libtorch's statics go (an error is logged,
  // not raised); ops recorded but never flushed are dropped, as their results can no longer be read.
  m.def("_shutdown", [] {
    if (runtime::in_forked_child()) return;  // the steps are the parent's to finish
    py::gil_scoped_release nogil;
    try {
      auto& e = backend::engine();
      for (size_t i = 0; i < e.num_devices(); ++i)
        e.device(static_cast<int>(i)).synchronize(std::chrono::milliseconds(60000));
    } catch (const std::exception& ex) {
      runtime::log_message(runtime::LogLevel::kError, std::string("moreh: a step failed at exit: ") + ex.what());
    }
    backend::engine().stop_registry();  // moreh-smi stops listing this process
  });
  // Memory of the virtual device: sums over its physical devices.
  m.def("_memory_allocated", [] { return backend::engine().memory_used(); });
  m.def("_max_memory_allocated", [] {
    auto& e = backend::engine();
    uint64_t sum = 0;
    for (size_t i = 0; i < e.num_devices(); ++i) sum += e.device(static_cast<int>(i)).peak();
    return sum;
  });
  m.def("_reset_peak_memory_stats", [] {
    auto& e = backend::engine();
    for (size_t i = 0; i < e.num_devices(); ++i) e.device(static_cast<int>(i)).reset_peak();
  });
  m.def("_empty_cache", [] {
    py::gil_scoped_release nogil;
    backend::synchronize_device();
    auto& e = backend::engine();
    for (size_t i = 0; i < e.num_devices(); ++i) e.device(static_cast<int>(i)).release_cached();
  });
  m.def("_cached_bytes", [] {
    auto& e = backend::engine();
    uint64_t sum = 0;
    for (size_t i = 0; i < e.num_devices(); ++i) sum += e.device(static_cast<int>(i)).cached_bytes();
    return sum;
  });
  m.def("_memory_capacity", [] { return backend::engine().memory_capacity(); });
  m.def("_physical_device_name", [] { return backend::engine().device(0).name(); });
  m.def("_num_physical_devices", [] { return backend::engine().num_devices(); });
  m.def("_physical_devices", [] {
    auto& e = backend::engine();
    const std::vector<uint64_t> sent = e.bytes_sent_by_device();
    py::list out;
    for (size_t i = 0; i < e.num_devices(); ++i) {
      auto& d = e.device(static_cast<int>(i));
      py::dict entry;
      entry["index"] = i;
      entry["name"] = d.name();
      entry["memory_used"] = d.used();
      entry["memory_peak"] = d.peak();
      entry["memory_total"] = d.capacity();
      entry["bytes_sent"] = sent.at(i);
      out.append(entry);
    }
    return out;
  });
  // The plan of the last step: its log line, planning time, each device's predicted peak (bytes beyond what
  // the device held before the step), and what recomputation runs again and drops.
  m.def("_last_plan", [] {
    py::dict d;
    auto plan = backend::engine().last_plan();
    if (!plan) return d;
    d["summary"] = plan->report.summary;
    d["compile_ms"] = plan->report.compile_ms;
    d["predicted_ms"] = plan->report.predicted_ms;
    d["collective_bytes_per_device"] = plan->report.collective_bytes_per_device;
    py::list peaks;
    for (const auto& p : plan->programs) peaks.append(p.peak_bytes);
    d["peak_bytes"] = peaks;
    d["recomputed_ops"] = plan->report.recomputed_ops;  // recomputation : 1 (docs/RECOMPUTATION.md)
    d["dropped_activation_bytes"] = plan->report.dropped_activation_bytes;
    // The schedule on a clock of node costs (scheduler/analysis/plan_timeline.h).
    if (const auto& t = plan->report.timeline) {
      d["idle_fraction"] = t->idle_fraction;
      d["makespan_cost"] = t->makespan;
    }
    return d;
  });
  m.def("_flavor", [] { return backend::engine().config().flavor.name; });
  m.def("_flavor_source", [] { return backend::engine().config().flavor_source; });
  m.def("_registry_path", [] { return backend::engine().config().config_dir + "/run/" + std::to_string(getpid()) + ".json"; });
  m.def("_get_default_generator", [] {
    return py::reinterpret_steal<py::object>(THPGenerator_initDefaultGenerator(backend::default_generator()));
  });
  m.def("_set_advanced_parallelization", [](bool on) { backend::engine().set_advanced_parallelization(on); });
  m.def("_fused_kernels", &fused_kernels);
  // The attention kernel moreh records on a CUDA device of the given compute capability (tests the rules
  // anywhere: only the tensors' metadata is read).
  m.def("_cuda_attention_kernel", [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const std::optional<at::Tensor>& mask, double dropout_p, bool is_causal,
                                     bool enable_gqa, int compute_capability) {
    return static_cast<int64_t>(
        backend::cuda_attention_kernel(q, k, v, mask, dropout_p, is_causal, enable_gqa, compute_capability));
  });
  m.def("_compile_fused_kernels", &compile_fused_kernels);
  m.def("_set_fusion", [](bool on) {
    py::gil_scoped_release nogil;
    backend::engine().set_fusion_enabled(on);
  });
  m.def("_advanced_parallelization", [] { return backend::engine().advanced_parallelization(); });
  m.def("_device_profile", [] {
    const scheduler::DeviceProfile p = [] {
      py::gil_scoped_release nogil;  // the host profile may be measured now
      return backend::engine().device_profile();
    }();
    py::dict d;
    d["name"] = p.name;
    d["fp32_flops"] = p.fp32_flops;
    d["low_prec_flops"] = p.low_prec_flops;
    d["memory_bytes_per_s"] = p.memory_bytes_per_s;
    d["launch_s"] = p.launch_s;
    d["memory_bytes"] = p.memory_bytes;
    d["link_bytes_per_s"] = p.intra_node.bytes_per_s;
    d["link_latency_s"] = p.intra_node.latency_s;
    d["stream_speedup"] = p.stream_speedup;
    d["stream_launch_s"] = p.stream_launch_s;
    d["measured"] = p.measured;
    return d;
  });
  // The last layout search: per candidate its configuration line, fate, peak bytes per device and prediction.
  m.def("_last_search", []() -> py::object {
    const auto r = backend::engine().last_search();
    if (!r) return py::none();
    py::list candidates;
    for (size_t i = 0; i < r->candidates.size(); ++i) {
      const auto& c = r->candidates[i];
      py::dict d;
      d["config"] = runtime::format_parallel_config(c.config);
      d["selected"] = static_cast<int>(i) == r->selected;
      d["dropped"] = c.dropped;
      d["dominated_by"] = c.dominated_by >= 0 ? py::object(py::int_(c.dominated_by)) : py::object(py::none());
      using Dominance = scheduler::CandidateResult::Dominance;
      d["dominance"] = c.dominance == Dominance::kSlower   ? py::object(py::str("slower"))
                       : c.dominance == Dominance::kLarger ? py::object(py::str("larger"))
                       : c.dominance == Dominance::kOverAnyway ? py::object(py::str("over_anyway"))
                                                               : py::object(py::none());
      d["peak_bytes"] = c.peak_bytes;
      d["step_ms"] = c.step_ms;
      d["tokens_per_s"] = c.tokens_per_s;
      d["bound_ms"] = c.bound_ms;
      candidates.append(d);
    }
    py::dict out;
    out["candidates"] = candidates;
    out["selected"] = r->selected;
    out["compile_ms"] = r->compile_ms;
    out["cost_ms"] = r->cost_ms;
    out["tokens_per_step"] = r->tokens_per_step;
    return out;
  });
  m.def("_set_parallelism", [](const std::string& line) {
    const runtime::ParallelConfig config = runtime::parse_parallel_config(line);
    py::gil_scoped_release nogil;
    backend::engine().set_parallelism(config);
  });
  m.def("_parallelism", [] { return runtime::format_parallel_config(backend::engine().parallelism()); });
  m.def("_log", [](const std::string& level, const std::string& msg) {
    runtime::log_message(runtime::parse_log_level(level), msg);
  });
  m.def("_log_file", [] { return runtime::log_file_path(); });
  m.def("_set_log_level", [](const std::string& level) { runtime::set_log_level(level); });
  m.def("_flush_log", &runtime::flush_log);
}
