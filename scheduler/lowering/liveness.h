// Where a sequence of instructions lets go of each slot: after its last touch, or after the last touch
// before a node writes it afresh (a recomputed activation is dropped until it is made again).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace moreh::scheduler {

// `at(position, touched, fresh)` fills the slots the instruction at `position` touches and, of them, the ones
// it writes without reading (a node's outputs). Returns, per position, the slots whose value is dead after
// it; the caller leaves out what the script holds after the step.
std::vector<std::vector<uint32_t>> dead_after(
    size_t positions, size_t num_slots,
    const std::function<void(size_t, std::vector<uint32_t>& touched, std::vector<uint32_t>& fresh)>& at);

}  // namespace moreh::scheduler
