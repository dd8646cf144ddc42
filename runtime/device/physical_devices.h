// The physical devices behind the virtual one, chosen at start: the flavor's N logical devices placed on
// the CUDA GPUs the driver finds (contiguous runs of ranks per GPU; logical devices that share a GPU split
// its memory share),
// or N host devices where there is no GPU, the kernels for one are missing, or MOREH_DEVICE_KIND=host.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "runtime/config/config.h"
#include "runtime/device/device.h"

namespace moreh::runtime {

struct DeviceChoice {
  std::vector<std::unique_ptr<PhysicalDevice>> devices;
  // Why host devices stand in for GPUs under MOREH_DEVICE_KIND=auto (empty when GPUs were taken or
  // host devices were asked for); logged once at start.
  std::string fallback_reason;
};

// Which GPU (an index into the GPUs found) each of n logical devices goes on: contiguous runs of ranks per
// GPU, the first n % gpus GPUs taking one more (n = 8 on 3 GPUs: 0 0 0 1 1 1 2 2). Ranks that share a GPU
// stay neighbours, so their slices of a split batch are one block (what HierarchicalCommunicator needs).
std::vector<int> place_logical_devices(int n, int gpus);

// `cuda_kernels`: whether the kernel provider can run nodes on CUDA devices (the backend's torch has
// CUDA). Throws ConfigError under MOREH_DEVICE_KIND=cuda when no GPU can be used, saying why.
DeviceChoice make_physical_devices(const Config& config, bool cuda_kernels);

}  // namespace moreh::runtime
