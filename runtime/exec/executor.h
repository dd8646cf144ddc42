// Runs a plan's programs on their devices' streams. Nothing here waits: errors surface at the next
// synchronize, and the buffers the failed step should have produced carry the failure.
#pragma once
#include <atomic>
#include <map>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "runtime/comm/communicator.h"
#include "runtime/device/device.h"
#include "runtime/graph/canonical_graph.h"
#include "runtime/device/kernel_provider.h"
#include "runtime/plan/program.h"

namespace moreh::runtime {

struct StepExecution {
  std::shared_ptr<const Plan> plan;
  std::shared_ptr<const StepGraph> graph;
  std::vector<std::shared_ptr<Buffer>> bindings;  // slot -> buffer, from the canonical graph
  uint64_t interrupt_epoch = 0;  // set by submit(): an interrupt after it stops the step (runtime/base/interrupt.h)
  uint64_t step = 0;             // the step's number in the process (its events name it; 0: unnumbered)
  // The plan holds some devices' programs only (a worker's share of a step): its sends and receives were
  // matched over the whole plan by the process that made it.
  bool share = false;
  // Set by submit() from the program scope (below): opens the range around each device's program.
  std::function<std::shared_ptr<void>(int device)> open_program{};
};

// Runs the programs of devices that live in other processes (runtime/cluster/remote_cluster.h): it sends them
// and returns; the devices' synchronize() waits for their workers.
class RemoteRunner {
 public:
  virtual ~RemoteRunner() = default;
  virtual void submit(const std::shared_ptr<const StepExecution>& step, const std::vector<const DeviceProgram*>& programs) = 0;
};

class Executor {
 public:
  Executor(std::vector<PhysicalDevice*> devices, KernelProvider* provider) : devices_(std::move(devices)),
                                                                           provider_(provider) {}
  void set_provider(KernelProvider* provider) { provider_ = provider; }
  // Optional: a range opened around each device program's run and closed after it (the backend's profiler
  // range). Called by submit() on the submitting thread, the hook returns what opens the range on each device's
  // thread, so that it can carry the submitting thread's state there; null, or a hook that returns null, opens
  // nothing. Set before steps run.
  using ProgramOpener = std::function<std::shared_ptr<void>(int device)>;
  using ProgramScope = std::function<ProgramOpener(uint64_t step)>;
  void set_program_scope(ProgramScope scope) { program_scope_ = std::move(scope); }
  // The collectives of plans over several devices (rank r = devices[r]).
  void set_communicator(Communicator* comm) { comm_ = comm; }
  // Optional: where the programs of devices in other processes (RemoteDevice) go; without it a plan with such
  // programs fails.
  void set_remote_runner(RemoteRunner* runner) { remote_ = runner; }
  // Enqueues every program of the step on its device.
  void submit(StepExecution step);
  // Runs one program to the end on the calling thread (the device's stream calls this).
  void run_program(const StepExecution& step, const DeviceProgram& program);
  // Nanoseconds the devices' streams have spent running programs on the host (issuing kernels and
  // collectives, summed over devices): with GPUs, the host cost of replaying steps.
  uint64_t replay_ns() const { return replay_ns_.load(std::memory_order_relaxed); }
  // Bytes sent by the collectives that spanned a group of devices (Plan::groups), over all groups.
  uint64_t group_bytes_sent() const;
  // Adds to out[d] the bytes device d sent in the groups' collectives.
  void add_group_bytes_by_device(std::vector<uint64_t>& out) const;
  // After a failed step, with every device idle: lets the groups' communicators that it broke run again
  // (Communicator::recover). False when one cannot.
  bool recover_groups();

 private:
  // A device's program failed: the other devices' collectives fail at once instead of at their timeout.
  void stop_peers(const StepExecution& step, const DeviceProgram& program, const std::string& why);
  // A node run on one micro-batch of the device's rows: its results join what earlier micro-batches left
  // (LocalLaunch::joins).
  void launch_joined(const Node& mine, const LocalLaunch& local, PhysicalDevice& device);
  void run_fused(const std::vector<Node>& nodes, const FusedLaunch& fused, PhysicalDevice& device);
  // The in-place sum over the devices of an all-reduce instruction's buffer on `device`.
  static CollectivePart all_reduce_part(const StepExecution& step, const DeviceProgram& program, const Instruction& ins,
                                        PhysicalDevice& device);
  void run_collective(const StepExecution& step, const DeviceProgram& program, const Instruction& ins,
                      PhysicalDevice& device);
  // The communicator an instruction's collective runs on and `device`'s rank in it: every device's, or its
  // group's (made at submit).
  std::pair<Communicator*, int> communicator_for(const Plan& plan, const Instruction& ins,
                                                 const PhysicalDevice& device) const;

  std::vector<PhysicalDevice*> devices_;
  KernelProvider* provider_;
  ProgramScope program_scope_;
  Communicator* comm_ = nullptr;
  RemoteRunner* remote_ = nullptr;
  mutable std::mutex groups_mu_;
  std::map<std::vector<int>, std::unique_ptr<Communicator>> groups_;  // by the devices of the group
  std::atomic<uint64_t> replay_ns_{0};
};

// The node over its lists' `elements` only (LocalLaunch::elements): the other elements' inputs and outputs
// left out, the tensors beside the lists kept.
Node node_on_elements(const Node& node, const std::vector<uint32_t>& elements);

// Marks the outputs of nodes [first, end) as failed with `why` (also used when a step is not run at all).
void mark_step_failed(const StepGraph& graph, size_t first, const std::string& why);

}  // namespace moreh::runtime
