#include "runtime/base/errors.h"

#include <fmt/format.h>

namespace moreh::runtime {
namespace {

std::string oom_text(const std::string& device, uint64_t requested, uint64_t available, uint64_t capacity) {
  return fmt::format(
      "Error Code 4: OUT_OF_MEMORY\n"
      ">> Memory requested : {} bytes\n"
      ">> Memory available : {} bytes\n"
      ">> Device : {} (capacity {} bytes)\n"
      "The step was not run; tensors computed before it are intact. To continue:\n"
      "  1. Lower the batch size (or the model size) and run the step again.\n"
      "  2. Free tensors you no longer need (del them) before the step.\n"
      "  3. Give the device more memory: set MOREH_HOST_MEMORY_CAPACITY, or pick a larger flavor with "
      "moreh-switch-model.",
      requested, available, device, capacity);
}

}  // namespace

OutOfMemoryError::OutOfMemoryError(std::string device, uint64_t requested, uint64_t available, uint64_t capacity,
                                   const std::string& note)
    : Error(oom_text(device, requested, available, capacity) + (note.empty() ? "" : "\n" + note)),
      requested_(requested),
      available_(available) {}

}  // namespace moreh::runtime
