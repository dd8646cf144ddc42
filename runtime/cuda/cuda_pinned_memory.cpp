#include "runtime/cuda/cuda_pinned_memory.h"

#include <mutex>

#include "runtime/cuda/cuda_driver.h"
#include "runtime/base/spdlog_logger.h"

namespace moreh::runtime {

using cuda::check;
using cuda::require_driver;

std::shared_ptr<CudaPinnedMemory> CudaPinnedMemory::shared(int ordinal) {
  static std::mutex mu;
  static std::weak_ptr<CudaPinnedMemory> current;
  std::lock_guard<std::mutex> lock(mu);
  if (auto existing = current.lock()) return existing;
  auto made = std::make_shared<CudaPinnedMemory>(cuda::PrimaryContext::retain(ordinal));
  current = made;
  return made;
}

void* CudaPinnedMemory::pin(uint64_t bytes, bool& locked) {
  const cuda::Driver& d = require_driver();
  cuda::ScopedContext scope(context_->get());
  void* p = nullptr;
  check(d.MemHostAlloc(&p, bytes, CU_MEMHOSTALLOC_PORTABLE), "pinned host memory: cuMemHostAlloc");
  locked = true;
  return p;
}

void CudaPinnedMemory::unpin(const Block& block) noexcept {
  try {
    cuda::ScopedContext scope(context_->get());
    const CUresult r = require_driver().MemFreeHost(block.base);
    if (r != CUDA_SUCCESS) log().warn("pinned host memory: cuMemFreeHost: {}", cuda::describe(r));
  } catch (const std::exception& e) {
    log().warn("pinned host memory: could not free a block: {}", e.what());
  }
}

}  // namespace moreh::runtime
