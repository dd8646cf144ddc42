// For the control-plane tests: a worker server on 127.0.0.1 with a token, raw sockets, and a client.
#pragma once
#include <boost/asio.hpp>
#include <chrono>
#include <string>

#include "runtime/net/connection.h"
#include "runtime/net/handshake.h"

namespace moreh::runtime::test_net {

inline const std::string kToken = "test-token-0123456789";

// Sends `bytes` on a fresh connection to 127.0.0.1:port and returns what the server sends back before it
// closes the connection (or `wait` passes).
inline std::string send_raw(uint16_t port, const std::string& bytes, std::chrono::milliseconds wait = std::chrono::seconds(5)) {
  namespace asio = boost::asio;
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  s.connect({asio::ip::make_address("127.0.0.1"), port});
  boost::system::error_code ec;
  asio::write(s, asio::buffer(bytes), ec);
  std::string got;
  std::array<char, 4096> buf{};
  bool done = false;
  std::function<void()> read_more = [&] {
    s.async_read_some(asio::buffer(buf), [&](const boost::system::error_code& e, size_t n) {
      got.append(buf.data(), n);
      if (e) {
        done = true;
        return;
      }
      read_more();
    });
  };
  read_more();
  io.run_for(wait);
  s.close(ec);
  return got;
}

inline std::unique_ptr<Connection> connect_to(uint16_t port, std::chrono::milliseconds t = std::chrono::seconds(5)) {
  return Connection::open(Endpoint{"127.0.0.1", port}, t, 64u << 20);
}

// Connects and authenticates with `token`.
inline std::unique_ptr<Connection> join(uint16_t port, const std::string& token = kToken,
                                        ConnectionPurpose purpose = ConnectionPurpose::kJob, NodeInfo* node = nullptr,
                                        const std::string& client = "test-client") {
  auto c = connect_to(port);
  NodeInfo n = client_handshake(*c, "127.0.0.1:" + std::to_string(port), token, purpose, client, std::chrono::seconds(5));
  if (node) *node = n;
  return c;
}

}  // namespace moreh::runtime::test_net
