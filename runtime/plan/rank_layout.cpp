#include "runtime/plan/rank_layout.h"

#include <fmt/format.h>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

void check(const ParallelSizes& s) {
  if (s.dp < 1 || s.pp < 1 || s.tp < 1 || s.cp < 1)
    throw ConfigError(fmt::format("parallel sizes must be at least 1 (dp {}, pp {}, tp {}, cp {})", s.dp, s.pp, s.tp, s.cp));
}

int digits(int value) { return static_cast<int>(std::to_string(value).size()); }

// "[pp: 3/11]": the index right-aligned and the last index left-aligned to the last index's width.
std::string axis(const char* name, int index, int size) {
  const int w = digits(size - 1);
  return fmt::format("[{}:{:>{}}/{:<{}}]", name, index, w, size - 1, w);
}

}  // namespace

RankCoordinates rank_coordinates(const ParallelSizes& s, int rank) {
  check(s);
  if (rank < 0 || rank >= s.devices())
    throw ConfigError(fmt::format("rank {} is outside a layout of {} devices", rank, s.devices()));
  RankCoordinates c;
  c.tp = rank % s.tp;
  rank /= s.tp;
  c.cp = rank % s.cp;
  rank /= s.cp;
  c.pp = rank % s.pp;
  c.dp = rank / s.pp;
  return c;
}

int rank_of(const ParallelSizes& s, const RankCoordinates& c) {
  check(s);
  if (c.dp < 0 || c.dp >= s.dp || c.pp < 0 || c.pp >= s.pp || c.tp < 0 || c.tp >= s.tp || c.cp < 0 || c.cp >= s.cp)
    throw ConfigError(fmt::format("coordinates dp {} pp {} tp {} cp {} are outside the layout", c.dp, c.pp, c.tp, c.cp));
  return ((c.dp * s.pp + c.pp) * s.cp + c.cp) * s.tp + c.tp;
}

std::string device_count_line(int devices) { return fmt::format("The number of devices is {}.", devices); }

std::vector<std::string> rank_layout_lines(const ParallelSizes& s, const std::vector<std::string>& names) {
  check(s);
  const int n = s.devices();
  if (static_cast<size_t>(n) != names.size())
    throw ConfigError(fmt::format("a layout of dp {} x pp {} x tp {} x cp {} = {} devices does not fit {} devices",
                                  s.dp, s.pp, s.tp, s.cp, n, names.size()));
  std::vector<std::string> lines;
  lines.reserve(n);
  const int w = digits(n - 1);
  for (int r = 0; r < n; ++r) {
    const RankCoordinates c = rank_coordinates(s, r);
    std::string line = fmt::format("[{:>{}}/{}]: ", r, w, n - 1);
    if (s.cp > 1) line += axis("cp", c.cp, s.cp);
    if (s.pp > 1) line += axis("pp", c.pp, s.pp);
    if (s.tp > 1) line += axis("tp", c.tp, s.tp);
    if (s.dp > 1) line += axis("dp", c.dp, s.dp);
    line += (s.cp > 1 || s.pp > 1 || s.tp > 1 || s.dp > 1) ? " " : "";
    line += names[r];
    lines.push_back(std::move(line));
  }
  return lines;
}

}  // namespace moreh::runtime
