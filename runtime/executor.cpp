#include "runtime/executor.h"

#include <fmt/format.h>

#include "runtime/errors.h"

namespace moreh::runtime {

PhysicalBlock& LaunchContext::input_memory(size_t i) const {
  const Buffer& b = *node_.inputs.at(i).buffer;
  if (auto why = b.failure()) throw Error("this tensor's value is unavailable: " + *why);
  if (!b.memory()) throw Error(fmt::format("buffer {} has no memory on {}", b.id(), device_.name()));
  return *b.memory();
}

void LaunchContext::bind_output(size_t i, std::unique_ptr<PhysicalBlock> block) const {
  node_.outputs.at(i).buffer->bind(std::move(block));
}

void mark_step_failed(const StepGraph& graph, size_t first, const std::string& why) {
  auto text = std::make_shared<const std::string>(why);
  const auto& nodes = graph.nodes();
  for (size_t i = first; i < nodes.size(); ++i)
    for (const auto& out : nodes[i].outputs) out.buffer->set_failure(text);
}

void Executor::submit(StepExecution step) {
  auto shared = std::make_shared<StepExecution>(std::move(step));
  for (const auto& program : shared->plan->programs) {
    PhysicalDevice* device = devices_.at(program.device);
    device->submit([this, shared, &program] { run_program(*shared, program); });
  }
}

void Executor::run_program(const StepExecution& step, const DeviceProgram& program) {
  PhysicalDevice& device = *devices_.at(program.device);
  const auto& nodes = step.graph->nodes();
  uint32_t next_node = 0;  // the first node not yet run: a failure marks it and everything after
  for (const Instruction& ins : program.code) {
    try {
      switch (ins.kind) {
        case Instruction::Kind::kAllocate: {
          Buffer& b = *step.bindings[ins.index];
          if (!b.memory()) b.bind(device.allocate(b.bytes()));
          break;
        }
        case Instruction::Kind::kLaunch: {
          next_node = ins.index;
          const Node& node = nodes[ins.index];
          provider_->launch(node, LaunchContext(device, node));
          next_node = ins.index + 1;
          break;
        }
        case Instruction::Kind::kRelease:
          step.bindings[ins.index]->unbind();
          break;
      }
    } catch (const OutOfMemoryError& e) {
      mark_step_failed(*step.graph, next_node, e.what());
      throw;
    } catch (const std::exception& e) {
      std::string where = next_node < nodes.size() ? op_name(nodes[next_node].op) : std::string("the step");
      std::string why = fmt::format("{} (op {} of {} in the step) failed: {}", where, next_node + 1, nodes.size(),
                                    e.what());
      mark_step_failed(*step.graph, next_node, why);
      throw Error(why);
    }
  }
}

}  // namespace moreh::runtime
