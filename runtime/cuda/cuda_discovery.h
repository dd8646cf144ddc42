// The GPUs the CUDA driver sees, for choosing devices and for moreh-smi. Built everywhere: without CUDA
// support, or without a driver or a GPU, the list is empty and the reason says why.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moreh::runtime::cuda {

struct GpuInfo {
  int ordinal = 0;  // the driver's device number (CUDA_VISIBLE_DEVICES applies)
  std::string name;  // "NVIDIA H100 80GB HBM3"
  uint64_t total_memory = 0;
  int compute_capability_major = 0, compute_capability_minor = 0;
  int multiprocessor_count = 0;
};

struct GpuDiscovery {
  std::vector<GpuInfo> gpus;
  // Why `gpus` is empty ("libcuda.so.1: cannot open shared object file: ...", "cuInit:
  // CUDA_ERROR_NO_DEVICE", "moreh was built without CUDA"); "" when GPUs were found.
  std::string unavailable_reason;
};

GpuDiscovery discover_gpus();

}  // namespace moreh::runtime::cuda
