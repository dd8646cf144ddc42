#include "runtime/comm/communicator_choice.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"
#include "runtime/comm/hierarchical_communicator.h"
#include "runtime/comm/host_communicator.h"
#include "runtime/comm/nccl_communicator.h"
#ifdef MOREH_WITH_CUDA
#include "runtime/comm/cuda_communicator.h"
#include "runtime/cuda/cuda_device.h"
#endif

namespace moreh::runtime {
namespace {

// A MOREH_NCCL_LIBRARY that moves host memory (the tests' stand-in for NCCL) serves host devices too: how the
// NCCL path runs whole training steps without GPUs. Null when the variable is unset or names a real NCCL.
std::shared_ptr<const nccl::Library> host_memory_nccl(const Config& config) {
  if (config.nccl_library.empty()) return nullptr;
  auto library = nccl::Library::load(config.nccl_library);
  if (!library->host_memory()) return nullptr;
  log().info("moreh: host devices use the NCCL path through {}, a host-memory stand-in", library->name());
  return library;
}

}  // namespace

std::unique_ptr<Communicator> make_communicator(const Config& config, const std::vector<PhysicalDevice*>& devices) {
  if (devices.size() <= 1) return nullptr;
  constexpr double kMaxSeconds = 1e8;
  const std::chrono::milliseconds timeout(
      static_cast<int64_t>(std::min(config.collective_timeout_s, kMaxSeconds) * 1000.0));
  if (devices[0]->kind() == DeviceKind::kCuda) {
#ifdef MOREH_WITH_CUDA
    std::vector<int> ordinals;
    for (PhysicalDevice* d : devices) ordinals.push_back(static_cast<CudaDevice&>(*d).ordinal());
    const CudaCollectivePath path = choose_cuda_collective_path(ordinals);
    if (path == CudaCollectivePath::kNccl)  // one logical device per GPU (under torch with CUDA, its libnccl)
      return std::make_unique<NcclCommunicator>(devices, timeout, nccl::Library::load(config.nccl_library_name()));
    if (path == CudaCollectivePath::kMixed) {
      // More logical devices than GPUs, on several GPUs: the same-GPU path within each GPU, NCCL between
      // the GPUs' first ranks (runtime/device/physical_devices.cpp keeps a GPU's ranks neighbours).
      std::vector<int> group_of;
      for (size_t r = 0; r < ordinals.size(); ++r)
        group_of.push_back(r == 0 ? 0 : group_of.back() + (ordinals[r] != ordinals[r - 1] ? 1 : 0));
      auto library = nccl::Library::load(config.nccl_library_name());
      return std::make_unique<HierarchicalCommunicator>(
          devices, group_of,
          [timeout](std::vector<PhysicalDevice*> d) -> std::unique_ptr<Communicator> {
            return std::make_unique<CudaCommunicator>(std::move(d), timeout);
          },
          [timeout, library](std::vector<PhysicalDevice*> d) -> std::unique_ptr<Communicator> {
            return std::make_unique<NcclCommunicator>(std::move(d), timeout, library);
          });
    }
    // Logical devices sharing one GPU: device-local copies and reductions ordered by CUDA events.
    return std::make_unique<CudaCommunicator>(devices, timeout);
#else
    throw ConfigError(fmt::format("{} logical devices on CUDA GPUs need a CUDA communicator, which this build "
                                  "lacks; use MOREH_NUM_DEVICES=1 or MOREH_DEVICE_KIND=host", devices.size()));
#endif
  }
  if (auto stand_in = host_memory_nccl(config))
    return std::make_unique<NcclCommunicator>(devices, timeout, std::move(stand_in));
  return std::make_unique<HostCommunicator>(devices, timeout);
}

}  // namespace moreh::runtime
