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
// (allocations, kernels' fresh outputs over the device's part of a split node, received values, gathers,
// generated kernels' stored results, and the moments two blocks of one value exist at once (a micro-batch's
// result beside the block it joins, a gather's or a keep-rows' new block beside the old).
// `plan` gives the slots' rows and the groups (kKeepRows); `graph` the views of launches on a device's rows
// (nullptr: a plan with none).
uint64_t program_peak(const runtime::Plan& plan, const runtime::DeviceProgram& program,
                      const runtime::StepGraph* graph, const runtime::CanonicalGraph& canonical);

// The largest of a plan's programs' peaks (what program_peak gave each).
uint64_t max_peak_bytes(const runtime::Plan& plan);

}  // namespace moreh::scheduler
