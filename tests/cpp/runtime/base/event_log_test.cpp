// The events file: where it lies beside a log, one JSON object per line, strings escaped, off when asked.
#include "runtime/base/event_log.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace moreh::runtime {
namespace {

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(EventLogTest, BesideTheLogItsLogSuffixReplaced) {
  EXPECT_EQ(events_path_for("/a/moreh-12.log"), "/a/moreh-12.events.jsonl");
  EXPECT_EQ(events_path_for("/a/run.txt"), "/a/run.txt.events.jsonl");
  EXPECT_EQ(events_path_for(".log"), ".log.events.jsonl");
}

TEST(EventLogTest, StringsAreEscapedForJson) {
  EXPECT_EQ(json_string("plain"), "\"plain\"");
  EXPECT_EQ(json_string("a \"b\" \\ c\nd\te\x01"), "\"a \\\"b\\\" \\\\ c\\nd\\te\\u0001\"");
}

TEST(EventLogTest, EachEventIsOneLineWrittenThroughAndThreadsDoNotInterleave) {
  const std::string path = (std::filesystem::temp_directory_path() / "moreh_event_log_test.events.jsonl").string();
  ASSERT_TRUE(open_event_log(path, /*fresh=*/true));
  EXPECT_TRUE(events_enabled());
  EXPECT_EQ(event_log_path(), path);
  emit_event("run_start", "\"pid\": 1");
  EXPECT_EQ(lines_of(path).size(), 1u) << "written through before the file is closed";
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([t] {
      for (int i = 0; i < 100; ++i) emit_event("step", "\"step\": " + std::to_string(t * 100 + i));
    });
  for (auto& t : threads) t.join();
  emit_event("run_end");
  close_event_log();
  EXPECT_FALSE(events_enabled());
  emit_event("step", "\"step\": -1");  // off: nowhere
  const auto lines = lines_of(path);
  ASSERT_EQ(lines.size(), 402u);
  EXPECT_EQ(lines.front().rfind("{\"t\": ", 0), 0u);
  EXPECT_NE(lines.front().find("\"event\": \"run_start\", \"pid\": 1}"), std::string::npos);
  EXPECT_NE(lines.back().find("\"event\": \"run_end\"}"), std::string::npos);
  for (const auto& line : lines) EXPECT_TRUE(line.front() == '{' && line.back() == '}') << line;
  ASSERT_TRUE(open_event_log(path, /*fresh=*/false));  // appended to
  emit_event("run_start");
  close_event_log();
  EXPECT_EQ(lines_of(path).size(), 403u);
  std::filesystem::remove(path);
}

TEST(EventLogTest, AnUnopenableFileTurnsEventsOff) {
  EXPECT_FALSE(open_event_log("/proc/no/such/dir/x.events.jsonl", true));
  EXPECT_FALSE(events_enabled());
  EXPECT_EQ(event_log_path(), "");
  emit_event("step");  // does nothing, throws nothing
}

}  // namespace
}  // namespace moreh::runtime
