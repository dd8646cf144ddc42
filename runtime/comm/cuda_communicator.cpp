#include "runtime/comm/cuda_communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>
#include <numeric>
#include <set>

#include "runtime/comm/collective_kernels.h"
#include "runtime/cuda/cuda_context.h"
#include "runtime/cuda/cuda_device.h"
#include "runtime/cuda/cuda_driver.h"
#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"
#ifdef MOREH_WITH_NVRTC
#include "runtime/cuda/kernel_cache.h"
#endif

namespace moreh::runtime {

using cuda::check;
using cuda::require_driver;
using cuda::ScopedContext;

namespace {

constexpr int kPhases = 3;  // met (inputs ready), reduced (all_reduce's chunks), done (peers finished reading)

CUevent record_on(CUstream stream) {
  const cuda::Driver& d = require_driver();
  CUevent event = nullptr;
  check(d.EventCreate(&event, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  const CUresult r = d.EventRecord(event, stream);
  if (r != CUDA_SUCCESS) {
    d.EventDestroy(event);
    check(r, "cuEventRecord");
  }
  return event;
}

}  // namespace

CudaCollectivePath choose_cuda_collective_path(const std::vector<int>& ordinals) {
  const std::set<int> distinct(ordinals.begin(), ordinals.end());
  if (distinct.size() <= 1) return CudaCollectivePath::kSameGpu;
  if (distinct.size() == ordinals.size()) return CudaCollectivePath::kNccl;
  return CudaCollectivePath::kMixed;
}

std::string_view name_of(CudaCollectivePath path) {
  switch (path) {
    case CudaCollectivePath::kSameGpu: return "same-GPU";
    case CudaCollectivePath::kNccl: return "NCCL";
    case CudaCollectivePath::kMixed: return "mixed";
  }
  return "?";
}

struct CudaCommunicator::Rendezvous {
  CUcontext context = nullptr;
  CollectivePart first;
  int first_rank = -1;
  std::vector<const void*> send;
  std::vector<void*> recv;
  std::vector<int> phase_of_rank;
  std::vector<std::array<CUevent, kPhases>> events;  // [rank][phase], recorded on the rank's stream

  ~Rendezvous() {
    // Every stream that waits on these has issued its cuStreamWaitEvent; the driver frees an event still
    // pending once the GPU reaches it.
    try {
      ScopedContext scope(context);
      for (auto& per_rank : events)
        for (CUevent e : per_rank)
          if (e) require_driver().EventDestroy(e);
    } catch (const std::exception& e) {
      log().warn("CudaCommunicator: could not destroy a collective's events: {}", e.what());
    }
  }
};

CudaCommunicator::CudaCommunicator(std::vector<PhysicalDevice*> devices, std::chrono::milliseconds timeout)
    : Communicator(std::move(devices)), timeout_(timeout), next_seq_(size(), 0) {
  std::vector<int> ordinals;
  for (int r = 0; r < size(); ++r) {
    if (device(r).kind() != DeviceKind::kCuda)
      throw ConfigError("CudaCommunicator works on CUDA devices only; rank " + std::to_string(r) + " is " +
                        device(r).name());
    ordinals.push_back(cuda(r).ordinal());
  }
  path_ = choose_cuda_collective_path(ordinals);
  if (path_ == CudaCollectivePath::kNccl)
    throw ConfigError(fmt::format("{} ranks on distinct GPUs ({}): the same-GPU communicator serves ranks that share "
                                  "one GPU; ranks on distinct GPUs use NCCL (NcclCommunicator)",
                                  size(), fmt::join(ordinals, ", ")));
  if (path_ == CudaCollectivePath::kMixed)
    throw ConfigError(fmt::format("ranks on GPUs [{}]: a CUDA communicator needs every rank on one GPU (same-GPU "
                                  "path) or each on its own GPU (NCCL path), not a mix",
                                  fmt::join(ordinals, ", ")));
  if (size() > kMaxReduceKernelInputs)
    throw ConfigError(fmt::format("{} ranks on one GPU: the same-GPU path reduces at most {} ranks", size(),
                                  kMaxReduceKernelInputs));
  context_ = cuda(0).context();
}

CudaCommunicator::~CudaCommunicator() {
  try {
    ScopedContext scope(context_);
    for (auto& [pair, queue] : mail_)
      for (Message& m : queue)
        if (m.sent) require_driver().EventDestroy(m.sent);
    mail_.clear();
    meeting_.clear();
    reap_retired(true);
  } catch (const std::exception& e) {
    log().warn("CudaCommunicator: closing: {}", e.what());
  }
}

CudaDevice& CudaCommunicator::cuda(int rank) const { return static_cast<CudaDevice&>(device(rank)); }

void CudaCommunicator::enqueue_part(int rank, CollectivePart part) {
  device(rank).submit([this, rank, part = std::move(part)] { run_part(rank, part); });
}

void CudaCommunicator::run_part(int rank, const CollectivePart& part) {
  throw_if_broken();
  ScopedContext scope(context_);
  reap_retired(false);
  switch (part.kind) {
    case CollectiveKind::kSend: run_send(rank, part); break;
    case CollectiveKind::kRecv: run_recv(rank, part); break;
    default: run_collective(rank, part); break;
  }
  count_completed(rank);
}

void CudaCommunicator::drop_pending() {
  meeting_.clear();
  for (auto& [pair, queue] : mail_)
    for (Message& m : queue)
      if (m.sent) require_driver().EventDestroy(m.sent);
  mail_.clear();
}

void CudaCommunicator::phase(std::unique_lock<std::mutex>& lock, Rendezvous& rv, int ph, int rank, uint64_t seq,
                             const CollectivePart& part) {
  const CUstream stream = cuda(rank).stream();
  rv.events[rank][ph] = record_on(stream);
  wait_for_phase(lock, rv.phase_of_rank, ph, rank, seq, part, timeout_);
  for (int p = 0; p < size(); ++p)
    if (p != rank) check(require_driver().StreamWaitEvent(stream, rv.events[p][ph], 0), "cuStreamWaitEvent");
}

void CudaCommunicator::reduce(int rank, const CollectivePart& part, const std::vector<const void*>& inputs,
                              void* out, uint64_t count) {
  if (count == 0) return;
#ifdef MOREH_WITH_NVRTC
  ElementwiseArguments args;
  args.count = count;
  args.inputs = inputs;
  args.outputs = {out};
  cuda::KernelCache::instance().launch(reduce_kernel(part.type, part.op, static_cast<int>(inputs.size())),
                                       cuda(rank).stream(), args);
#else
  (void)inputs;
  (void)out;
  throw Error(fmt::format("{} on {}: the same-GPU path reduces with a generated kernel, and this build has no NVRTC",
                          part.describe(), device(rank).name()));
#endif
}

void CudaCommunicator::run_collective(int rank, const CollectivePart& part) {
  const int n = size();
  const uint64_t es = size_of(part.type);
  std::unique_lock<std::mutex> lock(mu_);
  if (broken()) fail_broken(lock);
  const uint64_t seq = next_seq_[rank]++;
  std::shared_ptr<Rendezvous>& slot = meeting_[seq];
  if (!slot) {
    slot = std::make_shared<Rendezvous>();
    slot->context = context_;
    slot->first = part;
    slot->first_rank = rank;
    slot->send.assign(n, nullptr);
    slot->recv.assign(n, nullptr);
    slot->phase_of_rank.assign(n, 0);
    slot->events.assign(n, std::array<CUevent, kPhases>{});
  } else {
    require_same(lock, seq, rank, part, slot->first_rank, slot->first);
  }
  const std::shared_ptr<Rendezvous> rv = slot;
  rv->send[rank] = part.send;
  rv->recv[rank] = part.recv;
  phase(lock, *rv, 0, rank, seq, part);
  meeting_.erase(seq);
  lock.unlock();
  if (part.kind == CollectiveKind::kBarrier) return;  // the streams already wait for each other's arrival

  CudaDevice& me = cuda(rank);
  auto copy = [&](void* dst, const void* src, uint64_t bytes) {
    if (bytes != 0 && dst != src) me.copy_in_stream(dst, src, bytes);
  };
  try {
    switch (part.kind) {
      case CollectiveKind::kAllReduce: {
        const std::vector<uint64_t> chunks = even_chunks(part.count, n), offsets = offsets_of(chunks);
        std::vector<const void*> inputs(n);
        for (int k = 0; k < n; ++k) inputs[k] = element_at(rv->send[k], offsets[rank], es);
        reduce(rank, part, inputs, element_at(part.recv, offsets[rank], es), chunks[rank]);
        count_sent(rank, (part.count - chunks[rank]) * es);
        lock.lock();
        phase(lock, *rv, 1, rank, seq, part);
        lock.unlock();
        for (int c = 0; c < n; ++c)
          if (c != rank) copy(element_at(part.recv, offsets[c], es), element_at(rv->recv[c], offsets[c], es), chunks[c] * es);
        count_sent(rank, chunks[rank] * es * (n - 1));
        break;
      }
      case CollectiveKind::kReduceScatter: {
        const std::vector<uint64_t> offsets = offsets_of(part.counts);
        std::vector<const void*> inputs(n);
        for (int k = 0; k < n; ++k) inputs[k] = element_at(rv->send[k], offsets[rank], es);
        reduce(rank, part, inputs, part.recv, part.counts[rank]);
        const uint64_t total = offsets.back() + part.counts.back();
        count_sent(rank, (total - part.counts[rank]) * es);
        break;
      }
      case CollectiveKind::kAllGather: {
        const std::vector<uint64_t> offsets = offsets_of(part.counts);
        for (int c = 0; c < n; ++c) copy(element_at(part.recv, offsets[c], es), rv->send[c], part.counts[c] * es);
        count_sent(rank, part.counts[rank] * es * (n - 1));
        break;
      }
      case CollectiveKind::kBroadcast:
        copy(part.recv, rv->send[part.peer], part.count * es);
        if (rank == part.peer) count_sent(rank, part.count * es * (n - 1));
        break;
      default: break;
    }
  } catch (const TimeoutError&) {
    throw;
  } catch (const CollectiveError&) {
    throw;
  } catch (const std::exception& e) {
    // A GPU failure here would leave the peers waiting until the bound: break the communicator instead.
    if (!lock.owns_lock()) lock.lock();
    break_with(lock,
               fmt::format("{} (collective #{}, same-GPU path) failed on rank {} ({}): {}", part.describe(), seq,
                           rank, device(rank).name(), e.what()),
               false);
  }
  // Peers' streams read this rank's buffers: its stream goes on once theirs are past the reads.
  lock.lock();
  phase(lock, *rv, 2, rank, seq, part);
}

void CudaCommunicator::run_send(int rank, const CollectivePart& part) {
  const uint64_t bytes = part.count * size_of(part.type);
  Message message{part, nullptr, nullptr};
  CudaDevice& me = cuda(rank);
  if (bytes != 0) {
    message.staging = me.allocate(bytes);
    me.copy_in_stream(message.staging->data(), part.send, bytes);
  }
  message.sent = record_on(me.stream());
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (broken()) {
      require_driver().EventDestroy(message.sent);
      fail_broken(lock);
    }
    mail_[{rank, part.peer}].push_back(std::move(message));
  }
  changed_.notify_all();
  count_sent(rank, bytes);
}

void CudaCommunicator::run_recv(int rank, const CollectivePart& part) {
  const std::pair<int, int> key{part.peer, rank};
  std::unique_lock<std::mutex> lock(mu_);
  if (broken()) fail_broken(lock);
  const uint64_t seq = recvs_[key]++;
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  while (mail_[key].empty()) {
    if (broken()) fail_broken(lock);
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout && !broken() && mail_[key].empty())
      break_with(lock,
                 fmt::format("{} (message #{} from rank {} to rank {}, same-GPU path) timed out on rank {} ({}): rank "
                             "{} ({}) did not send within {} ms (MOREH_COLLECTIVE_TIMEOUT); a peer is dead or its "
                             "stream is stuck",
                             part.describe(), seq, part.peer, rank, rank, device(rank).name(), part.peer,
                             device(part.peer).name(), timeout_.count()),
                 true);
  }
  Message message = std::move(mail_[key].front());
  mail_[key].pop_front();
  if (message.part.type != part.type || message.part.count != part.count) {
    require_driver().EventDestroy(message.sent);
    break_with(lock,
               fmt::format("message #{} from rank {} to rank {}: rank {} issued {} but rank {} issued {}", seq,
                           part.peer, rank, part.peer, message.part.describe(), rank, part.describe()),
               false);
  }
  lock.unlock();
  CudaDevice& me = cuda(rank);
  const cuda::Driver& d = require_driver();
  const CUresult waited = d.StreamWaitEvent(me.stream(), message.sent, 0);
  d.EventDestroy(message.sent);  // freed once the GPU is past it; the wait above is already issued
  check(waited, "cuStreamWaitEvent");
  if (!message.staging) return;
  me.copy_in_stream(part.recv, message.staging->data(), message.staging->bytes());
  Retired retired{std::move(message.staging), record_on(me.stream())};
  lock.lock();
  retired_.push_back(std::move(retired));
}

void CudaCommunicator::reap_retired(bool wait) {
  std::vector<Retired> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < retired_.size();) {
      const CUresult r = wait ? require_driver().EventSynchronize(retired_[i].done)
                              : require_driver().EventQuery(retired_[i].done);
      if (r == CUDA_ERROR_NOT_READY) {
        ++i;
        continue;
      }
      // Complete, or the GPU failed (the device reports that): either way nothing reads the block any more.
      done.push_back(std::move(retired_[i]));
      retired_.erase(retired_.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
  for (Retired& r : done) require_driver().EventDestroy(r.done);
  // The blocks go here, outside the lock: their pools may call the driver.
}

std::unique_ptr<Communicator> CudaCommunicator::make_group(const std::vector<int>& ranks) const {
  std::vector<PhysicalDevice*> members;
  for (int r : ranks) members.push_back(&device(r));
  return std::make_unique<CudaCommunicator>(std::move(members), timeout_);
}

}  // namespace moreh::runtime
