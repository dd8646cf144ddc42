// A virtual buffer: what a moreh storage points at. It owns a virtual range and, once a plan has placed
// it, physical memory on a device. The frontend (the storage) and pending graphs share it.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/device.h"
#include "runtime/virtual_memory.h"

namespace moreh::runtime {

class Buffer {
 public:
  Buffer(VirtualMemory& vm, uint64_t bytes);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  uint64_t id() const { return id_; }
  uint64_t address() const { return range_.address; }
  uint64_t bytes() const { return bytes_; }

  // The storage that owns this buffer has been freed: no new op can name it, so after its last use in a
  // step graph its memory can go.
  void release_frontend() { frontend_alive_.store(false); }
  bool frontend_alive() const { return frontend_alive_.load(); }

  // An op that writes this buffer has been recorded (its contents are defined once that op runs).
  // Set on the recording thread; the plan allocates buffers that are read before they are defined.
  void mark_defined() { defined_.store(true, std::memory_order_relaxed); }
  bool defined() const { return defined_.load(std::memory_order_relaxed); }

  // Physical memory, touched only by the device's stream (one device for now for now; the many-devices issue turns this into one block per device).
  PhysicalBlock* memory() const { return memory_.get(); }
  void bind(std::unique_ptr<PhysicalBlock> block) { memory_ = std::move(block); }
  void unbind() { memory_.reset(); }

  // Set when the step that should have produced this buffer failed; reading it raises this text.
  void set_failure(std::shared_ptr<const std::string> why) { std::atomic_store(&failure_, std::move(why)); }
  std::shared_ptr<const std::string> failure() const { return std::atomic_load(&failure_); }

 private:
  VirtualMemory& vm_;
  VirtualRange range_;
  uint64_t bytes_;
  uint64_t id_;
  std::atomic<bool> frontend_alive_{true};
  std::atomic<bool> defined_{false};
  std::unique_ptr<PhysicalBlock> memory_;
  std::shared_ptr<const std::string> failure_;
};

}  // namespace moreh::runtime
