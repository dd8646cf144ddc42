#include "runtime/cuda_context.h"

#include "runtime/cuda_driver.h"

namespace moreh::runtime::cuda {

std::shared_ptr<PrimaryContext> PrimaryContext::retain(int ordinal) {
  const Driver& d = require_driver();
  CUdevice device = 0;
  check(d.DeviceGet(&device, ordinal), "cuDeviceGet");
  CUcontext context = nullptr;
  check(d.DevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
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
