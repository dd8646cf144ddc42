#include "scheduler/search/step_cost.h"

#include <algorithm>
#include <cmath>

#include "runtime/exec/executor.h"
#include "scheduler/analysis/node_work.h"

namespace moreh::scheduler {

using Kind = runtime::Instruction::Kind;

KernelTime ProfileTiming::kernel(const runtime::Node& node, const runtime::LocalLaunch* local, double share) const {
  // A launch with views of its own is costed on them (its part of the work); one without, by its rows' share.
  const bool has_views = local && (!local->inputs.empty() || !local->outputs.empty());
  if (has_views) share = 1;
  NodeWork w;
  if (local && !local->elements.empty()) {
    w = node_work(runtime::node_on_elements(node, local->elements));
    share = 1;
  } else {
    w = node_work(node, has_views ? local : nullptr);
  }
  const double rate = w.attention           ? profile_.attention_flops
                      : w.multiply_adds > 0 ? (w.low_precision ? profile_.low_prec_flops : profile_.fp32_flops)
                                            : profile_.elementwise_flops;
  const double compute = rate > 0 ? w.flops() / rate : 0;
  const double memory = (w.bytes_read + w.bytes_written) / profile_.memory_bytes_per_s;
  double joins = 0, launches = 1;  // a micro-batch's result copied into, or added to, what earlier ones left: a kernel more
  if (local)
    for (size_t k = 0; k < local->joins.size() && k < node.outputs.size(); ++k) {
      if (local->joins[k] == runtime::LocalLaunch::Join::kFresh) continue;
      double bytes = static_cast<double>(node.outputs[k].itemsize);
      for (int64_t d : (k < local->outputs.size() && !local->outputs[k].sizes.empty() ? local->outputs[k].sizes
                                                                                      : node.outputs[k].sizes))
        bytes *= static_cast<double>(d);
      joins += launch_s_ + 3 * bytes / profile_.memory_bytes_per_s;  // two reads and a write
      launches += 1;
    }
  return {launch_s_ + std::max(compute, memory) * share + joins, launches * launch_s_};
}

int ProfileTiming::node_of(int device) const {
  if (!node_of_device_.empty())
    return device >= 0 && static_cast<size_t>(device) < node_of_device_.size() ? node_of_device_[device] : -1;
  return devices_per_node_ > 0 ? device / devices_per_node_ : 0;
}

const LinkProfile& ProfileTiming::link(const std::vector<int>& devices) const {
  if (devices.empty()) return profile_.intra_node;
  const int node = node_of(devices.front());
  for (int d : devices)
    if (node_of(d) != node) return profile_.inter_node;
  return profile_.intra_node;
}

double ProfileTiming::collective(Kind kind, double bytes, const std::vector<int>& devices) const {
  const double g = static_cast<double>(devices.size());
  if (g <= 1) return 0;
  const LinkProfile& l = link(devices);
  if (profile_.shared_memory && &l == &profile_.intra_node) {  // rendezvous in shared memory
    const double meetings = kind == Kind::kAllReduce ? 2 : 1;
    const double moved = kind == Kind::kAllReduce ? 2 * (g - 1) / g : kind == Kind::kBroadcast ? 1 : (g - 1) / g;
    return meetings * l.latency_s + moved * bytes / l.bytes_per_s;
  }
  // Ring algorithms: an all-reduce is a reduce-scatter then an all-gather, each moving (g - 1) / g of the value
  // through every link in g - 1 steps; a broadcast pipelines the value down a chain.
  switch (kind) {
    case Kind::kAllReduce:
      return 2 * (g - 1) * l.latency_s + 2 * (g - 1) / g * bytes / l.bytes_per_s;
    case Kind::kAllGather:
    case Kind::kReduceScatter:
      return (g - 1) * l.latency_s + (g - 1) / g * bytes / l.bytes_per_s;
    case Kind::kBroadcast:
      return std::ceil(std::log2(g)) * l.latency_s + bytes / l.bytes_per_s;
    default:
      return 0;
  }
}

double ProfileTiming::message(double bytes, int from, int to) const {
  const LinkProfile& l = link({from, to});
  return l.latency_s + bytes / l.bytes_per_s;
}

StepCost predict_step(const runtime::Plan& plan, const runtime::StepGraph& graph,
                      const runtime::CanonicalGraph& canonical, const ProfileTiming& timing) {
  const PlanTimeline t = simulate_plan(plan, graph, canonical, timing);
  StepCost c;
  c.seconds = t.makespan;
  c.idle_fraction = t.idle_fraction;
  for (double s : t.communication) c.communication_seconds = std::max(c.communication_seconds, s);
  c.stuck = t.stuck;
  return c;
}

}  // namespace moreh::scheduler
