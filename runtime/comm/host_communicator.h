// Collectives among host devices of one process: every rank's buffers are plain host memory, so a rank's
// part reads its peers' buffers directly once all parts have met.
//
// Algorithm. Reducing collectives are a reduce-scatter followed by an all-gather: the elements are cut
// into N chunks (the first count % N one element longer), rank r reduces chunk r from every rank's send
// buffer (always in rank order 0..N−1, so every rank gets the same bits whatever N divides), and then
// copies every other chunk from its owner. Each rank thus sends (N−1)/N of the bytes in each half:
// 2·(N−1)/N · bytes, exactly what a ring sends (ring_all_reduce_bytes_per_rank), in two rendezvous
// instead of the ring's 2·(N−1) neighbour steps, which shared memory has no use for. all_gather sends a
// rank's slice to N−1 peers, reduce_scatter sends the N−1 slices it does not own, broadcast's root sends
// N−1 copies, send sends its bytes. Bytes are counted on the sender.
//
// Streams. A part runs on its device's stream (its worker thread, or a thread that waits for the stream
// and runs queued work itself). Distinct devices have distinct streams, and a thread runs one stream item
// at a time, so the N parts of a collective can all be running at once: a part that waits for its peers
// holds only its own stream, and each peer's stream reaches its part on its own. Parts meet by sequence
// number (the k-th collective run on each rank's stream), and a collective's waits are bounded by the
// timeout.
//
// send copies the data into the communicator (an eager send, as MPI does for small messages) and returns;
// recv waits for the matching send. So pipeline stages that send and then receive cannot deadlock on each
// other's sends.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "runtime/comm/communicator.h"

namespace moreh::runtime {

class HostCommunicator final : public Communicator {
 public:
  // Host devices only (ConfigError otherwise). `timeout` bounds how long a part waits for its peers
  // (MOREH_COLLECTIVE_TIMEOUT in the engine).
  HostCommunicator(std::vector<PhysicalDevice*> devices, std::chrono::milliseconds timeout);

  std::chrono::milliseconds timeout() const { return timeout_; }
  std::unique_ptr<Communicator> make_group(const std::vector<int>& ranks) const override;

 protected:
  void enqueue_part(int rank, CollectivePart part) override;
  void run_part(int rank, const CollectivePart& part) override;

 private:
  // One collective while its parts are meeting; found by sequence number.
  struct Rendezvous {
    CollectivePart first;  // the first part to arrive: the others must match it
    int first_rank = -1;
    std::vector<const void*> send;
    std::vector<void*> recv;
    std::vector<int> phase_of_rank;  // how many of the collective's phases each rank has finished
  };
  struct Message {
    CollectivePart part;
    std::vector<std::byte> data;
  };

  void run_collective(int rank, const CollectivePart& part);
  void run_send(int rank, const CollectivePart& part);
  void run_recv(int rank, const CollectivePart& part);
  void drop_pending() override;
  bool restart_ranks() override;

  std::chrono::milliseconds timeout_;
  std::vector<uint64_t> next_seq_;  // per rank: collectives started on its stream
  std::map<uint64_t, std::shared_ptr<Rendezvous>> meeting_;
  std::map<std::pair<int, int>, std::deque<Message>> mail_;  // (source, destination) -> sent, not yet received
  std::map<std::pair<int, int>, uint64_t> sends_, recvs_;    // per pair, to name the message in errors
};

}  // namespace moreh::runtime
