#include "runtime/config/config.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include "runtime/base/errors.h"
#include "runtime/config/flavor_choice.h"
#include "runtime/config/user_config.h"

namespace moreh::runtime {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return (v && *v) ? v : nullptr;
}

uint64_t default_host_capacity() {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return 8ull << 30;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) / 10 * 8;
}

template <class F>
auto parse_var(const char* name, const char* value, const char* expected, F&& parse) {
  try {
    return parse(std::string_view(value));
  } catch (const std::exception&) {
    throw ConfigError(std::string(name) + "='" + value + "' is not valid: expected " + expected);
  }
}

uint64_t parse_count(std::string_view s) {
  size_t used = 0;
  std::string str(s);
  if (str.empty() || !std::isdigit(static_cast<unsigned char>(str[0]))) throw std::invalid_argument("count");
  unsigned long long v = std::stoull(str, &used);
  if (used != str.size() || v == 0) throw std::invalid_argument("count");
  return v;
}

}  // namespace

uint64_t parse_size(std::string_view text) {
  std::string s = lower(text);
  s.erase(std::remove_if(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); }), s.end());
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0) throw std::invalid_argument("size has no number");
  std::string digits = s.substr(0, i);
  if (std::count(digits.begin(), digits.end(), '.') > 1 || digits == ".") throw std::invalid_argument("bad number");
  double number = 0;
  try {
    size_t used = 0;
    number = std::stod(digits, &used);
    if (used != digits.size()) throw std::invalid_argument("bad number");
  } catch (const std::out_of_range&) {
    throw std::invalid_argument("size out of range");
  }
  std::string unit = s.substr(i);
  double scale = 0;
  if (unit.empty() || unit == "b") scale = 1;
  else if (unit == "k" || unit == "kb") scale = 1e3;
  else if (unit == "m" || unit == "mb") scale = 1e6;
  else if (unit == "g" || unit == "gb") scale = 1e9;
  else if (unit == "t" || unit == "tb") scale = 1e12;
  else if (unit == "kib") scale = 1024.0;
  else if (unit == "mib") scale = 1024.0 * 1024;
  else if (unit == "gib") scale = 1024.0 * 1024 * 1024;
  else if (unit == "tib") scale = 1024.0 * 1024 * 1024 * 1024;
  else throw std::invalid_argument("unknown size unit");
  double bytes = number * scale;
  if (!(bytes >= 1) || bytes > 1.8e19) throw std::invalid_argument("size out of range");
  return static_cast<uint64_t>(bytes);
}

Config Config::from_env() {
  Config c;
  if (const char* v = env("MOREH_LOG_LEVEL")) {
    std::string level = lower(v);
    static const char* levels[] = {"trace", "debug", "info", "warning", "warn", "error", "critical", "off"};
    if (std::find(std::begin(levels), std::end(levels), level) == std::end(levels))
      throw ConfigError(std::string("MOREH_LOG_LEVEL='") + v +
                        "' is not valid: expected one of trace, debug, info, warning, error, critical, off");
    c.log_level = level == "warn" ? "warning" : level;
  }
  if (const char* v = env("MOREH_LOG_FILE")) {
    c.log_file = v;
  } else {
    const char* home = env("HOME");
    c.log_file = std::string(home ? home : "/tmp") + "/.moreh/logs/moreh-" + std::to_string(getpid()) + ".log";
    c.log_file_fresh = true;  // a reused pid's file is a dead process's log: this run starts its own
  }
  c.config_dir = runtime::config_dir();
  FlavorChoice choice = choose_flavor(env("MOREH_FLAVOR"), env("MOREH_NUM_DEVICES"), user_config_path(c.config_dir));
  c.flavor = choice.flavor;
  c.flavor_source = choice.source;
  // The host devices share the machine's RAM: by default they split 80% of it.
  c.host_memory_capacity = std::max<uint64_t>(default_host_capacity() / c.flavor.num_devices, 1);
  if (const char* v = env("MOREH_HOST_MEMORY_CAPACITY")) {
    c.host_memory_capacity = parse_var("MOREH_HOST_MEMORY_CAPACITY", v, "a size such as 16GiB, 512MiB or 1073741824",
                                       parse_size);
    c.host_memory_capacity_set = true;
  }
  if (const char* v = env("MOREH_MAX_PENDING_OPS"))
    c.max_pending_ops = parse_var("MOREH_MAX_PENDING_OPS", v, "a positive integer", parse_count);
  if (const char* v = env("MOREH_GRAPH_CACHE_SIZE"))
    c.graph_cache_size = parse_var("MOREH_GRAPH_CACHE_SIZE", v, "a positive integer", parse_count);
  auto parse_seconds = [](std::string_view s) {
    size_t used = 0;
    double d = std::stod(std::string(s), &used);
    if (used != s.size() || !(d > 0) || !std::isfinite(d)) throw std::invalid_argument("timeout");
    return d;
  };
  if (const char* v = env("MOREH_SYNC_TIMEOUT"))
    c.sync_timeout_s = parse_var("MOREH_SYNC_TIMEOUT", v, "a positive number of seconds", parse_seconds);
  // A collective waits for peers that may still be running a long step, so by default it is as patient as
  // a wait for the device.
  c.collective_timeout_s = c.sync_timeout_s;
  if (const char* v = env("MOREH_COLLECTIVE_TIMEOUT"))
    c.collective_timeout_s = parse_var("MOREH_COLLECTIVE_TIMEOUT", v, "a positive number of seconds", parse_seconds);
  if (const char* v = env("MOREH_DEVICE_KIND")) {
    c.device_kind = parse_var("MOREH_DEVICE_KIND", v, "auto, cuda or host", [](std::string_view s) {
      if (s == "auto") return DeviceKindChoice::kAuto;
      if (s == "cuda") return DeviceKindChoice::kCuda;
      if (s == "host") return DeviceKindChoice::kHost;
      throw std::invalid_argument("device kind");
    });
  }
  c.kernel_cache_dir = c.config_dir + "/kernels";
  if (const char* v = env("MOREH_KERNEL_CACHE_DIR")) c.kernel_cache_dir = std::string(v) == "off" ? "" : v;
  if (const char* v = env("MOREH_NCCL_LIBRARY")) c.nccl_library = v;
  if (const char* v = env("MOREH_MEMORY_MARGIN")) {
    const std::string text = lower(v);
    if (!text.empty() && text.back() == '%') {
      c.memory_margin_fraction = parse_var("MOREH_MEMORY_MARGIN", v, "a share such as 5% or a size such as 512MiB",
                                           [](std::string_view s) {
                                             size_t used = 0;
                                             const std::string digits(s.substr(0, s.size() - 1));
                                             const double d = std::stod(digits, &used);
                                             if (used != digits.size() || !(d >= 0) || !(d < 100))
                                               throw std::invalid_argument("share");
                                             return d / 100.0;
                                           });
    } else if (text == "0") {
      c.memory_margin_bytes = 0;
    } else {
      c.memory_margin_bytes = parse_var("MOREH_MEMORY_MARGIN", v, "a share such as 5% or a size such as 512MiB",
                                        parse_size);
    }
  }
  if (const char* v = env("MOREH_DEVICE_PROFILE")) c.device_profile = lower(v);
  if (const char* v = env("MOREH_PLAN_ONLY"))
    c.plan_only = parse_var("MOREH_PLAN_ONLY", v, "0 or 1", [](std::string_view s) {
      if (s == "0") return false;
      if (s == "1") return true;
      throw std::invalid_argument("flag");
    });
  if (const char* v = env("MOREH_LOG_KEEP"))
    c.log_keep = parse_var("MOREH_LOG_KEEP", v, "a count of runs (0: keep every one)", [](std::string_view s) {
      return s == "0" ? uint64_t{0} : parse_count(s);
    });
  if (const char* v = env("MOREH_LOG_EVENTS"))
    c.log_events = parse_var("MOREH_LOG_EVENTS", v, "0 or 1", [](std::string_view s) {
      if (s == "0") return false;
      if (s == "1") return true;
      throw std::invalid_argument("flag");
    });
  // The workers: MOREH_WORKERS, else a node flavor's (the first k of the config file's workers line).
  const std::string config_file = user_config_path(c.config_dir);
  const UserConfig file = c.flavor.nodes > 0 ? read_user_config(config_file) : UserConfig{};
  if (const char* v = env("MOREH_WORKERS"); v && *v) {
    c.workers = parse_endpoints(v, "MOREH_WORKERS");
  } else if (c.flavor.nodes > 0) {
    const std::vector<std::string> listed = file.worker_list();
    if (listed.size() < static_cast<size_t>(c.flavor.nodes))
      throw ConfigError(fmt::format("flavor {} ({}) runs on {} workers, and {} lists {} (a line `workers = "
                                    "host:port, ...`)", c.flavor.name, c.flavor_source, c.flavor.nodes, config_file,
                                    listed.size()));
    for (int k = 0; k < c.flavor.nodes; ++k) c.workers.push_back(parse_endpoints(listed[k], "workers").front());
  }
  if (const char* v = env("MOREH_WORKER_TOKEN_FILE"); v && *v)
    c.worker_token_file = v;
  else if (file.worker_token_file)
    c.worker_token_file = *file.worker_token_file;
  else
    c.worker_token_file = c.config_dir + "/token";
  if (const char* v = env("MOREH_AP_CACHE"))
    c.ap_cache = parse_var("MOREH_AP_CACHE", v, "0 or 1", [](std::string_view s) {
      if (s == "0") return false;
      if (s == "1") return true;
      throw std::invalid_argument("flag");
    });
  if (const char* v = env("MOREH_FUSION_MIN_OPS"))
    c.fusion_min_ops = parse_var("MOREH_FUSION_MIN_OPS", v, "a positive integer", parse_count);
  if (const char* v = env("MOREH_PARALLELISM")) {
    try {
      c.parallelism = parse_parallel_config(v);
    } catch (const ConfigError& e) {
      throw ConfigError(std::string("MOREH_PARALLELISM='") + v + "' is not valid: " + e.what());
    }
  }
  if (const char* v = env("MOREH_FUSION")) {
    c.fusion = parse_var("MOREH_FUSION", v, "auto, on or off", [](std::string_view s) {
      if (s == "auto") return FusionChoice::kAuto;
      if (s == "on") return FusionChoice::kOn;
      if (s == "off") return FusionChoice::kOff;
      throw std::invalid_argument("fusion");
    });
  }
  if (const char* v = env("MOREH_CUDA_MEMORY_FRACTION")) {
    c.cuda_memory_fraction = parse_var("MOREH_CUDA_MEMORY_FRACTION", v, "a number in (0, 1]", [](std::string_view s) {
      size_t used = 0;
      double d = std::stod(std::string(s), &used);
      if (used != s.size() || !(d > 0) || d > 1) throw std::invalid_argument("fraction");
      return d;
    });
  }
  return c;
}

}  // namespace moreh::runtime
