// The runtime runs nodes through a KernelProvider per device kind; the backend supplies it
// (ATen CPU kernels over runtime buffers for host devices).
#pragma once
#include <cstddef>
#include <memory>

#include "runtime/device/device.h"
#include "runtime/graph/step_graph.h"
#include "runtime/plan/program.h"

namespace moreh::runtime {

class LaunchContext {
 public:
  // `local`: the device's part of a node split by rows (node's refs are then already the local ones).
  LaunchContext(PhysicalDevice& device, const Node& node, const LocalLaunch* local = nullptr)
      : device_(device), node_(node), local_(local) {}
  PhysicalDevice& device() const { return device_; }
  // Under batch splitting: this device's rows of the batch; host data a node copies in (x.to("moreh"))
  // is cut to them, and random ops draw the whole batch's numbers and keep these rows, so a split step
  // draws what one device would.
  const LocalLaunch* local() const { return local_; }
  // The memory behind an input; throws if the buffer is unavailable (an earlier step failed).
  PhysicalBlock& input_memory(size_t input_index) const;
  // Binds the memory a kernel produced (or the provider allocated) to a fresh output.
  void bind_output(size_t output_index, std::unique_ptr<PhysicalBlock> block) const;

 private:
  PhysicalDevice& device_;
  const Node& node_;
  const LocalLaunch* local_;
};

class KernelProvider {
 public:
  virtual ~KernelProvider() = default;
  // Runs one node on ctx.device(): reads inputs, writes the written inputs in place, binds every output.
  virtual void launch(const Node& node, const LaunchContext& ctx) = 0;
};

}  // namespace moreh::runtime
