// Old runs' logs go beyond the newest few; the own run's, a live process's and other files stay.
#include "runtime/base/log_retention.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include <unistd.h>

namespace moreh::runtime {
namespace {

namespace fs = std::filesystem;

TEST(LogRetentionTest, TheNewestRunsStayAndOlderDeadOnesGo) {
  const fs::path dir = fs::temp_directory_path() / ("moreh_log_retention_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto touch = [&](const std::string& name, int age_s) {
    std::ofstream(dir / name) << "x\n";
    fs::last_write_time(dir / name, fs::file_time_type::clock::now() - std::chrono::seconds(age_s));
  };
  // Dead pids (beyond any pid_max), oldest last; the test's own pid the oldest of all; a foreign file.
  for (int k = 0; k < 6; ++k) {
    touch("moreh-" + std::to_string(900000000 + k) + ".log", 10 * (k + 1));
    touch("moreh-" + std::to_string(900000000 + k) + ".events.jsonl", 10 * (k + 1));
  }
  touch("moreh-" + std::to_string(getpid()) + ".log", 1000);
  touch("moreh-1.log", 2000);  // pid 1 is alive (init)
  touch("notes.txt", 3000);
  touch("moreh-12x.log", 3000);
  const auto removed = prune_old_runs(dir.string(), 3, getpid());
  EXPECT_EQ(removed.size(), 6u);  // runs 900000003..5, both files each
  for (int k = 0; k < 6; ++k)
    EXPECT_EQ(fs::exists(dir / ("moreh-" + std::to_string(900000000 + k) + ".log")), k < 3) << k;
  EXPECT_TRUE(fs::exists(dir / ("moreh-" + std::to_string(getpid()) + ".log")));
  EXPECT_TRUE(fs::exists(dir / "moreh-1.log"));
  EXPECT_TRUE(fs::exists(dir / "notes.txt"));
  EXPECT_TRUE(fs::exists(dir / "moreh-12x.log"));
  EXPECT_TRUE(prune_old_runs(dir.string(), 0, getpid()).empty()) << "0 keeps every run";
  EXPECT_TRUE(prune_old_runs((dir / "missing").string(), 3, getpid()).empty());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moreh::runtime
