#include "runtime/cluster/remote_cluster.h"

#include <fmt/format.h>
#include <unistd.h>

#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"
#include "runtime/comm/gloo_communicator.h"
#include "runtime/comm/hierarchical_communicator.h"
#include "runtime/comm/host_communicator.h"
#include "runtime/device/remote_device.h"
#include "runtime/host/host_device.h"
#include "runtime/net/token_auth.h"
#include "runtime/net/wire_codec.h"
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
  // The nodes name their buffers by this process's ids, as the bindings do.
  const auto wire = std::make_shared<const std::string>(encode_step(*step->graph, step->bindings, *codec_));
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
    if (!mine.empty() && !worker.plans.count(key)) {
      plan = std::make_shared<const std::string>(WireWriter().u64(key).bytes(encode_plan(*step->plan, mine)).take());
      worker.plans[key] = true;
      ++uploads_;
    }
    ++steps_;
    const std::string request = WireWriter().u64(key).u64(step->step).u64s(worker.released).bytes(*wire).take();
    worker.released.clear();
    control_bytes_ += request.size() + (plan ? plan->size() : 0);
    WorkerSession* session = &job_->worker(static_cast<int>(w));
    const auto t = timeout_ * 2 + std::chrono::seconds(10);
    Communicator* comm = comm_;
    worker.queue->submit([session, plan, request, t, step, comm] {
      try {
        if (plan) session->request(MessageType::kPlanUpload, *plan, MessageType::kPlanStored, t);
        session->request(MessageType::kStep, request, MessageType::kStepDone, t);
      } catch (const Error& e) {
        if (comm) comm->interrupt(e.what());  // this process's devices would wait for the worker's
        throw;
      }
    });
  }
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
