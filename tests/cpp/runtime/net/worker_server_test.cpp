// The worker's server: authentication both ways, one job at a time, status readers, idle clients, and every
// kind of bad connection refused and logged while the server goes on serving.
#include "runtime/net/worker_server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "runtime/base/errors.h"
#include "runtime/net/token_auth.h"
#include "runtime/net/wire_codec.h"
#include "tests/cpp/runtime/net/worker_test_support.h"

namespace moreh::runtime {
namespace {

using namespace std::chrono_literals;
using namespace test_net;

// A job that echoes run_check payloads and records how it ended.
struct EchoJob final : WorkerJob {
  explicit EchoJob(std::atomic<int>& ended, std::string& why) : ended_(ended), why_(why) {}
  Message handle(const Message& m, Connection&) override {
    if (m.type != MessageType::kRunCheck) throw ConfigError("echo takes run_check only");
    if (m.payload == "fail") throw ConfigError("asked to fail");
    return Message{MessageType::kCheckResult, m.payload};
  }
  void end(const std::string& why) override {
    why_ = why;
    ended_.fetch_add(1);
  }
  std::atomic<int>& ended_;
  std::string& why_;
};

class WorkerServerTest : public ::testing::Test {
 protected:
  void SetUp() override { start({}); }
  void start(std::chrono::milliseconds idle) {
    WorkerServerOptions o;
    o.token = kToken;
    o.node = NodeInfo{"testhost", "host", 2, 1 << 20, "0", false, ""};
    o.handshake_timeout = 2s;
    o.busy_grace = 1s;
    if (idle.count()) o.idle_timeout = idle;
    server_ = std::make_unique<WorkerServer>(o, [this](const std::string&) {
      return std::make_unique<EchoJob>(ended_, why_);
    });
    server_->start();
  }
  void TearDown() override { server_->stop(); }
  uint16_t port() const { return server_->port(); }
  // Waits (bounded) until the server has finished with `n` jobs.
  void wait_ended(int n) {
    for (int i = 0; i < 200 && ended_.load() < n; ++i) std::this_thread::sleep_for(10ms);
    ASSERT_EQ(ended_.load(), n);
  }
  std::unique_ptr<WorkerServer> server_;
  std::atomic<int> ended_{0};
  std::string why_;
};

TEST_F(WorkerServerTest, AuthenticatedJobRunsRequestsAndAnswersErrorsAndHeartbeats) {
  NodeInfo node;
  auto c = join(port(), kToken, ConnectionPurpose::kJob, &node);
  EXPECT_EQ(node.hostname, "testhost");
  EXPECT_EQ(node.devices, 2u);
  c->send(MessageType::kRunCheck, "payload", 2s);
  Message m = c->receive(2s);
  EXPECT_EQ(m.type, MessageType::kCheckResult);
  EXPECT_EQ(m.payload, "payload");
  c->send(MessageType::kRunCheck, "fail", 2s);
  m = c->receive(2s);
  ASSERT_EQ(m.type, MessageType::kError);
  EXPECT_EQ(WireReader(m.payload).bytes(), "asked to fail");
  c->send(MessageType::kHeartbeat, {}, 2s);
  EXPECT_EQ(c->receive(2s).type, MessageType::kHeartbeat);
  // A malformed request inside a job is answered with an error; the job goes on.
  c->send(MessageType::kJobOpen, "garbage", 2s);
  EXPECT_EQ(c->receive(2s).type, MessageType::kError);
  c->send(MessageType::kJobClose, {}, 2s);
  EXPECT_EQ(c->receive(2s).type, MessageType::kJobClosed);
  wait_ended(1);
  EXPECT_EQ(why_, "closed by the client");
}

TEST_F(WorkerServerTest, WrongTokenIsRefusedByBothSidesAndTheServerGoesOn) {
  try {
    join(port(), "another-token");
    FAIL() << "a client with the wrong token got in";
  } catch (const ConnectionError& e) {
    // The client checks the worker's proof first: a worker without its token is not trusted either.
    EXPECT_NE(std::string(e.what()).find("does not know the token"), std::string::npos) << e.what();
  }
  // A client that skips the worker's proof and answers with a wrong one is refused by the worker.
  auto c = connect_to(port());
  c->set_payload_bound(kHandshakePayloadBound);
  c->send(MessageType::kHello, encode(Hello{ConnectionPurpose::kJob, "x", random_nonce()}), 2s);
  EXPECT_EQ(c->receive(2s).type, MessageType::kChallenge);
  c->send(MessageType::kProof, WireWriter().bytes(std::string(kProofBytes, 'x')).take(), 2s);
  Message m = c->receive(2s);
  ASSERT_EQ(m.type, MessageType::kRefused);
  EXPECT_NE(WireReader(m.payload).bytes().find("wrong token"), std::string::npos);
  EXPECT_GE(server_->stats().refused, 2u);
  EXPECT_NO_THROW(join(port()));
}

TEST_F(WorkerServerTest, OneJobAtATimeWhileStatusReadersSeeWhoIsServed) {
  auto first = join(port(), kToken, ConnectionPurpose::kJob, nullptr, "alice:1");
  try {
    join(port(), kToken, ConnectionPurpose::kJob, nullptr, "bob:2");
    FAIL();
  } catch (const ConnectionError& e) {
    EXPECT_NE(std::string(e.what()).find("busy: serving a job for alice:1"), std::string::npos) << e.what();
  }
  NodeInfo status;
  auto reader = join(port(), kToken, ConnectionPurpose::kStatus, &status);
  EXPECT_TRUE(status.busy);
  EXPECT_EQ(status.serving, "alice:1");
  first.reset();  // the client goes away without closing: the job ends, the next one is served
  wait_ended(1);
  EXPECT_NE(why_.find("closed the connection"), std::string::npos) << why_;
  auto second = join(port(), kToken, ConnectionPurpose::kJob, nullptr, "bob:2");
  // A script run right after another: its job is served once the last one has ended (within the busy grace),
  // not refused because the worker had not yet noticed the last client leave.
  second.reset();
  EXPECT_NO_THROW(join(port(), kToken, ConnectionPurpose::kJob, nullptr, "carol:3"));
  EXPECT_EQ(ended_.load(), 2);
}

TEST_F(WorkerServerTest, OtherVersionsBadMagicAndOversizedMessagesAreRefusedWithoutAllocating) {
  // A client of another protocol version learns why (in this side's framing), and nothing is allocated.
  auto header = encode_header(MessageType::kHello, 40);
  header[4] = 9;
  std::string reply = send_raw(port(), std::string(header.begin(), header.end()) + std::string(40, 'a'));
  EXPECT_NE(reply.find("protocol version 9"), std::string::npos) << reply;
  header = encode_header(MessageType::kHello, 1u << 30);  // 1 GiB declared
  reply = send_raw(port(), std::string(header.begin(), header.end()));
  EXPECT_NE(reply.find("over the bound"), std::string::npos) << reply;
  reply = send_raw(port(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(reply.find("not a moreh"), std::string::npos) << reply;
  // A request before authentication is refused.
  auto c = connect_to(port());
  c->send(MessageType::kRunCheck, "x", 2s);
  EXPECT_EQ(c->receive(2s).type, MessageType::kRefused);
  EXPECT_LE(server_->stats().largest_payload, kHandshakePayloadBound);
  EXPECT_GE(server_->stats().refused, 4u);
  EXPECT_NO_THROW(join(port()));
}

TEST_F(WorkerServerTest, AHalfSentHandshakeTimesOutAndIsRefused) {
  const auto start = std::chrono::steady_clock::now();
  const std::string reply = send_raw(port(), "MRH", 5s);  // three bytes, then silence
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);  // the handshake's bound is 2 s
  EXPECT_TRUE(reply.empty()) << reply;  // closed, not answered: the stalled peer may not be reading
  EXPECT_NO_THROW(join(port()));
}

TEST_F(WorkerServerTest, AnIdleJobClientIsTakenAsGone) {
  server_->stop();
  start(300ms);
  auto c = join(port());
  wait_ended(1);
  EXPECT_NE(why_.find("sent nothing for 300 ms"), std::string::npos) << why_;
  EXPECT_NO_THROW(join(port()));
}

TEST(WorkerServerStartTest, AnAddressInUseOrNotAnAddressIsAConfigError) {
  WorkerServerOptions o;
  o.token = kToken;
  WorkerServer a(o, nullptr);
  a.start();
  o.listen.port = a.port();
  WorkerServer b(o, nullptr);
  EXPECT_THROW(b.start(), ConfigError);
  o.listen = Endpoint{"not-an-ip", 1};
  WorkerServer c(o, nullptr);
  EXPECT_THROW(c.start(), ConfigError);
  o.token.clear();
  EXPECT_THROW(WorkerServer(o, nullptr), ConfigError);
}

}  // namespace
}  // namespace moreh::runtime
