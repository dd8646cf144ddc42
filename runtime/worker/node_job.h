// What a worker does for one job: it makes its host devices, joins them to every other worker's through the
// data plane (in-process collectives inside the node, Gloo between nodes, HierarchicalCommunicator composing
// the two), and runs the job's requests on them. Everything the job made goes when it ends.
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <deque>
#include <map>
#include <unordered_map>

#include "runtime/comm/communicator.h"
#include "runtime/comm/gloo_library.h"
#include "runtime/device/kernel_provider.h"
#include "runtime/exec/executor.h"
#include "runtime/memory/virtual_memory.h"
#include "runtime/worker/step_codec.h"
#include "runtime/net/worker_server.h"
#include "runtime/worker/job_messages.h"

namespace moreh::runtime {

struct NodeOptions {
  uint32_t host_devices = 1;
  uint64_t capacity = 0;   // bytes per host device
  std::string data_host;   // the address Gloo binds to on this node
  // What runs a step's nodes and reads their payloads (the backend's); without them steps are refused.
  KernelProvider* provider = nullptr;
  const PayloadCodec* codec = nullptr;
  size_t plan_cache = kWorkerPlanCache;  // plans kept, by the client's key (it mirrors the eviction)
};

class NodeJob final : public WorkerJob {
 public:
  explicit NodeJob(NodeOptions options) : options_(std::move(options)) {}
  ~NodeJob() override;
  Message handle(const Message& request, Connection& connection) override;
  void end(const std::string& why) override;
  void interrupt(const std::string& why) override;  // breaks the job's collectives: a step waiting in one fails

 private:
  Message open(const JobOpen& open, Connection& connection);
  Message run_check(const CheckRequest& request);
  Message store_plan(std::string_view payload);
  Message run_step(std::string_view payload, Connection& connection);
  // Connects this node's rank of each group of the plan's that spans several nodes and holds one of its
  // devices, in the plan's order (the client and the other workers go in the same order), once per job.
  void connect_groups(const Plan& plan, Connection& connection);
  Message read_block(std::string_view payload);

  NodeOptions options_;
  std::optional<JobOpen> job_;
  std::chrono::milliseconds timeout_{0};
  std::vector<std::unique_ptr<PhysicalDevice>> devices_;  // every rank's: this node's, and stand-ins for the others
  std::unique_ptr<Communicator> comm_;
  std::shared_ptr<void> gloo_;  // the data plane's connections between nodes
  std::string broken_;          // why the data plane cannot be used again in this job
  // Steps: the plans uploaded (by the client's key, oldest first out) with the nodes their programs here run
  // and this node's copy of their step graph, the client's buffers this node holds (by the client's id), and
  // the executor that runs this node's programs.
  struct StoredPlan {
    std::shared_ptr<const Plan> plan;
    std::vector<bool> launched;
    StepDecoder graph;
  };
  VirtualMemory vm_;
  std::map<uint64_t, StoredPlan> plans_;
  std::deque<uint64_t> plan_order_;
  std::unordered_map<uint64_t, std::shared_ptr<Buffer>> buffers_;
  std::map<std::vector<int>, std::shared_ptr<GlooContext>> group_contexts_;  // by the group's ranks
  std::unique_ptr<Executor> executor_;
};

}  // namespace moreh::runtime
