#include "runtime/worker/node_job.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <future>

#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"
#include "runtime/comm/gloo_communicator.h"
#include "runtime/comm/gloo_library.h"
#include "runtime/comm/hierarchical_communicator.h"
#include "runtime/comm/host_communicator.h"
#include "runtime/device/remote_device.h"
#include "runtime/host/host_device.h"
#include "runtime/net/wire_codec.h"
#include "runtime/plan/point_to_point.h"
#include "runtime/worker/payload_shares.h"
#include "runtime/worker/plan_codec.h"

namespace moreh::runtime {
namespace {

// Gloo's rendezvous through the job's connection: the script's process keeps the keys (RendezvousStore).
class RelayStore final : public GlooStore {
 public:
  explicit RelayStore(Connection& c, std::chrono::milliseconds timeout) : c_(c), timeout_(timeout) {}
  void set(const std::string& key, const std::string& value) const override {
    c_.send(MessageType::kStoreSet, WireWriter().bytes(key).bytes(value).take(), timeout_);
  }
  std::string get(const std::string& key, std::chrono::milliseconds timeout) const override {
    c_.send(MessageType::kStoreGet, WireWriter().bytes(key).take(), timeout_);
    Message m = c_.receive(timeout);
    if (m.type != MessageType::kStoreValue)
      throw ProtocolError(fmt::format("{} where the rendezvous value of '{}' was expected", name_of(m.type), key));
    WireReader r(m.payload);
    const std::string got = r.bytes(256), value = r.bytes(1u << 20);
    r.finish();
    if (got != key) throw ProtocolError(fmt::format("rendezvous: asked for '{}', got '{}'", key, got));
    return value;
  }

 private:
  Connection& c_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

NodeJob::~NodeJob() { end("the worker stopped"); }

void NodeJob::end(const std::string& why) {
  if (!devices_.empty()) log().info("moreh-worker: releasing the job's {} devices ({})", options_.host_devices, why);
  // Everything that holds memory goes before the devices it is charged to.
  executor_.reset();
  buffers_.clear();
  plans_.clear();
  plan_order_.clear();
  comm_.reset();
  group_contexts_.clear();
  gloo_.reset();
  devices_.clear();
  job_.reset();
}

void NodeJob::interrupt(const std::string& why) {
  if (comm_) comm_->interrupt(why);
}

Message NodeJob::handle(const Message& request, Connection& connection) {
  switch (request.type) {
    case MessageType::kJobOpen:
      return open(decode_job_open(request.payload), connection);
    case MessageType::kRunCheck:
      return run_check(decode_check_request(request.payload));
    case MessageType::kPlanUpload:
      return store_plan(request.payload);
    case MessageType::kStep:
      return run_step(request.payload, connection);
    case MessageType::kReadBlock:
      return read_block(request.payload);
    default:
      throw ProtocolError(fmt::format("a worker does not take {} in a job", name_of(request.type)));
  }
}

Message NodeJob::open(const JobOpen& open, Connection& connection) {
  if (job_) throw ConfigError("the job is open already");
  if (open.devices_per_worker[open.worker] != options_.host_devices)
    throw ConfigError(fmt::format("the job counts {} devices on worker {}; it has {}",
                                  open.devices_per_worker[open.worker], open.worker, options_.host_devices));
  timeout_ = std::chrono::milliseconds(open.collective_timeout_ms);
  const uint64_t first = open.first_device(), total = open.total_devices();
  std::vector<int> group_of_rank;
  for (uint32_t w = 0; w < open.workers(); ++w)
    for (uint64_t d = 0; d < open.devices_per_worker[w]; ++d) {
      const int rank = static_cast<int>(group_of_rank.size());
      if (w == open.worker)
        devices_.push_back(std::make_unique<HostDevice>(rank, options_.capacity));
      else
        devices_.push_back(std::make_unique<RemoteDevice>(rank, fmt::format("worker {} host:{}", w, d),
                                                          DeviceKind::kHost, options_.capacity));
      group_of_rank.push_back(static_cast<int>(w));
    }
  std::vector<PhysicalDevice*> all;
  for (auto& d : devices_) all.push_back(d.get());
  try {
    if (open.workers() == 1) {
      if (total > 1) comm_ = std::make_unique<HostCommunicator>(all, timeout_);
    } else {
      const std::string host = open.data_host.empty() ? options_.data_host : open.data_host;
      RelayStore store(connection, timeout_);
      auto gloo = connect_gloo(static_cast<int>(open.worker), static_cast<int>(open.workers()), store, host, timeout_);
      gloo_ = gloo;
      const auto t = timeout_;
      comm_ = std::make_unique<HierarchicalCommunicator>(
          all, group_of_rank,
          [t](std::vector<PhysicalDevice*> members) -> std::unique_ptr<Communicator> {
            return std::make_unique<HostCommunicator>(std::move(members), t);
          },
          [t, gloo](std::vector<PhysicalDevice*> leaders) -> std::unique_ptr<Communicator> {
            return std::make_unique<GlooCommunicator>(std::move(leaders), gloo, t);
          });
      // A group across nodes meets over the context connect_groups made before the step was submitted.
      static_cast<HierarchicalCommunicator&>(*comm_).set_group_cross(
          [this, t, me = static_cast<int>(open.worker)](const std::vector<int>& ranks, const std::vector<int>& nodes,
                                                        std::vector<PhysicalDevice*> leaders) -> std::unique_ptr<Communicator> {
            if (std::find(nodes.begin(), nodes.end(), me) == nodes.end())
              return std::make_unique<GlooCommunicator>(std::move(leaders), std::shared_future<std::shared_ptr<GlooContext>>(), -1, t);
            const auto context = group_contexts_.find(ranks);
            if (context == group_contexts_.end())
              throw ConfigError(fmt::format("the {} was not connected before its step", group_context_name(ranks)));
            return std::make_unique<GlooCommunicator>(std::move(leaders), context->second, t);
          });
    }
  } catch (...) {
    end("the job could not open");
    throw;
  }
  job_ = open;
  if (options_.provider) {
    executor_ = std::make_unique<Executor>(all, options_.provider);
    if (comm_) executor_->set_communicator(comm_.get());
  }
  log().info("moreh-worker: joined the job as worker {} of {} (devices {} to {} of {})", open.worker, open.workers(),
             first, first + options_.host_devices - 1, total);
  return Message{MessageType::kJobReady, {}};
}

Message NodeJob::run_check(const CheckRequest& q) {
  if (!job_) throw ConfigError("run_check before job_open");
  if (!broken_.empty()) throw CollectiveError(fmt::format("the job's data plane broke earlier ({}); open a new job", broken_));
  const uint64_t first = job_->first_device(), total = job_->total_devices();
  const uint64_t out_elements = q.kind == CheckKind::kAllGather ? q.elements * total : q.elements;
  struct Buffers {
    std::unique_ptr<PhysicalBlock> in, out;
  };
  std::vector<Buffers> buffers(options_.host_devices);
  for (uint32_t d = 0; d < options_.host_devices; ++d) {
    const uint64_t rank = first + d;
    PhysicalDevice& dev = *devices_[rank];
    buffers[d].in = dev.allocate(q.elements * sizeof(float));
    buffers[d].out = dev.allocate(out_elements * sizeof(float));
    auto* in = static_cast<float*>(buffers[d].in->data());
    for (uint64_t i = 0; i < q.elements; ++i) in[i] = check_value(rank, i, q.seed);
    std::memset(buffers[d].out->data(), 0, out_elements * sizeof(float));
  }
  const auto start = std::chrono::steady_clock::now();
  if (comm_) {
    comm_->reset_traffic();
    for (uint32_t d = 0; d < options_.host_devices; ++d) {
      const int rank = static_cast<int>(first + d);
      for (uint32_t k = 0; k < q.repeats; ++k) {
        CollectivePart part;
        part.type = DataType::kFloat32;
        part.send = buffers[d].in->data();
        part.recv = buffers[d].out->data();
        switch (q.kind) {
          case CheckKind::kAllReduce:
            part = CollectivePart::all_reduce(part.send, part.recv, q.elements, DataType::kFloat32, ReduceOp::kSum);
            break;
          case CheckKind::kAllGather:
            part.kind = CollectiveKind::kAllGather;
            part.counts.assign(total, q.elements);
            break;
          case CheckKind::kBroadcast:
            part.kind = CollectiveKind::kBroadcast;
            part.count = q.elements;
            part.peer = static_cast<int>(total - 1);
            break;
        }
        comm_->enqueue(rank, std::move(part));
      }
    }
  } else {  // one device in all: every collective is a copy
    std::memcpy(buffers[0].out->data(), buffers[0].in->data(), q.elements * sizeof(float));
  }
  std::string failure;
  for (uint32_t d = 0; d < options_.host_devices; ++d) {
    try {
      devices_[first + d]->synchronize(timeout_ + std::chrono::milliseconds(5000));
    } catch (const Error& e) {
      if (failure.empty()) failure = e.what();
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!failure.empty()) {
    broken_ = failure;
    throw CollectiveError(failure);  // the blocks go with `buffers`
  }
  CheckResult result;
  result.seconds = seconds;
  for (uint32_t d = 0; d < options_.host_devices; ++d) {
    const uint64_t rank = first + d;
    result.devices.push_back(CheckResult::Device{rank, fnv1a(buffers[d].out->data(), out_elements * sizeof(float)),
                                                 comm_ ? comm_->traffic(static_cast<int>(rank)).bytes_sent : 0});
  }
  return Message{MessageType::kCheckResult, encode(result)};
}

Message NodeJob::store_plan(std::string_view payload) {
  if (!job_) throw ConfigError("plan_upload before job_open");
  WireReader r(payload);
  const uint64_t key = r.u64();
  const std::string bytes = r.bytes();
  r.finish();
  auto plan = std::make_shared<Plan>(decode_plan(bytes));  // kept under the client's key for it
  const uint64_t first = job_->first_device();
  if (plan->num_devices != static_cast<int>(job_->total_devices()))
    throw ProtocolError(fmt::format("plan_upload: a plan over {} devices in a job of {}", plan->num_devices,
                                    job_->total_devices()));
  for (const auto& p : plan->programs)
    if (p.device < static_cast<int>(first) || p.device >= static_cast<int>(first + options_.host_devices))
      throw ProtocolError(fmt::format("plan_upload: a program for device {}, which is not on this worker", p.device));
  if (!plans_.count(key)) {
    plan_order_.push_back(key);
    while (plan_order_.size() > options_.plan_cache) {
      plans_.erase(plan_order_.front());
      plan_order_.pop_front();
    }
  }
  std::vector<int> mine;
  for (const auto& p : plan->programs) mine.push_back(p.device);
  std::vector<bool> launched = launched_nodes(*plan, mine);
  plans_[key] = StoredPlan{std::move(plan), std::move(launched), {}};
  return Message{MessageType::kPlanStored, {}};
}

void NodeJob::connect_groups(const Plan& plan, Connection& connection) {
  auto* hierarchy = dynamic_cast<HierarchicalCommunicator*>(comm_.get());
  if (!hierarchy) return;  // one node: its groups are in-process
  const int me = static_cast<int>(job_->worker);
  // In the order the executor forms them: the plan's groups, then the pairs whose messages need their own.
  std::vector<std::vector<int>> groups = plan.groups;
  for (auto& pair : message_groups(plan, [hierarchy](int a, int b) { return hierarchy->messages_need_a_group(a, b); }))
    groups.push_back(std::move(pair));
  for (const std::vector<int>& ranks : groups) {
    if (group_contexts_.count(ranks)) continue;
    const std::vector<int> nodes = hierarchy->nodes_of(ranks);
    const auto mine = std::find(nodes.begin(), nodes.end(), me);
    if (nodes.size() < 2 || mine == nodes.end()) continue;
    const std::string host = job_->data_host.empty() ? options_.data_host : job_->data_host;
    RelayStore relay(connection, timeout_);
    group_contexts_[ranks] = connect_gloo(static_cast<int>(mine - nodes.begin()), static_cast<int>(nodes.size()),
                                          PrefixedStore(relay, group_context_name(ranks)), host, timeout_);
  }
}

Message NodeJob::run_step(std::string_view payload, Connection& connection) {
  if (!job_) throw ConfigError("step before job_open");
  if (!executor_ || !options_.codec)
    throw ConfigError("this worker runs no steps (it was started without the backend's kernels)");
  if (!broken_.empty()) throw CollectiveError(fmt::format("the job's data plane broke earlier ({}); open a new job", broken_));
  WireReader r(payload);
  const uint64_t key = r.u64(), number = r.u64();
  for (uint64_t id : r.ascending(1u << 24)) buffers_.erase(id);  // the client's buffers it no longer holds
  const std::string bytes = r.bytes();
  r.finish();
  const auto plan = plans_.find(key);
  if (plan == plans_.end())
    throw ProtocolError(fmt::format("step {}: plan {} was not uploaded to this worker", number, key));
  const int total = static_cast<int>(job_->total_devices());
  StoredPlan& stored = plan->second;
  StepWire wire = stored.graph.decode(bytes, *options_.codec, [&](uint64_t id, uint64_t size) {
    auto& b = buffers_[id];
    if (!b) b = std::make_shared<Buffer>(vm_, size, total);
    else if (b->bytes() != size)
      throw ProtocolError(fmt::format("step {}: buffer {} of {} bytes named with {}", number, id, b->bytes(), size));
    return b;
  });
  if (wire.graph.size() != stored.plan->num_nodes)
    throw ProtocolError(fmt::format("step {}: {} nodes for a plan of {}", number, wire.graph.size(), stored.plan->num_nodes));
  for (uint32_t n : wire.withheld)
    if (stored.launched[n])
      throw ProtocolError(fmt::format("step {}: node {} came without its payload, but this worker runs it", number, n));
  connect_groups(*stored.plan, connection);
  StepExecution step;
  step.plan = stored.plan;
  step.graph = std::make_shared<const StepGraph>(std::move(wire.graph));
  step.bindings = std::move(wire.bindings);
  step.step = number;
  step.share = true;
  executor_->submit(std::move(step));
  std::string failure;
  const uint64_t first = job_->first_device();
  for (uint32_t d = 0; d < options_.host_devices; ++d) {
    try {
      devices_[first + d]->synchronize(timeout_ + std::chrono::milliseconds(5000));
    } catch (const Error& e) {
      if (failure.empty()) failure = e.what();
    }
  }
  if (!failure.empty()) {
    if (comm_ && !comm_->recover()) broken_ = failure;  // Gloo cannot realign: the job must be opened again
    throw Error(failure);
  }
  return Message{MessageType::kStepDone, WireWriter().u64(number).take()};
}

Message NodeJob::read_block(std::string_view payload) {
  if (!job_) throw ConfigError("read_block before job_open");
  WireReader r(payload);
  const uint64_t id = r.u64();
  const uint32_t device = r.u32();
  const uint64_t bytes = r.u64();
  r.finish();
  const uint64_t first = job_->first_device();
  if (device < first || device >= first + options_.host_devices)
    throw ProtocolError(fmt::format("read_block: device {} is not on this worker", device));
  const auto it = buffers_.find(id);
  PhysicalBlock* block = it == buffers_.end() ? nullptr : it->second->memory(static_cast<int>(device));
  if (!block) throw Error(fmt::format("buffer {} has no block on device {} of this worker", id, device));
  if (bytes > block->bytes())
    throw ProtocolError(fmt::format("read_block: {} bytes of a block of {}", bytes, block->bytes()));
  if (auto failure = it->second->failure()) throw Error(*failure);
  std::string out(bytes, '\0');
  devices_[device]->read(out.data(), block->data(), bytes);
  return Message{MessageType::kBlock, std::move(out)};
}

}  // namespace moreh::runtime
