// AP's explanation: the candidates as JSON and as a table.
#include "scheduler/search/search_report.h"

#include <gtest/gtest.h>

namespace moreh::scheduler {
namespace {

SearchResult two_candidates() {
  SearchResult r;
  r.candidates.resize(2);
  r.candidates[0].peak_bytes = {100, 200};
  r.candidates[0].step_ms = 1.5;
  r.candidates[0].tokens_per_s = 1000;
  r.candidates[0].lower_ms = 12.25;
  r.candidates[0].bound_ms = 0.75;
  r.candidates[1].config.num_stages = 2;
  r.candidates[1].dropped = "out of memory: needs \"a lot\"\non device 1";
  r.candidates[1].peak_bytes = {900, 950};
  r.selected = 0;
  r.tokens_per_step = 1500;
  return r;
}

TEST(SearchReportTest, TheJsonListsEveryCandidateWithItsFate) {
  const std::string json = candidates_json(two_candidates(), {.flavor = "Medium.128GB", .devices = 2, .profile = "host",
                                                              .graph_hash = 0xabc, .reason = "AP", .capacity = 1000});
  EXPECT_NE(json.find("\"graph_hash\": \"0000000000000abc\""), std::string::npos);
  EXPECT_NE(json.find("\"selected\": 0"), std::string::npos);
  EXPECT_NE(json.find("\"peak_bytes\": [100, 200]"), std::string::npos);
  EXPECT_NE(json.find("\"pp\": 2"), std::string::npos);
  EXPECT_NE(json.find(R"("dropped": "out of memory: needs \"a lot\"\non device 1")"), std::string::npos) << json;
  EXPECT_NE(json.find("\"dropped\": null"), std::string::npos);
  EXPECT_NE(json.find("\"lower_ms\": 12.250"), std::string::npos) << json;
  EXPECT_NE(json.find("\"bound_ms\": 0.7500"), std::string::npos) << json;
  EXPECT_EQ(json.find('\n', json.find("needs")), json.find("\n", json.find("\"communication_ms\"", json.find("needs"))))
      << "the reason's newline is escaped, not written";
}

TEST(SearchReportTest, TheTableHasAHeaderAndALinePerCandidate) {
  const auto lines = candidate_table(two_candidates(), 2);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_NE(lines[0].find("bound ms"), std::string::npos);
  EXPECT_NE(lines[1].find("selected"), std::string::npos);
  EXPECT_NE(lines[1].find("0.750"), std::string::npos) << lines[1];
  EXPECT_NE(lines[2].find("out of memory"), std::string::npos);
}

}  // namespace
}  // namespace moreh::scheduler
