#include "scheduler/lowering/liveness.h"

#include <algorithm>

namespace moreh::scheduler {

std::vector<std::vector<uint32_t>> dead_after(
    size_t positions, size_t num_slots,
    const std::function<void(size_t, std::vector<uint32_t>&, std::vector<uint32_t>&)>& at) {
  std::vector<std::vector<uint32_t>> out(positions);
  // Per slot, whether the value it holds after the position being looked at is never read: nothing touches
  // it later, or the next touch writes it afresh.
  std::vector<bool> dead(num_slots, true);
  std::vector<uint32_t> touched, fresh;
  for (size_t p = positions; p-- > 0;) {
    touched.clear();
    fresh.clear();
    at(p, touched, fresh);
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (uint32_t s : touched)
      if (dead[s]) out[p].push_back(s);
    for (uint32_t s : touched) dead[s] = false;
    for (uint32_t s : fresh) dead[s] = true;  // what it held before this write is not read here
  }
  return out;
}

}  // namespace moreh::scheduler
