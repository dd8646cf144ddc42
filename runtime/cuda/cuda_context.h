// A GPU's primary context (the one the CUDA runtime and PyTorch use too, so memory and streams are shared
// with them), held while any moreh object needs it, and a scope that makes it current on a thread.
#pragma once
#include <cuda.h>

#include <memory>

namespace moreh::runtime::cuda {

class PrimaryContext {
 public:
  // Retains GPU `ordinal`'s primary context (creating it on first use); throws Error.
  static std::shared_ptr<PrimaryContext> retain(int ordinal);
  ~PrimaryContext();  // releases it
  PrimaryContext(const PrimaryContext&) = delete;
  PrimaryContext& operator=(const PrimaryContext&) = delete;

  CUcontext get() const { return context_; }
  CUdevice device() const { return device_; }
  int ordinal() const { return ordinal_; }

 private:
  PrimaryContext(int ordinal, CUdevice device, CUcontext context)
      : ordinal_(ordinal), device_(device), context_(context) {}
  int ordinal_;
  CUdevice device_;
  CUcontext context_;
};

// Makes `context` current on this thread for the scope and restores the one that was current before (a
// caller's thread may have PyTorch's context current). Cheap when it is current already.
class ScopedContext {
 public:
  explicit ScopedContext(CUcontext context);  // throws Error
  ~ScopedContext();
  ScopedContext(const ScopedContext&) = delete;
  ScopedContext& operator=(const ScopedContext&) = delete;

 private:
  CUcontext previous_ = nullptr;
  bool switched_ = false;
};

}  // namespace moreh::runtime::cuda
