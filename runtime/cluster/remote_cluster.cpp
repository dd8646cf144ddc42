#include "runtime/cluster/remote_cluster.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>

#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"
#include "runtime/comm/gloo_communicator.h"
#include "runtime/comm/hierarchical_communicator.h"
#include "runtime/comm/host_communicator.h"
#include "runtime/device/remote_device.h"
#include "runtime/host/host_device.h"
#include "runtime/net/token_auth.h"
#include "runtime/net/wire_codec.h"
#include "runtime/worker/payload_shares.h"
#include "runtime/worker/plan_codec.h"

namespace moreh::runtime {
namespace {

std::chrono::milliseconds millis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace

RemoteCluster::RemoteCluster(const Config& config) : config_(config), timeout_(millis(config.collective_timeout_s)) {
  ClusterOptions o;
  o.session.token = read_token_file(config.worker_token_file);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  o.session.client = fmt::format("{}:{}", host, ::getpid());
  o.collective_timeout = timeout_;
  job_ = std::make_unique<ClusterJob>(config.workers, o, /*local_devices=*/1);
  uint64_t first = 1;
  for (int w = 0; w < job_->workers(); ++w) {
    Worker worker;
    worker.queue = std::make_shared<WorkQueue>(job_->worker(w).name(), std::chrono::milliseconds(0));
    worker.first_device = first;
    worker.devices = job_->worker(w).node().devices;
    first += worker.devices;
    workers_.push_back(std::move(worker));
  }
}

RemoteCluster::~RemoteCluster() {
  for (auto& w : workers_) {
    try {
      w.queue->synchronize(timeout_);
    } catch (...) {
    }
  }
}

std::vector<std::unique_ptr<PhysicalDevice>> RemoteCluster::make_devices() {
  std::vector<std::unique_ptr<PhysicalDevice>> out;
  out.push_back(std::make_unique<HostDevice>(0, config_.host_memory_capacity));
  for (int w = 0; w < job_->workers(); ++w) {
    const WorkerSession& s = job_->worker(w);
    for (uint64_t d = 0; d < workers_[w].devices; ++d) {
      auto device = std::make_unique<RemoteDevice>(static_cast<int>(workers_[w].first_device + d),
                                                   fmt::format("{} {}:{}", s.name(), s.node().device_kind, d),
                                                   s.node().device_kind == "cuda" ? DeviceKind::kCuda : DeviceKind::kHost,
                                                   s.node().capacity);
      device->set_stream(workers_[w].queue);
      WorkerSession* session = &job_->worker(w);
      const auto t = timeout_;
      device->set_fetcher([session, t](uint64_t id, int device, uint64_t bytes) {
        Message m = session->request(MessageType::kReadBlock,
                                     WireWriter().u64(id).u32(static_cast<uint32_t>(device)).u64(bytes).take(),
                                     MessageType::kBlock, t);
        if (m.payload.size() != bytes)
          throw ProtocolError(fmt::format("{} sent {} bytes of buffer {} where {} were asked for", session->name(),
                                          m.payload.size(), id, bytes));
        return std::move(m.payload);
      });
      out.push_back(std::move(device));
    }
  }
  return out;
}

std::unique_ptr<Communicator> RemoteCluster::make_communicator(const std::vector<PhysicalDevice*>& devices) {
  std::vector<int> group_of_rank{0};
  for (size_t w = 0; w < workers_.size(); ++w)
    for (uint64_t d = 0; d < workers_[w].devices; ++d) group_of_rank.push_back(static_cast<int>(w + 1));
  const auto t = timeout_;
  auto gloo = job_->gloo_context();
  auto comm = std::make_unique<HierarchicalCommunicator>(
      devices, group_of_rank,
      [t](std::vector<PhysicalDevice*> members) -> std::unique_ptr<Communicator> {
        return std::make_unique<HostCommunicator>(std::move(members), t);
      },
      [t, gloo](std::vector<PhysicalDevice*> leaders) -> std::unique_ptr<Communicator> {
        return std::make_unique<GlooCommunicator>(std::move(leaders), gloo, t);
      });
  // A group of devices across nodes (a pipeline stage's replicas) meets over a Gloo context of its own. This
  // process connects its rank in the background; the workers connect theirs when the step arrives.
  ClusterJob* job = job_.get();
  comm->set_group_cross([job, t](const std::vector<int>& ranks, const std::vector<int>& nodes,
                                 std::vector<PhysicalDevice*> leaders) -> std::unique_ptr<Communicator> {
    const auto mine = std::find(nodes.begin(), nodes.end(), 0);  // node 0 is this process
    if (mine == nodes.end())
      return std::make_unique<GlooCommunicator>(std::move(leaders), std::shared_future<std::shared_ptr<GlooContext>>(),
                                                -1, t);
    const int rank = static_cast<int>(mine - nodes.begin());
    return std::make_unique<GlooCommunicator>(
        std::move(leaders), job->connect_group(group_context_name(ranks), rank, static_cast<int>(nodes.size())), rank, t);
  });
  comm_ = comm.get();
  return comm;
}

uint64_t RemoteCluster::key_of(const std::shared_ptr<const Plan>& plan) {
  // Plans the engine's cache has dropped leave their entries behind: forget them now and then.
  if (keys_.size() > 1024)
    std::erase_if(keys_, [](const auto& kv) { return kv.second.first.expired(); });
  auto& entry = keys_[plan.get()];
  if (entry.second == 0 || entry.first.expired()) entry = {plan, next_key_++};  // a new plan at a reused address
  return entry.second;
}

std::vector<uint64_t> RemoteCluster::released_buffers(const std::vector<std::shared_ptr<Buffer>>& bindings) {
  std::vector<uint64_t> gone;
  for (auto it = sent_.begin(); it != sent_.end();) {
    if (it->second.expired()) {
      gone.push_back(it->first);
      it = sent_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& b : bindings)
    if (b) sent_.emplace(b->id(), b);
  return gone;
}

void RemoteCluster::submit(const std::shared_ptr<const StepExecution>& step,
                           const std::vector<const DeviceProgram*>& programs) {
  if (!codec_) throw ConfigError("steps cannot be sent to workers: the backend set no payload codec");
  std::lock_guard lock(mu_);
  const uint64_t key = key_of(step->plan);
  const std::vector<uint64_t> gone = released_buffers(step->bindings);
  for (size_t w = 0; w < workers_.size(); ++w) {
    Worker& worker = workers_[w];
    std::vector<int> mine;
    for (const DeviceProgram* p : programs)
      if (static_cast<uint64_t>(p->device) >= worker.first_device &&
          static_cast<uint64_t>(p->device) < worker.first_device + worker.devices)
        mine.push_back(p->device);
    worker.released.insert(worker.released.end(), gone.begin(), gone.end());
    if (mine.empty()) continue;  // its releases go with its next step
    std::shared_ptr<const std::string> plan;
    auto shares = worker.plans.find(key);
    if (shares == worker.plans.end()) {
      plan = std::make_shared<const std::string>(WireWriter().u64(key).bytes(encode_plan(*step->plan, mine)).take());
      std::vector<bool> host_input;
      for (const Node& n : step->graph->nodes()) host_input.push_back(n.host_input);
      shares = worker.plans.emplace(key, Worker::SentPlan{payload_shares(*step->plan, mine, host_input), {}}).first;
      // The worker forgets its oldest plan past its cache; so does this process, to upload it again.
      worker.plan_order.push_back(key);
      if (worker.plan_order.size() > kWorkerPlanCache) {
        worker.plans.erase(worker.plan_order.front());
        worker.plan_order.pop_front();
      }
      ++uploads_;
    }
    ++steps_;
    // Only the payloads of the nodes its devices run, and of the batch only their rows; of the step graph,
    // only what changed since the worker's last step under this plan.
    std::sort(worker.released.begin(), worker.released.end());
    const std::string request =
        WireWriter()
            .u64(key)
            .u64(step->step)
            .ascending(worker.released)
            .bytes(shares->second.graph.encode(*step->graph, step->bindings, *codec_, shares->second.shares))
            .take();
    worker.released.clear();
    control_bytes_ += request.size() + (plan ? plan->size() : 0);
    WorkerSession* session = &job_->worker(static_cast<int>(w));
    const auto t = timeout_ * 2 + std::chrono::seconds(10);
    Communicator* comm = comm_;
    RendezvousStore* store = &job_->store();  // a worker connects its groups across nodes as the step starts
    worker.queue->submit([session, plan, request, t, step, comm, store] {
      try {
        if (plan) session->request(MessageType::kPlanUpload, *plan, MessageType::kPlanStored, t);
        session->request(MessageType::kStep, request, MessageType::kStepDone, t, store);
      } catch (const Error& e) {
        if (comm) comm->interrupt(e.what());  // this process's devices would wait for the worker's
        throw;
      }
    });
  }
}

std::vector<int> RemoteCluster::node_of_devices() const {
  std::vector<int> nodes{0};
  for (size_t w = 0; w < workers_.size(); ++w) nodes.insert(nodes.end(), workers_[w].devices, static_cast<int>(w + 1));
  return nodes;
}

uint64_t RemoteCluster::plan_uploads() const {
  std::lock_guard lock(mu_);
  return uploads_;
}
uint64_t RemoteCluster::control_bytes() const {
  std::lock_guard lock(mu_);
  return control_bytes_;
}
uint64_t RemoteCluster::steps_sent() const {
  std::lock_guard lock(mu_);
  return steps_;
}

}  // namespace moreh::runtime
