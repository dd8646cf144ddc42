#include "runtime/device/remote_device.h"

#include "runtime/base/errors.h"

namespace moreh::runtime {

RemoteDevice::RemoteDevice(int index, std::string name, DeviceKind kind, uint64_t capacity)
    : PhysicalDevice(index, capacity), name_(std::move(name)), kind_(kind) {}

void RemoteDevice::refuse(const char* what) const {
  // The name says which worker ("worker 1 (127.0.0.1:7000) host:0").
  throw ConfigError(std::string("cannot ") + what + " on " + name_ + ": it lives on that worker, not in this process");
}

std::unique_ptr<PhysicalBlock> RemoteDevice::allocate(uint64_t bytes) {
  (void)bytes;
  refuse("allocate memory");
}
void RemoteDevice::submit(std::function<void()> work) {
  (void)work;
  refuse("run work");
}
std::shared_ptr<Event> RemoteDevice::record_event() { refuse("record an event"); }
void RemoteDevice::copy_in_stream(void*, const void*, uint64_t) { refuse("copy memory"); }
void RemoteDevice::zero_in_stream(void*, uint64_t) { refuse("zero memory"); }
void RemoteDevice::copy_2d_in_stream(void*, uint64_t, const void*, uint64_t, uint64_t, uint64_t) {
  refuse("copy memory");
}
void RemoteDevice::read(void*, const void*, uint64_t) { refuse("read memory"); }
void RemoteDevice::write(void*, const void*, uint64_t) { refuse("write memory"); }
void RemoteDevice::scale_in_stream(DataType, void*, uint64_t, double) { refuse("scale memory"); }
void RemoteDevice::accumulate_in_stream(DataType, void*, const void*, uint64_t) { refuse("add to memory"); }
void RemoteDevice::combine_scalars_in_stream(DataType, void*, const void*, ScalarOp) { refuse("combine scalars"); }
void RemoteDevice::elementwise_in_stream(const ElementwiseKernel&, const ElementwiseArguments&) {
  refuse("run a kernel");
}
std::shared_ptr<PinnedHostMemory> RemoteDevice::pinned_host_memory() { refuse("pin host memory"); }

void RemoteDevice::synchronize(std::chrono::milliseconds timeout) {
  if (stream_) stream_->synchronize(timeout);
}

bool RemoteDevice::busy() const { return stream_ && stream_->busy(); }

std::string RemoteDevice::fetch(uint64_t buffer_id, uint64_t bytes) const {
  if (!fetch_) refuse("reading a buffer's block");
  return fetch_(buffer_id, index(), bytes);
}

}  // namespace moreh::runtime
