// A physical device on an NVIDIA GPU through the CUDA Driver API. Submitted work runs on a WorkQueue
// whose worker thread has the GPU's primary context current; an item enqueues asynchronous GPU work onto
// stream() (kernels, copy_in_stream, zero_in_stream) and returns, so the host runs ahead of the GPU.
// synchronize() waits for the queue and then for the stream. Memory comes from a DeviceMemoryPool over
// cuMemAlloc/cuMemFree, charged against the capacity like a host device's.
//
// Several logical devices may share one GPU: each is its own CudaDevice with its own stream and a capacity
// that is its share of the GPU's memory. The pool reuses a freed block on the same stream without
// events, so memory another device's stream reads (copy_in_stream across devices) must stay allocated
// until that device has been synchronized.
#pragma once
#include <cuda.h>

#include <chrono>
#include <memory>
#include <string>

#include "runtime/cuda/cuda_context.h"
#include "runtime/device/device.h"
#include "runtime/memory/device_memory_pool.h"
#include "runtime/base/work_queue.h"

namespace moreh::runtime {

class CudaDevice final : public PhysicalDevice {
 public:
  // Logical device `index` on GPU `ordinal` with `capacity` bytes. `wait_timeout` bounds the waits that
  // take no timeout argument: read(), write() and the destructor's drain. Throws Error when the driver
  // is unavailable or the GPU cannot be set up.
  CudaDevice(int index, int ordinal, uint64_t capacity,
             std::chrono::milliseconds wait_timeout = std::chrono::minutes(30));
  // Runs the queued work, waits (bounded) for the stream, destroys it and releases the context. Blocks
  // still allocated keep the context alive and free their memory when they go.
  ~CudaDevice() override;

  DeviceKind kind() const override { return DeviceKind::kCuda; }
  // "cuda:<index> (GPU <ordinal>, <GPU name>)".
  std::string name() const override { return name_; }
  std::unique_ptr<PhysicalBlock> allocate(uint64_t bytes) override;
  void submit(std::function<void()> work) override;
  // Waits for the queue, then polls the stream until it is idle: TimeoutError past the bound, Error when
  // the GPU reports a failure, else the first error the work raised.
  void synchronize(std::chrono::milliseconds timeout) override;
  bool busy() const override;
  // Time the stream had GPU work outstanding: from an item starting to enqueue until the GPU got past it.
  uint64_t busy_ns() const override;
  uint64_t cached_bytes() const override { return pool_->cached_bytes(); }
  void release_cached() override { pool_->release_cached(); }
  // Completed by the GPU (a host function on the stream) once it has run everything submitted before.
  std::shared_ptr<Event> record_event() override;
  // cuMemHostAlloc'ed (portable) memory, one instance shared by every CudaDevice in the process.
  std::shared_ptr<PinnedHostMemory> pinned_host_memory() override { return pinned_; }

  bool host_accessible() const override { return false; }
  // cuMemcpyAsync / cuMemsetD8Async on stream(): unified addressing, so host memory, this GPU's memory and
  // another GPU's all work. Pinned host memory is copied asynchronously: keep it until the stream is past.
  void copy_in_stream(void* dst, const void* src, uint64_t bytes) override;
  void zero_in_stream(void* dst, uint64_t bytes) override;
  // Makes the context current on the calling thread, copies on stream() (after any work enqueued there)
  // and waits for the copy, bounded by wait_timeout.
  void read(void* host_dst, const void* src, uint64_t bytes) override;
  void write(void* dst, const void* host_src, uint64_t bytes) override;
  // The plan's arithmetic as generated kernels on stream() (runtime/comm/collective_kernels.h, compiled by
  // NVRTC through cuda::KernelCache), from work on this device's stream. Same results as scale_elements
  // and combine_scalars (floating types). Throw Error in a build without NVRTC.
  void scale_in_stream(DataType type, void* data, uint64_t count, double factor) override;
  void combine_scalars_in_stream(DataType type, void* x, const void* y, ScalarOp op) override;
  void accumulate_in_stream(DataType type, void* dst, const void* src, uint64_t count) override;
  void elementwise_in_stream(const ElementwiseKernel& kernel, const ElementwiseArguments& args) override;
  void prepare_elementwise(std::shared_ptr<const ElementwiseKernel> kernel) override;

  CUstream stream() const { return stream_; }
  CUcontext context() const { return context_->get(); }
  int ordinal() const { return context_->ordinal(); }
  const std::string& gpu_name() const { return gpu_name_; }
  DeviceMemoryPoolStats pool_stats() const { return pool_->stats(); }

 private:
  struct Activity;
  void copy_now(void* dst, const void* src, uint64_t bytes);
  void wait_for_stream(std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds timeout) const;

  std::chrono::milliseconds wait_timeout_;
  std::shared_ptr<cuda::PrimaryContext> context_;
  std::string gpu_name_, name_;
  CUstream stream_ = nullptr;
  std::shared_ptr<Activity> activity_;  // shared with host functions the GPU may run after the device is gone
  std::unique_ptr<DeviceMemoryPool> pool_;
  std::shared_ptr<PinnedHostMemory> pinned_;
  std::unique_ptr<WorkQueue> queue_;  // last: its worker uses everything above
};

}  // namespace moreh::runtime
