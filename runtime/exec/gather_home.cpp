#include "runtime/exec/gather_home.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "runtime/base/errors.h"
#include "runtime/device/remote_device.h"
#include "runtime/kernels/elementwise_reduction.h"

namespace moreh::runtime {
namespace {

// Host devices' blocks are host memory; a CUDA device's are read through its copies.
const char* host_bytes(PhysicalDevice& device, PhysicalBlock& m, uint64_t bytes, std::vector<char>& staging) {
  if (device.host_accessible()) return static_cast<const char*>(m.data());
  staging.resize(bytes);
  device.read(staging.data(), m.data(), bytes);
  return staging.data();
}

// The bytes of device d's block of b: its memory here, or fetched from the device's worker; null when d holds
// nothing here.
const char* part_of(const Buffer& b, const std::vector<PhysicalDevice*>& devices, int d, uint64_t bytes,
                    std::vector<char>& staging) {
  if (const auto* remote = dynamic_cast<const RemoteDevice*>(devices[d])) {
    const std::string got = remote->fetch(b.id(), bytes);
    staging.assign(got.begin(), got.end());
    return staging.data();
  }
  PhysicalBlock* m = b.memory(d);
  return m ? host_bytes(*devices[d], *m, bytes, staging) : nullptr;
}

bool is_remote(const PhysicalDevice* d) { return dynamic_cast<const RemoteDevice*>(d) != nullptr; }

// Writes b's whole value into `dst` (b.bytes() of host memory) from where `p` says it lies: the rows of a
// kShard value from their holders, the sum of a kPartial one's addends, else a holder's whole copy. False
// when no holder has memory (a value never written).
bool assemble(const Buffer& b, const Placement& p, const std::vector<PhysicalDevice*>& devices, char* dst) {
  const int n = static_cast<int>(devices.size());
  const std::vector<int> holders = placement_devices(p, n);  // the devices the placement speaks of
  const int h = static_cast<int>(holders.size());
  std::vector<char> staging;
  const bool remote_holder = std::any_of(holders.begin(), holders.end(), [&](int d) { return is_remote(devices[d]); });
  if (p.kind == PlacementKind::kShard) {
    if (!b.has_memory() && !remote_holder) return false;
    const uint64_t outer = static_cast<uint64_t>(std::max<int64_t>(p.outer, 1));
    const uint64_t row = b.bytes() / (static_cast<uint64_t>(p.rows) * outer);
    std::vector<char> joined;
    for (int rank = 0; rank < h; ++rank) {
      const int d = holders[rank];
      const RowRange r = split_rows(p.rows, h, rank);
      if (r.count == 0) continue;
      // The device's rows of each of the `outer` blocks, [outer, its rows, row] on the device.
      const uint64_t width = r.count * row;
      const char* part = nullptr;
      if (p.inner_rows > 0 && p.inner_ranks > 0) {
        // The part split again by its own leading rows over the other axis: joined from its holders first.
        const uint64_t inner_row = width * outer / static_cast<uint64_t>(p.inner_rows);
        joined.assign(width * outer, 0);
        for (int q = 0; q < p.inner_ranks; ++q) {
          const int e = d + q * p.inner_stride;
          const RowRange rows = split_rows(p.inner_rows, p.inner_ranks, q);
          if (rows.count == 0) continue;
          const uint64_t bytes = static_cast<uint64_t>(rows.count) * inner_row;
          const char* from = e < n ? part_of(b, devices, e, bytes, staging) : nullptr;
          if (!from) throw Error(fmt::format("buffer {} lost its rows on device {}", b.id(), e));
          std::memcpy(joined.data() + static_cast<uint64_t>(rows.begin) * inner_row, from, bytes);
        }
        part = joined.data();
      } else {
        part = part_of(b, devices, d, width * outer, staging);
        if (!part) throw Error(fmt::format("buffer {} lost its rows on {}", b.id(), devices[d]->name()));
      }
      for (uint64_t j = 0; j < outer; ++j)
        std::memcpy(dst + (j * static_cast<uint64_t>(p.rows) + r.begin) * row, part + j * width, width);
    }
    return true;
  }
  if (p.kind == PlacementKind::kPartial) {
    std::vector<std::vector<char>> parts_staging(n);
    std::vector<const void*> parts;
    for (int d : holders)
      if (const char* part = part_of(b, devices, d, b.bytes(), parts_staging[d])) parts.push_back(part);
    if (parts.empty()) return false;
    reduce_elements(p.type, ReduceOp::kSum, parts, dst, b.bytes() / size_of(p.type));
    return true;
  }
  for (int pass = 0; pass < 2; ++pass)  // a copy in this process before one on a worker
    for (int d : holders)
      if (is_remote(devices[d]) == (pass == 1))
        if (const char* whole = part_of(b, devices, d, b.bytes(), staging)) {
          std::memcpy(dst, whole, b.bytes());
          return true;
        }
  return false;
}

}  // namespace

void gather_home(Buffer& b, const std::vector<PhysicalDevice*>& devices) {
  if (devices.size() <= 1) return;
  const Placement p = b.placement();
  if (p.kind == PlacementKind::kHome) return;
  const int n = static_cast<int>(devices.size());
  const std::vector<int> holders = placement_devices(p, n);
  PhysicalDevice& home = *devices[0];
  // A whole value device 0 already holds stays where it is; anything else is assembled and put there.
  const bool home_holds_whole = p.kind != PlacementKind::kShard && p.kind != PlacementKind::kPartial &&
                                holders.front() == 0 && b.memory(0);
  const bool remote = std::any_of(holders.begin(), holders.end(), [&](int d) { return is_remote(devices[d]); });
  if (!home_holds_whole &&
      (remote || (p.kind == PlacementKind::kShard ? b.has_memory() : b.memory(holders.front()) != nullptr))) {
    std::vector<char> value(b.bytes());
    if (assemble(b, p, devices, value.data())) {
      // Device 0's own full-size block (an addend of a partial value) takes the value; else a new one.
      PhysicalBlock* own = p.kind != PlacementKind::kShard && holders.front() == 0 ? b.memory(0) : nullptr;
      std::unique_ptr<PhysicalBlock> full = own && own->bytes() >= b.bytes() ? nullptr : home.allocate(b.bytes());
      PhysicalBlock& into = full ? *full : *own;
      if (home.host_accessible()) std::memcpy(into.data(), value.data(), b.bytes());
      else home.write(into.data(), value.data(), b.bytes());
      if (full) {
        b.unbind_all();
        b.bind(0, std::move(full));
      }
    }
  }
  for (int d = 1; d < n; ++d) b.unbind(d);
  b.set_placement({PlacementKind::kHome});
}

bool read_whole(const Buffer& b, const std::vector<PhysicalDevice*>& devices, void* dst) {
  if (devices.size() <= 1) return false;
  const Placement p = b.placement();
  if (p.kind == PlacementKind::kHome) return false;
  if (p.kind != PlacementKind::kShard && p.kind != PlacementKind::kPartial && b.memory(0) &&
      placement_devices(p, static_cast<int>(devices.size())).front() == 0)
    return false;  // device 0's copy is whole: the caller reads it
  return assemble(b, p, devices, static_cast<char*>(dst));
}

}  // namespace moreh::runtime
