// Collectives for a flavor with more logical devices than GPUs on a machine with several GPUs: ranks that
// share a GPU form a group (contiguous ranks, runtime/device/physical_devices.h), each group has a local
// communicator (the same-GPU path), and the groups' first ranks (leaders) a cross communicator (NCCL).
// Each collective is composed of the two, every step on the ranks' own streams:
//   all_reduce:     local all_reduce, leaders' all_reduce, local broadcast from the leader
//   reduce_scatter: local all_reduce into a scratch block, leaders' reduce_scatter of the groups' blocks,
//                   local broadcast of the group's block, each rank copies its slice out
//   all_gather:     local all_gather into the group's block, leaders' all_gather of the blocks, local
//                   broadcast of the whole
//   broadcast:      local broadcast in the root's group, leaders' broadcast from that group, local
//                   broadcasts in the others
//   barrier:        local, leaders', local
// avg sums, then scales by 1/N (floating-point types; integer averages are refused). send and recv work
// within a group, and between two groups' first ranks over the cross communicator (a pipeline over workers of
// one device each); other pairs go over a group of the two of their own (messages_need_a_group), or are
// refused without a group cross factory. The parts below carry the communicator's bound, so a
// missing rank still fails with TimeoutError naming it, and this communicator breaks with the part.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "runtime/comm/communicator.h"

namespace moreh::runtime {

class HierarchicalCommunicator final : public Communicator {
 public:
  // Makes a communicator over the devices of one group (local) or over the groups' leaders (cross).
  using Factory = std::function<std::unique_ptr<Communicator>(std::vector<PhysicalDevice*>)>;

  // group_of_rank[r]: rank r's group; groups are numbered 0, 1, ... in rank order and hold contiguous
  // ranks (ConfigError otherwise). A group of one rank has no local communicator.
  HierarchicalCommunicator(std::vector<PhysicalDevice*> devices, std::vector<int> group_of_rank, const Factory& local,
                           const Factory& cross);

  // A cross communicator for a group of ranks: `ranks` (of this communicator) lie in `nodes` (groups, in the
  // order the ranks meet them), `leaders` the first rank's device in each.
  using GroupCross = std::function<std::unique_ptr<Communicator>(
      const std::vector<int>& ranks, const std::vector<int>& nodes, std::vector<PhysicalDevice*> leaders)>;
  // Optional: without it, make_group forms groups inside one node only.
  void set_group_cross(GroupCross f) { group_cross_ = std::move(f); }
  // nullptr where the ranks of a node are not neighbours in `ranks`, or the parts cannot be formed.
  std::unique_ptr<Communicator> make_group(const std::vector<int>& ranks) const override;

  // Ranks of different nodes that are not both their node's first, where groups across nodes can be formed.
  bool messages_need_a_group(int a, int b) const override;

  // The groups (nodes) `ranks` lie in, in the order the ranks meet them (ConfigError for a rank out of range).
  std::vector<int> nodes_of(const std::vector<int>& ranks) const;

  int groups() const { return static_cast<int>(first_of_group_.size()); }
  int group_of(int rank) const { return group_of_rank_.at(rank); }
  Communicator* local(int group) const { return locals_.at(group).get(); }
  Communicator& cross() const { return *cross_; }

 protected:
  void enqueue_part(int rank, CollectivePart part) override;
  void run_part(int rank, const CollectivePart& part) override;
  // A group of all-reduces: each reduced inside the group, the leaders' halves as one group on the cross
  // communicator (NCCL and Gloo meet once for it), then each broadcast inside the group.
  void run_group(int rank, const std::vector<CollectivePart>& parts) override;
  bool restart_ranks() override;  // recovers every part
  void drop_pending() override;   // interrupts every part: their waiting ranks stop too

 private:
  HierarchicalCommunicator(std::vector<PhysicalDevice*> devices, std::vector<int> group_of_rank,
                           std::vector<std::unique_ptr<Communicator>> locals, std::unique_ptr<Communicator> cross);
  void layout();  // first_of_group_, size_of_group_ from group_of_rank_ (ConfigError when not runs)
  void compose(int rank, const CollectivePart& part);

  std::vector<int> group_of_rank_;
  std::vector<int> first_of_group_, size_of_group_;
  std::vector<std::unique_ptr<Communicator>> locals_;
  std::unique_ptr<Communicator> cross_;
  GroupCross group_cross_;
};

}  // namespace moreh::runtime
