// The script's side of one worker's job: one authenticated connection, requests answered in order, and
// heartbeats while it is idle so that the worker knows its client is alive.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "runtime/net/connection.h"
#include "runtime/net/handshake.h"

namespace moreh::runtime {

class RendezvousStore;

struct SessionOptions {
  std::string token;
  std::string client;  // "host:pid"
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds heartbeat_interval{5000};
  uint32_t payload_bound = 64u << 20;
};

class WorkerSession {
 public:
  // Connects and authenticates; ConnectionError naming the worker when it is not there or refuses.
  WorkerSession(int index, Endpoint at, const SessionOptions& options, ConnectionPurpose purpose = ConnectionPurpose::kJob);
  ~WorkerSession();
  WorkerSession(const WorkerSession&) = delete;
  WorkerSession& operator=(const WorkerSession&) = delete;

  const NodeInfo& node() const { return node_; }
  const Endpoint& endpoint() const { return at_; }
  std::string local_host() const { return connection_->local_host(); }
  // "worker 1 (127.0.0.1:7001)": how errors name it.
  const std::string& name() const { return name_; }

  // Sends a request and returns the worker's reply of type `reply`. While it waits it answers the worker's
  // rendezvous messages from `store`. Errors name the worker: its kError text, ConnectionError when it went
  // away, TimeoutError past `timeout`.
  Message request(MessageType type, const std::string& payload, MessageType reply, std::chrono::milliseconds timeout,
                  RendezvousStore* store = nullptr);
  // Ends the job on the worker (bounded) and closes; never throws.
  void close_job(std::chrono::milliseconds timeout) noexcept;
  // From another thread: makes a waiting request fail at once with ConnectionError saying `why`.
  void interrupt(const std::string& why);

 private:
  void heartbeats();

  int index_;
  Endpoint at_;
  std::string name_;
  SessionOptions options_;
  std::unique_ptr<Connection> connection_;
  NodeInfo node_;
  std::mutex mu_;  // one request (or heartbeat) on the connection at a time
  std::mutex why_mu_;
  std::string interrupted_;  // why interrupt() cut the connection ("" : it did not)
  std::chrono::steady_clock::time_point last_sent_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread heartbeat_;
};

}  // namespace moreh::runtime
