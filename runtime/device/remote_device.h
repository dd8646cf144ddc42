// A device that lives in another worker process: it stands for a peer's rank in communicators that span workers.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "runtime/base/work_queue.h"
#include "runtime/device/device.h"

namespace moreh::runtime {

// Communicators need a PhysicalDevice per rank; a rank in another process has no memory or stream here, so
// everything but its identity refuses with ConfigError ("... lives on worker ..., not in this process").
// Its stream is always idle (synchronize() returns at once, busy() is false) unless it is given the queue of
// requests to its worker (set_stream): then waiting for it waits for the worker to finish what it was sent.
class RemoteDevice final : public PhysicalDevice {
 public:
  // `name`: how errors name it, e.g. "worker 1 (127.0.0.1:7000) host:0"; `kind`: the device's kind on its
  // worker; `capacity`: its memory there.
  RemoteDevice(int index, std::string name, DeviceKind kind, uint64_t capacity);

  DeviceKind kind() const override { return kind_; }
  std::string name() const override { return name_; }
  uint64_t busy_ns() const override { return 0; }

  std::unique_ptr<PhysicalBlock> allocate(uint64_t bytes) override;
  void submit(std::function<void()> work) override;
  void synchronize(std::chrono::milliseconds timeout) override;
  bool busy() const override;
  // The in-order queue of requests to this device's worker (steps it runs): its errors surface here.
  void set_stream(std::shared_ptr<WorkQueue> stream) { stream_ = std::move(stream); }
  // How a host read gets this device's block of a buffer (the buffer's id in this process, its bytes).
  using Fetcher = std::function<std::string(uint64_t buffer_id, int device, uint64_t bytes)>;
  void set_fetcher(Fetcher fetch) { fetch_ = std::move(fetch); }
  // The first `bytes` of this device's block of buffer `buffer_id`, from its worker (idle by then); Error
  // when the worker has none, ConfigError without a fetcher.
  std::string fetch(uint64_t buffer_id, uint64_t bytes) const;
  std::shared_ptr<Event> record_event() override;

  bool host_accessible() const override { return false; }
  void copy_in_stream(void* dst, const void* src, uint64_t bytes) override;
  void zero_in_stream(void* dst, uint64_t bytes) override;
  void copy_2d_in_stream(void* dst, uint64_t dst_pitch, const void* src, uint64_t src_pitch, uint64_t width,
                         uint64_t height) override;
  void read(void* host_dst, const void* src, uint64_t bytes) override;
  void write(void* dst, const void* host_src, uint64_t bytes) override;
  void scale_in_stream(DataType type, void* data, uint64_t count, double factor) override;
  void accumulate_in_stream(DataType type, void* dst, const void* src, uint64_t count) override;
  void combine_scalars_in_stream(DataType type, void* x, const void* y, ScalarOp op) override;
  void elementwise_in_stream(const ElementwiseKernel& kernel, const ElementwiseArguments& args) override;
  std::shared_ptr<PinnedHostMemory> pinned_host_memory() override;

 private:
  [[noreturn]] void refuse(const char* what) const;

  std::string name_;
  DeviceKind kind_;
  std::shared_ptr<WorkQueue> stream_;
  Fetcher fetch_;
};

}  // namespace moreh::runtime
