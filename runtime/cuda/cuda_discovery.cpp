#include "runtime/cuda/cuda_discovery.h"

#ifdef MOREH_WITH_CUDA
#include <array>

#include "runtime/cuda/cuda_driver.h"
#include "runtime/base/errors.h"
#endif

namespace moreh::runtime::cuda {

#ifdef MOREH_WITH_CUDA

namespace {

GpuInfo describe_gpu(const Driver& d, int ordinal) {
  GpuInfo info;
  info.ordinal = ordinal;
  CUdevice device = 0;
  check(d.DeviceGet(&device, ordinal), "cuDeviceGet");
  std::array<char, 256> name{};
  check(d.DeviceGetName(name.data(), static_cast<int>(name.size()) - 1, device), "cuDeviceGetName");
  info.name = name.data();
  size_t total = 0;
  check(d.DeviceTotalMem(&total, device), "cuDeviceTotalMem");
  info.total_memory = total;
  check(d.DeviceGetAttribute(&info.compute_capability_major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device),
        "cuDeviceGetAttribute");
  check(d.DeviceGetAttribute(&info.compute_capability_minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device),
        "cuDeviceGetAttribute");
  check(d.DeviceGetAttribute(&info.multiprocessor_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, device),
        "cuDeviceGetAttribute");
  return info;
}

}  // namespace

GpuDiscovery discover_gpus() {
  GpuDiscovery out;
  const Driver* d = driver();
  if (!d) {
    out.unavailable_reason = driver_unavailable_reason();
    return out;
  }
  try {
    int count = 0;
    check(d->DeviceGetCount(&count), "cuDeviceGetCount");
    for (int i = 0; i < count; ++i) out.gpus.push_back(describe_gpu(*d, i));
  } catch (const Error& e) {
    out.gpus.clear();
    out.unavailable_reason = e.what();
    return out;
  }
  if (out.gpus.empty()) out.unavailable_reason = "the CUDA driver sees no GPU";
  return out;
}

#else

GpuDiscovery discover_gpus() { return {{}, "moreh was built without CUDA"}; }

#endif

}  // namespace moreh::runtime::cuda
