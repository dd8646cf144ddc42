// Device profiles: named GPUs' figures, the text they are kept as, and the host profile measured once.
#include "scheduler/search/device_profile.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

namespace moreh::scheduler {
namespace {

std::string temp_file(const char* name) {
  const auto dir = std::filesystem::temp_directory_path() / ("moreh-profile-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

TEST(DeviceProfileTest, NamedGpusCarryTheirPublishedOrder) {
  for (const auto& name : profile_names()) {
    const auto p = named_profile(name);
    ASSERT_TRUE(p) << name;
    EXPECT_GT(p->low_prec_flops, p->fp32_flops) << name << ": tensor cores";
    EXPECT_GT(p->intra_node.bytes_per_s, p->inter_node.bytes_per_s) << name << ": NVLink beats the network";
    EXPECT_TRUE(p->stream_speedup.empty()) << "each GPU its own chip";
    EXPECT_DOUBLE_EQ(p->speedup(8), 8);
  }
  EXPECT_GT(named_profile("h200")->memory_bytes_per_s, named_profile("h100")->memory_bytes_per_s);
  EXPECT_GT(named_profile("H100")->low_prec_flops, named_profile("a100")->low_prec_flops);
  EXPECT_FALSE(named_profile("tpu"));
  EXPECT_EQ(profile_for_device_name("NVIDIA H100 80GB HBM3")->name, "h100");
  EXPECT_EQ(profile_for_device_name("NVIDIA H200")->name, "h200");
  EXPECT_FALSE(profile_for_device_name("host:0"));
}

TEST(DeviceProfileTest, AProfileReadsBackFromItsTextAndAMalformedOneDoesNot) {
  DeviceProfile p = *named_profile("a100");
  p.stream_speedup = {1.5, 2, 2.5};
  p.stream_launch_s = {2e-6, 3e-6, 4e-6};
  p.shared_memory = true;
  const auto back = parse_profile(format_profile(p));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->name, "a100");
  EXPECT_DOUBLE_EQ(back->fp32_flops, p.fp32_flops);
  EXPECT_DOUBLE_EQ(back->intra_node.latency_s, p.intra_node.latency_s);
  EXPECT_EQ(back->stream_speedup, p.stream_speedup);
  EXPECT_EQ(back->memory_bytes, p.memory_bytes);
  EXPECT_TRUE(back->shared_memory);
  std::string text = format_profile(p);
  EXPECT_FALSE(parse_profile(text.substr(0, text.size() / 2)));  // a truncated file
  EXPECT_FALSE(parse_profile("name = host\nfp32_flops = fast\n"));
  EXPECT_FALSE(parse_profile(""));
}

TEST(DeviceProfileTest, SpeedupAndLaunchCostsInterpolateBetweenMeasuredStreamCounts) {
  DeviceProfile p;
  p.launch_s = 1e-6;
  p.stream_speedup = {2, 3, 4};
  p.stream_launch_s = {2e-6, 4e-6, 8e-6};
  EXPECT_DOUBLE_EQ(p.speedup(1), 1);
  EXPECT_DOUBLE_EQ(p.speedup(2), 2);
  EXPECT_DOUBLE_EQ(p.speedup(4), 3);
  EXPECT_NEAR(p.speedup(3), 2 + (std::log2(3.0) - 1), 1e-12);
  EXPECT_DOUBLE_EQ(p.speedup(16), 4);  // flat beyond what was measured
  EXPECT_DOUBLE_EQ(p.launch_for(1), 1e-6);
  EXPECT_DOUBLE_EQ(p.launch_for(8), 8e-6);
}

TEST(DeviceProfileTest, TheHostIsMeasuredOnceAndKept) {
  const std::string file = temp_file("host.txt");
  std::filesystem::remove(file);
  int calls = 0;
  const HostCalibration calibrate = [&] {
    ++calls;
    HostMeasurements m;
    m.fp32_flops = 100e9, m.low_prec_flops = 50e9, m.attention_flops = 20e9, m.elementwise_flops = 5e9;
    m.memory_bytes_per_s = 10e9, m.launch_s = 3e-6, m.speedup = {1.2, 1.1, 1.0}, m.stream_launch_s = {5e-6, 9e-6, 20e-6};
    m.handoff_s = 50e-6;
    return m;
  };
  const DeviceProfile first = host_profile(file, calibrate, 1 << 20);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(first.measured && first.shared_memory);
  EXPECT_EQ(first.memory_bytes, 1u << 20);
  EXPECT_DOUBLE_EQ(first.intra_node.latency_s, 50e-6);
  EXPECT_DOUBLE_EQ(first.intra_node.bytes_per_s, 5e9);
  const DeviceProfile second = host_profile(file, calibrate, 2 << 20);
  EXPECT_EQ(calls, 1) << "read from the file";
  EXPECT_DOUBLE_EQ(second.fp32_flops, 100e9);
  EXPECT_EQ(second.memory_bytes, 2u << 20) << "the capacity is this run's";
  EXPECT_EQ(second.calibration, kHostCalibration);
  std::ofstream(file) << "garbage";
  host_profile(file, calibrate, 1);
  EXPECT_EQ(calls, 2) << "a corrupt file is measured again";
  {  // one kept by the first calibration (no version line) is measured again, then kept with this version
    std::string text = format_profile(second);
    text.erase(text.find("calibration = "));
    std::ofstream(file) << text;
  }
  ASSERT_TRUE(parse_profile(format_profile(second)).has_value());
  EXPECT_EQ(parse_profile(format_profile(second))->calibration, kHostCalibration);
  host_profile(file, calibrate, 1);
  EXPECT_EQ(calls, 3) << "an older calibration's profile is measured again";
  host_profile(file, calibrate, 1);
  EXPECT_EQ(calls, 3);
  EXPECT_FALSE(host_profile("", {}, 1).measured);  // nothing to measure with: defaults, nothing kept
  std::filesystem::remove_all(std::filesystem::path(file).parent_path());
}

}  // namespace
}  // namespace moreh::scheduler
