#include "runtime/device.h"

#include "runtime/errors.h"

namespace moreh::runtime {

PhysicalBlock::PhysicalBlock(PhysicalDevice& device, void* data, uint64_t bytes, std::shared_ptr<void> owner)
    : device_(device), data_(data), bytes_(bytes), owner_(std::move(owner)) {}

PhysicalBlock::~PhysicalBlock() {
  provider_view_.reset();
  owner_.reset();
  device_.uncharge(bytes_);
}

uint64_t PhysicalDevice::available() const {
  uint64_t u = used_.load();
  return u >= capacity_ ? 0 : capacity_ - u;
}

void PhysicalDevice::charge(uint64_t bytes) {
  uint64_t before = used_.load();
  do {
    if (before + bytes > capacity_) throw OutOfMemoryError(name(), bytes, available(), capacity_);
  } while (!used_.compare_exchange_weak(before, before + bytes));
  uint64_t now = before + bytes, p = peak_.load();
  while (now > p && !peak_.compare_exchange_weak(p, now)) {
  }
}

std::unique_ptr<PhysicalBlock> PhysicalDevice::adopt(void* data, uint64_t bytes, std::shared_ptr<void> owner) {
  charge(bytes);
  return std::make_unique<PhysicalBlock>(*this, data, bytes, std::move(owner));
}

}  // namespace moreh::runtime
