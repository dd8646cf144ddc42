#include "runtime/comm/communicator_choice.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "runtime/comm/host_communicator.h"
#include "runtime/comm/nccl_communicator.h"
#include "runtime/host/host_device.h"

namespace moreh::runtime {
namespace {

TEST(CommunicatorChoiceTest, HostDevicesMeetInHostMemoryOrThroughAHostMemoryNccl) {
  std::vector<std::unique_ptr<PhysicalDevice>> devices;
  std::vector<PhysicalDevice*> raw;
  for (int d = 0; d < 2; ++d) {
    devices.push_back(std::make_unique<HostDevice>(d, 1 << 20));
    raw.push_back(devices.back().get());
  }
  Config config;
  config.collective_timeout_s = 7;
  EXPECT_EQ(make_communicator(config, {raw[0]}), nullptr);  // one device: no collectives
  auto host = make_communicator(config, raw);
  ASSERT_NE(dynamic_cast<HostCommunicator*>(host.get()), nullptr);
  EXPECT_EQ(static_cast<HostCommunicator&>(*host).timeout(), std::chrono::seconds(7));
  EXPECT_EQ(host->size(), 2);
  config.nccl_library = MOREH_FAKE_NCCL_LIBRARY;  // the tests' stand-in, which moves host memory
  auto nccl = make_communicator(config, raw);
  EXPECT_NE(dynamic_cast<NcclCommunicator*>(nccl.get()), nullptr);
}

}  // namespace
}  // namespace moreh::runtime
