// What the scheduler hands the runtime: one program per physical device, cached by graph hash.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moreh::runtime {

struct Instruction {
  enum class Kind : uint8_t {
    kAllocate,  // bind fresh memory to a buffer slot read before anything in the step writes it
    kLaunch,    // run node `index` of the step graph
    kRelease,   // the slot's last use has passed and the script no longer holds it
  };
  Kind kind;
  uint32_t index;
};

struct DeviceProgram {
  int device = 0;
  std::vector<Instruction> code;
  uint64_t peak_bytes = 0;  // most bytes the program holds at once beyond what exists before it
};

struct Plan {
  uint64_t graph_hash = 0;
  std::vector<DeviceProgram> programs;
  uint64_t num_nodes = 0;
  double compile_ms = 0;
  // The leading dimensions of the step's data inputs, most frequent first (scheduler/step_analysis.h).
  std::vector<int64_t> batch_sizes;
  std::string summary;  // one line for the log
  // Steps that ran this plan. Only a step graph that recurs has per-step data: the first graph of a
  // script also uploads the model's parameters, which are host copies too. The engine's lock guards it.
  mutable uint64_t uses = 0;
};

}  // namespace moreh::runtime
