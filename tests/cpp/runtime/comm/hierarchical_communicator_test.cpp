// HierarchicalCommunicator over host devices: groups (the GPUs) with HostCommunicators inside, and the
// groups' leaders joined by a HostCommunicator or by the NCCL communicator over the fake NCCL. Every
// collective against the values a flat communicator gives.
#include "runtime/comm/hierarchical_communicator.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "runtime/comm/host_collective_group.h"
#include "runtime/base/errors.h"
#include "runtime/comm/host_communicator.h"
#include "runtime/host/host_device.h"
#include "runtime/comm/nccl_communicator.h"

namespace moreh::runtime {
namespace {

using namespace test_values;
using namespace std::chrono_literals;

struct Layout {
  std::vector<int> sizes;  // ranks per group
  bool nccl = false;       // leaders joined by the fake NCCL instead of a HostCommunicator
  std::string name() const {
    std::string s = "groups";
    for (int n : sizes) s.append("_").append(std::to_string(n));
    return nccl ? s.append("_nccl") : s;
  }
};

void PrintTo(const Layout& layout, std::ostream* os) { *os << layout.name(); }

// Host devices grouped as `layout` says, and a hierarchical communicator over them.
struct Group : HostGroup {
  explicit Group(const Layout& layout, std::chrono::milliseconds timeout = kWait) : HostGroup(ranks(layout)) {
    std::vector<int> group_of;
    for (size_t g = 0; g < layout.sizes.size(); ++g) group_of.insert(group_of.end(), layout.sizes[g], static_cast<int>(g));
    auto host = [timeout](std::vector<PhysicalDevice*> d) -> std::unique_ptr<Communicator> {
      return std::make_unique<HostCommunicator>(std::move(d), timeout);
    };
    auto nccl = [timeout](std::vector<PhysicalDevice*> d) -> std::unique_ptr<Communicator> {
      return std::make_unique<NcclCommunicator>(std::move(d), timeout, nccl::Library::load(MOREH_FAKE_NCCL_LIBRARY));
    };
    comm = std::make_unique<HierarchicalCommunicator>(raw(), group_of, host,
                                                      layout.nccl ? HierarchicalCommunicator::Factory(nccl) : host);
  }
  static int ranks(const Layout& layout) { return std::accumulate(layout.sizes.begin(), layout.sizes.end(), 0); }
};

class HierarchicalTest : public ::testing::TestWithParam<Layout> {};

// avg is a sum scaled by 1/N here, where the flat communicators divide: the same to a rounding.
TEST_P(HierarchicalTest, AllReduceEveryOpAndTypeInAndOutOfPlace) {
  Group g(GetParam());
  for (DataType t : kTypes)
    for (ReduceOp op : kOps) {
      if (op == ReduceOp::kAvg && !is_floating_point(t)) continue;
      const double avg_tolerance = t == DataType::kBFloat16 ? 8e-3 : t == DataType::kFloat16 ? 1e-3 : 1e-6;
      for (bool in_place : {false, true}) check_all_reduce(g, t, op, 37, in_place, avg_tolerance);
    }
}

TEST_P(HierarchicalTest, ReduceScatterUnevenInAndOutOfPlace) {
  Group g(GetParam());
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax})
    for (bool in_place : {false, true}) check_reduce_scatter(g, uneven_counts(g.size()), DataType::kFloat32, op, in_place);
}

TEST_P(HierarchicalTest, AllGatherUnevenInAndOutOfPlace) {
  Group g(GetParam());
  for (bool in_place : {false, true}) check_all_gather(g, uneven_counts(g.size()), DataType::kInt64, in_place);
}

TEST_P(HierarchicalTest, BroadcastFromEveryRootOutOfPlace) {
  Group g(GetParam());
  const int n = g.size();
  for (int root = 0; root < n; ++root) {
    std::vector<std::unique_ptr<PhysicalBlock>> src, dst;
    for (int r = 0; r < n; ++r) {
      src.push_back(g.allocate(r, 10 * 4, 0));
      dst.push_back(g.allocate(r, 10 * 4, 0));
      if (r == root)
        for (uint64_t i = 0; i < 10; ++i) store(DataType::kInt32, src[r]->data(), i, root * 10.0 + i + 1);
    }
    for (int r = 0; r < n; ++r) g.comm->broadcast(r, src[r]->data(), dst[r]->data(), 10, DataType::kInt32, root);
    g.synchronize();
    for (int r = 0; r < n; ++r)
      EXPECT_TRUE(holds(DataType::kInt32, dst[r]->data(), 0, 10, [&](uint64_t i) { return root * 10.0 + i + 1; },
                        "root " + std::to_string(root) + " rank " + std::to_string(r)));
  }
}

TEST_P(HierarchicalTest, BackToBackWithBarriersFromOneThreadPerRank) {
  Group g(GetParam());
  check_back_to_back_all_reduces(g, 10, 3);
}

INSTANTIATE_TEST_SUITE_P(Layouts, HierarchicalTest,
                         ::testing::Values(Layout{{2, 2}}, Layout{{3, 1, 2}}, Layout{{1, 1, 1}}, Layout{{4}},
                                           Layout{{2, 3}, true}, Layout{{1, 2, 2}, true}),
                         [](const ::testing::TestParamInfo<Layout>& info) { return info.param.name(); });

TEST(HierarchicalCommunicatorTest, GroupsMustBeRunsOfNeighbouringRanks) {
  HostDevice d0(0, 1 << 20), d1(1, 1 << 20), d2(2, 1 << 20);
  auto host = [](std::vector<PhysicalDevice*> d) -> std::unique_ptr<Communicator> {
    return std::make_unique<HostCommunicator>(std::move(d), kWait);
  };
  for (const std::vector<int>& bad : {std::vector<int>{0, 1, 0}, {1, 1, 0}, {0, 2, 2}, {0, 1}}) {
    try {
      HierarchicalCommunicator comm({&d0, &d1, &d2}, bad, host, host);
      ADD_FAILURE() << "groups accepted";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(bad.size() == 3 ? "neighbouring ranks" : "group numbers"), std::string::npos)
          << e.what();
    }
  }
  HierarchicalCommunicator comm({&d0, &d1, &d2}, {0, 0, 1}, host, host);
  EXPECT_EQ(comm.groups(), 2);
  EXPECT_NE(comm.local(0), nullptr);
  EXPECT_EQ(comm.local(1), nullptr);  // one rank: no local communicator
  EXPECT_EQ(comm.cross().size(), 2);
}

TEST(HierarchicalCommunicatorTest, SendRecvWithinAGroupBetweenLeadersAndARefusalForOtherPairs) {
  Group g(Layout{{2, 1}});
  auto a = g.allocate(0, 64), b = g.allocate(1, 64, 0), c = g.allocate(2, 64, 0);
  for (uint64_t i = 0; i < 8; ++i) store(DataType::kInt64, a->data(), i, 7.0 * i);
  g.comm->send(0, a->data(), 8, DataType::kInt64, 1);
  g.comm->recv(1, b->data(), 8, DataType::kInt64, 0);
  // The two groups' first ranks (a pipeline over workers of one device each): over the cross communicator.
  g.comm->send(0, a->data(), 8, DataType::kInt64, 2);
  g.comm->recv(2, c->data(), 8, DataType::kInt64, 0);
  g.synchronize();
  EXPECT_TRUE(holds(DataType::kInt64, b->data(), 0, 8, [](uint64_t i) { return 7.0 * i; }, "received"));
  EXPECT_TRUE(holds(DataType::kInt64, c->data(), 0, 8, [](uint64_t i) { return 7.0 * i; }, "received across"));
  try {
    g.comm->run_in_stream(1, [&] {  // rank 1 is not its group's first
      CollectivePart p;
      p.kind = CollectiveKind::kSend;
      p.type = DataType::kInt64;
      p.send = b->data();
      p.count = 8;
      p.peer = 2;
      return p;
    }());
    ADD_FAILURE() << "a member's send to another group was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("first ranks"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(g.comm->broken());
}

TEST(HierarchicalCommunicatorTest, IntegerAveragesAreRefused) {
  Group g(Layout{{2, 1}});
  auto a = g.allocate(0, 64, 0);
  const CollectivePart p = CollectivePart::all_reduce(a->data(), a->data(), 4, DataType::kInt32, ReduceOp::kAvg);
  EXPECT_THROW(g.comm->run_in_stream(0, p), ConfigError);
}

// A rank of another group that never comes: its leader's cross step times out, and the members waiting for
// that leader fail at once rather than after their own bound.
TEST(HierarchicalCommunicatorTest, RecoversAfterAStepFailedOnOneRank) {
  for (bool nccl : {false, true}) {
    Group g(Layout{{2, 2}, nccl});
    check_recovers_after_a_failed_rank(g, 3);
  }
}

TEST(HierarchicalCommunicatorTest, AMissingRankFailsEveryWaitingRankWithinOneBound) {
  Group g(Layout{{2, 2}}, 300ms);
  // Rank 2 times out waiting for rank 3 on their GPU; ranks 0 and 1, waiting behind it, are interrupted.
  check_missing_rank_fails(g, 3, {"did not arrive within 300 ms"}, 900ms, true);
  EXPECT_THROW(g.comm->barrier(3), CollectiveError);
}

}  // namespace
}  // namespace moreh::runtime
