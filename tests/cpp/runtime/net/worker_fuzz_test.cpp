// 10,000 random and mutated messages at a worker: before and after authentication, whole frames and torn
// ones. The worker must never crash, never allocate a payload past its bound, and still serve a real job.
#include <gtest/gtest.h>

#include <random>

#include "runtime/base/errors.h"
#include "runtime/cluster/cluster_job.h"
#include "runtime/net/token_auth.h"
#include "runtime/net/wire_codec.h"
#include "runtime/net/worker_server.h"
#include "runtime/worker/node_job.h"
#include "tests/cpp/runtime/net/worker_test_support.h"

namespace moreh::runtime {
namespace {

using namespace std::chrono_literals;
using namespace test_net;

constexpr uint32_t kBound = 1u << 20;

// A valid message of a random type with a plausible payload, to be mutated.
std::string valid_frame(std::mt19937_64& rng) {
  const auto type = static_cast<MessageType>(1 + rng() % 16);
  std::string payload;
  switch (rng() % 4) {
    case 0: payload = encode(JobOpen{0, {2}, 1000, "127.0.0.1"}); break;
    case 1: payload = encode(CheckRequest{CheckKind::kAllReduce, 1 + rng() % 64, 1, 1}); break;
    case 2: payload = encode(Hello{ConnectionPurpose::kJob, "fuzz", std::string(kNonceBytes, 'n')}); break;
    default: payload.resize(rng() % 64); for (auto& c : payload) c = static_cast<char>(rng());
  }
  const auto h = encode_header(type, static_cast<uint32_t>(payload.size()));
  return std::string(h.begin(), h.end()) + payload;
}

std::string mutate(std::string frame, std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0: frame[rng() % frame.size()] ^= static_cast<char>(1 + rng() % 255); break;  // flip a byte
    case 1: frame.resize(rng() % frame.size()); break;                                   // torn
    case 2: {  // a length field that lies: huge, or longer than what follows
      const uint32_t len = rng() % 2 ? 0xffffffffu - static_cast<uint32_t>(rng() % 1000) : static_cast<uint32_t>(frame.size() + rng() % 100);
      if (frame.size() >= kFrameHeaderBytes) std::memcpy(frame.data() + 8, &len, 4);
      break;
    }
    case 3: for (auto& c : frame) c = static_cast<char>(rng()); break;  // noise
    case 4: frame += frame; break;                                     // two at once
    default: break;                                                    // as it is
  }
  return frame;
}

TEST(WorkerFuzzTest, TenThousandMessagesThenARealJob) {
  WorkerServerOptions o;
  o.token = kToken;
  o.payload_bound = kBound;
  o.handshake_timeout = 500ms;
  o.idle_timeout = 2s;
  o.node = NodeInfo{"fuzzhost", "host", 2, 64u << 20, "0", false, ""};
  NodeOptions node{2, 64u << 20, "127.0.0.1"};
  WorkerServer server(o, [node](const std::string&) { return std::make_unique<NodeJob>(node); });
  server.start();
  std::mt19937_64 rng(20261207);
  int sent = 0;
  // Before authentication: each connection gets a burst of frames (most are refused at the first).
  while (sent < 5000) {
    std::string burst;
    const int n = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < n; ++i) burst += mutate(valid_frame(rng), rng);
    send_raw(server.port(), burst, 50ms);
    sent += n;
  }
  // After authentication: whole frames with mutated payloads inside a job (answered with errors), and
  // mutated frames (the job ends, the connection closes, the next one authenticates again).
  std::unique_ptr<Connection> c;
  int reconnects = 0;
  while (sent < 10000) {
    if (!c || !c->is_open()) {
      c = join(server.port());
      ++reconnects;
    }
    std::string frame = valid_frame(rng);
    if (rng() % 4 == 0) frame = mutate(frame, rng);
    if (frame.size() >= kFrameHeaderBytes && rng() % 4 != 0) {
      // Mostly well-framed: mutate the payload only, keeping the header's length true.
      std::string payload = frame.substr(kFrameHeaderBytes);
      if (!payload.empty()) payload[rng() % payload.size()] ^= static_cast<char>(1 + rng() % 255);
      const uint16_t type = static_cast<uint16_t>(frame[6] | (frame[7] << 8));
      if (is_known(type)) {
        // job_open is left out: a mutated one may still be valid and would open a job that later frames refuse
        // (that is tested too, but each would cost a rendezvous).
        if (static_cast<MessageType>(type) == MessageType::kJobOpen) continue;
        try {
          c->send(static_cast<MessageType>(type), payload, 1s);
        } catch (const Error&) {
          c.reset();
          continue;
        }
        ++sent;
        try {
          Message m = c->receive(2s);
          EXPECT_NE(m.type, MessageType::kCheckResult);  // no job was opened, so no check can run
        } catch (const Error&) {
          c.reset();  // a frame type that ends the job (job_close, a stray handshake message)
        }
        continue;
      }
    }
    // Torn or noisy bytes: Connection sends only whole frames, so they go on a raw socket of their own.
    send_raw(server.port(), frame, 20ms);
    ++sent;
  }
  c.reset();
  EXPECT_GE(sent, 10000);
  EXPECT_GT(reconnects, 1);
  const WorkerServerStats stats = server.stats();
  EXPECT_LE(stats.largest_payload, kBound);
  EXPECT_GT(stats.refused, 1000u);
  // A real job afterwards: two devices, an all_reduce between them, checked.
  ClusterOptions co;
  co.session.token = kToken;
  co.session.client = "after-fuzz";
  co.session.connect_timeout = 5s;
  co.collective_timeout = 10s;
  ClusterJob job({Endpoint{"127.0.0.1", server.port()}}, co);
  EXPECT_EQ(job.devices(), 2u);
  const ClusterCheck check = job.check(CheckRequest{CheckKind::kAllReduce, 1000, 7, 1});
  EXPECT_TRUE(check.correct);
  server.stop();
}

}  // namespace
}  // namespace moreh::runtime
