#include "runtime/net/connection.h"

#include <fmt/format.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <sys/socket.h>

#include <boost/asio/buffer.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "runtime/base/errors.h"

namespace moreh::runtime {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

std::string endpoint_text(const tcp::socket& s) {
  boost::system::error_code ec;
  const auto e = s.remote_endpoint(ec);
  if (ec) return "(unknown peer)";
  return fmt::format("{}:{}", e.address().to_string(), e.port());
}

bool peer_gone(const boost::system::error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::connection_aborted || ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor;
}

}  // namespace

Connection::Connection(std::unique_ptr<asio::io_context> io, tcp::socket socket, uint32_t payload_bound)
    : io_(std::move(io)), socket_(std::move(socket)), payload_bound_(payload_bound), peer_(endpoint_text(socket_)) {
  boost::system::error_code ec;
  socket_.set_option(tcp::no_delay(true), ec);
}

Connection::~Connection() { close(); }

std::unique_ptr<Connection> Connection::open(const Endpoint& to, std::chrono::milliseconds timeout,
                                             uint32_t payload_bound) {
  auto io = std::make_unique<asio::io_context>();
  tcp::resolver resolver(*io);
  boost::system::error_code ec;
  const auto found = resolver.resolve(to.host, std::to_string(to.port), ec);
  if (ec) throw ConnectionError(fmt::format("worker {}: cannot resolve '{}': {}", to.to_string(), to.host, ec.message()));
  tcp::socket socket(*io);
  bool done = false;
  boost::system::error_code result = asio::error::timed_out;
  asio::async_connect(socket, found, [&](const boost::system::error_code& e, const tcp::endpoint&) {
    result = e;
    done = true;
  });
  io->run_for(timeout);
  if (!done) {
    socket.close(ec);
    io->restart();
    io->run_for(std::chrono::milliseconds(100));  // lets the aborted handler run before `done` goes
    throw ConnectionError(fmt::format("worker {} did not answer within {} ms", to.to_string(), timeout.count()));
  }
  if (result)
    throw ConnectionError(fmt::format("worker {} is not there: {}", to.to_string(), result.message()));
  return std::make_unique<Connection>(std::move(io), std::move(socket), payload_bound);
}

bool Connection::is_open() const { return socket_.is_open(); }

std::string Connection::local_host() const {
  boost::system::error_code ec;
  const auto e = socket_.local_endpoint(ec);
  return ec ? std::string("127.0.0.1") : e.address().to_string();
}

void Connection::interrupt() {
  std::lock_guard lock(close_mu_);
  if (socket_.is_open()) ::shutdown(socket_.native_handle(), SHUT_RDWR);
}

bool Connection::wait_for_hang_up(int wake_fd) {
  int fd;
  {
    std::lock_guard lock(close_mu_);
    if (!socket_.is_open()) return true;
    fd = socket_.native_handle();
  }
  pollfd p[2] = {{fd, POLLRDHUP, 0}, {wake_fd, POLLIN, 0}};
  while (true) {
    const int n = ::poll(p, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (p[1].revents) return false;
    if (p[0].revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
  }
}

void Connection::close() {
  std::lock_guard lock(close_mu_);
  boost::system::error_code ec;
  if (socket_.is_open()) {
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
  }
}

void Connection::run_until(const bool& done, std::chrono::milliseconds timeout, const char* what) {
  io_->restart();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done && std::chrono::steady_clock::now() < deadline) io_->run_one_until(deadline);
  if (done) return;
  close();
  io_->restart();
  while (!done) io_->run_one();  // the cancelled operation's handler
  throw TimeoutError(fmt::format("{} {} did not complete within {} ms; the connection was closed", what, peer_,
                                 timeout.count()));
}

void Connection::send(MessageType type, std::string_view payload, std::chrono::milliseconds timeout) {
  if (!socket_.is_open()) throw ConnectionError(fmt::format("the connection to {} is closed", peer_));
  if (payload.size() > UINT32_MAX) throw ProtocolError(fmt::format("a message of {} bytes is too long", payload.size()));
  const auto header = encode_header(type, static_cast<uint32_t>(payload.size()));
  const std::array<asio::const_buffer, 2> buffers = {asio::buffer(header), asio::buffer(payload.data(), payload.size())};
  bool done = false;
  boost::system::error_code result;
  asio::async_write(socket_, buffers, [&](const boost::system::error_code& e, size_t) {
    result = e;
    done = true;
  });
  run_until(done, timeout, "sending to");
  if (result) {
    close();
    throw ConnectionError(fmt::format("{} went away ({})", peer_, result.message()));
  }
}

Message Connection::receive(std::chrono::milliseconds timeout) {
  if (!socket_.is_open()) throw ConnectionError(fmt::format("the connection to {} is closed", peer_));
  if (framing_lost_) throw ProtocolError(fmt::format("{} sent a message this side refused; nothing more is read", peer_));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto left = [&] {
    return std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                      deadline - std::chrono::steady_clock::now()));
  };
  std::array<uint8_t, kFrameHeaderBytes> header{};
  bool done = false;
  boost::system::error_code result;
  auto read_exactly = [&](asio::mutable_buffer into) {
    done = false;
    asio::async_read(socket_, into, [&](const boost::system::error_code& e, size_t) {
      result = e;
      done = true;
    });
    run_until(done, left(), "waiting for a message from");
    if (result) {
      close();
      if (peer_gone(result)) throw ConnectionError(fmt::format("{} closed the connection", peer_));
      throw ConnectionError(fmt::format("reading from {} failed: {}", peer_, result.message()));
    }
  };
  read_exactly(asio::buffer(header));
  FrameHeader h;
  try {
    h = decode_header(header, payload_bound_);
  } catch (const ProtocolError&) {
    framing_lost_ = true;
    throw;
  }
  Message m{h.type, std::string(h.length, '\0')};
  largest_payload_ = std::max<uint64_t>(largest_payload_, h.length);
  if (h.length) read_exactly(asio::buffer(m.payload.data(), m.payload.size()));
  return m;
}

}  // namespace moreh::runtime
