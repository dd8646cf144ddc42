// Collective communication among the physical devices behind the virtual one: the interface that the
// in-process host implementation (HostCommunicator), NCCL (CUDA devices) and Gloo (across processes)
// implement. A communicator has N ranks; rank r is bound to device(r), and its buffers are that device's
// memory (host pointers for host devices).
//
// Collectives are stream-ordered, as in NCCL: each rank issues its part on its own device's in-order
// stream, and the collective completes once every rank's part has run. Every rank must issue the same
// collectives in the same order (send/recv are matched per (source, destination) pair instead). A part
// whose peers do not arrive within the communicator's bound fails with TimeoutError naming the collective
// and the missing ranks; from then on the communicator is broken and every part fails at once with
// CollectiveError, so a dead peer gives a clear error rather than a hang later.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/data_type.h"
#include "runtime/device/device.h"
#include "runtime/kernels/elementwise_reduction.h"

namespace moreh::runtime {

enum class CollectiveKind : uint8_t { kAllReduce, kReduceScatter, kAllGather, kBroadcast, kSend, kRecv, kBarrier };

std::string_view name_of(CollectiveKind kind);

// One rank's part of one collective. Counts are elements of `type`.
//   all_reduce:     send[count] -> recv[count], reduced with `op` over the ranks; send == recv is in place.
//   reduce_scatter: send[sum(counts)] -> recv[counts[rank]]: the rank's slice (slices laid out in rank
//                   order) reduced over the ranks; recv == send + offset of the slice is in place.
//   all_gather:     send[counts[rank]] -> recv[sum(counts)], slices in rank order; send == recv + offset
//                   of the rank's slice is in place. Uneven counts are the *v variants (MPI_Allgatherv).
//   broadcast:      the root's send[count] -> every rank's recv[count] (`peer` is the root; only the
//                   root's send is read; send == recv on the root is in place).
//   send / recv:    count elements to / from rank `peer`.
//   barrier:        no data; completes when every rank has reached it.
struct CollectivePart {
  CollectiveKind kind = CollectiveKind::kBarrier;
  DataType type = DataType::kFloat32;
  ReduceOp op = ReduceOp::kSum;
  const void* send = nullptr;
  void* recv = nullptr;
  uint64_t count = 0;
  std::vector<uint64_t> counts;  // reduce_scatter, all_gather: one per rank
  int peer = -1;                 // broadcast: root; send: destination; recv: source

  // "all_reduce(sum, float32, 1000 elements)", for errors and the log.
  std::string describe() const;
  // Whether two ranks' parts are the same collective (kind, type, op, counts, root).
  bool matches(const CollectivePart& other) const;
  // An all_reduce of `count` elements of `type` from `send` into `recv` (the same pointer: in place).
  static CollectivePart all_reduce(const void* send, void* recv, uint64_t count, DataType type, ReduceOp op);
};

// What one rank has put on the wire, as counted by the algorithm that moved it.
struct CollectiveTraffic {
  uint64_t bytes_sent = 0;
  uint64_t operations = 0;  // parts run to completion
};

// Bytes each rank sends in a ring all-reduce (chunked reduce-scatter then all-gather) of `bytes` over
// `ranks` ranks: 2·(N−1)/N · bytes. The planner's cost model and bench report against this ideal.
double ring_all_reduce_bytes_per_rank(uint64_t bytes, int ranks);

// Where each rank's slice starts, in elements, for slices laid out in rank order.
std::vector<uint64_t> offsets_of(const std::vector<uint64_t>& counts);
// all_reduce's chunks: N nearly equal pieces, the first count % N one element longer.
std::vector<uint64_t> even_chunks(uint64_t count, int n);
// Bytes rank's part puts on the wire under the ring algorithms every communicator counts by: all_reduce
// reduces its chunk and sends it to N−1 peers after sending the rest, reduce_scatter sends every slice but
// its own, all_gather sends its slice to N−1 peers, broadcast's root sends to N−1 peers, send its message.
uint64_t ring_bytes_sent(const CollectivePart& part, int rank, int ranks);

// The address of element `elements` of a buffer of `element_size`-byte elements.
inline const std::byte* element_at(const void* p, uint64_t elements, uint64_t element_size) {
  return static_cast<const std::byte*>(p) + elements * element_size;
}
inline std::byte* element_at(void* p, uint64_t elements, uint64_t element_size) {
  return static_cast<std::byte*>(p) + elements * element_size;
}

class Communicator {
 public:
  // Distinct devices, one per rank; throws ConfigError otherwise.
  explicit Communicator(std::vector<PhysicalDevice*> devices);
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int size() const { return static_cast<int>(devices_.size()); }
  PhysicalDevice& device(int rank) const { return *devices_.at(rank); }

  // Issues rank's part at the end of device(rank)'s stream and returns; the part's errors surface at that
  // device's synchronize(), as any stream work's do. The buffers must stay valid until the part has run,
  // and the communicator must outlive every part issued. Bad arguments throw ConfigError here; a broken
  // communicator throws CollectiveError here.
  void enqueue(int rank, CollectivePart part);
  // Runs rank's part at the current point of device(rank)'s stream, for code that is itself running on
  // that stream (an executor's program); returns when the part is complete.
  void run_in_stream(int rank, const CollectivePart& part);
  // Runs rank's `parts`, in order, at the current point of device(rank)'s stream, as one group: every rank
  // passes the same collectives (no send/recv: ConfigError), and an implementation may meet its peers once
  // and launch them together (NCCL: one meeting and one ncclGroupStart/End, so a step's gradient
  // all-reduces cost one rendezvous instead of one each). The others run them one after the other.
  void run_group_in_stream(int rank, const std::vector<CollectivePart>& parts);

  // Shorthands for enqueue().
  void all_reduce(int rank, const void* send, void* recv, uint64_t count, DataType type, ReduceOp op);
  void reduce_scatter(int rank, const void* send, void* recv, std::vector<uint64_t> counts, DataType type,
                      ReduceOp op);
  void all_gather(int rank, const void* send, void* recv, std::vector<uint64_t> counts, DataType type);
  void broadcast(int rank, const void* send, void* recv, uint64_t count, DataType type, int root);
  void send(int rank, const void* data, uint64_t count, DataType type, int peer);
  void recv(int rank, void* data, uint64_t count, DataType type, int peer);
  void barrier(int rank);

  bool broken() const { return broken_.load(); }
  // Breaks the communicator from outside (a composite whose other half failed): parts waiting for their
  // peers fail at once with CollectiveError carrying `reason`, as do later ones. No-op when already broken.
  void interrupt(const std::string& reason);
  // Why the communicator broke ("" while it works).
  std::string broken_reason() const;
  // After a failed step, once no rank is inside a collective (every device idle): forgets the broken state
  // and realigns the ranks, so that the next step's collectives run. Returns false, staying broken, where
  // the implementation cannot recover (one that ran collectives on GPUs: an abandoned collective may still
  // be queued there). True when it was not broken.
  bool recover();

  // Optional: a communicator over the devices of `ranks` (distinct ranks of this one, in the new one's rank
  // order), with this one's bounds, for collectives that span a group of devices. nullptr where the
  // implementation cannot form one.
  virtual std::unique_ptr<Communicator> make_group(const std::vector<int>& ranks) const {
    (void)ranks;
    return nullptr;
  }

  // Optional: true where messages between ranks a and b travel over a group of the two of their own
  // (make_group({min, max}), made before a step that sends them runs) rather than over this communicator (a
  // hierarchy's ranks in different nodes that are not both their node's first).
  virtual bool messages_need_a_group(int a, int b) const {
    (void)a, (void)b;
    return false;
  }

  CollectiveTraffic traffic(int rank) const;
  uint64_t total_bytes_sent() const;
  void reset_traffic();

 protected:
  // The implementation's halves of enqueue() and run_in_stream(), called with validated arguments.
  virtual void enqueue_part(int rank, CollectivePart part) = 0;
  virtual void run_part(int rank, const CollectivePart& part) = 0;
  // run_group_in_stream()'s half, with validated parts (at least one): by default one run_part() each.
  virtual void run_group(int rank, const std::vector<CollectivePart>& parts);

  void count_sent(int rank, uint64_t bytes);
  void count_completed(int rank);
  // The first reason wins; returns false when it was already broken.
  bool mark_broken(std::string reason);
  void throw_if_broken() const;

  // For implementations whose ranks meet on the host (HostCommunicator, CudaCommunicator): one lock and
  // one wake-up for every meeting, and the bounded wait with its errors.
  std::mutex mu_;
  std::condition_variable changed_;
  // Called with mu_ held when the communicator breaks: drops the meetings and messages in flight.
  virtual void drop_pending() {}
  // Optional. Called by recover() with mu_ held and every rank idle: drops what is pending and restarts the
  // ranks' sequence numbers. False (the default) when the implementation cannot recover.
  virtual bool restart_ranks() { return false; }
  // Said after "of a N-rank communicator" in a timeout ("same-GPU path"); empty for none.
  virtual std::string_view path_note() const { return {}; }
  // Fails the calling rank the way a peer broke the communicator (TimeoutError or CollectiveError).
  [[noreturn]] void fail_broken(std::unique_lock<std::mutex>& lock);
  // Breaks the communicator with `reason` (or fails as a peer already broke it), wakes every waiter, logs.
  [[noreturn]] void break_with(std::unique_lock<std::mutex>& lock, const std::string& reason, bool timed_out);
  // Breaks the communicator (CollectiveError naming both) when rank's part of collective #seq is not the
  // collective `first_rank` issued as `first`.
  void require_same(std::unique_lock<std::mutex>& lock, uint64_t seq, int rank, const CollectivePart& part,
                    int first_rank, const CollectivePart& first);
  // Marks rank as past `phase` of collective #seq and waits, at most `timeout`, until every rank is; a
  // timeout breaks the communicator naming the ranks behind.
  void wait_for_phase(std::unique_lock<std::mutex>& lock, std::vector<int>& phase_of_rank, int phase, int rank,
                      uint64_t seq, const CollectivePart& part, std::chrono::milliseconds timeout);

 private:
  void validate(int rank, const CollectivePart& part) const;

  std::vector<PhysicalDevice*> devices_;
  std::unique_ptr<std::atomic<uint64_t>[]> bytes_sent_, operations_;
  std::atomic<bool> broken_{false};
  mutable std::mutex reason_mu_;
  std::string broken_reason_;
  bool broken_by_timeout_ = false;  // guarded by mu_
};

}  // namespace moreh::runtime
