// Collectives between worker processes, one rank per worker (its leader device), over Gloo's TCP transport
// (runtime/comm/gloo_library.h). Each process holds a GlooCommunicator over every rank's device, of which
// one (local_rank) lives in the process and issues parts; the others are RemoteDevices (or anything else:
// they only name the ranks). HierarchicalCommunicator composes it, as its cross communicator, with the
// in-process communicators of each worker's devices.
//
// Buffers are host memory: the local device must be host-accessible (no staging of GPU memory here). Each
// part runs on the local device's stream and blocks it until Gloo is done. Bytes are counted as the ring
// algorithms send them (ring_bytes_sent); Gloo's ring all_reduce sends about as much.
//
// Failures. A part whose peers do not arrive within the bound fails with TimeoutError naming the
// collective, the rank it waited for and the bound; a peer that closed its connections (a dead process,
// or a worker whose part failed) gives CollectiveError with Gloo's reason; ranks that issued different
// collectives give CollectiveError naming both. Each breaks the communicator and closes its connections,
// so the peers fail at once too; later parts throw CollectiveError. interrupt() closes the connections:
// a waiting part fails at once (CollectiveError with the reason), and so do the peers'. recover() returns
// false: Gloo cannot realign ranks after an abandoned collective, so going on needs a new context (a new
// rendezvous). make_group() returns nullptr.
//
// A group of devices across workers (HierarchicalCommunicator::make_group) has a context of its own, which
// connects in the background: the second constructor takes it pending, and the first part waits for it
// within the bound.
//
// send is eager (the data is copied and posted; HostCommunicator's semantics), recv waits for it within the
// bound; the k-th send from a to b meets b's k-th recv from a.
#pragma once
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <vector>

#include "runtime/comm/communicator.h"
#include "runtime/comm/gloo_library.h"

namespace moreh::runtime {

class GlooCommunicator final : public Communicator {
 public:
  // `devices`: one per Gloo rank of `context` (already connected, connect_gloo); devices[context->rank()]
  // is this process's and host-accessible. `timeout` bounds each part (MOREH_COLLECTIVE_TIMEOUT).
  GlooCommunicator(std::vector<PhysicalDevice*> devices, std::shared_ptr<GlooContext> context,
                   std::chrono::milliseconds timeout);
  // `pending`: the context of rank `local_rank`, still connecting (-1: this process holds no rank of it and
  // issues no parts; `pending` is then not waited for).
  GlooCommunicator(std::vector<PhysicalDevice*> devices, std::shared_future<std::shared_ptr<GlooContext>> pending,
                   int local_rank, std::chrono::milliseconds timeout);

  int local_rank() const { return local_rank_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

 protected:
  // Another rank than local_rank(): ConfigError (that rank's process issues it).
  void enqueue_part(int rank, CollectivePart part) override;
  void run_part(int rank, const CollectivePart& part) override;
  // A group of all-reduces (a step's gradients) goes as one all-reduce per element type and op over the
  // parts packed end to end: one meeting and one ring instead of one per part.
  void run_group(int rank, const std::vector<CollectivePart>& parts) override;
  void drop_pending() override;  // closes the connections: a waiting part fails at once

 private:
  void check(int rank, const CollectivePart& part) const;
  GlooContext& context();  // waits for a pending one within the bound (the local stream only)
  bool connected() const;  // the context is there (or its connect has failed)
  [[noreturn]] void fail(const CollectivePart& part, uint64_t seq, const GlooResult& result);

  std::shared_future<std::shared_ptr<GlooContext>> pending_;  // ready at once for a connected context
  bool context_checked_ = false;  // its size and rank against this communicator's (the local stream only)
  std::chrono::milliseconds timeout_;
  int local_rank_;
  // Run on the local stream only, so unguarded.
  uint64_t collectives_ = 0;
  std::map<int, uint64_t> sends_, recvs_;  // per peer: messages, to name them in errors
};

}  // namespace moreh::runtime
