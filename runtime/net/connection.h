// One TCP connection of the control plane (Boost.Asio): whole messages in and out, each wait bounded. Used by
// one thread at a time; a timeout or a broken frame closes it (the framing cannot be trusted after either).
#pragma once
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "runtime/net/endpoint.h"
#include "runtime/net/wire_format.h"

namespace moreh::runtime {

class Connection {
 public:
  // `payload_bound`: the largest payload receive() accepts (checked from the header, before allocating).
  Connection(std::unique_ptr<boost::asio::io_context> io, boost::asio::ip::tcp::socket socket, uint32_t payload_bound);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // ConnectionError naming `to` when nothing listens there or it does not answer within `timeout`.
  static std::unique_ptr<Connection> open(const Endpoint& to, std::chrono::milliseconds timeout, uint32_t payload_bound);

  // TimeoutError past the bound, ConnectionError when the peer has gone.
  void send(MessageType type, std::string_view payload, std::chrono::milliseconds timeout);
  // The next message: TimeoutError past the bound, ConnectionError when the peer closed the connection,
  // ProtocolError for a frame this side refuses (bad magic, other version, unknown type, over the bound).
  // After a ProtocolError nothing more is read (the framing is lost), but one last send (a refusal saying
  // why) still goes out before close().
  Message receive(std::chrono::milliseconds timeout);
  // Only for this message: a smaller bound (the handshake's).
  void set_payload_bound(uint32_t bound) { payload_bound_ = bound; }
  uint32_t payload_bound() const { return payload_bound_; }

  bool is_open() const;
  void close();
  // From another thread: makes the owner's wait end at once with ConnectionError (a server stopping).
  void interrupt();
  // From another thread, while the owner reads nothing: waits until the peer closes its end (or the
  // connection fails: true) or `wake_fd` becomes readable (false). Reads nothing from the connection.
  bool wait_for_hang_up(int wake_fd);
  const std::string& peer() const { return peer_; }  // "127.0.0.1:51234"
  std::string local_host() const;                    // this side's address on the connection
  // The largest payload this connection has allocated for a received message.
  uint64_t largest_payload() const { return largest_payload_; }

 private:
  // Runs the io_context until `done` or the bound; on the bound, closes the socket and throws TimeoutError.
  void run_until(const bool& done, std::chrono::milliseconds timeout, const char* what);

  std::mutex close_mu_;  // close() against interrupt()
  std::unique_ptr<boost::asio::io_context> io_;
  boost::asio::ip::tcp::socket socket_;
  uint32_t payload_bound_;
  std::string peer_;
  uint64_t largest_payload_ = 0;
  bool framing_lost_ = false;
};

}  // namespace moreh::runtime
