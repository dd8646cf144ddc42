// The per-user settings file that moreh-switch-model writes and every moreh process reads:
// <config dir>/config, lines of `key = value` (`#` starts a comment). Only `flavor` is known so far.
#pragma once
#include <optional>
#include <string>

namespace moreh::runtime {

struct UserConfig {
  std::optional<std::string> flavor;  // a name from flavor_table()
};

// $MOREH_CONFIG_DIR, else $HOME/.moreh (else /tmp/.moreh).
std::string config_dir();
std::string user_config_path(const std::string& dir);

// A missing file is an empty config. A line that is not `key = value`, an unknown key or an unknown flavor
// throws ConfigError naming the file and the line.
UserConfig read_user_config(const std::string& path);
// Writes the whole file atomically (a temporary file in the same directory, then rename), creating the
// directory. Throws ConfigError naming the path on failure.
void write_user_config(const std::string& path, const UserConfig& config);

}  // namespace moreh::runtime
