#include "runtime/plan/placement.h"

#include <algorithm>
#include <bit>

namespace moreh::runtime {

RowRange split_rows(int64_t rows, int devices, int device) {
  const int64_t base = rows / devices, extra = rows % devices;
  const int64_t begin = device * base + (device < extra ? device : extra);
  return {begin, base + (device < extra ? 1 : 0)};
}

}  // namespace moreh::runtime

namespace moreh::runtime {

std::vector<int> placement_devices(const Placement& p, int count) {
  std::vector<int> out;
  if (p.ranks > 0) {  // from the first device the placement speaks of (a pipeline stage's, or device 0)
    const int first = p.devices == 0 ? 0 : std::countr_zero(p.devices);
    for (int q = 0; q < p.ranks && first + q * p.stride < count; ++q) out.push_back(first + q * p.stride);
    return out;
  }
  for (int d = 0; d < count; ++d)
    if (p.devices == 0 || (d < 64 && (p.devices >> d) & 1u)) out.push_back(d);
  return out;
}

PlacementRank placement_rank(const Placement& p, int count, int device) {
  if (p.kind == PlacementKind::kHome) return {device == 0 ? 0 : -1, 1};
  if (p.ranks > 0) {
    if (p.devices != 0 && (device >= 64 || !((p.devices >> device) & 1u))) return {-1, p.ranks};
    return {(device / std::max(p.stride, 1)) % p.ranks, p.ranks};
  }
  const std::vector<int> holders = placement_devices(p, count);
  const auto at = std::find(holders.begin(), holders.end(), device);
  return {at == holders.end() ? -1 : static_cast<int>(at - holders.begin()), static_cast<int>(holders.size())};
}

uint64_t placement_bytes(const Placement& p, uint64_t bytes, int count, int device) {
  if (p.kind == PlacementKind::kHome) return device == 0 ? bytes : 0;
  const PlacementRank at = placement_rank(p, count, device);
  if (at.rank < 0) return 0;
  if (p.kind != PlacementKind::kShard || p.rows <= 0) return bytes;
  const uint64_t outer = static_cast<uint64_t>(std::max<int64_t>(p.outer, 1));
  uint64_t part = bytes / (static_cast<uint64_t>(p.rows) * outer) * outer *
                  static_cast<uint64_t>(split_rows(p.rows, at.ranks, at.rank).count);
  if (p.inner_rows > 0 && p.inner_ranks > 0) {
    const int q = (device / std::max(p.inner_stride, 1)) % p.inner_ranks;
    part = part / static_cast<uint64_t>(p.inner_rows) *
           static_cast<uint64_t>(split_rows(p.inner_rows, p.inner_ranks, q).count);
  }
  return part;
}

}  // namespace moreh::runtime
