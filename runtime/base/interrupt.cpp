#include "runtime/base/interrupt.h"

#include <atomic>

namespace moreh::runtime {
namespace {

std::atomic<uint64_t> epoch{0};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "a signal handler may only touch lock-free atomics");

}  // namespace

void request_interrupt() noexcept { epoch.fetch_add(1, std::memory_order_relaxed); }

uint64_t interrupt_epoch() noexcept { return epoch.load(std::memory_order_relaxed); }

}  // namespace moreh::runtime
