// torch.profiler's view of the devices: each device program's run as a `moreh::device_run` range.
#pragma once

#include "runtime/exec/executor.h"

namespace moreh::backend {

// The executor's program scope (runtime/exec/executor.h): when the thread that submits a step is profiled, each
// of the step's device programs runs inside a `moreh::device_run` range on its device's thread, recorded by that
// same profiler (its thread-local callbacks and state are carried to the device's thread for the run), so the
// default `torch.profiler.profile()` sees it as well as one with `profile_all_threads`. Not profiled: nothing.
runtime::Executor::ProgramScope profiler_program_scope();

}  // namespace moreh::backend
