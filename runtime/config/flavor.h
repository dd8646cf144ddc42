// MoAI flavors: the size of the virtual device, named by its total memory as MoAI names it, and the number
// of physical devices behind it (one per 64 GB, the memory of an MI250 GCD; docs/FLAVORS.md).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moreh::runtime {

struct Flavor {
  std::string name;     // "xLarge.512GB"
  int num_devices = 1;  // physical devices behind the virtual one (a node flavor: this process's one)
  // > 0: a flavor over this process and the first `nodes` workers of the user config's `workers` line
  // ("Nodes.2"); the workers' devices follow this process's one (docs/MULTI_NODE.md).
  int nodes = 0;
};

// "Nodes.<k>": this process and the first k configured workers (k from 1 to kMaxNodeFlavor).
inline constexpr int kMaxNodeFlavor = 1024;
Flavor node_flavor(int nodes);

// Nominal memory of one physical device in MoAI's naming (GB, 10^9 bytes): the GB number / 64 = devices.
inline constexpr uint64_t kFlavorGigabytesPerDevice = 64;

// MoAI's thirteen flavors, smallest first (the order of moreh-switch-model's menu).
const std::vector<Flavor>& flavor_table();
// The flavor of the table a process gets when nothing chooses one.
const Flavor& default_flavor();
// A table flavor by name, ignoring case ("xlarge.512gb" finds xLarge.512GB), or a node flavor ("nodes.2").
std::optional<Flavor> find_flavor(std::string_view name);
// The table's flavor with n devices, or "Custom.<n*64>GB" for a count the table lacks (MOREH_NUM_DEVICES).
Flavor flavor_for_devices(int n);
// "Small.64GB, Medium.128GB, ..." for error messages.
std::string flavor_names();

}  // namespace moreh::runtime
