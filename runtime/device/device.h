// A physical device behind the virtual one: memory with a capacity, an in-order stream of work, events.
// HostDevice (CPU memory, a worker thread) is the one built everywhere; CudaDevice slots in beside it.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "runtime/base/data_type.h"
#include "runtime/kernels/elementwise_kernel.h"
#include "runtime/host/host_arithmetic.h"
#include "runtime/memory/pinned_host_memory.h"

namespace moreh::runtime {

class PhysicalDevice;

// Bytes bound on one physical device, charged against its capacity until destroyed.
class PhysicalBlock {
 public:
  PhysicalBlock(PhysicalDevice& device, void* data, uint64_t bytes, std::shared_ptr<void> owner);
  ~PhysicalBlock();
  PhysicalBlock(const PhysicalBlock&) = delete;
  PhysicalBlock& operator=(const PhysicalBlock&) = delete;

  void* data() const { return data_; }
  uint64_t bytes() const { return bytes_; }
  PhysicalDevice& device() const { return device_; }
  // A slot where a kernel provider keeps its own handle onto this memory (e.g. an ATen storage).
  std::shared_ptr<void>& provider_view() { return provider_view_; }

 private:
  PhysicalDevice& device_;
  void* data_;
  uint64_t bytes_;
  std::shared_ptr<void> owner_;  // frees the memory when the block goes
  std::shared_ptr<void> provider_view_;
};

// A point in a device's stream: complete once everything submitted before it has run.
class Event {
 public:
  bool query() const;
  // Waits for completion; throws TimeoutError past the bound.
  void wait(std::chrono::milliseconds timeout) const;
  // Milliseconds from `start` completing to this event completing (both must be complete).
  double elapsed_ms_since(const Event& start) const;
  void complete();  // called by the stream

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable done_cv_;
  bool done_ = false;
  std::chrono::steady_clock::time_point completed_at_;
};

enum class DeviceKind { kHost, kCuda };

class PhysicalDevice {
 public:
  PhysicalDevice(int index, uint64_t capacity) : index_(index), capacity_(capacity) {}
  virtual ~PhysicalDevice() = default;

  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;
  int index() const { return index_; }

  uint64_t capacity() const { return capacity_; }
  uint64_t used() const { return used_.load(); }
  uint64_t peak() const { return peak_.load(); }
  uint64_t available() const;
  void reset_peak() { peak_.store(used_.load()); }
  // Blocks handed out so far: allocated by the device, and adopted from kernels.
  uint64_t allocations() const { return allocations_.load(); }
  uint64_t adoptions() const { return adoptions_.load(); }
  // Nanoseconds the stream has spent running work since the device started (utilization, moreh-smi).
  virtual uint64_t busy_ns() const = 0;

  // New device memory; throws OutOfMemoryError past the capacity.
  virtual std::unique_ptr<PhysicalBlock> allocate(uint64_t bytes) = 0;
  // Takes memory that a kernel produced (owner frees it), charging it to this device.
  std::unique_ptr<PhysicalBlock> adopt(void* data, uint64_t bytes, std::shared_ptr<void> owner);

  // Runs work in submission order on the device's stream; an exception is kept and rethrown by synchronize().
  virtual void submit(std::function<void()> work) = 0;
  // Waits for every submitted item; throws TimeoutError past the bound, or the first error the work raised.
  virtual void synchronize(std::chrono::milliseconds timeout) = 0;
  // True while submitted work has not finished.
  virtual bool busy() const = 0;
  // Memory the device keeps for reuse (not counted as used), and giving it back.
  virtual uint64_t cached_bytes() const { return 0; }
  virtual void release_cached() {}
  // An event after everything submitted so far. The default completes it when the stream's worker reaches
  // it; a GPU completes it when the GPU does.
  virtual std::shared_ptr<Event> record_event();

  // Copies. Addresses are this device's memory or host memory; on a GPU also another GPU's memory.
  // Whether the host may dereference this device's memory directly (HostDevice: yes; a GPU: no).
  virtual bool host_accessible() const = 0;
  // From work running on this device's stream (inside a submitted item): ordered after the work enqueued
  // before it; may return before the copy is done (a GPU runs it asynchronously), so both ranges must stay
  // valid until the stream reaches it.
  virtual void copy_in_stream(void* dst, const void* src, uint64_t bytes) = 0;
  virtual void zero_in_stream(void* dst, uint64_t bytes) = 0;
  // `height` rows of `width` bytes, row r from src + r * src_pitch to dst + r * dst_pitch (the parts of a
  // value split along a later dimension). Optional: the default copies row by row with copy_in_stream;
  // the ranges must not overlap.
  virtual void copy_2d_in_stream(void* dst, uint64_t dst_pitch, const void* src, uint64_t src_pitch, uint64_t width,
                                 uint64_t height);
  // Synchronous copies between host memory and this device's memory, from any thread, once the work that
  // produced (read) or uses (write) the memory has been synchronized. Complete on return.
  virtual void read(void* host_dst, const void* src, uint64_t bytes) = 0;
  virtual void write(void* dst, const void* host_src, uint64_t bytes) = 0;
  // The plan's own arithmetic between kernels (runtime/host/host_arithmetic.h), from work on this device's
  // stream: data[i] *= factor, and *x = *x (*|/) *y for two scalars. Devices whose memory the host reaches
  // do it on the host; a GPU runs a kernel.
  virtual void scale_in_stream(DataType type, void* data, uint64_t count, double factor);
  // dst[i] += src[i] for i < count (a micro-batch's gradient into the sum of earlier ones).
  virtual void accumulate_in_stream(DataType type, void* dst, const void* src, uint64_t count);
  virtual void combine_scalars_in_stream(DataType type, void* x, const void* y, ScalarOp op);
  // x[i] /= *y for i < count, y a scalar of `divisor` in this device's memory (1F1B's deferred division of
  // a mean loss's gradients by its total weight): a generated kernel through elementwise_in_stream.
  void divide_in_stream(DataType type, void* x, uint64_t count, DataType divisor, const void* y);
  // A generated elementwise kernel over this device's memory, from work on its stream: the host evaluator
  // (runtime/kernels/elementwise_reference.h) where the host reaches the memory, a compiled kernel on a GPU.
  virtual void elementwise_in_stream(const ElementwiseKernel& kernel, const ElementwiseArguments& args);
  // A kernel a plan will launch: a GPU starts compiling it now, in the background (the host evaluator needs
  // nothing).
  virtual void prepare_elementwise(std::shared_ptr<const ElementwiseKernel> kernel) { (void)kernel; }
  // Host memory this device copies to and from directly (tensor.pin_memory()). Shared: blocks in use
  // keep it alive.
  virtual std::shared_ptr<PinnedHostMemory> pinned_host_memory() = 0;

 protected:
  friend class PhysicalBlock;
  void charge(uint64_t bytes);  // throws OutOfMemoryError
  void uncharge(uint64_t bytes) { used_.fetch_sub(bytes); }

 private:
  int index_;
  uint64_t capacity_;
  std::atomic<uint64_t> used_{0}, peak_{0};

 protected:
  std::atomic<uint64_t> allocations_{0}, adoptions_{0};
};

}  // namespace moreh::runtime
