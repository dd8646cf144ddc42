#include "runtime/cluster/worker_session.h"

#include <fmt/format.h>

#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"
#include "runtime/cluster/rendezvous_store.h"
#include "runtime/net/wire_codec.h"

namespace moreh::runtime {

WorkerSession::WorkerSession(int index, Endpoint at, const SessionOptions& options, ConnectionPurpose purpose)
    : index_(index), at_(std::move(at)), name_(fmt::format("worker {} ({})", index, at_.to_string())),
      options_(options) {
  try {
    connection_ = Connection::open(at_, options_.connect_timeout, options_.payload_bound);
    node_ = client_handshake(*connection_, at_.to_string(), options_.token, purpose, options_.client,
                             options_.connect_timeout);
  } catch (const TimeoutError& e) {
    throw ConnectionError(fmt::format("{}: no answer while connecting: {}", name_, e.what()));
  } catch (const ConnectionError& e) {
    // Connection::open and the handshake already name the address; say which worker of the list it is.
    throw ConnectionError(fmt::format("{}: {}", name_, e.what()));
  }
  last_sent_ = std::chrono::steady_clock::now();
  if (purpose == ConnectionPurpose::kJob) heartbeat_ = std::thread([this] { heartbeats(); });
}

WorkerSession::~WorkerSession() {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
}

void WorkerSession::interrupt(const std::string& why) {
  {
    std::lock_guard lock(why_mu_);
    interrupted_ = why;
  }
  connection_->interrupt();
}

void WorkerSession::heartbeats() {
  std::unique_lock stop(stop_mu_);
  while (!stop_cv_.wait_for(stop, options_.heartbeat_interval, [&] { return stopping_; })) {
    stop.unlock();  // the destructor need not wait out a heartbeat's round trip to say stop
    struct Relock {
      std::unique_lock<std::mutex>& l;
      ~Relock() { l.lock(); }
    } relock{stop};
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock || !connection_->is_open()) continue;  // a request is on the wire: the worker hears from us anyway
    if (std::chrono::steady_clock::now() - last_sent_ < options_.heartbeat_interval) continue;
    try {
      connection_->send(MessageType::kHeartbeat, {}, options_.connect_timeout);
      last_sent_ = std::chrono::steady_clock::now();
      Message m = connection_->receive(options_.connect_timeout);
      if (m.type != MessageType::kHeartbeat)
        throw ProtocolError(fmt::format("{} answered a heartbeat with {}", name_, name_of(m.type)));
    } catch (const Error& e) {
      log().warn("{}: heartbeat failed: {}", name_, e.what());
      connection_->close();  // the next request says the worker is gone
    }
  }
}

Message WorkerSession::request(MessageType type, const std::string& payload, MessageType reply,
                               std::chrono::milliseconds timeout, RendezvousStore* store) {
  std::lock_guard lock(mu_);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto left = [&] {
    return std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                      deadline - std::chrono::steady_clock::now()));
  };
  try {
    if (!connection_->is_open())
      throw ConnectionError("the connection was lost earlier (the worker stopped answering heartbeats)");
    connection_->send(type, payload, left());
    last_sent_ = std::chrono::steady_clock::now();
    while (true) {
      Message m = connection_->receive(left());
      if (m.type == reply) return m;
      if (m.type == MessageType::kError) {
        WireReader r(m.payload);
        throw Error(fmt::format("{}: {}", name_, r.bytes()));
      }
      if (store && m.type == MessageType::kStoreSet) {
        WireReader r(m.payload);
        std::string key = r.bytes(256), value = r.bytes(1u << 20);
        r.finish();
        store->set(key, std::move(value));
        continue;
      }
      if (store && m.type == MessageType::kStoreGet) {
        WireReader r(m.payload);
        const std::string key = r.bytes(256);
        r.finish();
        const std::string value = store->get(key, left());
        connection_->send(MessageType::kStoreValue, WireWriter().bytes(key).bytes(value).take(), left());
        continue;
      }
      throw ProtocolError(fmt::format("answered {} with {}", name_of(type), name_of(m.type)));
    }
  } catch (const ConnectionError& e) {
    connection_->close();
    std::lock_guard why_lock(why_mu_);
    if (!interrupted_.empty()) throw ConnectionError(fmt::format("{} {}", name_, interrupted_));
    throw ConnectionError(fmt::format("{} is gone: {}", name_, e.what()));
  } catch (const TimeoutError& e) {
    connection_->close();
    throw TimeoutError(fmt::format("{} did not answer {} within {} ms: {}", name_, name_of(type), timeout.count(),
                                   e.what()));
  }
}

void WorkerSession::close_job(std::chrono::milliseconds timeout) noexcept {
  try {
    if (connection_->is_open()) request(MessageType::kJobClose, {}, MessageType::kJobClosed, timeout);
  } catch (const std::exception& e) {
    log().debug("{}: closing the job: {}", name_, e.what());
  }
  connection_->close();
}

}  // namespace moreh::runtime
