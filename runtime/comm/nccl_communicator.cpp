#include "runtime/comm/nccl_communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <future>
#include <optional>
#include <thread>

#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"
#ifdef MOREH_WITH_CUDA
#include "runtime/comm/cuda_communicator.h"
#include "runtime/cuda/cuda_context.h"
#include "runtime/cuda/cuda_device.h"
#include "runtime/cuda/cuda_driver.h"
#endif

namespace moreh::runtime {

namespace {

bool reduces(CollectiveKind kind) { return kind == CollectiveKind::kAllReduce || kind == CollectiveKind::kReduceScatter; }

bool all_equal(const std::vector<uint64_t>& counts) {
  for (uint64_t c : counts)
    if (c != counts.front()) return false;
  return true;
}

// The GPU ordinal behind each rank (CUDA devices), or the rank itself (host devices, for a host-memory
// stand-in library).
std::vector<int> ordinals_of(const Communicator& comm) {
  std::vector<int> ordinals;
  for (int r = 0; r < comm.size(); ++r) {
#ifdef MOREH_WITH_CUDA
    if (comm.device(r).kind() == DeviceKind::kCuda) {
      ordinals.push_back(static_cast<CudaDevice&>(comm.device(r)).ordinal());
      continue;
    }
#endif
    ordinals.push_back(r);
  }
  return ordinals;
}

}  // namespace

// A send and its recv, met on the host before either goes to NCCL.
struct NcclCommunicator::Message {
  CollectivePart send, recv;
  bool has_send = false, has_recv = false;
  int looked = 0;  // sides past the meeting; the entry goes when both are
};

NcclCommunicator::NcclCommunicator(std::vector<PhysicalDevice*> devices, std::chrono::milliseconds timeout,
                                   std::shared_ptr<const nccl::Library> library)
    : Communicator(std::move(devices)), timeout_(timeout), library_(std::move(library)), next_seq_(size(), 0) {
  if (!library_) throw ConfigError("an NCCL communicator needs the NCCL library");
  const DeviceKind kind = device(0).kind();
  for (int r = 1; r < size(); ++r)
    if (device(r).kind() != kind)
      throw ConfigError(fmt::format("an NCCL communicator's ranks are all CUDA devices or all host devices; rank 0 "
                                    "is {} and rank {} is {}",
                                    device(0).name(), r, device(r).name()));
  const std::vector<int> ordinals = ordinals_of(*this);
  if (kind == DeviceKind::kCuda) {
#ifdef MOREH_WITH_CUDA
    if (size() > 1 && choose_cuda_collective_path(ordinals) != CudaCollectivePath::kNccl)
      throw ConfigError(fmt::format("ranks on GPUs [{}]: NCCL needs each rank on its own GPU (ranks sharing a GPU "
                                    "use the same-GPU communicator)",
                                    fmt::join(ordinals, ", ")));
#else
    throw ConfigError("CUDA devices in a build without CUDA");
#endif
  } else if (!library_->host_memory()) {
    throw ConfigError(fmt::format("{} moves GPU memory: host devices use the host communicator, not NCCL",
                                  library_->name()));
  }

  for (int r = 0; r < size(); ++r) barrier_word_.push_back(device(r).allocate(sizeof(float)));
  comms_.assign(size(), nullptr);
  int result = nccl::kSuccess;
  {
#ifdef MOREH_WITH_CUDA
    // ncclCommInitAll sets the calling thread's current device; the caller's context comes back after.
    CUcontext previous = nullptr;
    if (kind == DeviceKind::kCuda) cuda::check(cuda::require_driver().CtxGetCurrent(&previous), "cuCtxGetCurrent");
#endif
    result = library_->api().CommInitAll(comms_.data(), size(), ordinals.data());
#ifdef MOREH_WITH_CUDA
    if (kind == DeviceKind::kCuda) cuda::require_driver().CtxSetCurrent(previous);
#endif
  }
  if (result != nccl::kSuccess) {
    comms_.clear();
    throw ConfigError(fmt::format("ncclCommInitAll over {} ranks (GPUs [{}]) failed with NCCL {} from {}: {}", size(),
                                  fmt::join(ordinals, ", "), nccl::version_string(library_->version()),
                                  library_->name(), library_->describe(result, nullptr)));
  }
  log().info("moreh: NCCL {} ({}) connects {} ranks on {} [{}]", nccl::version_string(library_->version()),
             library_->name(), size(), kind == DeviceKind::kCuda ? "GPUs" : "host devices", fmt::join(ordinals, ", "));
}

NcclCommunicator::~NcclCommunicator() {
  if (comms_.empty()) return;
  const nccl::Api& api = library_->api();
  if (broken()) {
    // A peer may never come: aborting is local and does not wait for it.
    for (int r = 0; r < size(); ++r)
      if (const int result = api.CommAbort(comms_[r]); result != nccl::kSuccess)
        log().warn("NcclCommunicator: ncclCommAbort on rank {}: {}", r, library_->describe(result, nullptr));
    return;
  }
  // ncclCommDestroy is collective among the ranks of a node: one thread per rank, bounded by the timeout.
  std::vector<std::future<int>> results;
  for (int r = 0; r < size(); ++r) {
    std::packaged_task<int()> task([library = library_, comm = comms_[r]] { return library->api().CommDestroy(comm); });
    results.push_back(task.get_future());
    std::thread(std::move(task)).detach();
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  for (int r = 0; r < size(); ++r) {
    if (results[r].wait_until(deadline) != std::future_status::ready) {
      log().error("NcclCommunicator: ncclCommDestroy on rank {} ({}) did not finish within {} ms; left running", r,
                  device(r).name(), timeout_.count());
      continue;
    }
    if (const int result = results[r].get(); result != nccl::kSuccess)
      log().warn("NcclCommunicator: ncclCommDestroy on rank {}: {}", r, library_->describe(result, nullptr));
  }
}

void* NcclCommunicator::stream(int rank) const {
#ifdef MOREH_WITH_CUDA
  if (device(rank).kind() == DeviceKind::kCuda) return static_cast<CudaDevice&>(device(rank)).stream();
#endif
  (void)rank;
  return nullptr;  // a host-memory stand-in runs the part where it is called
}

void NcclCommunicator::enqueue_part(int rank, CollectivePart part) {
  device(rank).submit([this, rank, part = std::move(part)] { run_part(rank, part); });
}

void NcclCommunicator::require_reducible(int rank, const CollectivePart& part) const {
  if (reduces(part.kind) && !is_reducible(part.type))
    throw ConfigError(fmt::format("{} on rank {}: {} cannot be reduced", part.describe(), rank, name_of(part.type)));
}

void NcclCommunicator::count_issued(int rank, const CollectivePart& part) {
  count_sent(rank, ring_bytes_sent(part, rank, size()));
  count_completed(rank);
}

void NcclCommunicator::run_part(int rank, const CollectivePart& part) {
  throw_if_broken();
  require_reducible(rank, part);
  const bool p2p = part.kind == CollectiveKind::kSend || part.kind == CollectiveKind::kRecv;
  const uint64_t seq = p2p ? pair_up(rank, part) : meet(rank, {part});
  issue(rank, part, seq);
  count_issued(rank, part);
}

void NcclCommunicator::run_group(int rank, const std::vector<CollectivePart>& parts) {
  if (parts.size() == 1) return run_part(rank, parts[0]);
  throw_if_broken();
  for (const CollectivePart& part : parts) require_reducible(rank, part);
  const uint64_t seq = meet(rank, parts);
#ifdef MOREH_WITH_CUDA
  std::optional<cuda::ScopedContext> scope;
  if (device(rank).kind() == DeviceKind::kCuda) scope.emplace(static_cast<CudaDevice&>(device(rank)).context());
#endif
  const nccl::Api& api = library_->api();
  check(rank, api.GroupStart(), "ncclGroupStart", parts[0], seq);
  struct EndTheGroup {  // also when a call in it failed (the communicator is broken then)
    const nccl::Api& api;
    bool ended = false;
    ~EndTheGroup() {
      if (!ended) api.GroupEnd();
    }
  } end{api};
  for (const CollectivePart& part : parts) issue(rank, part, seq);
  end.ended = true;
  check(rank, api.GroupEnd(), "ncclGroupEnd", parts[0], seq);
  for (const CollectivePart& part : parts) count_issued(rank, part);
}

void NcclCommunicator::drop_pending() {
  meeting_.clear();
  messages_.clear();
}

bool NcclCommunicator::restart_ranks() {
  if (nccl_failed_) return false;
  drop_pending();
  std::fill(next_seq_.begin(), next_seq_.end(), 0);
  sends_.clear();
  recvs_.clear();
  return true;
}

uint64_t NcclCommunicator::meet(int rank, const std::vector<CollectivePart>& parts) {
  std::unique_lock<std::mutex> lock(mu_);
  if (broken()) fail_broken(lock);
  const uint64_t seq = next_seq_[rank]++;
  std::shared_ptr<Meeting>& slot = meeting_[seq];
  if (!slot) {
    slot = std::make_shared<Meeting>();
    slot->first = parts;
    slot->first_rank = rank;
    slot->phase_of_rank.assign(size(), 0);
  } else {
    const std::vector<CollectivePart>& first = slot->first;
    if (first.size() != parts.size())
      break_with(lock,
                 fmt::format("collective #{}: rank {} issued a group of {} collectives (the first {}) where rank {} "
                             "issued {} (the first {}); every rank must issue the same collectives in the same order",
                             seq, rank, parts.size(), parts[0].describe(), slot->first_rank, first.size(),
                             first[0].describe()),
                 false);
    for (size_t i = 0; i < parts.size(); ++i) require_same(lock, seq, rank, parts[i], slot->first_rank, first[i]);
  }
  const std::shared_ptr<Meeting> meeting = slot;
  wait_for_phase(lock, meeting->phase_of_rank, 0, rank, seq, parts[0], timeout_);
  meeting_.erase(seq);
  return seq;
}

uint64_t NcclCommunicator::pair_up(int rank, const CollectivePart& part) {
  const bool sending = part.kind == CollectiveKind::kSend;
  const std::pair<int, int> key = sending ? std::pair{rank, part.peer} : std::pair{part.peer, rank};
  std::unique_lock<std::mutex> lock(mu_);
  if (broken()) fail_broken(lock);
  const uint64_t k = (sending ? sends_ : recvs_)[key]++;
  std::shared_ptr<Message>& slot = messages_[key][k];
  if (!slot) slot = std::make_shared<Message>();
  const std::shared_ptr<Message> m = slot;
  (sending ? m->send : m->recv) = part;
  (sending ? m->has_send : m->has_recv) = true;
  changed_.notify_all();
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  auto arrived = [&] { return sending ? m->has_recv : m->has_send; };
  while (!arrived()) {
    if (broken()) fail_broken(lock);
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout && !broken() && !arrived())
      break_with(lock,
                 fmt::format("{} (message #{} from rank {} to rank {}, NCCL path) timed out on rank {} ({}): rank {} "
                             "({}) did not {} within {} ms (MOREH_COLLECTIVE_TIMEOUT); a peer is dead or its stream "
                             "is stuck",
                             part.describe(), k, key.first, key.second, rank, device(rank).name(), part.peer,
                             device(part.peer).name(), sending ? "receive" : "send", timeout_.count()),
                 true);
  }
  if (broken()) fail_broken(lock);
  if (m->send.type != m->recv.type || m->send.count != m->recv.count)
    break_with(lock,
               fmt::format("message #{} from rank {} to rank {}: rank {} issued {} but rank {} issued {}", k, key.first,
                           key.second, key.first, m->send.describe(), key.second, m->recv.describe()),
               false);
  if (++m->looked == 2) messages_[key].erase(k);
  return k;
}

void NcclCommunicator::check(int rank, int result, const char* call, const CollectivePart& part, uint64_t seq) {
  bool asynchronous = false;
  if (result == nccl::kSuccess) {
    int state = nccl::kSuccess;
    if (library_->api().CommGetAsyncError(comms_[rank], &state) != nccl::kSuccess || state == nccl::kSuccess ||
        state == nccl::kInProgress)
      return;
    result = state;
    asynchronous = true;
  }
  std::unique_lock<std::mutex> lock(mu_);
  nccl_failed_ = true;
  break_with(lock,
             fmt::format("{} (#{}, NCCL path) failed on rank {} ({}): {} {}{}", part.describe(), seq, rank,
                         device(rank).name(), call, asynchronous ? "left the communicator with " : "returned ",
                         library_->describe(result, comms_[rank])),
             false);
}

void NcclCommunicator::issue(int rank, const CollectivePart& part, uint64_t seq) {
  const nccl::Api& api = library_->api();
#ifdef MOREH_WITH_CUDA
  std::optional<cuda::ScopedContext> scope;
  if (device(rank).kind() == DeviceKind::kCuda) scope.emplace(static_cast<CudaDevice&>(device(rank)).context());
#endif
  const nccl::Comm comm = comms_[rank];
  void* const s = stream(rank);
  const int t = nccl::type_code(part.type), op = nccl::red_op(part.op), n = size();
  const uint64_t es = size_of(part.type);
  // One NCCL call per slice inside a group (uneven counts); the group ends even when a call failed.
  auto grouped = [&](const char* call, auto&& per_slice) {
    check(rank, api.GroupStart(), "ncclGroupStart", part, seq);
    int first_error = nccl::kSuccess;
    for (int c = 0; c < n; ++c)
      if (part.counts[c] != 0)
        if (const int r = per_slice(c); r != nccl::kSuccess && first_error == nccl::kSuccess) first_error = r;
    const int end = api.GroupEnd();
    check(rank, first_error, call, part, seq);
    check(rank, end, "ncclGroupEnd", part, seq);
  };
  switch (part.kind) {
    case CollectiveKind::kAllReduce:
      if (part.count != 0)
        check(rank, api.AllReduce(part.send, part.recv, part.count, t, op, comm, s), "ncclAllReduce", part, seq);
      break;
    case CollectiveKind::kReduceScatter: {
      if (all_equal(part.counts)) {
        if (part.counts[0] != 0)
          check(rank, api.ReduceScatter(part.send, part.recv, part.counts[0], t, op, comm, s), "ncclReduceScatter",
                part, seq);
        break;
      }
      const std::vector<uint64_t> offsets = offsets_of(part.counts);
      // Slice c reduced onto rank c; the others' receive buffer is unused, so their own slice stands in.
      grouped("ncclReduce", [&](int c) {
        const void* in = element_at(part.send, offsets[c], es);
        void* out = c == rank ? part.recv : const_cast<std::byte*>(static_cast<const std::byte*>(in));
        return api.Reduce(in, out, part.counts[c], t, op, c, comm, s);
      });
      break;
    }
    case CollectiveKind::kAllGather: {
      if (all_equal(part.counts)) {
        if (part.counts[0] != 0)
          check(rank, api.AllGather(part.send, part.recv, part.counts[0], t, comm, s), "ncclAllGather", part, seq);
        break;
      }
      const std::vector<uint64_t> offsets = offsets_of(part.counts);
      grouped("ncclBroadcast", [&](int c) {
        void* slice = element_at(part.recv, offsets[c], es);
        return api.Broadcast(c == rank ? part.send : slice, slice, part.counts[c], t, c, comm, s);
      });
      break;
    }
    case CollectiveKind::kBroadcast:
      if (part.count != 0)
        check(rank, api.Broadcast(rank == part.peer ? part.send : part.recv, part.recv, part.count, t, part.peer, comm, s),
              "ncclBroadcast", part, seq);
      break;
    case CollectiveKind::kSend:
      if (part.count != 0) check(rank, api.Send(part.send, part.count, t, part.peer, comm, s), "ncclSend", part, seq);
      break;
    case CollectiveKind::kRecv:
      if (part.count != 0) check(rank, api.Recv(part.recv, part.count, t, part.peer, comm, s), "ncclRecv", part, seq);
      break;
    case CollectiveKind::kBarrier: {
      void* word = barrier_word_[rank]->data();
      check(rank, api.AllReduce(word, word, 1, nccl::kFloat32, nccl::kSum, comm, s), "ncclAllReduce", part, seq);
      break;
    }
  }
}

std::unique_ptr<Communicator> NcclCommunicator::make_group(const std::vector<int>& ranks) const {
  std::vector<PhysicalDevice*> members;
  for (int r : ranks) members.push_back(&device(r));
  return std::make_unique<NcclCommunicator>(std::move(members), timeout_, library_);
}

}  // namespace moreh::runtime
