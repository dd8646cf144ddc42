// Whether a plan's sends and receives meet: checked before a step runs, so that a plan whose programs
// disagree fails at once with both devices named instead of waiting for a message that never comes. And
// which pairs of devices exchange messages over a group of their own.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runtime/plan/program.h"

namespace moreh::runtime {

// For every ordered pair of devices (a, b), a's sends to b and b's receives from a must pair up in program
// order with the same tag and byte count (`slot_bytes(slot)`). Returns what does not, naming both devices,
// or nothing when every message meets.
std::optional<std::string> point_to_point_mismatch(const Plan& plan,
                                                   const std::function<uint64_t(uint32_t slot)>& slot_bytes);

// The pairs {a, b} (a < b, ascending) whose messages (kSend/kRecv over every device, group 0) travel over a
// group of the two of their own where `own_group(a, b)` (Communicator::messages_need_a_group): every process
// of a job forms them in this order, after the plan's groups.
std::vector<std::vector<int>> message_groups(const Plan& plan, const std::function<bool(int a, int b)>& own_group);

}  // namespace moreh::runtime
