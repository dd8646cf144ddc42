#include "runtime/config/flavor_choice.h"

#include <cctype>

#include "runtime/base/errors.h"
#include "runtime/config/user_config.h"

namespace moreh::runtime {
namespace {

constexpr int kMaxDevices = 4096;

int parse_num_devices(const std::string& s) {
  auto bad = [&] {
    return ConfigError("MOREH_NUM_DEVICES='" + s + "' is not valid: expected a number of physical devices from 1 to " +
                       std::to_string(kMaxDevices));
  };
  if (s.empty() || s.size() > 4) throw bad();
  for (unsigned char c : s)
    if (!std::isdigit(c)) throw bad();
  int n = std::stoi(s);
  if (n < 1 || n > kMaxDevices) throw bad();
  return n;
}

}  // namespace

FlavorChoice choose_flavor(const char* flavor_env, const char* num_devices_env, const std::string& config_file) {
  const bool has_flavor = flavor_env && *flavor_env, has_num = num_devices_env && *num_devices_env;
  if (has_flavor) {
    auto flavor = find_flavor(flavor_env);
    if (!flavor)
      throw ConfigError(std::string("MOREH_FLAVOR='") + flavor_env + "' is not a flavor: expected one of " +
                        flavor_names());
    if (has_num) {
      int n = parse_num_devices(num_devices_env);
      if (n != flavor->num_devices)
        throw ConfigError(std::string("MOREH_FLAVOR='") + flavor_env + "' has " + std::to_string(flavor->num_devices) +
                          " physical devices but MOREH_NUM_DEVICES='" + num_devices_env + "'; set only one of them");
    }
    return {*flavor, "MOREH_FLAVOR"};
  }
  if (has_num) return {flavor_for_devices(parse_num_devices(num_devices_env)), "MOREH_NUM_DEVICES"};
  UserConfig persisted = read_user_config(config_file);
  if (persisted.flavor) return {*find_flavor(*persisted.flavor), config_file};
  return {default_flavor(), "default"};
}

}  // namespace moreh::runtime
