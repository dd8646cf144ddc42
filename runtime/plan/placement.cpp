#include "runtime/plan/placement.h"

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
  for (int d = 0; d < count; ++d)
    if (p.devices == 0 || (d < 64 && (p.devices >> d) & 1u)) out.push_back(d);
  return out;
}

}  // namespace moreh::runtime
