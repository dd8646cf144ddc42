// A plan on the wire, for the workers that run some of its devices' programs: what the executor reads of a
// Plan (programs, groups, slots, placements), encoded with every count and index checked on the way back in,
// so that a malformed upload is a ProtocolError and never an out-of-range read later.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "runtime/plan/program.h"

namespace moreh::runtime {

// `devices`: the programs to include (the devices one worker runs); empty: every program. Throws ConfigError
// for what does not travel yet: generated (fused) kernels.
std::string encode_plan(const Plan& plan, const std::vector<int>& devices = {});
// ProtocolError for a payload that is malformed or inconsistent (an instruction naming a launch, range,
// group or slot that is not there).
Plan decode_plan(std::string_view payload);

}  // namespace moreh::runtime
