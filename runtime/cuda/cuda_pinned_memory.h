// Page-locked host memory from the CUDA driver (cuMemHostAlloc, portable: every GPU's context can copy
// to and from it at full speed, asynchronously). One instance serves every CudaDevice in the process, so
// "is this pointer pinned?" has one answer whichever device is asked.
#pragma once
#include <memory>

#include "runtime/cuda/cuda_context.h"
#include "runtime/memory/pinned_host_memory.h"

namespace moreh::runtime {

class CudaPinnedMemory final : public PinnedHostMemory {
 public:
  // Allocates through `context` (cuMemHostAlloc needs a current context; portable memory serves all).
  explicit CudaPinnedMemory(std::shared_ptr<cuda::PrimaryContext> context) : context_(std::move(context)) {}
  ~CudaPinnedMemory() override { release_all(); }

  // The process's instance while any device holds it; made with GPU `ordinal`'s context when there is none.
  static std::shared_ptr<CudaPinnedMemory> shared(int ordinal);

 protected:
  void* pin(uint64_t bytes, bool& locked) override;
  void unpin(const Block& block) noexcept override;

 private:
  std::shared_ptr<cuda::PrimaryContext> context_;
};

}  // namespace moreh::runtime
