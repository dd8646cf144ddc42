// Where a worker listens: "host:port" (a name, an IPv4 address, or [IPv6]:port), and lists of them
// (MOREH_WORKERS, hostfiles).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moreh::runtime {

struct Endpoint {
  std::string host;
  uint16_t port = 0;
  std::string to_string() const;
  bool operator==(const Endpoint&) const = default;
};

// ConfigError naming `what` (the variable or file) and the entry that is malformed.
Endpoint parse_endpoint(std::string_view text, std::string_view what);
// Comma-separated endpoints; empty entries are an error, as is a repeated endpoint.
std::vector<Endpoint> parse_endpoints(std::string_view text, std::string_view what);

}  // namespace moreh::runtime
