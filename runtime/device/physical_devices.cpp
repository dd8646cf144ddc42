#include "runtime/device/physical_devices.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "runtime/base/errors.h"
#include "runtime/host/host_device.h"
#ifdef MOREH_WITH_CUDA
#include "runtime/cuda/cuda_device.h"
#include "runtime/cuda/cuda_discovery.h"
#endif

namespace moreh::runtime {

std::vector<int> place_logical_devices(int n, int gpus) {
  std::vector<int> gpu_of;
  if (n <= 0 || gpus <= 0) return gpu_of;
  for (int k = 0; k < gpus; ++k)
    for (int i = 0; i < n / gpus + (k < n % gpus ? 1 : 0); ++i) gpu_of.push_back(k);
  return gpu_of;
}

DeviceChoice make_physical_devices(const Config& config, bool cuda_kernels) {
  DeviceChoice choice;
  const int n = config.flavor.num_devices;
  constexpr double kMaxSeconds = 1e8;
  [[maybe_unused]] const std::chrono::milliseconds wait_timeout(
      static_cast<int64_t>(std::min(config.sync_timeout_s, kMaxSeconds) * 1000.0));
  if (config.device_kind != DeviceKindChoice::kHost) {
    std::string why;
#ifdef MOREH_WITH_CUDA
    std::vector<cuda::GpuInfo> gpus;
    if (!cuda_kernels) {
      why = "the installed torch has no CUDA, so there are no kernels for CUDA devices";
    } else {
      cuda::GpuDiscovery found = cuda::discover_gpus();
      gpus = std::move(found.gpus);
      why = gpus.empty() ? found.unavailable_reason : "";
      if (gpus.empty() && why.empty()) why = "the CUDA driver reports no GPU";
    }
    if (!gpus.empty()) {
      const std::vector<int> gpu_of = place_logical_devices(n, static_cast<int>(gpus.size()));
      std::map<int, int> sharing;  // GPU -> logical devices on it
      for (int i = 0; i < n; ++i) ++sharing[gpu_of[i]];
      for (int i = 0; i < n; ++i) {
        const cuda::GpuInfo& gpu = gpus[gpu_of[i]];
        const uint64_t share = static_cast<uint64_t>(static_cast<double>(gpu.total_memory) *
                                                     config.cuda_memory_fraction) /
                               static_cast<uint64_t>(sharing[gpu_of[i]]);
        choice.devices.push_back(std::make_unique<CudaDevice>(i, gpu.ordinal, share, wait_timeout));
      }
      return choice;
    }
#else
    (void)cuda_kernels;
    why = "moreh was built without CUDA (no CUDA toolkit at build time)";
#endif
    if (config.device_kind == DeviceKindChoice::kCuda)
      throw ConfigError("MOREH_DEVICE_KIND=cuda, but no CUDA device can be used: " + why);
    choice.fallback_reason = why;
  }
  for (int i = 0; i < n; ++i) choice.devices.push_back(std::make_unique<HostDevice>(i, config.host_memory_capacity));
  return choice;
}

}  // namespace moreh::runtime
