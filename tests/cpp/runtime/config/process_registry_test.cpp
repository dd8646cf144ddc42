#include "runtime/config/process_registry.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

namespace moreh::runtime {
namespace {

namespace fs = std::filesystem;

std::string read(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(ProcessRegistryTest, EntryJsonEscapesAndSums) {
  RegistrySnapshot snap{"Medium.128GB", {{"host:0", 10, 100, 0}, {"host:1", 30, 100, 0}}};
  std::string json = registry_entry_json(42, 7, "python \"a\\b\"\n", snap, {0.5, 0.25}, 1.5);
  EXPECT_NE(json.find("\"pid\": 42"), std::string::npos) << json;
  EXPECT_NE(json.find("\"command\": \"python \\\"a\\\\b\\\"\\u000a\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"memory_used\": 40, \"memory_total\": 200"), std::string::npos) << json;
  EXPECT_NE(json.find("\"utilization\": 0.3750"), std::string::npos) << json;
  EXPECT_NE(json.find("\"name\": \"host:1\""), std::string::npos) << json;
}

TEST(ProcessRegistryTest, WritesAtOnceRefreshesAndRemovesOnStop) {
  fs::path dir = fs::temp_directory_path() / ("moreh_registry_test_" + std::to_string(getpid()));
  fs::remove_all(dir);
  std::atomic<uint64_t> used{1};
  {
    ProcessRegistry registry(
        dir.string(), [&] { return RegistrySnapshot{"Small.64GB", {{"host:0", used.load(), 64, 0}}}; },
        std::chrono::milliseconds(20));
    EXPECT_EQ(registry.path(), (dir / (std::to_string(getpid()) + ".json")).string());
    ASSERT_TRUE(fs::exists(registry.path()));
    EXPECT_NE(read(registry.path()).find("\"memory_used\": 1,"), std::string::npos);
    used = 12345;
    bool refreshed = false;
    for (int i = 0; i < 250 && !refreshed; ++i) {  // bounded: 5 s
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      refreshed = read(registry.path()).find("\"memory_used\": 12345,") != std::string::npos;
    }
    EXPECT_TRUE(refreshed);
    registry.stop();
    EXPECT_FALSE(fs::exists(registry.path()));
    registry.stop();  // idempotent
  }
  EXPECT_TRUE(fs::is_empty(dir));  // no temporary left behind
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moreh::runtime
