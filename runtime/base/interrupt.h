// Ctrl-C while a step runs: the steps submitted before it stop at their next kernel boundary.
#pragma once
#include <cstdint>

namespace moreh::runtime {

// Starts a new interrupt epoch. Async-signal-safe (a lock-free atomic increment): a SIGINT handler calls it.
void request_interrupt() noexcept;
// The current epoch. A step remembers it when submitted and stops once it has changed.
uint64_t interrupt_epoch() noexcept;

}  // namespace moreh::runtime
