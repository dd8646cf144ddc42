#include "runtime/comm/host_communicator.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "runtime/base/errors.h"
#include "runtime/host/host_device.h"
#include "runtime/base/low_precision_float.h"
#include "runtime/comm/host_collective_group.h"

namespace moreh::runtime {
namespace {

using namespace test_values;

using namespace std::chrono_literals;

// N host devices and a host communicator over them.
struct Group : HostGroup {
  explicit Group(int n, std::chrono::milliseconds timeout = kWait) : HostGroup(n) {
    comm = std::make_unique<HostCommunicator>(raw(), timeout);
  }
};

class CollectivesTest : public ::testing::TestWithParam<int> {};

TEST_P(CollectivesTest, AllReduceEveryOpAndTypeInAndOutOfPlace) {
  const int n = GetParam();
  Group g(n);
  for (DataType t : kTypes) {
    const uint64_t es = size_of(t);
    struct Case {
      ReduceOp op;
      uint64_t count;
      bool in_place;
      std::vector<std::unique_ptr<PhysicalBlock>> send, recv;
    };
    std::vector<Case> cases;
    for (ReduceOp op : kOps)
      for (uint64_t count : {uint64_t{1}, uint64_t{37}, uint64_t{1030}})  // fewer than N; uneven; past a block
        for (bool in_place : {false, true}) cases.push_back({op, count, in_place, {}, {}});
    for (Case& c : cases)
      for (int r = 0; r < n; ++r) {
        c.send.push_back(g.allocate(r, c.count * es));
        for (uint64_t i = 0; i < c.count; ++i) store(t, c.send[r]->data(), i, value(c.op, r, i));
        if (!c.in_place) c.recv.push_back(g.allocate(r, c.count * es));
      }
    // Everything is queued before anything is waited for: the parts meet on the streams.
    for (Case& c : cases)
      for (int r = 0; r < n; ++r)
        g.comm->all_reduce(r, c.send[r]->data(), c.in_place ? c.send[r]->data() : c.recv[r]->data(), c.count, t, c.op);
    g.synchronize();
    for (Case& c : cases)
      for (int r = 0; r < n; ++r)
        EXPECT_TRUE(holds(t, c.in_place ? c.send[r]->data() : c.recv[r]->data(), 0, c.count,
                          [&](uint64_t i) { return expected(t, c.op, n, i); },
                          "all_reduce " + std::string(name_of(c.op)) + " count " + std::to_string(c.count) +
                              (c.in_place ? " in place" : "") + " rank " + std::to_string(r)));
  }
}

TEST_P(CollectivesTest, ReduceScatterUnevenCountsInAndOutOfPlace) {
  Group g(GetParam());
  for (DataType t : kTypes)
    for (ReduceOp op : kOps)
      for (bool in_place : {false, true}) check_reduce_scatter(g, uneven_counts(g.size()), t, op, in_place);
}

TEST_P(CollectivesTest, AllGatherUnevenCountsInAndOutOfPlace) {
  Group g(GetParam());
  for (DataType t : kTypes)
    for (bool in_place : {false, true}) check_all_gather(g, uneven_counts(g.size()), t, in_place);
}

TEST_P(CollectivesTest, BroadcastFromEveryRoot) {
  const int n = GetParam();
  Group g(n);
  const uint64_t count = 37;
  for (DataType t : kTypes)
    for (int root = 0; root < n; ++root) {
      const uint64_t es = size_of(t);
      std::vector<std::unique_ptr<PhysicalBlock>> buf;
      for (int r = 0; r < n; ++r) {
        buf.push_back(g.allocate(r, count * es));
        for (uint64_t i = 0; i < count; ++i) store(t, buf[r]->data(), i, value(ReduceOp::kSum, r, i));
      }
      // The root broadcasts in place; the others' buffers are overwritten.
      for (int r = 0; r < n; ++r) g.comm->broadcast(r, r == root ? buf[r]->data() : nullptr, buf[r]->data(), count, t, root);
      g.synchronize();
      for (int r = 0; r < n; ++r)
        EXPECT_TRUE(holds(t, buf[r]->data(), 0, count, [&](uint64_t i) { return value(ReduceOp::kSum, root, i); },
                          "broadcast from " + std::to_string(root) + " on rank " + std::to_string(r)));
    }
}

TEST_P(CollectivesTest, SendRecvAroundTheRingInOrder) {
  const int n = GetParam();
  if (n < 2) GTEST_SKIP() << "a rank cannot send to itself";
  Group g(n);
  const uint64_t count = 100;
  std::vector<std::unique_ptr<PhysicalBlock>> out, in1, in2;
  for (int r = 0; r < n; ++r) {
    out.push_back(g.allocate(r, count * 8));
    in1.push_back(g.allocate(r, count * 8));
    in2.push_back(g.allocate(r, count * 8));
    for (uint64_t i = 0; i < count; ++i) store(DataType::kInt64, out[r]->data(), i, r * 1000 + i);
  }
  // Every rank sends first and receives after: eager sends keep this from deadlocking. The second message
  // on each pair follows a change to the buffer on the stream, so it must carry the changed values.
  for (int r = 0; r < n; ++r) {
    g.comm->send(r, out[r]->data(), count, DataType::kInt64, (r + 1) % n);
    g.devices[r]->submit([p = static_cast<int64_t*>(out[r]->data()), count] {
      for (uint64_t i = 0; i < count; ++i) p[i] = -p[i];
    });
    g.comm->send(r, out[r]->data(), count, DataType::kInt64, (r + 1) % n);
    g.comm->recv(r, in1[r]->data(), count, DataType::kInt64, (r + n - 1) % n);
    g.comm->recv(r, in2[r]->data(), count, DataType::kInt64, (r + n - 1) % n);
  }
  g.synchronize();
  for (int r = 0; r < n; ++r) {
    const int from = (r + n - 1) % n;
    EXPECT_TRUE(holds(DataType::kInt64, in1[r]->data(), 0, count, [&](uint64_t i) { return from * 1000.0 + i; }, "first"));
    EXPECT_TRUE(holds(DataType::kInt64, in2[r]->data(), 0, count, [&](uint64_t i) { return -(from * 1000.0 + i); }, "second"));
    EXPECT_EQ(g.comm->traffic(r).bytes_sent, 2 * count * 8);
  }
}

TEST_P(CollectivesTest, BackToBackCollectivesInterleavedWithOtherStreamWorkFromOneThreadPerRank) {
  const int n = GetParam();
  Group g(n);
  constexpr int kSteps = 15;
  constexpr uint64_t kCount = 50;
  std::vector<std::unique_ptr<PhysicalBlock>> x, gathered;
  for (int r = 0; r < n; ++r) {
    x.push_back(g.allocate(r, kCount * 8));
    gathered.push_back(g.allocate(r, kCount * 8 * n));
    for (uint64_t i = 0; i < kCount; ++i) store(DataType::kInt64, x[r]->data(), i, r);
  }
  // Each rank's host thread issues its own parts: kernels (+1), an all-reduce, a barrier, in a loop.
  std::vector<std::thread> issuers;
  for (int r = 0; r < n; ++r)
    issuers.emplace_back([&, r] {
      auto* p = static_cast<int64_t*>(x[r]->data());
      for (int s = 0; s < kSteps; ++s) {
        g.devices[r]->submit([p] {
          for (uint64_t i = 0; i < kCount; ++i) p[i] += static_cast<int64_t>(i % 2) + 1;
        });
        g.comm->all_reduce(r, p, p, kCount, DataType::kInt64, ReduceOp::kSum);
        if (s % 4 == 0) g.comm->barrier(r);
      }
      g.comm->all_gather(r, p, gathered[r]->data(), std::vector<uint64_t>(n, kCount), DataType::kInt64);
    });
  for (auto& t : issuers) t.join();
  g.synchronize();
  for (uint64_t i = 0; i < kCount; ++i) {
    // Step 1 sums r + inc over the ranks; later steps sum N copies of (v + inc).
    const int64_t inc = static_cast<int64_t>(i % 2) + 1;
    int64_t v = n * (n - 1) / 2 + n * inc;
    for (int s = 1; s < kSteps; ++s) v = n * (v + inc);
    for (int r = 0; r < n; ++r) {
      ASSERT_EQ(static_cast<int64_t*>(x[r]->data())[i], v) << "rank " << r << " element " << i;
      for (int c = 0; c < n; ++c) ASSERT_EQ(static_cast<int64_t*>(gathered[r]->data())[c * kCount + i], v);
    }
  }
  EXPECT_EQ(g.comm->traffic(0).operations, static_cast<uint64_t>(kSteps + (kSteps + 3) / 4 + 1));
}

// The host communicator runs a group's collectives one after the other, with the same results.
TEST_P(CollectivesTest, AGroupOfCollectivesRunsInOrder) {
  Group g(GetParam());
  check_group(g);
  EXPECT_EQ(g.comm->traffic(0).operations, 5u);
}

INSTANTIATE_TEST_SUITE_P(Ranks, CollectivesTest, ::testing::Values(1, 2, 3, 4, 8),
                         [](const ::testing::TestParamInfo<int>& info) { return "N" + std::to_string(info.param); });

TEST(HostCommunicatorTest, OverlappingCommunicatorsOnTheSameStreams) {
  // A 4-rank group and two 2-rank groups over the same devices (as dp and tp groups are): each device's
  // stream holds parts of several communicators, in different orders on different devices.
  Group g(4);
  auto sub = [&](int a, int b) {
    return std::make_unique<HostCommunicator>(std::vector<PhysicalDevice*>{g.devices[a].get(), g.devices[b].get()}, kWait);
  };
  auto low = sub(0, 1), high = sub(2, 3);
  std::vector<std::unique_ptr<PhysicalBlock>> x;
  for (int r = 0; r < 4; ++r) {
    x.push_back(g.allocate(r, 4 * 10));
    for (int i = 0; i < 10; ++i) static_cast<float*>(x[r]->data())[i] = static_cast<float>(r + 1);
  }
  auto data = [&](int r) { return static_cast<float*>(x[r]->data()); };
  for (int r : {0, 1}) g.comm->all_reduce(r, data(r), data(r), 10, DataType::kFloat32, ReduceOp::kSum);
  for (int r : {0, 1}) low->all_reduce(r, data(r), data(r), 10, DataType::kFloat32, ReduceOp::kMax);
  for (int r : {2, 3}) high->all_reduce(r - 2, data(r), data(r), 10, DataType::kFloat32, ReduceOp::kProd);
  for (int r : {2, 3}) g.comm->all_reduce(r, data(r), data(r), 10, DataType::kFloat32, ReduceOp::kSum);
  g.synchronize();
  // Devices 2, 3 multiply first (3 * 4 = 12) while 0 and 1 wait in the 4-rank sum, so the sum sees the
  // originals of 0 and 1 (1, 2) and the products of 2 and 3: 1 + 2 + 12 + 12 = 27 on every device; the max
  // of 0 and 1 then keeps 27.
  for (int r = 0; r < 4; ++r)
    for (int i = 0; i < 10; ++i) EXPECT_EQ(data(r)[i], 27.0f) << "rank " << r;
}

TEST(HostCommunicatorTest, BytesSentFollowTheRingFormula) {
  for (int n : {1, 2, 3, 4, 8}) {
    Group g(n);
    const uint64_t even = 16 * static_cast<uint64_t>(n), uneven = 37;
    std::vector<std::unique_ptr<PhysicalBlock>> a;
    for (int r = 0; r < n; ++r) a.push_back(g.allocate(r, even * 4, 0));
    for (int r = 0; r < n; ++r) g.comm->all_reduce(r, a[r]->data(), a[r]->data(), even, DataType::kFloat32, ReduceOp::kSum);
    g.synchronize();
    for (int r = 0; r < n; ++r)
      EXPECT_EQ(static_cast<double>(g.comm->traffic(r).bytes_sent), ring_all_reduce_bytes_per_rank(even * 4, n))
          << "N=" << n << " rank " << r;
    g.comm->reset_traffic();
    for (int r = 0; r < n; ++r) g.comm->all_reduce(r, a[r]->data(), a[r]->data(), uneven, DataType::kBFloat16, ReduceOp::kSum);
    g.synchronize();
    EXPECT_EQ(g.comm->total_bytes_sent(), 2 * (n - 1) * uneven * 2) << "N=" << n;

    g.comm->reset_traffic();
    const std::vector<uint64_t> counts = uneven_counts(n);
    const uint64_t total = std::accumulate(counts.begin(), counts.end(), uint64_t{0});
    std::vector<std::unique_ptr<PhysicalBlock>> big;
    for (int r = 0; r < n; ++r) big.push_back(g.allocate(r, total * 8, 0));
    for (int r = 0; r < n; ++r) g.comm->all_gather(r, a[r]->data(), big[r]->data(), counts, DataType::kFloat64);
    g.synchronize();
    EXPECT_EQ(g.comm->total_bytes_sent(), (n - 1) * total * 8) << "all_gather N=" << n;
    for (int r = 0; r < n; ++r) EXPECT_EQ(g.comm->traffic(r).bytes_sent, (n - 1) * counts[r] * 8);

    g.comm->reset_traffic();
    for (int r = 0; r < n; ++r) g.comm->reduce_scatter(r, big[r]->data(), a[r]->data(), counts, DataType::kFloat64, ReduceOp::kAvg);
    g.synchronize();
    EXPECT_EQ(g.comm->total_bytes_sent(), (n - 1) * total * 8) << "reduce_scatter N=" << n;

    g.comm->reset_traffic();
    for (int r = 0; r < n; ++r) g.comm->broadcast(r, a[r]->data(), a[r]->data(), 5, DataType::kInt32, n - 1);
    g.synchronize();
    EXPECT_EQ(g.comm->traffic(n - 1).bytes_sent, (n - 1) * 5 * 4u);
    EXPECT_EQ(g.comm->total_bytes_sent(), (n - 1) * 5 * 4u);
    EXPECT_EQ(g.comm->traffic(0).operations, 1u);
  }
  EXPECT_EQ(ring_all_reduce_bytes_per_rank(1000, 4), 1500.0);
  EXPECT_EQ(ring_all_reduce_bytes_per_rank(1000, 1), 0.0);
}

TEST(HostCommunicatorTest, ARankThatNeverArrivesTimesOutNamingItAndBreaksTheCommunicator) {
  Group g(3, 200ms);
  check_missing_rank_fails(g, 2,
                           {"all_reduce(sum, float32, 16 elements)", "rank 2 (host:2) did not arrive within 200 ms",
                            "MOREH_COLLECTIVE_TIMEOUT"},
                           2s);
  EXPECT_NE(g.comm->broken_reason().find("rank 2 (host:2)"), std::string::npos);
  // Later work fails at once with the reason rather than waiting again.
  try {
    g.comm->barrier(2);
    ADD_FAILURE() << "a broken communicator took new work";
  } catch (const CollectiveError& e) {
    EXPECT_NE(std::string(e.what()).find("broken"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rank 2 (host:2) did not arrive"), std::string::npos) << e.what();
  }
  EXPECT_THROW(g.comm->run_in_stream(2, CollectivePart{}), CollectiveError);
  // The devices themselves stay usable.
  bool ran = false;
  g.devices[0]->submit([&] { ran = true; });
  g.devices[0]->synchronize(kWait);
  EXPECT_TRUE(ran);
}

TEST(HostCommunicatorTest, RecoversAfterAStepFailedOnOneRank) {
  Group g(3);
  check_recovers_after_a_failed_rank(g, 1);
  // And after a timeout, which leaves the ranks' sequence numbers apart (rank 2 never issued #0).
  Group late(3, 200ms);
  check_missing_rank_fails(late, 2, {"did not arrive within 200 ms"}, 2s);
  ASSERT_TRUE(late.comm->recover());
  check_all_reduce(late, DataType::kFloat32, ReduceOp::kSum, 16, false);
}

TEST(HostCommunicatorTest, PartsAlreadyQueuedWhenItBreaksFailInsteadOfHanging) {
  Group g(2, 200ms);
  auto a = g.allocate(0, 64, 0);
  g.comm->all_reduce(0, a->data(), a->data(), 16, DataType::kFloat32, ReduceOp::kSum);
  g.comm->all_reduce(0, a->data(), a->data(), 16, DataType::kFloat32, ReduceOp::kSum);  // queued behind
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(g.devices[0]->synchronize(kWait), TimeoutError);  // the first error is the one reported
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);  // one bound, not one per queued part
}

TEST(HostCommunicatorTest, ARecvWhoseSendNeverComesTimesOut) {
  Group g(2, 200ms);
  auto a = g.allocate(1, 64, 0);
  g.comm->recv(1, a->data(), 8, DataType::kInt64, 0);
  try {
    g.devices[1]->synchronize(kWait);
    ADD_FAILURE() << "recv did not fail";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0 (host:0) did not send"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(g.comm->broken());
}

TEST(HostCommunicatorTest, RanksIssuingDifferentCollectivesFailWithBoth) {
  Group g(2);
  check_different_collectives_fail(g);
}

TEST(HostCommunicatorTest, BadArgumentsAreConfigErrorsAtTheCall) {
  Group g(2);
  float x[4] = {};
  EXPECT_THROW(g.comm->all_reduce(2, x, x, 4, DataType::kFloat32, ReduceOp::kSum), ConfigError);
  EXPECT_THROW(g.comm->all_reduce(0, nullptr, x, 4, DataType::kFloat32, ReduceOp::kSum), ConfigError);
  EXPECT_THROW(g.comm->all_gather(0, x, x, {1, 1, 1}, DataType::kFloat32), ConfigError);
  EXPECT_THROW(g.comm->broadcast(0, x, x, 4, DataType::kFloat32, 5), ConfigError);
  EXPECT_THROW(g.comm->send(0, x, 4, DataType::kFloat32, 0), ConfigError);
  EXPECT_THROW(HostCommunicator({g.devices[0].get(), g.devices[0].get()}, kWait), ConfigError);
  EXPECT_THROW(HostCommunicator({}, kWait), ConfigError);
  EXPECT_FALSE(g.comm->broken());  // refused arguments do not break it
}

}  // namespace
}  // namespace moreh::runtime
