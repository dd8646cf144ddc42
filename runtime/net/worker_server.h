// A worker's control-plane server: accepts connections, authenticates them, and serves one job at a time
// (another job's client is refused while one runs; status readers are always answered). Every wait has a
// bound; a connection that breaks the protocol is refused and logged, and the server goes on.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "runtime/net/connection.h"
#include "runtime/net/handshake.h"

namespace moreh::runtime {

// What a worker does for one job: its requests, in order, from the job's one connection.
class WorkerJob {
 public:
  virtual ~WorkerJob() = default;
  // Answers one request. An Error becomes a kError reply and the job goes on. `connection` lets a request
  // talk with the client before it answers (the data plane's rendezvous).
  virtual Message handle(const Message& request, Connection& connection) = 0;
  // The job is over (closed by its client, or its client is gone): release everything it holds.
  virtual void end(const std::string& why) = 0;
  // Optional, from another thread while handle() runs: its client went away, so the request should stop
  // waiting (a step's collectives) and fail soon. The default does nothing (the request runs to its bound).
  virtual void interrupt(const std::string& why) { (void)why; }
};

struct WorkerServerOptions {
  Endpoint listen{"127.0.0.1", 0};  // port 0: any free port (port() says which)
  std::string token;
  NodeInfo node;
  uint32_t payload_bound = 64u << 20;                 // MOREH_WORKER_MAX_MESSAGE
  std::chrono::milliseconds handshake_timeout{10000};  // hello to welcome
  // A job's client that sends nothing (no request, no heartbeat) this long is taken as gone.
  std::chrono::milliseconds idle_timeout{60000};
  std::chrono::milliseconds send_timeout{60000};
  // A job's client that arrives while the last job is still ending (its client just left: a script run right
  // after another) waits this long for it before being refused as busy.
  std::chrono::milliseconds busy_grace{3000};
  size_t max_connections = 32;  // served at once; more are closed at once
};

struct WorkerServerStats {
  uint64_t accepted = 0, refused = 0, jobs = 0;
  uint64_t largest_payload = 0;  // the largest payload any connection allocated
};

class WorkerServer {
 public:
  using JobFactory = std::function<std::unique_ptr<WorkerJob>(const std::string& client)>;
  WorkerServer(WorkerServerOptions options, JobFactory make_job);
  ~WorkerServer();
  // Binds and starts accepting on a thread of its own; ConfigError when the address cannot be bound.
  void start();
  // Closes the listener and every connection (a running job ends), and joins every thread.
  void stop();
  uint16_t port() const { return port_; }
  WorkerServerStats stats() const;

 private:
  struct Served {
    std::shared_ptr<Connection> connection;
    std::thread thread;
    std::atomic<bool> finished{false};
  };
  void accept_loop();
  void serve(Served& served);
  // The handshake; returns the hello, or throws after sending a refusal.
  Hello authenticate(Connection& c);
  void run_job(Connection& c, const Hello& hello);
  void refuse(Connection& c, const std::string& why);
  void reap(bool all);

  WorkerServerOptions options_;
  JobFactory make_job_;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  struct Acceptor;
  std::unique_ptr<Acceptor> acceptor_state_;
  mutable std::mutex mu_;
  std::list<Served> served_;
  std::string serving_;  // the running job's client ("" for none)
  std::condition_variable job_ended_;
  WorkerServerStats stats_;
};

}  // namespace moreh::runtime
