#include "runtime/config/flavor.h"

#include <algorithm>
#include <cctype>

namespace moreh::runtime {
namespace {

Flavor make(const char* size, int devices) {
  return Flavor{std::string(size) + "." + std::to_string(devices * kFlavorGigabytesPerDevice) + "GB", devices};
}

bool same_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](unsigned char x, unsigned char y) {
           return std::tolower(x) == std::tolower(y);
         });
}

}  // namespace

const std::vector<Flavor>& flavor_table() {
  // KT_HAC_Models_Info (moai_ux.md): Small = half an MI250 = one 64 GB GCD, each size doubles or adds
  // MI250s from there; 1.5xLarge (absent from that table) follows the name: 768 GB = 12 GCDs.
  static const std::vector<Flavor> table = {
      make("Small", 1),      make("Medium", 2),     make("Large", 4),     make("xLarge", 8),
      make("1.5xLarge", 12), make("2xLarge", 16),   make("3xLarge", 24),  make("4xLarge", 32),
      make("6xLarge", 48),   make("8xLarge", 64),   make("12xLarge", 96), make("24xLarge", 192),
      make("48xLarge", 384),
  };
  return table;
}

const Flavor& default_flavor() { return flavor_table().front(); }

Flavor node_flavor(int nodes) { return Flavor{"Nodes." + std::to_string(nodes), 1, nodes}; }

std::optional<Flavor> find_flavor(std::string_view name) {
  for (const Flavor& f : flavor_table())
    if (same_ignoring_case(f.name, name)) return f;
  constexpr std::string_view kNodes = "nodes.";
  if (name.size() > kNodes.size() && name.size() <= kNodes.size() + 4 && same_ignoring_case(name.substr(0, kNodes.size()), kNodes)) {
    int k = 0;
    for (char c : name.substr(kNodes.size())) {
      if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
      k = k * 10 + (c - '0');
    }
    if (k >= 1 && k <= kMaxNodeFlavor && name[kNodes.size()] != '0') return node_flavor(k);
  }
  return std::nullopt;
}

Flavor flavor_for_devices(int n) {
  for (const Flavor& f : flavor_table())
    if (f.num_devices == n) return f;
  return make("Custom", n);
}

std::string flavor_names() {
  std::string out;
  for (const Flavor& f : flavor_table()) out += (out.empty() ? "" : ", ") + f.name;
  return out + ", or Nodes.<k> (this process and k workers of the config file's workers line)";
}

}  // namespace moreh::runtime
