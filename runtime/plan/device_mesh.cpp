#include "runtime/plan/device_mesh.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "runtime/base/errors.h"
#include "runtime/plan/placement.h"

namespace moreh::runtime {

DeviceMesh::DeviceMesh(std::vector<MeshAxis> axes) : axes_(std::move(axes)) {
  for (size_t i = 0; i < axes_.size(); ++i) {
    if (axes_[i].name.empty()) throw ConfigError(fmt::format("mesh axis {} has no name", i));
    if (axes_[i].size < 1)
      throw ConfigError(fmt::format("mesh axis {} has size {}; sizes are at least 1", axes_[i].name, axes_[i].size));
    for (size_t j = 0; j < i; ++j)
      if (axes_[j].name == axes_[i].name) throw ConfigError(fmt::format("mesh axis {} is named twice", axes_[i].name));
    size_ *= axes_[i].size;
  }
}

DeviceMesh DeviceMesh::of_layout(const ParallelSizes& s) {
  return DeviceMesh({{"dp", s.dp}, {"pp", s.pp}, {"cp", s.cp}, {"tp", s.tp}});
}

int DeviceMesh::axis(std::string_view name) const {
  for (size_t i = 0; i < axes_.size(); ++i)
    if (axes_[i].name == name) return static_cast<int>(i);
  std::vector<std::string> names;
  for (const auto& a : axes_) names.push_back(a.name);
  throw ConfigError(fmt::format("the mesh has no axis {} (axes: {})", name, fmt::join(names, ", ")));
}

std::vector<int> DeviceMesh::coordinates(int device) const {
  if (device < 0 || device >= size_)
    throw ConfigError(fmt::format("device {} is outside a mesh of {} devices", device, size_));
  std::vector<int> c(axes_.size());
  for (size_t i = axes_.size(); i-- > 0;) {
    c[i] = device % axes_[i].size;
    device /= axes_[i].size;
  }
  return c;
}

int DeviceMesh::device_at(const std::vector<int>& c) const {
  if (c.size() != axes_.size())
    throw ConfigError(fmt::format("{} coordinates for a mesh of {} axes", c.size(), axes_.size()));
  int device = 0;
  for (size_t i = 0; i < axes_.size(); ++i) {
    if (c[i] < 0 || c[i] >= axes_[i].size)
      throw ConfigError(fmt::format("coordinate {} is outside mesh axis {} of size {}", c[i], axes_[i].name,
                                    axes_[i].size));
    device = device * axes_[i].size + c[i];
  }
  return device;
}

std::vector<int> DeviceMesh::group(int device, int axis) const {
  if (axis < 0 || axis >= static_cast<int>(axes_.size()))
    throw ConfigError(fmt::format("axis {} is outside a mesh of {} axes", axis, axes_.size()));
  std::vector<int> c = coordinates(device), members;
  for (int k = 0; k < axes_[axis].size; ++k) {
    c[axis] = k;
    members.push_back(device_at(c));
  }
  return members;
}

std::vector<std::vector<int>> DeviceMesh::groups(int axis) const {
  std::vector<std::vector<int>> out;
  std::vector<bool> seen(size_, false);
  for (int d = 0; d < size_; ++d) {
    if (seen[d]) continue;
    out.push_back(group(d, axis));
    for (int m : out.back()) seen[m] = true;
  }
  return out;
}

std::string AxisPlacement::str() const {
  switch (kind) {
    case Kind::kReplicate: return "Replicate";
    case Kind::kShard: return fmt::format("Shard({})", dim);
    case Kind::kPartial: return "Partial";
  }
  return "?";
}

std::string describe(const DeviceMesh& mesh, const Placements& placements) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < placements.size() && i < mesh.axes().size(); ++i)
    parts.push_back(fmt::format("{}: {}", mesh.axes()[i].name, placements[i].str()));
  return fmt::format("({})", fmt::join(parts, ", "));
}

Dims local_shape(const DeviceMesh& mesh, const Placements& placements, const Dims& global, int device) {
  if (placements.size() != mesh.axes().size())
    throw ConfigError(fmt::format("{} placements for a mesh of {} axes", placements.size(), mesh.axes().size()));
  const std::vector<int> c = mesh.coordinates(device);
  Dims local = global;
  for (size_t i = 0; i < placements.size(); ++i) {
    const AxisPlacement& p = placements[i];
    if (p.kind != AxisPlacement::Kind::kShard) continue;
    if (p.dim < 0 || p.dim >= static_cast<int>(local.size()))
      throw ConfigError(fmt::format("{} on mesh axis {} for a value of {} dimensions", p.str(), mesh.axes()[i].name,
                                    local.size()));
    local[p.dim] = split_rows(local[p.dim], mesh.axes()[i].size, c[i]).count;
  }
  return local;
}

}  // namespace moreh::runtime
