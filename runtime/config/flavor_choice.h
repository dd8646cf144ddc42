// Which flavor a process gets: MOREH_FLAVOR or MOREH_NUM_DEVICES (this process only) > the persisted
// choice in the user config file (moreh-switch-model) > the default flavor.
#pragma once
#include <string>

#include "runtime/config/flavor.h"

namespace moreh::runtime {

struct FlavorChoice {
  Flavor flavor;
  std::string source;  // "MOREH_FLAVOR", "MOREH_NUM_DEVICES", the config file's path, or "default"
};

// `flavor_env` / `num_devices_env` are the variables' values (nullptr or empty when unset). Throws
// ConfigError for an unknown flavor (listing the valid ones), a malformed count, the two variables
// disagreeing, or a corrupt config file (naming it).
FlavorChoice choose_flavor(const char* flavor_env, const char* num_devices_env, const std::string& config_file);

}  // namespace moreh::runtime
