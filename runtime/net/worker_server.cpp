#include "runtime/net/worker_server.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>

#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"
#include "runtime/net/token_auth.h"
#include "runtime/net/wire_codec.h"

namespace moreh::runtime {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// Watches a connection for its peer's hang-up while a request runs on the owner's thread; stops at once when
// the request is done (a byte on a pipe wakes the watcher).
class HangUpWatch {
 public:
  HangUpWatch(Connection& c, bool on, std::function<void()> on_hang_up) {
    if (!on || ::pipe2(pipe_, O_CLOEXEC) != 0) return;
    thread_ = std::thread([this, &c, f = std::move(on_hang_up)] {
      if (c.wait_for_hang_up(pipe_[0])) f();
    });
  }
  ~HangUpWatch() {
    if (!thread_.joinable()) return;
    const char byte = 1;
    (void)!::write(pipe_[1], &byte, 1);
    thread_.join();
    ::close(pipe_[0]);
    ::close(pipe_[1]);
  }
  HangUpWatch(const HangUpWatch&) = delete;
  HangUpWatch& operator=(const HangUpWatch&) = delete;

 private:
  int pipe_[2] = {-1, -1};
  std::thread thread_;
};

}  // namespace

struct WorkerServer::Acceptor {
  asio::io_context io;
  tcp::acceptor acceptor{io};
};

WorkerServer::WorkerServer(WorkerServerOptions options, JobFactory make_job)
    : options_(std::move(options)), make_job_(std::move(make_job)) {
  if (options_.token.empty()) throw ConfigError("a worker needs a token");
}

WorkerServer::~WorkerServer() { stop(); }

void WorkerServer::start() {
  acceptor_state_ = std::make_unique<Acceptor>();
  auto& a = acceptor_state_->acceptor;
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(options_.listen.host, ec);
  if (ec) throw ConfigError(fmt::format("--listen {}: '{}' is not an IP address", options_.listen.to_string(),
                                        options_.listen.host));
  const tcp::endpoint at(address, options_.listen.port);
  a.open(at.protocol(), ec);
  if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) a.bind(at, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw ConfigError(fmt::format("cannot listen on {}: {}", options_.listen.to_string(), ec.message()));
  port_ = a.local_endpoint().port();
  log().info("moreh-worker listening on {}:{} ({} {} device{}, protocol {})", options_.listen.host, port_,
             options_.node.devices, options_.node.device_kind, options_.node.devices == 1 ? "" : "s", kProtocolVersion);
  acceptor_ = std::thread([this] { accept_loop(); });
}

void WorkerServer::stop() {
  if (stopping_.exchange(true)) return;
  if (acceptor_.joinable()) acceptor_.join();
  {
    std::lock_guard lock(mu_);
    for (auto& s : served_) s.connection->interrupt();
  }
  job_ended_.notify_all();  // a client waiting out the busy grace is refused now
  reap(true);
}

WorkerServerStats WorkerServer::stats() const {
  std::lock_guard lock(mu_);
  WorkerServerStats s = stats_;
  for (const auto& served : served_) s.largest_payload = std::max(s.largest_payload, served.connection->largest_payload());
  return s;
}

void WorkerServer::reap(bool all) {
  std::list<Served> done;
  {
    std::lock_guard lock(mu_);
    for (auto it = served_.begin(); it != served_.end();) {
      if (all || it->finished.load()) {
        auto next = std::next(it);
        done.splice(done.end(), served_, it);
        it = next;
      } else {
        ++it;
      }
    }
  }
  for (auto& s : done) {
    if (s.thread.joinable()) s.thread.join();
    std::lock_guard lock(mu_);
    stats_.largest_payload = std::max(stats_.largest_payload, s.connection->largest_payload());
  }
}

void WorkerServer::accept_loop() {
  auto& st = *acceptor_state_;
  while (!stopping_.load()) {
    auto io = std::make_unique<asio::io_context>();
    std::optional<tcp::socket> accepted;
    boost::system::error_code result;
    st.acceptor.async_accept(*io, [&](const boost::system::error_code& e, tcp::socket s) {
      result = e;
      if (!e) accepted.emplace(std::move(s));
    });
    st.io.restart();
    while (!accepted && !result && !stopping_.load()) st.io.run_one_for(std::chrono::milliseconds(100));
    if (!accepted && !result) {  // stopping: cancel the accept and let its handler run
      boost::system::error_code ec;
      st.acceptor.close(ec);
      st.io.restart();
      st.io.run();
      break;
    }
    reap(false);
    if (result) continue;
    auto connection = std::make_shared<Connection>(std::move(io), std::move(*accepted), kHandshakePayloadBound);
    std::lock_guard lock(mu_);
    ++stats_.accepted;
    if (served_.size() >= options_.max_connections) {
      ++stats_.refused;
      log().warn("moreh-worker: refused {}: already serving {} connections", connection->peer(), served_.size());
      connection->close();
      continue;
    }
    Served& s = served_.emplace_back();
    s.connection = std::move(connection);
    s.thread = std::thread([this, &s] {
      serve(s);
      s.finished.store(true);
    });
  }
  boost::system::error_code ec;
  st.acceptor.close(ec);
}

void WorkerServer::refuse(Connection& c, const std::string& why) {
  {
    std::lock_guard lock(mu_);
    ++stats_.refused;
  }
  log().warn("moreh-worker: refused {}: {}", c.peer(), why);
  try {
    if (c.is_open()) c.send(MessageType::kRefused, WireWriter().bytes(why.substr(0, 1024)).take(), options_.handshake_timeout);
  } catch (const Error&) {
    // The peer is gone already; the refusal is logged.
  }
  c.close();
}

Hello WorkerServer::authenticate(Connection& c) {
  const auto t = options_.handshake_timeout;
  Message m = c.receive(t);
  if (m.type != MessageType::kHello) throw ProtocolError(fmt::format("{} before hello", name_of(m.type)));
  Hello hello = decode_hello(m.payload);
  const std::string nonce = random_nonce();
  c.send(MessageType::kChallenge,
         WireWriter().bytes(nonce).bytes(worker_proof(options_.token, hello.nonce, nonce)).take(), t);
  Message proof = c.receive(t);
  if (proof.type == MessageType::kRefused)
    throw ConnectionError(fmt::format("the client refused this worker: {}", WireReader(proof.payload).bytes(kHandshakePayloadBound)));
  if (proof.type != MessageType::kProof) throw ProtocolError(fmt::format("{} where a proof was expected", name_of(proof.type)));
  WireReader r(proof.payload);
  const std::string answer = r.bytes(kProofBytes);
  r.finish();
  if (!same_proof(answer, client_proof(options_.token, hello.nonce, nonce)))
    throw ConnectionError("wrong token (the client's proof does not match this worker's token)");
  return hello;
}

void WorkerServer::serve(Served& served) {
  Connection& c = *served.connection;
  Hello hello;
  try {
    hello = authenticate(c);
  } catch (const Error& e) {
    refuse(c, e.what());
    return;
  }
  NodeInfo node = options_.node;
  bool mine = false;
  {
    std::unique_lock lock(mu_);
    if (hello.purpose == ConnectionPurpose::kJob)
      job_ended_.wait_for(lock, options_.busy_grace, [&] { return serving_.empty() || stopping_.load(); });
    node.busy = !serving_.empty();
    node.serving = serving_;
    if (hello.purpose == ConnectionPurpose::kJob && serving_.empty()) {
      serving_ = hello.client.empty() ? c.peer() : hello.client;
      mine = true;
      ++stats_.jobs;
    }
  }
  if (hello.purpose == ConnectionPurpose::kJob && !mine) {
    refuse(c, fmt::format("busy: serving a job for {}", node.serving));
    return;
  }
  try {
    c.send(MessageType::kWelcome, encode(node), options_.handshake_timeout);
    c.set_payload_bound(options_.payload_bound);
    if (mine) {
      run_job(c, hello);
    } else {
      // A status reader may send heartbeats, then closes.
      while (!stopping_.load()) {
        Message m = c.receive(options_.idle_timeout);
        if (m.type != MessageType::kHeartbeat) throw ProtocolError(fmt::format("{} on a status connection", name_of(m.type)));
        c.send(MessageType::kHeartbeat, {}, options_.send_timeout);
      }
    }
  } catch (const Error& e) {
    if (!mine) log().debug("moreh-worker: status connection {} ended: {}", c.peer(), e.what());
  }
  c.close();
  if (mine) {
    {
      std::lock_guard lock(mu_);
      serving_.clear();
    }
    job_ended_.notify_all();
  }
}

void WorkerServer::run_job(Connection& c, const Hello& hello) {
  const std::string client = hello.client.empty() ? c.peer() : hello.client;
  log().info("moreh-worker: job for {} ({}) started", client, c.peer());
  std::unique_ptr<WorkerJob> job;
  std::string why = "closed by the client";
  try {
    job = make_job_(client);
    while (true) {
      Message m;
      try {
        m = c.receive(options_.idle_timeout);
      } catch (const TimeoutError&) {
        throw ConnectionError(fmt::format("the client sent nothing for {} ms (no request, no heartbeat)",
                                          options_.idle_timeout.count()));
      }
      if (m.type == MessageType::kHeartbeat) {
        c.send(MessageType::kHeartbeat, {}, options_.send_timeout);
        continue;
      }
      if (m.type == MessageType::kJobClose) {
        job->end(why);
        job.reset();
        c.send(MessageType::kJobClosed, {}, options_.send_timeout);
        break;
      }
      Message reply;
      // While a step runs nothing comes from the client (it waits for the reply): a hang-up then means it is
      // gone, and the step (waiting in collectives) should not wait out its bound.
      HangUpWatch watch(c, m.type == MessageType::kStep || m.type == MessageType::kRunCheck,
                        [&] { job->interrupt(fmt::format("{} went away during {}", client, name_of(m.type))); });
      try {
        reply = job->handle(m, c);
      } catch (const Error& e) {
        // A connection that failed inside the request (its peer gone, its framing broken) ends the job; a
        // request that failed is answered and the job goes on.
        if (!c.is_open()) throw;
        if (dynamic_cast<const ConnectionError*>(&e) && !dynamic_cast<const ProtocolError*>(&e)) throw;
        log().warn("moreh-worker: {} from {} failed: {}", name_of(m.type), client, e.what());
        reply = Message{MessageType::kError, WireWriter().bytes(e.what()).take()};
      }
      c.send(reply.type, reply.payload, options_.send_timeout);
    }
  } catch (const ProtocolError& e) {
    why = e.what();
    refuse(c, why);  // says why before closing, and logs it
  } catch (const Error& e) {
    why = e.what();
    log().warn("moreh-worker: job for {} ended: {}", client, why);
  }
  if (job) job->end(why);
  log().info("moreh-worker: job for {} is over; serving the next", client);
}

}  // namespace moreh::runtime
