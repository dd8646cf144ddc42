// The script's side of a job that spans workers: one session per worker (all must be there), the job's
// devices numbered in worker order, the data plane's rendezvous relayed, and requests sent to every worker
// at once. Any worker's failure fails the request with an error naming that worker.
#pragma once
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "runtime/cluster/rendezvous_store.h"
#include "runtime/cluster/worker_session.h"
#include "runtime/comm/gloo_library.h"
#include "runtime/worker/job_messages.h"

namespace moreh::runtime {

struct ClusterOptions {
  SessionOptions session;
  std::chrono::milliseconds collective_timeout{1800000};  // MOREH_COLLECTIVE_TIMEOUT
};

// What the data plane check found.
struct ClusterCheck {
  bool correct = false;          // every device holds what it must
  std::vector<std::string> wrong;  // "device 3 on worker 1" for each that does not
  uint64_t bytes_sent = 0;       // summed over devices, as the communicators count
  double seconds = 0;            // the slowest worker's
};

class ClusterJob {
 public:
  // Connects to every worker and opens the job on all of them; ConnectionError naming the first worker
  // that is not there or refuses, TimeoutError when the data plane does not connect within the bound.
  // `local_devices` > 0: this process is node 0 of the job with that many devices (the workers' come after),
  // and joins the data plane itself (gloo_context()).
  ClusterJob(const std::vector<Endpoint>& workers, ClusterOptions options, uint32_t local_devices = 0);
  ~ClusterJob();  // closes the job on every worker still there

  int workers() const { return static_cast<int>(sessions_.size()); }
  uint64_t devices() const;  // the workers' and this process's
  const WorkerSession& worker(int w) const { return *sessions_.at(w); }
  WorkerSession& worker(int w) { return *sessions_.at(w); }
  // This process's connections to the workers' data plane (local_devices > 0 and workers; else null).
  const std::shared_ptr<GlooContext>& gloo_context() const { return gloo_; }

  // This process's rank `rank` of a Gloo context of `size` nodes named `name` (a group of devices across
  // workers), connecting in the background once the ones asked for before have connected: every process
  // connects its groups in the plan's order, so none waits for a group another has not reached yet.
  std::shared_future<std::shared_ptr<GlooContext>> connect_group(const std::string& name, int rank, int size);
  // The keys the workers' rendezvous go through; requests during which a worker may connect pass it.
  RendezvousStore& store() { return store_; }

  // A collective over every device of the job, checked against the values it must give.
  ClusterCheck check(const CheckRequest& request);

 private:
  // Sends `type` with payloads[w] to every worker at once and returns the replies in worker order; the first
  // failure (in time) is rethrown after every worker has answered or failed, so no reply is left on a wire.
  std::vector<Message> broadcast(MessageType type, const std::vector<std::string>& payloads, MessageType reply,
                                 std::chrono::milliseconds timeout, RendezvousStore* store = nullptr);

  ClusterOptions options_;
  uint32_t local_devices_ = 0;
  std::vector<std::unique_ptr<WorkerSession>> sessions_;
  RendezvousStore store_;
  std::shared_ptr<GlooContext> gloo_;
  std::shared_future<std::shared_ptr<GlooContext>> last_group_;
};

}  // namespace moreh::runtime
