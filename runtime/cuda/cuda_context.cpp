#include "runtime/cuda/cuda_context.h"

#include <mutex>
#include <set>

#include "runtime/cuda/cuda_driver.h"

namespace moreh::runtime::cuda {

std::shared_ptr<PrimaryContext> PrimaryContext::retain(int ordinal) {
  const Driver& d = require_driver();
  CUdevice device = 0;
  check(d.DeviceGet(&device, ordinal), "cuDeviceGet");
  CUcontext context = nullptr;
  check(d.DevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
  {
    // Each GPU's primary context is kept for the rest of the process (one extra retain, never released):
    // the kernel cache's modules live in it, and a context destroyed and created again could come back
    // under the same handle, making cached functions stale (CUDA_ERROR_INVALID_HANDLE at launch).
    static std::mutex mu;
    static std::set<int> kept;
    std::lock_guard<std::mutex> lock(mu);
    if (kept.insert(ordinal).second) {
      CUcontext again = nullptr;
      check(d.DevicePrimaryCtxRetain(&again, device), "cuDevicePrimaryCtxRetain");
    }
  }
  return std::shared_ptr<PrimaryContext>(new PrimaryContext(ordinal, device, context));
}

PrimaryContext::~PrimaryContext() {
  if (const Driver* d = driver()) d->DevicePrimaryCtxRelease(device_);
}

ScopedContext::ScopedContext(CUcontext context) {
  const Driver& d = require_driver();
  check(d.CtxGetCurrent(&previous_), "cuCtxGetCurrent");
  if (previous_ != context) {
    check(d.CtxSetCurrent(context), "cuCtxSetCurrent");
    switched_ = true;
  }
}

ScopedContext::~ScopedContext() {
  if (switched_) driver()->CtxSetCurrent(previous_);
}

}  // namespace moreh::runtime::cuda
