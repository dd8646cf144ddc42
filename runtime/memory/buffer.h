// A virtual buffer: what a moreh storage points at. It owns a virtual range and, once a plan has placed
// it, physical memory on a device. The frontend (the storage) and pending graphs share it.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/device/device.h"
#include "runtime/plan/placement.h"
#include "runtime/memory/virtual_memory.h"

namespace moreh::runtime {

class Buffer {
 public:
  // `devices`: the physical devices of the virtual one (memory may be bound on each).
  Buffer(VirtualMemory& vm, uint64_t bytes, int devices = 1);
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

  // Physical memory per device, touched only by that device's stream (or by the host thread while the
  // devices are idle). Device 0's is the one eager code and host reads use.
  PhysicalBlock* memory(int device = 0) const { return blocks_.at(device).get(); }
  void bind(std::unique_ptr<PhysicalBlock> block) { bind(0, std::move(block)); }
  void bind(int device, std::unique_ptr<PhysicalBlock> block);
  void unbind(int device = 0);
  // Unbinds the device's block and hands it to the caller (nullptr when there is none).
  std::unique_ptr<PhysicalBlock> take(int device) { return std::move(blocks_.at(device)); }
  void unbind_all() {
    for (auto& b : blocks_) b.reset();
  }
  // Blocks bound on any device.
  bool has_memory() const;

  // Where the value lives once the work submitted so far has run (set by the host thread when it submits
  // a step; see runtime/plan/placement.h).
  const Placement& placement() const { return placement_; }
  void set_placement(const Placement& p) { placement_ = p; }

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
  std::vector<std::unique_ptr<PhysicalBlock>> blocks_;
  Placement placement_;
  std::shared_ptr<const std::string> failure_;
};

}  // namespace moreh::runtime
