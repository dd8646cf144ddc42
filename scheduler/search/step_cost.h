// The cost simulator's clock: a kernel's seconds from a device profile's roofline (its FLOPs against the
// contraction's or elementwise rate, its bytes against memory bandwidth, plus a launch), a collective's and a
// message's from the link between the devices (latency + bytes / bandwidth, ring algorithms), fed to the plan
// timeline's event simulation so that stream order, pipeline bubbles and waiting fall out of the schedule.
#pragma once
#include <algorithm>
#include <vector>

#include "scheduler/analysis/plan_timeline.h"
#include "scheduler/search/device_profile.h"

namespace moreh::scheduler {

class ProfileTiming final : public StepTiming {
 public:
  // `streams`: the devices the plan runs on at once (host devices' launches cost more together);
  // `devices_per_node`: devices of one machine (0: all of them); groups that span machines use the network.
  explicit ProfileTiming(DeviceProfile profile, int streams = 1, int devices_per_node = 0)
      : profile_(std::move(profile)), launch_s_(profile_.launch_for(streams)), devices_per_node_(devices_per_node) {}
  // Machines of any sizes: `node_of_device[d]` is device d's machine (empty: all on one). The script's
  // process and its workers (runtime/cluster/remote_cluster.h) hold 1, K, K, ... devices.
  ProfileTiming(DeviceProfile profile, int streams, std::vector<int> node_of_device)
      : profile_(std::move(profile)), launch_s_(profile_.launch_for(streams)), devices_per_node_(0),
        node_of_device_(std::move(node_of_device)) {}
  KernelTime kernel(const runtime::Node& node, const runtime::LocalLaunch* local, double share) const override;
  double scalar_kernel() const override { return launch_s_; }
  double block_pass(double bytes) const override { return launch_s_ + 2 * bytes / profile_.memory_bytes_per_s; }
  double collective(runtime::Instruction::Kind kind, double bytes, const std::vector<int>& devices) const override;
  double message(double bytes, int from, int to) const override;
  double speedup(int devices) const override { return profile_.speedup(devices); }
  double overhead_parallelism(int devices) const override {
    return profile_.cores > 0 ? std::min(devices, profile_.cores) : devices;
  }
  const DeviceProfile& profile() const { return profile_; }

 private:
  const LinkProfile& link(const std::vector<int>& devices) const;
  int node_of(int device) const;
  DeviceProfile profile_;
  double launch_s_;
  int devices_per_node_;
  std::vector<int> node_of_device_;
};

// A step's predicted seconds under `profile` (the makespan of simulate_plan with a ProfileTiming).
struct StepCost {
  double seconds = 0;
  double idle_fraction = 0;
  double communication_seconds = 0;  // the most any device spends in collectives and receives
  std::string stuck;
};
StepCost predict_step(const runtime::Plan& plan, const runtime::StepGraph& graph,
                      const runtime::CanonicalGraph& canonical, const ProfileTiming& timing);

}  // namespace moreh::scheduler
