// Advanced Parallelization's explanation: every candidate with its layout, peak memory per device, predicted
// step time and throughput and why it was dropped, as advanced_parallelization_candidates.json and as a table.
#pragma once
#include <string>
#include <vector>

#include "scheduler/search/parallel_search.h"

namespace moreh::scheduler {

struct SearchContext {
  std::string flavor;
  int devices = 0;
  std::string profile;     // the device profile the costs come from
  uint64_t graph_hash = 0;  // stable_graph_hash
  std::string reason;      // why the search ran (AP enabled, or batch splitting ran out of memory)
  uint64_t capacity = 0, margin = 0;
};

std::string candidates_json(const SearchResult& result, const SearchContext& context);
// One line per candidate, aligned (MOREH_LOG_LEVEL=debug).
std::vector<std::string> candidate_table(const SearchResult& result, int devices);

}  // namespace moreh::scheduler
