#include "runtime/buffer.h"

namespace moreh::runtime {
namespace {
std::atomic<uint64_t> g_next_id{1};
}

Buffer::Buffer(VirtualMemory& vm, uint64_t bytes)
    : vm_(vm), range_(vm.reserve(bytes)), bytes_(bytes), id_(g_next_id.fetch_add(1)) {}

Buffer::~Buffer() {
  memory_.reset();
  vm_.release(range_);
}

}  // namespace moreh::runtime
