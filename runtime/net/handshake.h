// The first messages on a control-plane connection: hello, challenge, proof, then welcome (with what the
// worker holds) or refused (with why). Both sides prove they know the token (runtime/net/token_auth.h).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

#include "runtime/net/connection.h"

namespace moreh::runtime {

// Why a client connects: to run a job (one at a time per worker) or to read the worker's status (moreh-smi).
enum class ConnectionPurpose : uint8_t { kJob = 1, kStatus = 2 };

// What a worker says about itself in its welcome.
struct NodeInfo {
  std::string hostname;
  std::string device_kind = "host";  // "host" or "cuda"
  uint32_t devices = 0;
  uint64_t capacity = 0;  // bytes per device
  std::string version;    // moreh's
  // Status connections only: whether a job runs now and for whom.
  bool busy = false;
  std::string serving;
};
std::string encode(const NodeInfo& info);
NodeInfo decode_node_info(std::string_view payload);

struct Hello {
  ConnectionPurpose purpose = ConnectionPurpose::kJob;
  std::string client;  // "host:pid", for the worker's log and status
  std::string nonce;
};
std::string encode(const Hello& hello);
Hello decode_hello(std::string_view payload);

// The client's half. Returns the welcome; ConnectionError naming `worker` when the worker refuses (the
// text says why), cannot prove it knows the token, or breaks the protocol.
NodeInfo client_handshake(Connection& c, const std::string& worker, const std::string& token, ConnectionPurpose purpose,
                          const std::string& client, std::chrono::milliseconds timeout);

}  // namespace moreh::runtime
