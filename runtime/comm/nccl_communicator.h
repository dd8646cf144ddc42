// Collectives among CUDA devices on distinct GPUs, one rank per GPU, through NCCL (runtime/comm/nccl_library.h).
//
// One NCCL communicator per rank, made together with ncclCommInitAll. Each rank's part runs on its own
// device's thread (the one-thread-per-GPU way of driving NCCL from one process) and enqueues NCCL's kernel
// on the device's stream, so the host never waits for the GPU. Before any NCCL call the ranks meet on the
// host, as the other communicators' parts do, bounded by the timeout: a rank that never comes, or one that
// issued a different collective, breaks the communicator with TimeoutError / CollectiveError naming it,
// instead of leaving its peers' kernels spinning on the GPU. NCCL's own errors (a result other than
// ncclSuccess, or an asynchronous error on the communicator) break it too, with NCCL's words.
//
// Uneven counts (all_gather / reduce_scatter of different slices per rank, which NCCL lacks) become one
// group of N broadcasts / reduces, one per slice. barrier is an all-reduce of one element. send and recv
// meet too: a send goes only once its recv has been issued (NCCL's send waits for its recv anyway), so on
// this path a rank that sends and then receives from a peer doing the same times out instead of
// completing (the host and same-GPU communicators send eagerly). A group of collectives
// (run_group_in_stream) meets once and goes to NCCL inside one ncclGroupStart/End, which NCCL launches
// together.
//
// Host devices are served only by a library that moves host memory (the tests' stand-in for NCCL).
#pragma once
#include <chrono>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "runtime/comm/communicator.h"
#include "runtime/comm/nccl_library.h"

namespace moreh::runtime {

class NcclCommunicator final : public Communicator {
 public:
  // Makes the NCCL communicators. CUDA devices on distinct GPUs (or host devices with a host-memory
  // library); ConfigError otherwise, and on a failed ncclCommInitAll (with NCCL's reason).
  NcclCommunicator(std::vector<PhysicalDevice*> devices, std::chrono::milliseconds timeout,
                   std::shared_ptr<const nccl::Library> library);
  // Destroys the NCCL communicators, each on its own thread (ncclCommDestroy is collective among the ranks
  // of one node), or aborts them when the communicator broke. The parts issued must have run.
  ~NcclCommunicator() override;

  std::chrono::milliseconds timeout() const { return timeout_; }
  const nccl::Library& library() const { return *library_; }
  // NCCL communicators of their own over the devices of `ranks` (ncclCommInitAll over them): a pipeline
  // stage's replicas. ConfigError as the constructor's.
  std::unique_ptr<Communicator> make_group(const std::vector<int>& ranks) const override;

 protected:
  void enqueue_part(int rank, CollectivePart part) override;
  void run_part(int rank, const CollectivePart& part) override;
  // One meeting for the whole group, then its NCCL calls inside one ncclGroupStart/End.
  void run_group(int rank, const std::vector<CollectivePart>& parts) override;

 private:
  struct Meeting {
    std::vector<CollectivePart> first;
    int first_rank = -1;
    std::vector<int> phase_of_rank;
  };
  struct Message;
  // Waits (bounded) until every rank has issued collective #seq, checking they issued the same ones (one
  // part, or a group's parts in the same order).
  uint64_t meet(int rank, const std::vector<CollectivePart>& parts);
  // Waits (bounded) until the peer has issued the matching recv (for a send) or send (for a recv).
  uint64_t pair_up(int rank, const CollectivePart& part);
  void issue(int rank, const CollectivePart& part, uint64_t seq);
  // ConfigError for a reduction of a type NCCL cannot reduce, before any meeting.
  void require_reducible(int rank, const CollectivePart& part) const;
  // Counts an issued part's bytes and its completion.
  void count_issued(int rank, const CollectivePart& part);
  // Breaks the communicator when an NCCL call failed or the communicator reports an asynchronous error.
  void check(int rank, int result, const char* call, const CollectivePart& part, uint64_t seq);
  void* stream(int rank) const;
  void drop_pending() override;
  // Ranks meet on the host before any of them issues an NCCL call, so a step that failed at a meeting left
  // NCCL untouched and the ranks can start again; after a failed NCCL call they cannot.
  bool restart_ranks() override;
  std::string_view path_note() const override { return "NCCL path"; }

  std::chrono::milliseconds timeout_;
  std::shared_ptr<const nccl::Library> library_;
  std::vector<nccl::Comm> comms_;
  std::vector<std::unique_ptr<PhysicalBlock>> barrier_word_;  // one float per rank for barrier()
  std::vector<uint64_t> next_seq_;
  bool nccl_failed_ = false;  // an NCCL call failed (guarded by mu_)
  std::map<uint64_t, std::shared_ptr<Meeting>> meeting_;
  // Per (source, destination): how many sends and recvs each side has issued, and the messages whose two
  // sides have not both met yet.
  std::map<std::pair<int, int>, uint64_t> sends_, recvs_;
  std::map<std::pair<int, int>, std::map<uint64_t, std::shared_ptr<Message>>> messages_;
};

}  // namespace moreh::runtime
