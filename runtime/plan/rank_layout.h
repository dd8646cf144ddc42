// Where each physical device sits in a dp × pp × tp (× cp) layout, and the log lines that show it, in
// ezpz's format (seed 004):
//   The number of devices is 8.
//   [0/7]: [pp:0/1][tp:0/1][dp:0/1] host:0
//   [1/7]: [pp:0/1][tp:1/1][dp:0/1] host:1
// Ranks are numbered as ezpz lays them out (arange(N).reshape(dp, pp, cp, tp)): tp varies fastest, then
// cp, then pp, and dp slowest, so a tensor-parallel group is a run of neighbouring devices. A line names
// the coordinates in the order cp, pp, tp, dp, only for axes of size > 1, as `[axis:index/last]` where
// last is the largest index (size − 1), all 0-based; numbers are padded to the width of the largest.
#pragma once
#include <string>
#include <vector>

namespace moreh::runtime {

struct ParallelSizes {
  int dp = 1, pp = 1, tp = 1, cp = 1;
  int devices() const { return dp * pp * tp * cp; }
};

struct RankCoordinates {
  int dp = 0, pp = 0, tp = 0, cp = 0;
  bool operator==(const RankCoordinates&) const = default;
};

// The coordinates of `rank`; throws ConfigError for a size below 1 or a rank outside the layout.
RankCoordinates rank_coordinates(const ParallelSizes& sizes, int rank);
// The rank at `coords` (the inverse of rank_coordinates).
int rank_of(const ParallelSizes& sizes, const RankCoordinates& coords);

// "The number of devices is N."
std::string device_count_line(int devices);
// One line per device, in rank order: "[ r/N-1]: [cp:..][pp:..][tp:..][dp:..] <device name>". Throws
// ConfigError when the sizes' product is not the number of names.
std::vector<std::string> rank_layout_lines(const ParallelSizes& sizes, const std::vector<std::string>& device_names);

}  // namespace moreh::runtime
