#include "runtime/net/handshake.h"

#include <fmt/format.h>

#include "runtime/base/errors.h"
#include "runtime/net/token_auth.h"
#include "runtime/net/wire_codec.h"

namespace moreh::runtime {

std::string encode(const NodeInfo& n) {
  return WireWriter()
      .bytes(n.hostname)
      .bytes(n.device_kind)
      .u32(n.devices)
      .u64(n.capacity)
      .bytes(n.version)
      .u8(n.busy ? 1 : 0)
      .bytes(n.serving)
      .take();
}

NodeInfo decode_node_info(std::string_view payload) {
  WireReader r(payload);
  NodeInfo n;
  n.hostname = r.bytes(256);
  n.device_kind = r.bytes(16);
  n.devices = r.u32();
  n.capacity = r.u64();
  n.version = r.bytes(64);
  n.busy = r.u8() != 0;
  n.serving = r.bytes(512);
  r.finish();
  return n;
}

std::string encode(const Hello& h) {
  return WireWriter().u8(static_cast<uint8_t>(h.purpose)).bytes(h.client).bytes(h.nonce).take();
}

Hello decode_hello(std::string_view payload) {
  WireReader r(payload);
  Hello h;
  const uint8_t purpose = r.u8();
  if (purpose != 1 && purpose != 2) throw ProtocolError(fmt::format("hello: unknown purpose {}", purpose));
  h.purpose = static_cast<ConnectionPurpose>(purpose);
  h.client = r.bytes(256);
  h.nonce = r.bytes(kNonceBytes);
  if (h.nonce.size() != kNonceBytes) throw ProtocolError("hello: the nonce must be 32 bytes");
  r.finish();
  return h;
}

NodeInfo client_handshake(Connection& c, const std::string& worker, const std::string& token,
                          ConnectionPurpose purpose, const std::string& client, std::chrono::milliseconds timeout) {
  const uint32_t bound = c.payload_bound();
  c.set_payload_bound(kHandshakePayloadBound);
  const Hello hello{purpose, client, random_nonce()};
  c.send(MessageType::kHello, encode(hello), timeout);
  auto expect = [&](MessageType want) {
    Message m = c.receive(timeout);
    if (m.type == MessageType::kRefused) {
      WireReader r(m.payload);
      throw ConnectionError(fmt::format("worker {} refused the connection: {}", worker, r.bytes(kHandshakePayloadBound)));
    }
    if (m.type != want)
      throw ProtocolError(fmt::format("worker {} answered {} where {} was expected", worker, name_of(m.type),
                                      name_of(want)));
    return m;
  };
  Message challenge = expect(MessageType::kChallenge);
  WireReader r(challenge.payload);
  const std::string worker_nonce = r.bytes(kNonceBytes), proof = r.bytes(kProofBytes);
  r.finish();
  if (worker_nonce.size() != kNonceBytes || !same_proof(proof, worker_proof(token, hello.nonce, worker_nonce))) {
    // The worker learns why too (and logs it), rather than seeing a connection that just closed.
    try {
      c.send(MessageType::kRefused, WireWriter().bytes("wrong token: the worker's proof does not match the client's token").take(), timeout);
    } catch (const Error&) {
    }
    throw ConnectionError(fmt::format("worker {} does not know the token (its proof is wrong): check that the client "
                                      "and the worker read the same token file",
                                      worker));
  }
  c.send(MessageType::kProof, WireWriter().bytes(client_proof(token, hello.nonce, worker_nonce)).take(), timeout);
  Message welcome = expect(MessageType::kWelcome);
  c.set_payload_bound(bound);
  return decode_node_info(welcome.payload);
}

}  // namespace moreh::runtime
