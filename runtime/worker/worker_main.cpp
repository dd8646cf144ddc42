#include "runtime/worker/worker_main.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <thread>

#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"
#include "runtime/config/config.h"
#include "runtime/net/token_auth.h"
#include "runtime/net/worker_server.h"
#include "runtime/worker/node_job.h"

namespace moreh::runtime {
namespace {

std::atomic<int> g_signal{0};
void on_signal(int sig) { g_signal.store(sig); }

std::string this_host() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "localhost";
  return name;
}

}  // namespace

std::string worker_usage() {
  return "usage: moreh-worker --listen HOST:PORT --token-file FILE [--host-devices K] [--capacity SIZE]\n"
         "                    [--data-host ADDR] [--max-message SIZE] [--idle-timeout SECONDS]\n"
         "Owns this node's devices and runs the jobs moreh clients send it, one at a time, until SIGTERM.\n"
         "  --listen HOST:PORT      address to accept clients on (port 0: any free port, printed at start)\n"
         "  --token-file FILE       the shared token; the file must be private to you (chmod 600)\n"
         "  --host-devices K        host devices to serve (default 1)\n"
         "  --capacity SIZE         memory per host device (default: 80% of RAM / K)\n"
         "  --data-host ADDR        address the data plane (Gloo) binds to (default: the listen address)\n"
         "  --max-message SIZE      largest message accepted from a client (default 64MiB)\n"
         "  --idle-timeout SECONDS  a job's client silent this long is taken as gone (default 60)\n";
}

WorkerArgs parse_worker_args(const std::vector<std::string>& args, bool& help) {
  WorkerArgs a;
  help = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& flag = args[i];
    if (flag == "-h" || flag == "--help") {
      help = true;
      return a;
    }
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw ConfigError(fmt::format("{} needs a value", flag));
      return args[++i];
    };
    if (flag == "--listen") {
      a.listen = value();
    } else if (flag == "--token-file") {
      a.token_file = value();
    } else if (flag == "--host-devices") {
      const std::string& v = value();
      try {
        size_t used = 0;
        const long k = std::stol(v, &used);
        if (used != v.size() || k < 1 || k > 64) throw std::invalid_argument(v);
        a.host_devices = static_cast<uint32_t>(k);
      } catch (const std::exception&) {
        throw ConfigError(fmt::format("--host-devices {}: expected a number from 1 to 64", v));
      }
    } else if (flag == "--capacity") {
      a.capacity = value();
    } else if (flag == "--data-host") {
      a.data_host = value();
    } else if (flag == "--max-message") {
      a.max_message = value();
    } else if (flag == "--idle-timeout") {
      const std::string& v = value();
      try {
        a.idle_timeout_s = std::stod(v);
        if (!(a.idle_timeout_s > 0)) throw std::invalid_argument(v);
      } catch (const std::exception&) {
        throw ConfigError(fmt::format("--idle-timeout {}: expected seconds above 0", v));
      }
    } else {
      throw ConfigError(fmt::format("unknown argument '{}'", flag));
    }
  }
  if (a.listen.empty()) throw ConfigError("--listen HOST:PORT is required");
  if (a.token_file.empty()) throw ConfigError("--token-file FILE is required");
  return a;
}

int worker_main(const std::vector<std::string>& argv, KernelProvider* provider, const PayloadCodec* codec) {
  WorkerArgs args;
  WorkerServerOptions options;
  NodeOptions node;
  try {
    bool help = false;
    args = parse_worker_args(argv, help);
    if (help) {
      std::fputs(worker_usage().c_str(), stdout);
      return 0;
    }
    Config config = Config::from_env();
    init_logging(config);
    // A listen address of port 0 is allowed here (tests, launchers that read the port back).
    const auto colon = args.listen.rfind(':');
    if (colon != std::string::npos && args.listen.substr(colon + 1) == "0")
      options.listen = Endpoint{args.listen.substr(0, colon), 0};
    else
      options.listen = parse_endpoint(args.listen, "--listen");
    options.token = read_token_file(args.token_file);
    try {
      const uint64_t bound = parse_size(args.max_message);
      if (bound < 4096 || bound > (1ull << 31)) throw std::invalid_argument(args.max_message);
      options.payload_bound = static_cast<uint32_t>(bound);
    } catch (const std::invalid_argument&) {
      throw ConfigError(fmt::format("--max-message {}: expected a size from 4KiB to 2GiB", args.max_message));
    }
    options.idle_timeout = std::chrono::milliseconds(static_cast<int64_t>(args.idle_timeout_s * 1000));
    node.host_devices = args.host_devices;
    node.provider = provider;
    node.codec = codec;
    if (!args.capacity.empty()) {
      try {
        node.capacity = parse_size(args.capacity);
      } catch (const std::invalid_argument&) {
        throw ConfigError(fmt::format("--capacity {}: expected a size such as 16GiB", args.capacity));
      }
    } else {
      const uint64_t ram = static_cast<uint64_t>(::sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
      node.capacity = ram / 10 * 8 / args.host_devices;
    }
    node.data_host = !args.data_host.empty() ? args.data_host
                     : options.listen.host == "0.0.0.0" || options.listen.host == "::" ? this_host()
                                                                                        : options.listen.host;
    options.node = NodeInfo{this_host(), "host", node.host_devices, node.capacity, "", false, ""};
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "moreh-worker: %s\n%s", e.what(), worker_usage().c_str());
    return 2;
  }
  WorkerServer server(options, [node](const std::string&) { return std::make_unique<NodeJob>(node); });
  try {
    server.start();
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "moreh-worker: %s\n", e.what());
    return 1;
  }
  // The line launchers and tests read to learn the port.
  std::printf("moreh-worker ready on %s:%u\n", options.listen.host.c_str(), server.port());
  std::fflush(stdout);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  while (g_signal.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  log().info("moreh-worker: signal {}: stopping", g_signal.load());
  server.stop();
  flush_log();
  return 0;
}

}  // namespace moreh::runtime
