// The virtual device when MOREH_WORKERS names workers: this process is node 0 (device 0, where host reads and
// eager ops find values, is its own host device) and every worker's devices follow, in MOREH_WORKERS' order.
// It opens the job, gives the engine its devices and the communicator that joins them (in-process inside a
// node, Gloo between nodes), and sends each step's programs for the workers' devices to them: a plan once
// per plan (its key), then each step's graph and bindings, in order, on one queue per worker.
#pragma once
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "runtime/base/work_queue.h"
#include "runtime/cluster/cluster_job.h"
#include "runtime/config/config.h"
#include "runtime/exec/executor.h"
#include "runtime/worker/job_messages.h"
#include "runtime/worker/step_codec.h"

namespace moreh::runtime {

class RemoteCluster final : public RemoteRunner {
 public:
  // Connects to config.workers with config.worker_token_file and opens the job (errors name the worker).
  explicit RemoteCluster(const Config& config);
  ~RemoteCluster() override;

  // Device 0 (this process's host device, of config.host_memory_capacity) and the workers' devices.
  std::vector<std::unique_ptr<PhysicalDevice>> make_devices();
  // The communicator over make_devices()' devices. A worker's failed step interrupts it, so that this
  // process's devices stop waiting for the worker's at once.
  std::unique_ptr<Communicator> make_communicator(const std::vector<PhysicalDevice*>& devices);
  // The backend's codec for kernel payloads; steps cannot be sent before it is set.
  void set_payload_codec(const PayloadCodec* codec) { codec_ = codec; }

  void submit(const std::shared_ptr<const StepExecution>& step, const std::vector<const DeviceProgram*>& programs) override;

  const ClusterJob& job() const { return *job_; }
  // Each device's machine: 0 for this process's device 0, w + 1 for worker w's (the cost model's links).
  std::vector<int> node_of_devices() const;
  // Plans uploaded and steps sent so far, over all workers (bench, tests).
  uint64_t plan_uploads() const;
  uint64_t steps_sent() const;
  uint64_t control_bytes() const;  // the payloads of plan uploads and step requests sent

 private:
  struct Worker {
    std::shared_ptr<WorkQueue> queue;
    uint64_t first_device = 0, devices = 0;
    // Plans uploaded to it (forgotten as the worker forgets them: the oldest past kWorkerPlanCache), what of
    // each step under that plan it needs, and what it holds of the plan's step graph.
    struct SentPlan {
      std::vector<PayloadShare> shares;
      StepEncoder graph;
    };
    std::map<uint64_t, SentPlan> plans;
    std::deque<uint64_t> plan_order;
    std::vector<uint64_t> released;  // buffers it may free, sent with its next step
  };
  // The key a plan travels under: one per Plan object the engine holds.
  uint64_t key_of(const std::shared_ptr<const Plan>& plan);
  // The client's buffers sent to workers that this process no longer holds (their copies can go).
  std::vector<uint64_t> released_buffers(const std::vector<std::shared_ptr<Buffer>>& bindings);

  Config config_;
  std::unique_ptr<ClusterJob> job_;
  const PayloadCodec* codec_ = nullptr;
  Communicator* comm_ = nullptr;  // the engine owns it
  std::vector<Worker> workers_;
  std::chrono::milliseconds timeout_;
  mutable std::mutex mu_;
  std::map<const Plan*, std::pair<std::weak_ptr<const Plan>, uint64_t>> keys_;
  uint64_t next_key_ = 1;
  std::unordered_map<uint64_t, std::weak_ptr<Buffer>> sent_;
  uint64_t uploads_ = 0, steps_ = 0, control_bytes_ = 0;
};

}  // namespace moreh::runtime
