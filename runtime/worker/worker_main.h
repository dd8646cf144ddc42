// moreh-worker's command line: `--listen HOST:PORT --token-file FILE [--host-devices K] ...`; serves jobs
// until SIGTERM or SIGINT.
#pragma once
#include <string>
#include <vector>

#include "runtime/device/kernel_provider.h"
#include "runtime/worker/step_codec.h"

namespace moreh::runtime {

struct WorkerArgs {
  std::string listen;
  std::string token_file;
  uint32_t host_devices = 1;
  std::string capacity;   // per host device ("" : MOREH_HOST_MEMORY_CAPACITY's rule)
  std::string data_host;  // Gloo's address ("" : the listen address, or this host's name under 0.0.0.0)
  std::string max_message = "64MiB";
  double idle_timeout_s = 60;
};

// ConfigError saying what is wrong with the arguments, or the usage for --help (`help` set).
WorkerArgs parse_worker_args(const std::vector<std::string>& args, bool& help);
std::string worker_usage();
// Runs the worker; returns the process's exit code (0 after a signal, 2 for bad arguments or a token file
// that is not private, 1 when the address cannot be bound). `provider` and `codec` (the backend's) let it run
// steps; without them it serves the data plane's checks only.
int worker_main(const std::vector<std::string>& args, KernelProvider* provider = nullptr,
                const PayloadCodec* codec = nullptr);

}  // namespace moreh::runtime
