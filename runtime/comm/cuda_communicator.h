// Collectives among CudaDevices of one process.
//
// Same GPU (every rank's device on one GPU: several logical devices sharing it). Every rank's buffers are
// memory of one CUDA context, so a rank's part reads its peers' buffers directly with cuMemcpyAsync and
// the generated reduce kernel (runtime/comm/collective_kernels.h) on its own stream. The parts meet on the
// host as HostCommunicator's do (by sequence number, bounded by the timeout); the ordering on the GPU
// comes from events: at each phase every rank records an event on its stream, and once all have been
// recorded (a host-side meeting, which waits for no GPU work) each stream waits for its peers' events
// (cuStreamWaitEvent). Phases, and bytes counted, as HostCommunicator's: reducing collectives reduce
// chunk r on rank r, then copy the other chunks from their owners (2·(N−1)/N of the bytes per rank, the
// ring's figure); a last phase keeps every rank's stream from overwriting its buffers before its peers'
// streams are done reading them. So the host never waits for the GPU, and the N streams overlap.
// send copies into a staging block on the sender's stream (eager, so a later change to the buffer does
// not reach the receiver) which the receiver's stream copies out of once the sender's event has passed.
//
// Distinct GPUs (one rank per GPU) use NCCL (runtime/comm/nccl_communicator.h): the constructor refuses them
// with a ConfigError, as it does a mix of shared and distinct GPUs (runtime/comm/hierarchical_communicator.h
// composes the two paths for those).
#pragma once
#include <cuda.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime/comm/communicator.h"

namespace moreh::runtime {

class CudaDevice;

// How a CUDA communicator moves data, chosen from the GPU ordinal of each rank's device.
enum class CudaCollectivePath { kSameGpu, kNccl, kMixed };
CudaCollectivePath choose_cuda_collective_path(const std::vector<int>& ordinals);
std::string_view name_of(CudaCollectivePath path);

class CudaCommunicator final : public Communicator {
 public:
  // CudaDevices only, all on one GPU, at most kMaxReduceKernelInputs ranks (ConfigError otherwise, naming
  // the path that is missing). `timeout` bounds how long a part waits for its peers on the host.
  CudaCommunicator(std::vector<PhysicalDevice*> devices, std::chrono::milliseconds timeout);
  // Releases staging blocks and events (the parts issued must have run: synchronize the devices first).
  ~CudaCommunicator() override;

  std::chrono::milliseconds timeout() const { return timeout_; }
  CudaCollectivePath path() const { return path_; }
  // A communicator over the devices of `ranks` (a pipeline stage's replicas on this GPU).
  std::unique_ptr<Communicator> make_group(const std::vector<int>& ranks) const override;

 protected:
  void enqueue_part(int rank, CollectivePart part) override;
  void run_part(int rank, const CollectivePart& part) override;

 private:
  struct Rendezvous;
  struct Message {
    CollectivePart part;
    std::shared_ptr<PhysicalBlock> staging;  // on the sender's device; null for 0 bytes
    CUevent sent = nullptr;                  // recorded on the sender's stream after the copy into staging
  };
  // A staging block the receiver's stream still copies out of: freed once `done` has completed.
  struct Retired {
    std::shared_ptr<PhysicalBlock> staging;
    CUevent done = nullptr;
  };

  CudaDevice& cuda(int rank) const;
  void run_collective(int rank, const CollectivePart& part);
  void run_send(int rank, const CollectivePart& part);
  void run_recv(int rank, const CollectivePart& part);
  // Records rank's event for `phase` on its stream, waits on the host (bounded) until every rank has, then
  // makes rank's stream wait for every peer's event of that phase.
  void phase(std::unique_lock<std::mutex>& lock, Rendezvous& rv, int phase, int rank, uint64_t seq,
             const CollectivePart& part);
  void reduce(int rank, const CollectivePart& part, const std::vector<const void*>& inputs, void* out,
              uint64_t count);
  void reap_retired(bool wait);
  void drop_pending() override;
  std::string_view path_note() const override { return "same-GPU path"; }

  std::chrono::milliseconds timeout_;
  CudaCollectivePath path_;
  CUcontext context_ = nullptr;
  std::vector<uint64_t> next_seq_;
  std::map<uint64_t, std::shared_ptr<Rendezvous>> meeting_;
  std::map<std::pair<int, int>, std::deque<Message>> mail_;
  std::map<std::pair<int, int>, uint64_t> recvs_;
  std::vector<Retired> retired_;
};

}  // namespace moreh::runtime
