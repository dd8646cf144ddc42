// What a worker does for one job: it makes its host devices, joins them to every other worker's through the
// data plane (in-process collectives inside the node, Gloo between nodes, HierarchicalCommunicator composing
// the two), and runs the job's requests on them. Everything the job made goes when it ends.
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/comm/communicator.h"
#include "runtime/net/worker_server.h"
#include "runtime/worker/job_messages.h"

namespace moreh::runtime {

struct NodeOptions {
  uint32_t host_devices = 1;
  uint64_t capacity = 0;   // bytes per host device
  std::string data_host;   // the address Gloo binds to on this node
};

class NodeJob final : public WorkerJob {
 public:
  explicit NodeJob(NodeOptions options) : options_(std::move(options)) {}
  ~NodeJob() override;
  Message handle(const Message& request, Connection& connection) override;
  void end(const std::string& why) override;

 private:
  Message open(const JobOpen& open, Connection& connection);
  Message run_check(const CheckRequest& request);

  NodeOptions options_;
  std::optional<JobOpen> job_;
  std::chrono::milliseconds timeout_{0};
  std::vector<std::unique_ptr<PhysicalDevice>> devices_;  // every rank's: this node's, and stand-ins for the others
  std::unique_ptr<Communicator> comm_;
  std::shared_ptr<void> gloo_;  // the data plane's connections between nodes
  std::string broken_;          // why the data plane cannot be used again in this job
};

}  // namespace moreh::runtime
