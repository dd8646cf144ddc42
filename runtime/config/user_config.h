// The per-user settings file that moreh-switch-model writes and every moreh process reads:
// <config dir>/config, lines of `key = value` (`#` starts a comment): `flavor`, and a cluster's `workers`
// (host:port, ...) and `worker_token_file`, which the node flavors ("Nodes.2") run on.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace moreh::runtime {

struct UserConfig {
  std::optional<std::string> flavor;             // a name from flavor_table(), or a node flavor
  std::optional<std::string> workers;            // "host:port,host:port": the cluster's moreh-workers
  std::optional<std::string> worker_token_file;  // the token those workers share (else <config dir>/token)
  // The workers' endpoints, in the line's order (empty without a `workers` line).
  std::vector<std::string> worker_list() const;
};

// $MOREH_CONFIG_DIR, else $HOME/.moreh (else /tmp/.moreh).
std::string config_dir();
std::string user_config_path(const std::string& dir);

// A missing file is an empty config. A line that is not `key = value`, an unknown or repeated key, an unknown
// flavor, a malformed workers list, or a node flavor over more workers than the file lists throws ConfigError
// naming the file and the line.
UserConfig read_user_config(const std::string& path);
// Writes the whole file atomically (a temporary file in the same directory, then rename), creating the
// directory. Throws ConfigError naming the path on failure.
void write_user_config(const std::string& path, const UserConfig& config);

}  // namespace moreh::runtime
