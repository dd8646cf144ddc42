// HierarchicalCommunicator over host devices: groups (the GPUs) with HostCommunicators inside, and the
// groups' leaders joined by a HostCommunicator or by the NCCL communicator over the fake NCCL. Every
// collective against the values a flat communicator gives.
#include "runtime/hierarchical_communicator.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "runtime/collective_test_values.h"
#include "runtime/errors.h"
#include "runtime/host_communicator.h"
#include "runtime/host_device.h"
#include "runtime/nccl_communicator.h"

namespace moreh::runtime {
namespace {

using namespace test_values;
using namespace std::chrono_literals;
constexpr std::chrono::milliseconds kWait = 5s;
constexpr DataType kTypes[] = {DataType::kFloat32, DataType::kFloat64, DataType::kBFloat16,
                               DataType::kFloat16, DataType::kInt64,   DataType::kInt32};
constexpr ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin, ReduceOp::kProd};

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

struct Group {
  std::vector<std::unique_ptr<HostDevice>> devices;
  std::unique_ptr<HierarchicalCommunicator> comm;
  int n = 0;

  explicit Group(const Layout& layout, std::chrono::milliseconds timeout = kWait) {
    std::vector<PhysicalDevice*> raw;
    std::vector<int> group_of;
    for (size_t g = 0; g < layout.sizes.size(); ++g)
      for (int i = 0; i < layout.sizes[g]; ++i) {
        devices.push_back(std::make_unique<HostDevice>(n++, 1ull << 30));
        raw.push_back(devices.back().get());
        group_of.push_back(static_cast<int>(g));
      }
    auto host = [timeout](std::vector<PhysicalDevice*> d) -> std::unique_ptr<Communicator> {
      return std::make_unique<HostCommunicator>(std::move(d), timeout);
    };
    auto nccl = [timeout](std::vector<PhysicalDevice*> d) -> std::unique_ptr<Communicator> {
      return std::make_unique<NcclCommunicator>(std::move(d), timeout, nccl::Library::load(MOREH_FAKE_NCCL_LIBRARY));
    };
    comm = std::make_unique<HierarchicalCommunicator>(raw, group_of, host,
                                                      layout.nccl ? HierarchicalCommunicator::Factory(nccl) : host);
  }
  ~Group() {
    for (auto& d : devices) {
      try {
        d->synchronize(kWait);
      } catch (...) {
      }
    }
    comm.reset();
  }
  void synchronize() {
    for (auto& d : devices) d->synchronize(kWait);
  }
  std::unique_ptr<PhysicalBlock> allocate(int rank, uint64_t bytes, unsigned char fill = 0xcd) {
    auto block = devices[rank]->allocate(std::max<uint64_t>(bytes, 1));
    std::memset(block->data(), fill, block->bytes());
    return block;
  }
};

// avg is a sum scaled by 1/N here, where the flat communicators divide: the same to a rounding.
::testing::AssertionResult close_to(DataType t, const void* data, uint64_t count, ReduceOp op, int n,
                                    const std::string& what) {
  if (op != ReduceOp::kAvg) return holds(t, data, 0, count, [&](uint64_t i) { return expected(t, op, n, i); }, what);
  const double tolerance = t == DataType::kBFloat16 ? 8e-3 : t == DataType::kFloat16 ? 1e-3 : 1e-6;
  for (uint64_t i = 0; i < count; ++i) {
    const double got = load(t, data, i), want = expected(t, op, n, i);
    if (std::abs(got - want) > tolerance * std::max(1.0, std::abs(want)))
      return ::testing::AssertionFailure() << what << " " << name_of(t) << ": element " << i << " is " << got
                                           << ", expected " << want;
  }
  return ::testing::AssertionSuccess();
}

class HierarchicalTest : public ::testing::TestWithParam<Layout> {};

TEST_P(HierarchicalTest, AllReduceEveryOpAndTypeInAndOutOfPlace) {
  Group g(GetParam());
  const int n = g.n;
  for (DataType t : kTypes)
    for (ReduceOp op : kOps) {
      if (op == ReduceOp::kAvg && !is_floating_point(t)) continue;
      for (bool in_place : {false, true}) {
        const uint64_t count = 37, es = size_of(t);
        std::vector<std::unique_ptr<PhysicalBlock>> send, recv;
        for (int r = 0; r < n; ++r) {
          send.push_back(g.allocate(r, count * es));
          for (uint64_t i = 0; i < count; ++i) store(t, send[r]->data(), i, value(op, r, i));
          recv.push_back(in_place ? nullptr : g.allocate(r, count * es));
        }
        for (int r = 0; r < n; ++r)
          g.comm->all_reduce(r, send[r]->data(), in_place ? send[r]->data() : recv[r]->data(), count, t, op);
        g.synchronize();
        for (int r = 0; r < n; ++r)
          EXPECT_TRUE(close_to(t, in_place ? send[r]->data() : recv[r]->data(), count, op, n,
                               std::string(name_of(op)) + (in_place ? " in place" : "") + " rank " + std::to_string(r)));
      }
    }
}

TEST_P(HierarchicalTest, ReduceScatterUnevenInAndOutOfPlace) {
  Group g(GetParam());
  const int n = g.n;
  const std::vector<uint64_t> counts = uneven_counts(n), offsets = offsets_of(counts);
  const uint64_t total = offsets.back() + counts.back();
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax})
    for (bool in_place : {false, true}) {
      const DataType t = DataType::kFloat32;
      std::vector<std::unique_ptr<PhysicalBlock>> send, recv;
      for (int r = 0; r < n; ++r) {
        send.push_back(g.allocate(r, total * 4));
        for (uint64_t i = 0; i < total; ++i) store(t, send[r]->data(), i, value(op, r, i));
        recv.push_back(g.allocate(r, counts[r] * 4));
      }
      for (int r = 0; r < n; ++r) {
        void* out = in_place ? static_cast<std::byte*>(send[r]->data()) + offsets[r] * 4 : recv[r]->data();
        g.comm->reduce_scatter(r, send[r]->data(), out, counts, t, op);
      }
      g.synchronize();
      for (int r = 0; r < n; ++r)
        EXPECT_TRUE(holds(t, in_place ? send[r]->data() : recv[r]->data(), in_place ? offsets[r] : 0, counts[r],
                          [&](uint64_t i) { return expected(t, op, n, offsets[r] + i); },
                          std::string(name_of(op)) + (in_place ? " in place" : "") + " rank " + std::to_string(r)));
    }
}

TEST_P(HierarchicalTest, AllGatherUnevenInAndOutOfPlace) {
  Group g(GetParam());
  const int n = g.n;
  const std::vector<uint64_t> counts = uneven_counts(n), offsets = offsets_of(counts);
  const uint64_t total = offsets.back() + counts.back();
  for (bool in_place : {false, true}) {
    std::vector<std::unique_ptr<PhysicalBlock>> send, recv;
    for (int r = 0; r < n; ++r) {
      send.push_back(g.allocate(r, counts[r] * 8));
      recv.push_back(g.allocate(r, total * 8));
      void* mine = in_place ? static_cast<std::byte*>(recv[r]->data()) + offsets[r] * 8 : send[r]->data();
      for (uint64_t i = 0; i < counts[r]; ++i) store(DataType::kInt64, mine, i, r * 100.0 + i);
    }
    for (int r = 0; r < n; ++r) {
      const void* in = in_place ? static_cast<std::byte*>(recv[r]->data()) + offsets[r] * 8 : send[r]->data();
      g.comm->all_gather(r, in, recv[r]->data(), counts, DataType::kInt64);
    }
    g.synchronize();
    for (int r = 0; r < n; ++r)
      for (int c = 0; c < n; ++c)
        EXPECT_TRUE(holds(DataType::kInt64, recv[r]->data(), offsets[c], counts[c],
                          [&](uint64_t i) { return c * 100.0 + i; },
                          "slice " + std::to_string(c) + " on rank " + std::to_string(r) + (in_place ? " in place" : "")));
  }
}

TEST_P(HierarchicalTest, BroadcastFromEveryRootOutOfPlace) {
  Group g(GetParam());
  const int n = g.n;
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
  const int n = g.n;
  constexpr int kSteps = 10;
  constexpr uint64_t kCount = 16;
  std::vector<std::unique_ptr<PhysicalBlock>> x;
  for (int r = 0; r < n; ++r) {
    x.push_back(g.allocate(r, kCount * 8));
    for (uint64_t i = 0; i < kCount; ++i) store(DataType::kInt64, x[r]->data(), i, r);
  }
  std::vector<std::thread> issuers;
  for (int r = 0; r < n; ++r)
    issuers.emplace_back([&, r] {
      auto* p = static_cast<int64_t*>(x[r]->data());
      for (int s = 0; s < kSteps; ++s) {
        g.devices[r]->submit([p] {
          for (uint64_t i = 0; i < kCount; ++i) p[i] += 1;
        });
        g.comm->all_reduce(r, p, p, kCount, DataType::kInt64, ReduceOp::kSum);
        if (s % 3 == 0) g.comm->barrier(r);
      }
    });
  for (auto& t : issuers) t.join();
  g.synchronize();
  int64_t v = n * (n - 1) / 2 + n;
  for (int s = 1; s < kSteps; ++s) v = n * (v + 1);
  for (int r = 0; r < n; ++r) EXPECT_EQ(static_cast<int64_t*>(x[r]->data())[0], v) << "rank " << r;
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

TEST(HierarchicalCommunicatorTest, SendRecvWithinAGroupAndARefusalAcrossGroups) {
  Group g(Layout{{2, 1}});
  auto a = g.allocate(0, 64), b = g.allocate(1, 64, 0);
  for (uint64_t i = 0; i < 8; ++i) store(DataType::kInt64, a->data(), i, 7.0 * i);
  g.comm->send(0, a->data(), 8, DataType::kInt64, 1);
  g.comm->recv(1, b->data(), 8, DataType::kInt64, 0);
  g.synchronize();
  EXPECT_TRUE(holds(DataType::kInt64, b->data(), 0, 8, [](uint64_t i) { return 7.0 * i; }, "received"));
  EXPECT_THROW(g.comm->run_in_stream(0, [&] {
    CollectivePart p;
    p.kind = CollectiveKind::kSend;
    p.type = DataType::kInt64;
    p.send = a->data();
    p.count = 8;
    p.peer = 2;
    return p;
  }()), ConfigError);
  EXPECT_FALSE(g.comm->broken());
}

TEST(HierarchicalCommunicatorTest, IntegerAveragesAreRefused) {
  Group g(Layout{{2, 1}});
  auto a = g.allocate(0, 64, 0);
  CollectivePart p;
  p.kind = CollectiveKind::kAllReduce;
  p.type = DataType::kInt32;
  p.op = ReduceOp::kAvg;
  p.send = a->data();
  p.recv = a->data();
  p.count = 4;
  EXPECT_THROW(g.comm->run_in_stream(0, p), ConfigError);
}

// A rank of another group that never comes: its leader's cross step times out, and the members waiting for
// that leader fail at once rather than after their own bound.
TEST(HierarchicalCommunicatorTest, AMissingRankFailsEveryWaitingRankWithinOneBound) {
  Group g(Layout{{2, 2}}, 300ms);
  std::vector<std::unique_ptr<PhysicalBlock>> a;
  for (int r = 0; r < 4; ++r) a.push_back(g.allocate(r, 64, 0));
  for (int r : {0, 1, 2}) g.comm->all_reduce(r, a[r]->data(), a[r]->data(), 16, DataType::kFloat32, ReduceOp::kSum);
  const auto start = std::chrono::steady_clock::now();
  int failed = 0;
  for (int r : {0, 1, 2}) {
    try {
      g.devices[r]->synchronize(kWait);
      ADD_FAILURE() << "rank " << r << " did not fail";
    } catch (const TimeoutError& e) {
      ++failed;
      EXPECT_NE(std::string(e.what()).find("did not arrive within 300 ms"), std::string::npos) << e.what();
    } catch (const CollectiveError& e) {
      ++failed;
      EXPECT_NE(std::string(e.what()).find("did not arrive within 300 ms"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(failed, 3);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 900ms) << "the ranks behind a failed step waited out a bound";
  EXPECT_TRUE(g.comm->broken());
  EXPECT_THROW(g.comm->barrier(3), CollectiveError);
}

}  // namespace
}  // namespace moreh::runtime
