#include "runtime/comm/host_communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"

namespace moreh::runtime {
namespace {

void copy_bytes(void* dst, const void* src, uint64_t bytes) {
  if (bytes != 0 && dst != src) std::memcpy(dst, src, bytes);
}

}  // namespace

HostCommunicator::HostCommunicator(std::vector<PhysicalDevice*> devices, std::chrono::milliseconds timeout)
    : Communicator(std::move(devices)), timeout_(timeout), next_seq_(size(), 0) {
  for (int r = 0; r < size(); ++r)
    if (device(r).kind() != DeviceKind::kHost)
      throw ConfigError("HostCommunicator works on host devices only; rank " + std::to_string(r) + " is " +
                        device(r).name());
}

void HostCommunicator::enqueue_part(int rank, CollectivePart part) {
  device(rank).submit([this, rank, part = std::move(part)] { run_part(rank, part); });
}

void HostCommunicator::run_part(int rank, const CollectivePart& part) {
  throw_if_broken();
  switch (part.kind) {
    case CollectiveKind::kSend: run_send(rank, part); break;
    case CollectiveKind::kRecv: run_recv(rank, part); break;
    default: run_collective(rank, part); break;
  }
  count_completed(rank);
}

void HostCommunicator::drop_pending() {
  meeting_.clear();
  mail_.clear();
}

bool HostCommunicator::restart_ranks() {
  drop_pending();
  std::fill(next_seq_.begin(), next_seq_.end(), 0);
  sends_.clear();
  recvs_.clear();
  return true;
}

void HostCommunicator::run_collective(int rank, const CollectivePart& part) {
  const int n = size();
  const uint64_t es = size_of(part.type);
  std::unique_lock<std::mutex> lock(mu_);
  if (broken()) {
    lock.unlock();
    throw_if_broken();
  }
  const uint64_t seq = next_seq_[rank]++;
  std::shared_ptr<Rendezvous>& slot = meeting_[seq];
  if (!slot) {
    slot = std::make_shared<Rendezvous>();
    slot->first = part;
    slot->first_rank = rank;
    slot->send.assign(n, nullptr);
    slot->recv.assign(n, nullptr);
    slot->phase_of_rank.assign(n, 0);
  } else {
    require_same(lock, seq, rank, part, slot->first_rank, slot->first);
  }
  const std::shared_ptr<Rendezvous> rv = slot;
  rv->send[rank] = part.send;
  rv->recv[rank] = part.recv;
  wait_for_phase(lock, rv->phase_of_rank, 0, rank, seq, part, timeout_);
  meeting_.erase(seq);  // everyone has its pointer; the first rank past the meeting removes it
  lock.unlock();

  switch (part.kind) {
    case CollectiveKind::kAllReduce: {
      const std::vector<uint64_t> chunks = even_chunks(part.count, n), offsets = offsets_of(chunks);
      std::vector<const void*> inputs(n);
      for (int k = 0; k < n; ++k) inputs[k] = element_at(rv->send[k], offsets[rank], es);
      reduce_elements(part.type, part.op, inputs, element_at(part.recv, offsets[rank], es), chunks[rank]);
      count_sent(rank, (part.count - chunks[rank]) * es);
      lock.lock();
      wait_for_phase(lock, rv->phase_of_rank, 1, rank, seq, part, timeout_);
      lock.unlock();
      for (int c = 0; c < n; ++c)
        if (c != rank) copy_bytes(element_at(part.recv, offsets[c], es), element_at(rv->recv[c], offsets[c], es), chunks[c] * es);
      count_sent(rank, chunks[rank] * es * (n - 1));
      break;
    }
    case CollectiveKind::kReduceScatter: {
      const std::vector<uint64_t> offsets = offsets_of(part.counts);
      std::vector<const void*> inputs(n);
      for (int k = 0; k < n; ++k) inputs[k] = element_at(rv->send[k], offsets[rank], es);
      reduce_elements(part.type, part.op, inputs, part.recv, part.counts[rank]);
      const uint64_t total = offsets.back() + part.counts.back();
      count_sent(rank, (total - part.counts[rank]) * es);
      break;
    }
    case CollectiveKind::kAllGather: {
      const std::vector<uint64_t> offsets = offsets_of(part.counts);
      for (int c = 0; c < n; ++c) copy_bytes(element_at(part.recv, offsets[c], es), rv->send[c], part.counts[c] * es);
      count_sent(rank, part.counts[rank] * es * (n - 1));
      break;
    }
    case CollectiveKind::kBroadcast:
      copy_bytes(part.recv, rv->send[part.peer], part.count * es);
      if (rank == part.peer) count_sent(rank, part.count * es * (n - 1));
      break;
    default: break;  // a barrier is the meeting itself
  }
  if (part.kind == CollectiveKind::kBarrier) return;
  // Peers read this rank's buffers until they are done: the part ends when every rank's has.
  lock.lock();
  wait_for_phase(lock, rv->phase_of_rank, 2, rank, seq, part, timeout_);
}

void HostCommunicator::run_send(int rank, const CollectivePart& part) {
  const uint64_t bytes = part.count * size_of(part.type);
  Message message{part, std::vector<std::byte>(bytes)};
  copy_bytes(message.data.data(), part.send, bytes);
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (broken()) {
      lock.unlock();
      throw_if_broken();
    }
    ++sends_[{rank, part.peer}];
    mail_[{rank, part.peer}].push_back(std::move(message));
  }
  changed_.notify_all();
  count_sent(rank, bytes);
}

void HostCommunicator::run_recv(int rank, const CollectivePart& part) {
  const std::pair<int, int> key{part.peer, rank};
  std::unique_lock<std::mutex> lock(mu_);
  if (broken()) {
    lock.unlock();
    throw_if_broken();
  }
  const uint64_t seq = recvs_[key]++;
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  while (mail_[key].empty()) {
    if (broken()) fail_broken(lock);
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout && !broken() && mail_[key].empty())
      break_with(lock,
                 fmt::format("{} (message #{} from rank {} to rank {}) timed out on rank {} ({}): rank {} ({}) did "
                             "not send within {} ms (MOREH_COLLECTIVE_TIMEOUT); a peer is dead or its stream is stuck",
                             part.describe(), seq, part.peer, rank, rank, device(rank).name(), part.peer,
                             device(part.peer).name(), timeout_.count()),
                 true);
  }
  Message message = std::move(mail_[key].front());
  mail_[key].pop_front();
  if (message.part.type != part.type || message.part.count != part.count)
    break_with(lock,
               fmt::format("message #{} from rank {} to rank {}: rank {} issued {} but rank {} issued {}", seq,
                           part.peer, rank, part.peer, message.part.describe(), rank, part.describe()),
               false);
  lock.unlock();
  copy_bytes(part.recv, message.data.data(), message.data.size());
}

std::unique_ptr<Communicator> HostCommunicator::make_group(const std::vector<int>& ranks) const {
  std::vector<PhysicalDevice*> members;
  for (int r : ranks) members.push_back(&device(r));
  return std::make_unique<HostCommunicator>(std::move(members), timeout_);
}

}  // namespace moreh::runtime
