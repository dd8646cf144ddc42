#include "runtime/exec/gather_home.h"

#include <fmt/format.h>

#include <cstring>

#include "runtime/base/errors.h"
#include "runtime/kernels/elementwise_reduction.h"

namespace moreh::runtime {

void gather_home(Buffer& b, const std::vector<PhysicalDevice*>& devices) {
  if (devices.size() <= 1) return;
  const Placement p = b.placement();
  if (p.kind == PlacementKind::kHome) return;
  const int n = static_cast<int>(devices.size());
  const std::vector<int> holders = placement_devices(p, n);  // the devices the placement speaks of
  const int h = static_cast<int>(holders.size());
  // Host devices' blocks are host memory; a CUDA device's are read and written through its copies.
  auto host_bytes = [&](int d, PhysicalBlock& m, uint64_t offset, uint64_t bytes, std::vector<char>& staging) {
    if (devices[d]->host_accessible()) return static_cast<const char*>(m.data()) + offset;
    staging.resize(bytes);
    devices[d]->read(staging.data(), static_cast<const char*>(m.data()) + offset, bytes);
    return static_cast<const char*>(staging.data());
  };
  PhysicalDevice& home = *devices[0];
  if (p.kind == PlacementKind::kShard && b.has_memory()) {
    // Gather the rows onto device 0.
    auto full = home.allocate(b.bytes());
    const uint64_t row = b.bytes() / static_cast<uint64_t>(p.rows);
    std::vector<char> staging;
    for (int rank = 0; rank < h; ++rank) {
      const int d = holders[rank];
      RowRange r = split_rows(p.rows, h, rank);
      if (r.count == 0) continue;
      PhysicalBlock* m = b.memory(d);
      if (!m) throw Error(fmt::format("buffer {} lost its rows on {}", b.id(), devices[d]->name()));
      const char* src = host_bytes(d, *m, 0, r.count * row, staging);
      char* dst = static_cast<char*>(full->data()) + r.begin * row;
      if (home.host_accessible()) std::memcpy(dst, src, r.count * row);
      else home.write(dst, src, r.count * row);
    }
    b.unbind_all();
    b.bind(0, std::move(full));
  } else if (p.kind == PlacementKind::kPartial && b.memory(holders.front())) {
    const uint64_t bytes = b.bytes();
    std::vector<std::vector<char>> staging(n);
    std::vector<const void*> parts;
    for (int d : holders)
      if (b.memory(d)) parts.push_back(host_bytes(d, *b.memory(d), 0, bytes, staging[d]));
    if (holders.front() != 0 || !b.memory(0)) b.bind(0, home.allocate(bytes));  // not a holder: its block is stale
    if (home.host_accessible()) {
      reduce_elements(p.type, ReduceOp::kSum, parts, b.memory(0)->data(), bytes / size_of(p.type));
    } else {
      std::vector<char> sum(bytes);
      reduce_elements(p.type, ReduceOp::kSum, parts, sum.data(), bytes / size_of(p.type));
      home.write(b.memory(0)->data(), sum.data(), bytes);
    }
  } else if (holders.front() != 0 && b.memory(holders.front())) {
    // A whole value held elsewhere only (a pipeline stage's parameter): copy it to device 0.
    const uint64_t bytes = b.bytes();
    std::vector<char> staging;
    const char* src = host_bytes(holders.front(), *b.memory(holders.front()), 0, bytes, staging);
    auto mine = home.allocate(bytes);
    if (home.host_accessible()) std::memcpy(mine->data(), src, bytes);
    else home.write(mine->data(), src, bytes);
    b.bind(0, std::move(mine));
  }
  for (int d = 1; d < n; ++d) b.unbind(d);
  b.set_placement({PlacementKind::kHome});
}

}  // namespace moreh::runtime
