#include "runtime/net/endpoint.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "runtime/base/errors.h"

namespace moreh::runtime {

std::string Endpoint::to_string() const {
  return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port) : fmt::format("{}:{}", host, port);
}

Endpoint parse_endpoint(std::string_view text, std::string_view what) {
  auto bad = [&](std::string_view why) {
    return ConfigError(fmt::format("{}: '{}' is not host:port ({})", what, text, why));
  };
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      throw bad("an IPv6 address is written [address]:port");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) throw bad("no port");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) throw bad("an IPv6 address is written [address]:port");
  }
  if (host.empty()) throw bad("no host");
  if (std::any_of(host.begin(), host.end(), [](char c) { return c == ' ' || c == ',' || c == '/'; }))
    throw bad("the host has a space, comma or slash");
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535)
    throw bad("the port must be a number from 1 to 65535");
  return Endpoint{std::string(host), static_cast<uint16_t>(value)};
}

std::vector<Endpoint> parse_endpoints(std::string_view text, std::string_view what) {
  std::vector<Endpoint> out;
  size_t at = 0;
  while (at <= text.size()) {
    const auto comma = text.find(',', at);
    std::string_view item = text.substr(at, comma == std::string_view::npos ? std::string_view::npos : comma - at);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.empty()) throw ConfigError(fmt::format("{}: an empty entry in '{}'", what, text));
    Endpoint e = parse_endpoint(item, what);
    if (std::find(out.begin(), out.end(), e) != out.end())
      throw ConfigError(fmt::format("{}: {} is listed twice", what, e.to_string()));
    out.push_back(std::move(e));
    if (comma == std::string_view::npos) break;
    at = comma + 1;
  }
  return out;
}

}  // namespace moreh::runtime
