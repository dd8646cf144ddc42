#include "runtime/memory/buffer.h"

namespace moreh::runtime {
namespace {
std::atomic<uint64_t> g_next_id{1};
}

Buffer::Buffer(VirtualMemory& vm, uint64_t bytes, int devices)
    : vm_(vm), range_(vm.reserve(bytes)), bytes_(bytes), id_(g_next_id.fetch_add(1)), blocks_(devices) {}

Buffer::~Buffer() {
  for (auto& b : blocks_) b.reset();
  vm_.release(range_);
}

void Buffer::bind(int device, std::unique_ptr<PhysicalBlock> block) { blocks_.at(device) = std::move(block); }

void Buffer::unbind(int device) { blocks_.at(device).reset(); }

bool Buffer::has_memory() const {
  for (const auto& b : blocks_)
    if (b) return true;
  return false;
}

}  // namespace moreh::runtime
