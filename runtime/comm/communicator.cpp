#include "runtime/comm/communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <numeric>
#include <set>

#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"

namespace moreh::runtime {

std::string_view name_of(CollectiveKind kind) {
  switch (kind) {
    case CollectiveKind::kAllReduce: return "all_reduce";
    case CollectiveKind::kReduceScatter: return "reduce_scatter";
    case CollectiveKind::kAllGather: return "all_gather";
    case CollectiveKind::kBroadcast: return "broadcast";
    case CollectiveKind::kSend: return "send";
    case CollectiveKind::kRecv: return "recv";
    case CollectiveKind::kBarrier: return "barrier";
  }
  return "?";
}

std::string CollectivePart::describe() const {
  switch (kind) {
    case CollectiveKind::kAllReduce:
      return fmt::format("all_reduce({}, {}, {} elements)", name_of(op), name_of(type), count);
    case CollectiveKind::kReduceScatter:
      return fmt::format("reduce_scatter({}, {}, counts [{}])", name_of(op), name_of(type), fmt::join(counts, ", "));
    case CollectiveKind::kAllGather:
      return fmt::format("all_gather({}, counts [{}])", name_of(type), fmt::join(counts, ", "));
    case CollectiveKind::kBroadcast:
      return fmt::format("broadcast({}, {} elements, root {})", name_of(type), count, peer);
    case CollectiveKind::kSend: return fmt::format("send({}, {} elements, to rank {})", name_of(type), count, peer);
    case CollectiveKind::kRecv: return fmt::format("recv({}, {} elements, from rank {})", name_of(type), count, peer);
    case CollectiveKind::kBarrier: return "barrier";
  }
  return "?";
}

bool CollectivePart::matches(const CollectivePart& o) const {
  if (kind != o.kind) return false;
  switch (kind) {
    case CollectiveKind::kBarrier: return true;
    case CollectiveKind::kAllReduce: return type == o.type && op == o.op && count == o.count;
    case CollectiveKind::kReduceScatter: return type == o.type && op == o.op && counts == o.counts;
    case CollectiveKind::kAllGather: return type == o.type && counts == o.counts;
    case CollectiveKind::kBroadcast: return type == o.type && count == o.count && peer == o.peer;
    case CollectiveKind::kSend:
    case CollectiveKind::kRecv: return type == o.type && count == o.count;
  }
  return false;
}

double ring_all_reduce_bytes_per_rank(uint64_t bytes, int ranks) {
  if (ranks <= 1) return 0.0;
  return 2.0 * (ranks - 1) / ranks * static_cast<double>(bytes);
}

std::vector<uint64_t> offsets_of(const std::vector<uint64_t>& counts) {
  std::vector<uint64_t> offsets(counts.size(), 0);
  std::exclusive_scan(counts.begin(), counts.end(), offsets.begin(), uint64_t{0});
  return offsets;
}

std::vector<uint64_t> even_chunks(uint64_t count, int n) {
  std::vector<uint64_t> chunks(n, count / n);
  for (uint64_t c = 0; c < count % n; ++c) ++chunks[c];
  return chunks;
}

uint64_t ring_bytes_sent(const CollectivePart& part, int rank, int n) {
  const uint64_t es = size_of(part.type);
  switch (part.kind) {
    case CollectiveKind::kAllReduce: {
      const uint64_t mine = even_chunks(part.count, n)[rank];
      return (part.count - mine) * es + mine * es * (n - 1);
    }
    case CollectiveKind::kReduceScatter:
      return (std::accumulate(part.counts.begin(), part.counts.end(), uint64_t{0}) - part.counts[rank]) * es;
    case CollectiveKind::kAllGather: return part.counts[rank] * es * (n - 1);
    case CollectiveKind::kBroadcast: return rank == part.peer ? part.count * es * (n - 1) : 0;
    case CollectiveKind::kSend: return part.count * es;
    case CollectiveKind::kRecv:
    case CollectiveKind::kBarrier: return 0;
  }
  return 0;
}

Communicator::Communicator(std::vector<PhysicalDevice*> devices)
    : devices_(std::move(devices)),
      bytes_sent_(new std::atomic<uint64_t>[devices_.size()]),
      operations_(new std::atomic<uint64_t>[devices_.size()]) {
  if (devices_.empty()) throw ConfigError("a communicator needs at least one device");
  std::set<PhysicalDevice*> seen;
  for (PhysicalDevice* d : devices_) {
    if (!d) throw ConfigError("a communicator's device is null");
    // Two ranks on one stream would wait for each other inside the same in-order queue.
    if (!seen.insert(d).second) throw ConfigError("device " + d->name() + " is bound to two ranks of one communicator");
  }
  reset_traffic();
}

void Communicator::validate(int rank, const CollectivePart& p) const {
  const int n = size();
  if (rank < 0 || rank >= n) throw ConfigError(fmt::format("{}: rank {} is not in [0, {})", p.describe(), rank, n));
  auto need = [&](bool ok, const char* what) {
    if (!ok) throw ConfigError(fmt::format("{} on rank {}: {}", p.describe(), rank, what));
  };
  switch (p.kind) {
    case CollectiveKind::kBarrier: break;
    case CollectiveKind::kAllReduce:
      need(p.count == 0 || (p.send && p.recv), "send and recv buffers are required");
      break;
    case CollectiveKind::kReduceScatter:
    case CollectiveKind::kAllGather: {
      need(static_cast<int>(p.counts.size()) == n, "needs one count per rank");
      const uint64_t total = std::accumulate(p.counts.begin(), p.counts.end(), uint64_t{0});
      const uint64_t mine = p.counts[rank];
      const uint64_t send_count = p.kind == CollectiveKind::kAllGather ? mine : total;
      const uint64_t recv_count = p.kind == CollectiveKind::kAllGather ? total : mine;
      need(send_count == 0 || p.send, "a send buffer is required");
      need(recv_count == 0 || p.recv, "a recv buffer is required");
      break;
    }
    case CollectiveKind::kBroadcast:
      need(p.peer >= 0 && p.peer < n, "the root is not a rank of the communicator");
      need(p.count == 0 || p.recv, "a recv buffer is required");
      need(p.count == 0 || rank != p.peer || p.send, "the root needs a send buffer");
      break;
    case CollectiveKind::kSend:
    case CollectiveKind::kRecv:
      need(p.peer >= 0 && p.peer < n, "the peer is not a rank of the communicator");
      need(p.peer != rank, "a rank cannot send to or receive from itself");
      need(p.count == 0 || (p.kind == CollectiveKind::kSend ? p.send != nullptr : p.recv != nullptr),
           "a buffer is required");
      break;
  }
}

void Communicator::enqueue(int rank, CollectivePart part) {
  validate(rank, part);
  throw_if_broken();
  enqueue_part(rank, std::move(part));
}

void Communicator::run_in_stream(int rank, const CollectivePart& part) {
  validate(rank, part);
  throw_if_broken();
  run_part(rank, part);
}

void Communicator::run_group_in_stream(int rank, const std::vector<CollectivePart>& parts) {
  for (const CollectivePart& part : parts) {
    validate(rank, part);
    if (part.kind == CollectiveKind::kSend || part.kind == CollectiveKind::kRecv)
      throw ConfigError(fmt::format("{} on rank {}: send and recv do not go in a group of collectives",
                                    part.describe(), rank));
  }
  throw_if_broken();
  if (!parts.empty()) run_group(rank, parts);
}

void Communicator::run_group(int rank, const std::vector<CollectivePart>& parts) {
  for (const CollectivePart& part : parts) run_part(rank, part);
}

namespace {

CollectivePart make_part(CollectiveKind kind, DataType type, const void* send, void* recv, uint64_t count, int peer) {
  CollectivePart p;
  p.kind = kind;
  p.type = type;
  p.send = send;
  p.recv = recv;
  p.count = count;
  p.peer = peer;
  return p;
}

}  // namespace

CollectivePart CollectivePart::all_reduce(const void* send, void* recv, uint64_t count, DataType type, ReduceOp op) {
  CollectivePart p = make_part(CollectiveKind::kAllReduce, type, send, recv, count, -1);
  p.op = op;
  return p;
}

void Communicator::all_reduce(int rank, const void* send, void* recv, uint64_t count, DataType type, ReduceOp op) {
  enqueue(rank, CollectivePart::all_reduce(send, recv, count, type, op));
}

void Communicator::reduce_scatter(int rank, const void* send, void* recv, std::vector<uint64_t> counts, DataType type,
                                  ReduceOp op) {
  CollectivePart p = make_part(CollectiveKind::kReduceScatter, type, send, recv, 0, -1);
  p.op = op;
  p.counts = std::move(counts);
  enqueue(rank, std::move(p));
}

void Communicator::all_gather(int rank, const void* send, void* recv, std::vector<uint64_t> counts, DataType type) {
  CollectivePart p = make_part(CollectiveKind::kAllGather, type, send, recv, 0, -1);
  p.counts = std::move(counts);
  enqueue(rank, std::move(p));
}

void Communicator::broadcast(int rank, const void* send, void* recv, uint64_t count, DataType type, int root) {
  enqueue(rank, make_part(CollectiveKind::kBroadcast, type, send, recv, count, root));
}

void Communicator::send(int rank, const void* data, uint64_t count, DataType type, int peer) {
  enqueue(rank, make_part(CollectiveKind::kSend, type, data, nullptr, count, peer));
}

void Communicator::recv(int rank, void* data, uint64_t count, DataType type, int peer) {
  enqueue(rank, make_part(CollectiveKind::kRecv, type, nullptr, data, count, peer));
}

void Communicator::barrier(int rank) { enqueue(rank, make_part(CollectiveKind::kBarrier, DataType::kFloat32, nullptr, nullptr, 0, -1)); }

std::string Communicator::broken_reason() const {
  std::lock_guard<std::mutex> lock(reason_mu_);
  return broken_reason_;
}

bool Communicator::mark_broken(std::string reason) {
  std::lock_guard<std::mutex> lock(reason_mu_);
  if (broken_.load()) return false;
  broken_reason_ = std::move(reason);
  broken_.store(true);
  return true;
}

void Communicator::interrupt(const std::string& reason) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!mark_broken(reason)) return;
  drop_pending();
  changed_.notify_all();
}

bool Communicator::recover() {
  std::unique_lock<std::mutex> lock(mu_);
  if (!broken()) return true;
  if (!restart_ranks()) return false;
  {
    std::lock_guard<std::mutex> reason_lock(reason_mu_);
    broken_reason_.clear();
    broken_.store(false);
  }
  broken_by_timeout_ = false;
  return true;
}

void Communicator::throw_if_broken() const {
  if (broken_.load()) throw CollectiveError("the communicator is broken and runs no more collectives: " + broken_reason());
}

CollectiveTraffic Communicator::traffic(int rank) const {
  if (rank < 0 || rank >= size()) throw ConfigError(fmt::format("rank {} is not in [0, {})", rank, size()));
  return {bytes_sent_[rank].load(), operations_[rank].load()};
}

uint64_t Communicator::total_bytes_sent() const {
  uint64_t total = 0;
  for (size_t r = 0; r < devices_.size(); ++r) total += bytes_sent_[r].load();
  return total;
}

void Communicator::reset_traffic() {
  for (size_t r = 0; r < devices_.size(); ++r) {
    bytes_sent_[r].store(0);
    operations_[r].store(0);
  }
}

void Communicator::count_sent(int rank, uint64_t bytes) { bytes_sent_[rank].fetch_add(bytes); }
void Communicator::count_completed(int rank) { operations_[rank].fetch_add(1); }

void Communicator::fail_broken(std::unique_lock<std::mutex>& lock) {
  const bool timed_out = broken_by_timeout_;
  lock.unlock();
  if (timed_out) throw TimeoutError(broken_reason());
  throw CollectiveError(broken_reason());
}

void Communicator::break_with(std::unique_lock<std::mutex>& lock, const std::string& reason, bool timed_out) {
  if (!mark_broken(reason)) fail_broken(lock);
  broken_by_timeout_ = timed_out;
  drop_pending();
  changed_.notify_all();
  lock.unlock();
  log().error("{}", reason);
  if (timed_out) throw TimeoutError(reason);
  throw CollectiveError(reason);
}

void Communicator::require_same(std::unique_lock<std::mutex>& lock, uint64_t seq, int rank, const CollectivePart& part,
                                int first_rank, const CollectivePart& first) {
  if (first.matches(part)) return;
  break_with(lock,
             fmt::format("collective #{}: rank {} issued {} where rank {} issued {}; every rank must issue the same "
                         "collectives in the same order",
                         seq, rank, part.describe(), first_rank, first.describe()),
             false);
}

void Communicator::wait_for_phase(std::unique_lock<std::mutex>& lock, std::vector<int>& phase_of_rank, int phase,
                                  int rank, uint64_t seq, const CollectivePart& part,
                                  std::chrono::milliseconds timeout) {
  phase_of_rank[rank] = phase + 1;
  changed_.notify_all();
  auto behind = [&] {
    std::vector<std::string> ranks;
    for (int r = 0; r < size(); ++r)
      if (phase_of_rank[r] <= phase) ranks.push_back(fmt::format("{} ({})", r, device(r).name()));
    return ranks;
  };
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!behind().empty()) {
    if (broken()) fail_broken(lock);
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout && !broken()) {
      const auto missing = behind();
      if (missing.empty()) break;
      const std::string_view note = path_note();
      break_with(lock,
                 fmt::format("{} (collective #{} of a {}-rank communicator{}{}) timed out on rank {} ({}): rank{} {} "
                             "did not {} within {} ms (MOREH_COLLECTIVE_TIMEOUT); a peer is dead or its stream is "
                             "stuck",
                             part.describe(), seq, size(), note.empty() ? "" : ", ", note, rank, device(rank).name(),
                             missing.size() > 1 ? "s" : "", fmt::join(missing, ", "),
                             phase == 0 ? "arrive" : "finish its part", timeout.count()),
                 true);
    }
  }
}

}  // namespace moreh::runtime
