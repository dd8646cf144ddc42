#include "runtime/comm/gloo_communicator.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <future>

#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"

namespace moreh::runtime {

namespace {

std::shared_future<std::shared_ptr<GlooContext>> ready(std::shared_ptr<GlooContext> context) {
  if (!context) throw ConfigError("a GlooCommunicator needs a connected Gloo context");
  std::promise<std::shared_ptr<GlooContext>> p;
  p.set_value(std::move(context));
  return p.get_future().share();
}

}  // namespace

GlooCommunicator::GlooCommunicator(std::vector<PhysicalDevice*> devices, std::shared_ptr<GlooContext> context,
                                   std::chrono::milliseconds timeout)
    : GlooCommunicator(std::move(devices), ready(context), context ? context->rank() : -1, timeout) {
  if (context->size() != size())
    throw ConfigError(fmt::format("a Gloo context of {} ranks cannot serve a communicator of {} devices",
                                  context->size(), size()));
}

GlooCommunicator::GlooCommunicator(std::vector<PhysicalDevice*> devices,
                                   std::shared_future<std::shared_ptr<GlooContext>> pending, int local_rank,
                                   std::chrono::milliseconds timeout)
    : Communicator(std::move(devices)), pending_(std::move(pending)), timeout_(timeout), local_rank_(local_rank) {
  if (timeout_.count() <= 0) throw ConfigError("a GlooCommunicator's timeout must be positive");
  if (local_rank_ < -1 || local_rank_ >= size())
    throw ConfigError(fmt::format("Gloo rank {} of a communicator of {} devices", local_rank_, size()));
  if (local_rank_ >= 0 && !pending_.valid()) throw ConfigError("a GlooCommunicator needs a Gloo context");
  if (local_rank_ >= 0 && !device(local_rank_).host_accessible())
    throw ConfigError(fmt::format("Gloo moves host memory, and rank {}'s device {} is not host-accessible",
                                  local_rank_, device(local_rank_).name()));
}

GlooContext& GlooCommunicator::context() {
  if (pending_.wait_for(timeout_) != std::future_status::ready)
    throw TimeoutError(fmt::format("the data plane's connections for a group of {} devices did not open within {} ms",
                                   size(), timeout_.count()));
  const std::shared_ptr<GlooContext>& c = pending_.get();  // the connect's own error, if it failed
  if (!context_checked_) {
    if (c->size() != size() || c->rank() != local_rank_)
      throw ConfigError(fmt::format("a Gloo context of rank {} of {} cannot serve rank {} of {} devices", c->rank(),
                                    c->size(), local_rank_, size()));
    context_checked_ = true;
    if (broken()) c->abort(broken_reason());  // broken while it connected: its peers stop too
  }
  return *c;
}

bool GlooCommunicator::connected() const {
  return pending_.valid() && pending_.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}

void GlooCommunicator::check(int rank, const CollectivePart& part) const {
  if (local_rank_ < 0)
    throw ConfigError(fmt::format("{} on rank {} ({}): this process holds no rank of this Gloo communicator",
                                  part.describe(), rank, device(rank).name()));
  if (rank != local_rank_)
    throw ConfigError(fmt::format("{} on rank {} ({}): this process holds Gloo rank {} ({}); rank {}'s process issues "
                                  "its parts",
                                  part.describe(), rank, device(rank).name(), local_rank_,
                                  device(local_rank_).name(), rank));
  const bool reduces = part.kind == CollectiveKind::kAllReduce || part.kind == CollectiveKind::kReduceScatter;
  if (reduces && !is_reducible(part.type))
    throw ConfigError(fmt::format("{} on rank {}: {} cannot be reduced", part.describe(), rank, name_of(part.type)));
}

void GlooCommunicator::enqueue_part(int rank, CollectivePart part) {
  check(rank, part);
  device(rank).submit([this, rank, part = std::move(part)] { run_part(rank, part); });
}

void GlooCommunicator::drop_pending() {
  if (!connected()) return;  // still connecting: its first part finds the communicator broken
  try {
    pending_.get()->abort(broken_reason());
  } catch (const std::exception&) {  // the connect failed: nothing to close
  }
}

void GlooCommunicator::run_part(int rank, const CollectivePart& part) {
  check(rank, part);
  throw_if_broken();
  GlooResult r;
  uint64_t seq = 0;
  switch (part.kind) {
    case CollectiveKind::kAllReduce:
      seq = collectives_++;
      r = context().all_reduce(part.send, part.recv, part.count, part.type, part.op, timeout_);
      break;
    case CollectiveKind::kReduceScatter:
      seq = collectives_++;
      r = context().reduce_scatter(part.send, part.recv, part.counts, part.type, part.op, timeout_);
      break;
    case CollectiveKind::kAllGather:
      seq = collectives_++;
      r = context().all_gather(part.send, part.recv, part.counts, part.type, timeout_);
      break;
    case CollectiveKind::kBroadcast:
      seq = collectives_++;
      r = context().broadcast(part.send, part.recv, part.count, part.type, part.peer, timeout_);
      break;
    case CollectiveKind::kBarrier:
      seq = collectives_++;
      r = context().barrier(timeout_);
      break;
    case CollectiveKind::kSend:
      seq = sends_[part.peer]++;
      r = context().send(part.peer, part.send, part.count, part.type, timeout_);
      break;
    case CollectiveKind::kRecv:
      seq = recvs_[part.peer]++;
      r = context().recv(part.peer, part.recv, part.count, part.type, timeout_);
      break;
  }
  if (!r.ok()) fail(part, seq, r);
  count_sent(rank, ring_bytes_sent(part, rank, size()));
  count_completed(rank);
}

void GlooCommunicator::run_group(int rank, const std::vector<CollectivePart>& parts) {
  const bool all_reduces = std::all_of(parts.begin(), parts.end(), [](const CollectivePart& p) {
    return p.kind == CollectiveKind::kAllReduce;
  });
  if (!all_reduces || parts.size() < 2) return Communicator::run_group(rank, parts);
  check(rank, parts.front());
  throw_if_broken();
  // Packed by (type, op), in the order each pair first appears: every rank packs alike.
  std::vector<std::pair<DataType, ReduceOp>> kinds;
  for (const auto& p : parts)
    if (std::find(kinds.begin(), kinds.end(), std::make_pair(p.type, p.op)) == kinds.end()) kinds.emplace_back(p.type, p.op);
  for (const auto& [type, op] : kinds) {
    const uint64_t es = size_of(type);
    uint64_t total = 0;
    for (const auto& p : parts)
      if (p.type == type && p.op == op) total += p.count;
    std::vector<std::byte> packed(total * es);
    uint64_t at = 0;
    for (const auto& p : parts)
      if (p.type == type && p.op == op) {
        if (p.count) std::memcpy(packed.data() + at, p.send, p.count * es);
        at += p.count * es;
      }
    const uint64_t seq = collectives_++;
    const GlooResult r = context().all_reduce(packed.data(), packed.data(), total, type, op, timeout_);
    if (!r.ok()) fail(CollectivePart::all_reduce(packed.data(), packed.data(), total, type, op), seq, r);
    at = 0;
    for (const auto& p : parts)
      if (p.type == type && p.op == op) {
        if (p.count) std::memcpy(p.recv, packed.data() + at, p.count * es);
        at += p.count * es;
      }
  }
  for (const auto& p : parts) {
    count_sent(rank, ring_bytes_sent(p, rank, size()));
    count_completed(rank);
  }
}

void GlooCommunicator::fail(const CollectivePart& part, uint64_t seq, const GlooResult& r) {
  const int rank = local_rank_;
  const bool message = part.kind == CollectiveKind::kSend || part.kind == CollectiveKind::kRecv;
  const std::string what =
      message ? fmt::format("{} (message #{} {} rank {})", part.describe(), seq,
                            part.kind == CollectiveKind::kSend ? "to" : "from", part.peer)
              : fmt::format("{} (collective #{} of a {}-rank Gloo communicator)", part.describe(), seq, size());
  const std::string here = fmt::format("rank {} ({})", rank, device(rank).name());
  auto named = [&](int p) { return fmt::format("rank {} ({})", p, device(p).name()); };
  const bool known_peer = r.peer >= 0 && r.peer < size() && r.peer != rank;
  std::string reason;
  switch (r.status) {
    case MOREH_GLOO_INVALID: throw ConfigError(fmt::format("{} on {}: {}", what, here, r.message));
    case MOREH_GLOO_ABORTED: {
      // interrupt() (or the context's owner) closed the connections.
      const std::string why = broken() ? broken_reason() : r.message;
      mark_broken(fmt::format("{} on {} was interrupted: {}", what, here, why));
      throw CollectiveError(fmt::format("{} on {} was interrupted: {}", what, here, why));
    }
    case MOREH_GLOO_TIMEOUT: {
      const char* verb = part.kind == CollectiveKind::kRecv ? "send" : "arrive";
      const std::string who = known_peer ? fmt::format("{} did not {}", named(r.peer), verb)
                                         : std::string("a peer did not arrive or did not finish its part");
      reason = fmt::format("{} timed out on {}: {} within {} ms (MOREH_COLLECTIVE_TIMEOUT); a worker is dead or its "
                           "stream is stuck. Gloo: {}",
                           what, here, who, timeout_.count(), r.message);
      mark_broken(reason);
      log().error("{}", reason);
      throw TimeoutError(reason);
    }
    case MOREH_GLOO_MISMATCH:
      reason = fmt::format("{} on {}: {}; every rank must issue the same collectives in the same order", what, here,
                           r.message);
      break;
    default:
      reason = fmt::format("{} failed on {}{}: {} (a worker died, or its part failed and closed its connections)", what,
                           here, known_peer ? " with " + named(r.peer) : std::string(), r.message);
      break;
  }
  mark_broken(reason);
  log().error("{}", reason);
  throw CollectiveError(reason);
}

}  // namespace moreh::runtime
