// What a plan's peak is made of, in words: the device, the instruction where it peaks, and the largest values
// held then with the ops that made them (the engine's debug log, for a peak larger than expected).
#pragma once
#include <string>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "runtime/plan/program.h"

namespace moreh::scheduler {

// One line about `program`'s peak (memory_model.h's peak_moment): its `top` largest held values, each as
// "op #node: bytes", what the rest add up to, and the bytes held per op that made them (the 8 largest sums).
// `graph`: the step the plan runs (names the ops).
std::string explain_peak(const runtime::Plan& plan, const runtime::DeviceProgram& program,
                         const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical, size_t top = 8);

}  // namespace moreh::scheduler
