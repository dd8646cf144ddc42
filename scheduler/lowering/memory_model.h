// The memory a device's program holds as it runs, instruction by instruction: the one account of
// liveness and peak bytes that the planners report and the engine checks against a device's capacity.
#pragma once
#include <cstdint>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "runtime/plan/program.h"

namespace moreh::scheduler {

// The most bytes `program` holds at once beyond what its device held before it (values from before the
// step count from zero, so releasing one lowers the count): its blocks as the executor binds them
// (allocations, kernels' fresh outputs over the device's part of a split node, received values, gathers),
// and the moment a micro-batch's result exists beside the block it joins.
uint64_t program_peak(const runtime::DeviceProgram& program, const runtime::StepGraph& graph,
                      const runtime::CanonicalGraph& canonical);

}  // namespace moreh::scheduler
