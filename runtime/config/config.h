// Process-wide settings read from MOREH_* environment variables (documented in docs/ENVIRONMENT.md).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/config/flavor.h"
#include "runtime/config/parallel_config.h"
#include "runtime/net/endpoint.h"

namespace moreh::runtime {

// Which physical devices stand behind the virtual one: CUDA GPUs when the driver finds some (auto), only
// GPUs (cuda: an error without them), or host devices.
enum class DeviceKindChoice { kAuto, kCuda, kHost };

// Whether chains of elementwise ops are fused into generated kernels: on GPUs only (auto), always (on: host
// devices then run the fused kernels with the host evaluator, which tests use), or never.
enum class FusionChoice { kAuto, kOn, kOff };

struct Config {
  std::string log_level = "info";        // MOREH_LOG_LEVEL
  std::string log_file;                  // MOREH_LOG_FILE (default: ~/.moreh/logs/moreh-<pid>.log)
  bool log_file_fresh = false;           // the default, named by pid: started empty (MOREH_LOG_FILE's is appended to)
  bool log_events = true;                // MOREH_LOG_EVENTS: moreh-<pid>.events.jsonl beside the log (event_log.h)
  uint64_t log_keep = 200;               // MOREH_LOG_KEEP: default-named runs kept in the log directory (0: all)
  std::string config_dir;                // MOREH_CONFIG_DIR (default: ~/.moreh): settings file, process registry
  Flavor flavor;                         // MOREH_FLAVOR / MOREH_NUM_DEVICES > <config_dir>/config > Small.64GB
  std::string flavor_source;             // where the flavor came from (a variable, the file's path, "default")
  uint64_t host_memory_capacity = 0;     // MOREH_HOST_MEMORY_CAPACITY, per host device (default: 80% of RAM / N)
  bool host_memory_capacity_set = false;  // MOREH_HOST_MEMORY_CAPACITY was given
  // MOREH_PLAN_ONLY: steps are recorded and planned over virtual devices that hold no memory, never run; host
  // reads give zeros. With a named MOREH_DEVICE_PROFILE each device has that GPU's memory.
  bool plan_only = false;
  uint64_t max_pending_ops = 20000;      // MOREH_MAX_PENDING_OPS
  uint64_t graph_cache_size = 256;       // MOREH_GRAPH_CACHE_SIZE
  double sync_timeout_s = 1800.0;        // MOREH_SYNC_TIMEOUT
  double collective_timeout_s = 1800.0;  // MOREH_COLLECTIVE_TIMEOUT (default: MOREH_SYNC_TIMEOUT's value)
  DeviceKindChoice device_kind = DeviceKindChoice::kAuto;  // MOREH_DEVICE_KIND: auto, cuda or host
  double cuda_memory_fraction = 0.9;     // MOREH_CUDA_MEMORY_FRACTION: share of each GPU's memory moreh may use
  FusionChoice fusion = FusionChoice::kAuto;  // MOREH_FUSION: auto, on or off
  uint64_t fusion_min_ops = 2;           // MOREH_FUSION_MIN_OPS: smallest group that becomes a kernel
  std::string kernel_cache_dir;          // MOREH_KERNEL_CACHE_DIR (default <config_dir>/kernels; "off": none)
  // MOREH_PARALLELISM: a parallel layout chosen by hand, as MoAI's configuration line (parallel_config.h).
  std::optional<ParallelConfig> parallelism;
  // MOREH_MEMORY_MARGIN: memory Advanced Parallelization keeps free on every device: a share of its capacity
  // (memory_margin_fraction, default 5%) or a size (memory_margin_bytes, when set).
  double memory_margin_fraction = 0.05;
  std::optional<uint64_t> memory_margin_bytes;
  // MOREH_DEVICE_PROFILE: the profile the cost simulator times steps with (auto: the devices' own; host, or a
  // named GPU: h100, h200, a100, mi250). Checked by the engine, which knows the names.
  std::string device_profile = "auto";
  bool ap_cache = true;                  // MOREH_AP_CACHE: keep AP's selections under <config_dir>/ap
  // MOREH_WORKERS: the moreh-workers whose devices make up the virtual device (host:port,...; empty: this
  // process's own devices). MOREH_WORKER_TOKEN_FILE (default <config_dir>/token) authenticates to them.
  std::vector<Endpoint> workers;
  std::string worker_token_file;
  std::string nccl_library;              // MOREH_NCCL_LIBRARY: NCCL for logical devices on distinct GPUs
                                         // (unset: libnccl.so.2; see nccl_library_name())

  // The NCCL to load: MOREH_NCCL_LIBRARY, or libnccl.so.2.
  std::string nccl_library_name() const { return nccl_library.empty() ? "libnccl.so.2" : nccl_library; }

  // Reads the environment; a malformed value throws ConfigError naming the variable.
  static Config from_env();

  // The margin in bytes for a device of `capacity` bytes.
  uint64_t memory_margin(uint64_t capacity) const {
    return memory_margin_bytes ? *memory_margin_bytes : static_cast<uint64_t>(static_cast<double>(capacity) * memory_margin_fraction);
  }
};

// "16GiB", "512MiB", "1.5GB", "1048576" -> bytes. Throws std::invalid_argument.
uint64_t parse_size(std::string_view text);

}  // namespace moreh::runtime
