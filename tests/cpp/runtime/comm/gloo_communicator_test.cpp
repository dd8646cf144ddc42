// GlooCommunicator between "workers" that are threads of this process: each rank its own thread, host
// device, Gloo context (over 127.0.0.1) and communicator, whose other ranks are RemoteDevices. Every
// collective against the values collective_test_values.h expects; HierarchicalCommunicator with Gloo as its
// cross communicator against a flat computation; timeouts, interrupts, dead peers and mismatches; the shim's
// loading and that its Gloo is Debian's even with libtorch_cpu (another Gloo) loaded first.
#include "runtime/comm/gloo_communicator.h"

#include <dlfcn.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "runtime/base/errors.h"
#include "runtime/comm/collective_test_values.h"
#include "runtime/comm/gloo_library.h"
#include "runtime/comm/hierarchical_communicator.h"
#include "runtime/comm/host_communicator.h"
#include "runtime/device/remote_device.h"
#include "runtime/host/host_device.h"

namespace moreh::runtime {
namespace {

using namespace test_values;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kBound = 10s;    // parts that should complete
constexpr std::chrono::milliseconds kConnect = 20s;  // the rendezvous
constexpr uint64_t kCapacity = 1ull << 30;

// The control plane's store, in process: a map, and bounded waits for keys.
class MemoryStore final : public GlooStore {
 public:
  void set(const std::string& key, const std::string& value) const override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      values_[key] = value;
    }
    changed_.notify_all();
  }
  std::string get(const std::string& key, std::chrono::milliseconds timeout) const override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!changed_.wait_for(lock, timeout, [&] { return values_.count(key) != 0; }))
      throw TimeoutError(fmt::format("no \"{}\" in the store within {} ms", key, timeout.count()));
    return values_.at(key);
  }

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  mutable std::map<std::string, std::string> values_;
};

std::string remote_name(int rank) { return fmt::format("worker {} (127.0.0.1) host:0", rank); }

// One worker's view: its own host device, RemoteDevices for the others, and a connected communicator.
struct Rank {
  int rank, n;
  HostDevice device;
  std::vector<std::unique_ptr<RemoteDevice>> remote;
  std::shared_ptr<GlooContext> context;
  std::unique_ptr<GlooCommunicator> comm;

  Rank(int r, int size, const GlooStore& store, std::chrono::milliseconds timeout)
      : rank(r), n(size), device(r, kCapacity) {
    std::vector<PhysicalDevice*> devices;
    for (int k = 0; k < n; ++k) {
      if (k == r) {
        devices.push_back(&device);
        continue;
      }
      remote.push_back(std::make_unique<RemoteDevice>(k, remote_name(k), DeviceKind::kHost, kCapacity));
      devices.push_back(remote.back().get());
    }
    context = connect_gloo(r, n, store, "127.0.0.1", kConnect);
    comm = std::make_unique<GlooCommunicator>(devices, context, timeout);
  }
  ~Rank() {
    try {
      device.synchronize(kBound);
    } catch (...) {
    }
    comm.reset();
    context.reset();
  }
  std::unique_ptr<PhysicalBlock> allocate(uint64_t bytes, unsigned char fill = 0xcd) {
    auto block = device.allocate(std::max<uint64_t>(bytes, 1));
    std::memset(block->data(), fill, block->bytes());
    return block;
  }
  void synchronize() { device.synchronize(kBound); }
};

// Runs `body` on n ranks, each on its own thread; every thread is joined.
void on_ranks(int n, const std::function<void(Rank&)>& body, std::chrono::milliseconds timeout = kBound) {
  MemoryStore store;
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        Rank me(r, n, store, timeout);
        body(me);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "rank " << r << ": " << e.what();
      }
    });
  for (std::thread& t : threads) t.join();
}

std::string at(int rank) { return " on rank " + std::to_string(rank); }

class GlooCollectivesTest : public ::testing::TestWithParam<int> {};

TEST_P(GlooCollectivesTest, AllReduceEveryOpAndTypeInAndOutOfPlace) {
  const int n = GetParam();
  on_ranks(n, [&](Rank& me) {
    for (DataType t : kTypes)
      for (ReduceOp op : kOps)
        for (bool in_place : {false, true}) {
          const uint64_t count = 37, es = size_of(t);
          auto send = me.allocate(count * es), recv = me.allocate(count * es);
          for (uint64_t i = 0; i < count; ++i) store(t, send->data(), i, value(op, me.rank, i));
          void* out = in_place ? send->data() : recv->data();
          me.comm->all_reduce(me.rank, send->data(), out, count, t, op);
          me.synchronize();
          EXPECT_TRUE(holds(t, out, 0, count, [&](uint64_t i) { return expected(t, op, n, i); },
                            fmt::format("all_reduce {}{}{}", name_of(op), in_place ? " in place" : "", at(me.rank))));
        }
  });
}

TEST_P(GlooCollectivesTest, AllReduceOfOneElementAndOfSeveralSegmentsQueuedBackToBack) {
  const int n = GetParam();
  on_ranks(n, [&](Rank& me) {
    // Fewer elements than ranks, and more than Gloo's 1 MiB segments; all queued before any is waited for.
    std::vector<uint64_t> counts = {1, 300000};
    std::vector<std::unique_ptr<PhysicalBlock>> blocks;
    for (uint64_t count : counts) {
      blocks.push_back(me.allocate(count * 4));
      void* x = blocks.back()->data();
      for (uint64_t i = 0; i < count; ++i) store(DataType::kFloat32, x, i, value(ReduceOp::kSum, me.rank, i));
      me.comm->all_reduce(me.rank, x, x, count, DataType::kFloat32, ReduceOp::kSum);
    }
    me.synchronize();
    for (size_t k = 0; k < counts.size(); ++k)
      EXPECT_TRUE(holds(DataType::kFloat32, blocks[k]->data(), 0, counts[k],
                        [&](uint64_t i) { return expected(DataType::kFloat32, ReduceOp::kSum, n, i); },
                        fmt::format("all_reduce of {}{}", counts[k], at(me.rank))));
    uint64_t bytes = 0;
    for (uint64_t count : counts)
      bytes += ring_bytes_sent(CollectivePart::all_reduce(nullptr, nullptr, count, DataType::kFloat32, ReduceOp::kSum),
                               me.rank, n);
    EXPECT_EQ(me.comm->traffic(me.rank).bytes_sent, bytes);
    EXPECT_EQ(me.comm->traffic(me.rank).operations, 2u);
  });
}

TEST_P(GlooCollectivesTest, ReduceScatterUnevenInAndOutOfPlace) {
  const int n = GetParam();
  const std::vector<uint64_t> counts = uneven_counts(n);
  const std::vector<uint64_t> offsets = offsets_of(counts);
  const uint64_t total = offsets.back() + counts.back();
  on_ranks(n, [&](Rank& me) {
    for (DataType t : {DataType::kFloat32, DataType::kInt64, DataType::kBFloat16})
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kAvg})
        for (bool in_place : {false, true}) {
          const uint64_t es = size_of(t);
          auto send = me.allocate(total * es), recv = me.allocate(counts[me.rank] * es);
          for (uint64_t i = 0; i < total; ++i) store(t, send->data(), i, value(op, me.rank, i));
          void* out = in_place ? element_at(send->data(), offsets[me.rank], es) : recv->data();
          me.comm->reduce_scatter(me.rank, send->data(), out, counts, t, op);
          me.synchronize();
          EXPECT_TRUE(holds(t, out, 0, counts[me.rank],
                            [&](uint64_t i) { return expected(t, op, n, offsets[me.rank] + i); },
                            fmt::format("reduce_scatter {}{}{}", name_of(op), in_place ? " in place" : "",
                                        at(me.rank))));
        }
  });
}

TEST_P(GlooCollectivesTest, AllGatherUnevenInAndOutOfPlace) {
  const int n = GetParam();
  const std::vector<uint64_t> counts = uneven_counts(n);
  const std::vector<uint64_t> offsets = offsets_of(counts);
  const uint64_t total = offsets.back() + counts.back();
  on_ranks(n, [&](Rank& me) {
    for (DataType t : {DataType::kInt64, DataType::kFloat16, DataType::kInt32})
      for (bool in_place : {false, true}) {
        const uint64_t es = size_of(t);
        auto recv = me.allocate(total * es), send = me.allocate(counts[me.rank] * es);
        void* mine = in_place ? element_at(recv->data(), offsets[me.rank], es) : send->data();
        for (uint64_t i = 0; i < counts[me.rank]; ++i) store(t, mine, i, value(ReduceOp::kSum, me.rank, i));
        me.comm->all_gather(me.rank, mine, recv->data(), counts, t);
        me.synchronize();
        for (int c = 0; c < n; ++c)
          EXPECT_TRUE(holds(t, recv->data(), offsets[c], counts[c],
                            [&](uint64_t i) { return value(ReduceOp::kSum, c, i); },
                            fmt::format("all_gather slice {}{}{}", c, in_place ? " in place" : "", at(me.rank))));
      }
    EXPECT_EQ(me.comm->traffic(me.rank).bytes_sent, 2 * (counts[me.rank] * (8 + 2 + 4) * (n - 1)));
  });
}

TEST_P(GlooCollectivesTest, BroadcastFromNonZeroRoots) {
  const int n = GetParam();
  on_ranks(n, [&](Rank& me) {
    for (int root : {n - 1, 1}) {
      auto src = me.allocate(10 * 8, 0), dst = me.allocate(10 * 8, 0);
      if (me.rank == root)
        for (uint64_t i = 0; i < 10; ++i) store(DataType::kFloat64, src->data(), i, root * 10.0 + i + 1);
      // Out of place on the root the first time, in place the second.
      void* out = me.rank == root && root == 1 ? src->data() : dst->data();
      me.comm->broadcast(me.rank, src->data(), out, 10, DataType::kFloat64, root);
      me.synchronize();
      EXPECT_TRUE(holds(DataType::kFloat64, out, 0, 10, [&](uint64_t i) { return root * 10.0 + i + 1; },
                        fmt::format("broadcast from {}{}", root, at(me.rank))));
    }
  });
}

// Every rank sends three messages of different sizes to each peer, then receives theirs: sends are eager,
// so nobody waits for a peer that is itself sending.
TEST_P(GlooCollectivesTest, SendRecvBothWaysSeveralMessages) {
  const int n = GetParam();
  auto message_value = [](int from, int to, int k, uint64_t i) { return from * 1000.0 + to * 100.0 + k * 10.0 + i; };
  auto length = [](int k) { return uint64_t(3 + 5 * k); };
  on_ranks(n, [&](Rank& me) {
    std::vector<std::unique_ptr<PhysicalBlock>> out, in;
    for (int p = 0; p < n; ++p) {
      if (p == me.rank) continue;
      for (int k = 0; k < 3; ++k) {
        out.push_back(me.allocate(length(k) * 4));
        for (uint64_t i = 0; i < length(k); ++i)
          store(DataType::kInt32, out.back()->data(), i, message_value(me.rank, p, k, i));
        me.comm->send(me.rank, out.back()->data(), length(k), DataType::kInt32, p);
      }
    }
    std::map<std::pair<int, int>, PhysicalBlock*> received;
    for (int p = 0; p < n; ++p) {
      if (p == me.rank) continue;
      for (int k = 0; k < 3; ++k) {
        in.push_back(me.allocate(length(k) * 4, 0));
        received[{p, k}] = in.back().get();
        me.comm->recv(me.rank, in.back()->data(), length(k), DataType::kInt32, p);
      }
    }
    me.synchronize();
    for (const auto& [key, block] : received) {
      const auto [p, k] = key;
      EXPECT_TRUE(holds(DataType::kInt32, block->data(), 0, length(k),
                        [&](uint64_t i) { return message_value(p, me.rank, k, i); },
                        fmt::format("message {} from rank {}{}", k, p, at(me.rank))));
    }
    EXPECT_EQ(me.comm->traffic(me.rank).bytes_sent, uint64_t(n - 1) * (3 + 8 + 13) * 4);
  });
}

// Ranks reach the barrier 150 ms apart: none leaves it before the last has arrived.
TEST_P(GlooCollectivesTest, BarrierWaitsForTheLastRank) {
  const int n = GetParam();
  std::mutex mu;
  std::optional<Clock::time_point> last_arrival;
  std::vector<Clock::time_point> left(n);
  on_ranks(n, [&](Rank& me) {
    me.comm->barrier(me.rank);  // everyone connected and ready
    me.synchronize();
    std::this_thread::sleep_for(me.rank * 150ms);
    {
      std::lock_guard<std::mutex> lock(mu);
      const auto now = Clock::now();
      if (!last_arrival || now > *last_arrival) last_arrival = now;
    }
    me.comm->barrier(me.rank);
    me.synchronize();
    std::lock_guard<std::mutex> lock(mu);
    left[me.rank] = Clock::now();
  });
  for (int r = 0; r < n; ++r) EXPECT_GE(left[r], *last_arrival) << "rank " << r << " left the barrier early";
}

INSTANTIATE_TEST_SUITE_P(Gloo, GlooCollectivesTest, ::testing::Values(2, 3, 4),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::to_string(info.param) + "_ranks";
                         });

// Worker w (0 or 1) of two with two host devices each: its own devices, stand-ins for the other's, and all
// four in rank order.
struct TwoDeviceWorker {
  explicit TwoDeviceWorker(int w)
      : d0(2 * w, kCapacity),
        d1(2 * w + 1, kCapacity),
        r0(2 * (1 - w), remote_name(1 - w), DeviceKind::kHost, kCapacity),
        r1(2 * (1 - w) + 1, fmt::format("worker {} (127.0.0.1) host:1", 1 - w), DeviceKind::kHost, kCapacity),
        devices(w == 0 ? std::vector<PhysicalDevice*>{&d0, &d1, &r0, &r1}
                       : std::vector<PhysicalDevice*>{&r0, &r1, &d0, &d1}) {}
  HostDevice d0, d1;
  RemoteDevice r0, r1;
  std::vector<PhysicalDevice*> devices;
};

// 2 workers x 2 host devices: in each worker a HierarchicalCommunicator over all 4 ranks (groups = workers,
// HostCommunicators inside, Gloo between the leaders); each worker issues its own ranks' parts only.
TEST(GlooHierarchicalTest, TwoWorkersOfTwoDevicesMatchAFlatComputation) {
  constexpr int kRanks = 4;
  MemoryStore kv;
  const std::vector<uint64_t> counts = uneven_counts(kRanks);
  const std::vector<uint64_t> offsets = offsets_of(counts);
  const uint64_t total = offsets.back() + counts.back();
  auto worker = [&](int w) {
    try {
      TwoDeviceWorker me(w);
      HostDevice &d0 = me.d0, &d1 = me.d1;
      const std::vector<PhysicalDevice*>& devices = me.devices;
      std::shared_ptr<GlooContext> context = connect_gloo(w, 2, kv, "127.0.0.1", kConnect);
      auto host = [](std::vector<PhysicalDevice*> d) -> std::unique_ptr<Communicator> {
        return std::make_unique<HostCommunicator>(std::move(d), kBound);
      };
      auto cross = [&](std::vector<PhysicalDevice*> d) -> std::unique_ptr<Communicator> {
        return std::make_unique<GlooCommunicator>(std::move(d), context, kBound);
      };
      HierarchicalCommunicator comm(devices, {0, 0, 1, 1}, host, cross);
      const int mine[2] = {2 * w, 2 * w + 1};
      HostDevice* dev[2] = {&d0, &d1};
      auto sync = [&] {
        d0.synchronize(kBound);
        d1.synchronize(kBound);
      };
      auto allocate = [&](int k, uint64_t bytes) {
        auto b = dev[k]->allocate(std::max<uint64_t>(bytes, 1));
        std::memset(b->data(), 0xcd, b->bytes());
        return b;
      };

      for (DataType t : {DataType::kFloat32, DataType::kInt64, DataType::kBFloat16})
        for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kAvg}) {
          if (op == ReduceOp::kAvg && !is_floating_point(t)) continue;
          const uint64_t count = 37, es = size_of(t);
          std::unique_ptr<PhysicalBlock> x[2];
          for (int k = 0; k < 2; ++k) {
            x[k] = allocate(k, count * es);
            for (uint64_t i = 0; i < count; ++i) store(t, x[k]->data(), i, value(op, mine[k], i));
            comm.all_reduce(mine[k], x[k]->data(), x[k]->data(), count, t, op);
          }
          sync();
          for (int k = 0; k < 2; ++k)
            EXPECT_TRUE(holds(t, x[k]->data(), 0, count, [&](uint64_t i) { return expected(t, op, kRanks, i); },
                              fmt::format("hierarchical all_reduce {}{}", name_of(op), at(mine[k]))));
        }

      {  // A group of all-reduces (a step's gradients): of two types, one out of place, packed per type.
        std::unique_ptr<PhysicalBlock> a[2], b[2], c[2], c_out[2];
        std::vector<CollectivePart> parts[2];
        for (int k = 0; k < 2; ++k) {
          a[k] = allocate(k, 37 * 4);
          b[k] = allocate(k, 5 * 8);
          c[k] = allocate(k, 1000 * 4);
          c_out[k] = allocate(k, 1000 * 4);
          for (uint64_t i = 0; i < 37; ++i) store(DataType::kFloat32, a[k]->data(), i, value(ReduceOp::kSum, mine[k], i));
          for (uint64_t i = 0; i < 5; ++i) store(DataType::kInt64, b[k]->data(), i, value(ReduceOp::kSum, mine[k], i));
          for (uint64_t i = 0; i < 1000; ++i)
            store(DataType::kFloat32, c[k]->data(), i, value(ReduceOp::kSum, mine[k], i));
          parts[k] = {CollectivePart::all_reduce(a[k]->data(), a[k]->data(), 37, DataType::kFloat32, ReduceOp::kSum),
                      CollectivePart::all_reduce(b[k]->data(), b[k]->data(), 5, DataType::kInt64, ReduceOp::kSum),
                      CollectivePart::all_reduce(c[k]->data(), c_out[k]->data(), 1000, DataType::kFloat32, ReduceOp::kSum)};
          dev[k]->submit([&, k] { comm.run_group_in_stream(mine[k], parts[k]); });
        }
        sync();
        for (int k = 0; k < 2; ++k) {
          auto sum = [&](DataType t) { return [&, t](uint64_t i) { return expected(t, ReduceOp::kSum, kRanks, i); }; };
          EXPECT_TRUE(holds(DataType::kFloat32, a[k]->data(), 0, 37, sum(DataType::kFloat32), "group part 0" + at(mine[k])));
          EXPECT_TRUE(holds(DataType::kInt64, b[k]->data(), 0, 5, sum(DataType::kInt64), "group part 1" + at(mine[k])));
          EXPECT_TRUE(holds(DataType::kFloat32, c_out[k]->data(), 0, 1000, sum(DataType::kFloat32), "group part 2" + at(mine[k])));
        }
      }

      std::unique_ptr<PhysicalBlock> send[2], recv[2];
      for (int k = 0; k < 2; ++k) {
        send[k] = allocate(k, counts[mine[k]] * 8);
        recv[k] = allocate(k, total * 8);
        for (uint64_t i = 0; i < counts[mine[k]]; ++i)
          store(DataType::kInt64, send[k]->data(), i, value(ReduceOp::kSum, mine[k], i));
        comm.all_gather(mine[k], send[k]->data(), recv[k]->data(), counts, DataType::kInt64);
      }
      sync();
      for (int k = 0; k < 2; ++k)
        for (int c = 0; c < kRanks; ++c)
          EXPECT_TRUE(holds(DataType::kInt64, recv[k]->data(), offsets[c], counts[c],
                            [&](uint64_t i) { return value(ReduceOp::kSum, c, i); },
                            fmt::format("hierarchical all_gather slice {}{}", c, at(mine[k]))));

      for (int k = 0; k < 2; ++k) {
        send[k] = allocate(k, total * 4);
        recv[k] = allocate(k, counts[mine[k]] * 4);
        for (uint64_t i = 0; i < total; ++i)
          store(DataType::kFloat32, send[k]->data(), i, value(ReduceOp::kSum, mine[k], i));
        comm.reduce_scatter(mine[k], send[k]->data(), recv[k]->data(), counts, DataType::kFloat32, ReduceOp::kSum);
      }
      sync();
      for (int k = 0; k < 2; ++k)
        EXPECT_TRUE(holds(DataType::kFloat32, recv[k]->data(), 0, counts[mine[k]],
                          [&](uint64_t i) {
                            return expected(DataType::kFloat32, ReduceOp::kSum, kRanks, offsets[mine[k]] + i);
                          },
                          fmt::format("hierarchical reduce_scatter{}", at(mine[k]))));

      constexpr int kRoot = 3;
      for (int k = 0; k < 2; ++k) {
        send[k] = allocate(k, 10 * 4);
        recv[k] = allocate(k, 10 * 4);
        if (mine[k] == kRoot)
          for (uint64_t i = 0; i < 10; ++i) store(DataType::kInt32, send[k]->data(), i, 7.0 * i + 1);
        comm.broadcast(mine[k], send[k]->data(), recv[k]->data(), 10, DataType::kInt32, kRoot);
        comm.barrier(mine[k]);
      }
      sync();
      for (int k = 0; k < 2; ++k)
        EXPECT_TRUE(holds(DataType::kInt32, recv[k]->data(), 0, 10, [](uint64_t i) { return 7.0 * i + 1; },
                          fmt::format("hierarchical broadcast from rank {}{}", kRoot, at(mine[k]))));
      // The other worker's ranks are issued there.
      EXPECT_THROW(comm.barrier(mine[0] ^ 2), ConfigError);
      EXPECT_FALSE(comm.broken());
    } catch (const std::exception& e) {
      ADD_FAILURE() << "worker " << w << ": " << e.what();
    }
  };
  std::thread w0(worker, 0), w1(worker, 1);
  w0.join();
  w1.join();
}

// Groups of devices across the two workers (a pipeline stage's replicas): {1, 3} (neither worker's first
// device) and {0, 2} all-reduce at the same time, each over a Gloo context of its own that connects when the
// group is made; a group inside one worker needs no Gloo; ranks of one worker that are not neighbours in the
// group, or no factory for the cross part, give no group.
TEST(GlooHierarchicalTest, GroupsAcrossWorkersMeetOverContextsOfTheirOwn) {
  MemoryStore kv;
  auto worker = [&](int w) {
    try {
      TwoDeviceWorker me(w);
      HostDevice &d0 = me.d0, &d1 = me.d1;
      const std::vector<PhysicalDevice*>& devices = me.devices;
      std::shared_ptr<GlooContext> context = connect_gloo(w, 2, kv, "127.0.0.1", kConnect);
      HierarchicalCommunicator comm(
          devices, {0, 0, 1, 1},
          [](std::vector<PhysicalDevice*> d) -> std::unique_ptr<Communicator> {
            return std::make_unique<HostCommunicator>(std::move(d), kBound);
          },
          [&](std::vector<PhysicalDevice*> d) -> std::unique_ptr<Communicator> {
            return std::make_unique<GlooCommunicator>(std::move(d), context, kBound);
          });
      EXPECT_EQ(comm.make_group({1, 3}), nullptr);  // no factory for the cross part yet
      int made = 0;
      comm.set_group_cross([&](const std::vector<int>& ranks, const std::vector<int>& nodes,
                               std::vector<PhysicalDevice*> leaders) -> std::unique_ptr<Communicator> {
        ++made;
        EXPECT_EQ(nodes, (std::vector<int>{0, 1}));
        EXPECT_EQ(leaders[w]->index(), ranks[w]);  // the group's device in each worker, not the worker's first
        const std::string name = fmt::format("group {} {}", ranks[0], ranks[1]);
        auto pending = std::async(std::launch::async, [&kv, name, w] {
                         return connect_gloo(w, 2, PrefixedStore(kv, name), "127.0.0.1", kConnect);
                       }).share();
        return std::make_unique<GlooCommunicator>(std::move(leaders), pending, w, kBound);
      });
      EXPECT_EQ(comm.make_group({0, 2, 1}), nullptr);  // worker 0's ranks apart
      auto odd = comm.make_group({1, 3}), even = comm.make_group({0, 2}), inside = comm.make_group({2 * w + 1, 2 * w});
      ASSERT_TRUE(odd && even && inside);
      EXPECT_EQ(made, 2);
      constexpr uint64_t kCount = 1000;
      auto filled = [&](HostDevice& d, float base) {
        auto b = d.allocate(kCount * 4);
        for (uint64_t i = 0; i < kCount; ++i) reinterpret_cast<float*>(b->data())[i] = base + static_cast<float>(i);
        return b;
      };
      auto x0 = filled(d0, 100.0f * (2 * w)), x1 = filled(d1, 100.0f * (2 * w + 1));
      auto y0 = filled(d0, 1.0f), y1 = filled(d1, 2.0f);
      even->all_reduce(w, x0->data(), x0->data(), kCount, DataType::kFloat32, ReduceOp::kSum);
      odd->all_reduce(w, x1->data(), x1->data(), kCount, DataType::kFloat32, ReduceOp::kSum);
      inside->all_reduce(0, y1->data(), y1->data(), kCount, DataType::kFloat32, ReduceOp::kSum);  // rank 0: d1
      inside->all_reduce(1, y0->data(), y0->data(), kCount, DataType::kFloat32, ReduceOp::kSum);
      d0.synchronize(kBound);
      d1.synchronize(kBound);
      for (uint64_t i = 0; i < kCount; ++i) {
        const float f = static_cast<float>(i);
        ASSERT_EQ(reinterpret_cast<float*>(x0->data())[i], 0.0f + 200.0f + 2 * f) << "group {0, 2}" << at(2 * w);
        ASSERT_EQ(reinterpret_cast<float*>(x1->data())[i], 100.0f + 300.0f + 2 * f) << "group {1, 3}" << at(2 * w + 1);
        ASSERT_EQ(reinterpret_cast<float*>(y0->data())[i], 3.0f + 2 * f) << "a group inside worker " << w;
      }
      EXPECT_THROW(even->barrier(1 - w), ConfigError);  // the other worker's rank of the group
    } catch (const std::exception& e) {
      ADD_FAILURE() << "worker " << w << ": " << e.what();
    }
  };
  std::thread w0(worker, 0), w1(worker, 1);
  w0.join();
  w1.join();
}

// The last rank connects but never issues its part: each of the others fails with a TimeoutError naming
// the collective, that rank and the bound, within the bound; the communicator is broken then.
TEST(GlooCommunicatorTest, ARankThatNeverArrivesTimesOutTheOthersWithinTheBound) {
  constexpr auto kShort = 500ms;
  for (int n : {2, 3}) {
    const int missing = n - 1;
    std::latch checked(n - 1);
    on_ranks(n, [&](Rank& me) {
      if (me.rank == missing) {
        checked.wait();
        // Its peers have closed their connections: it fails at once rather than at its bound.
        const auto start = Clock::now();
        me.comm->barrier(me.rank);
        EXPECT_THROW(me.synchronize(), CollectiveError);
        EXPECT_LT(Clock::now() - start, kShort);
        return;
      }
      auto a = me.allocate(64, 0);
      const auto start = Clock::now();
      me.comm->all_reduce(me.rank, a->data(), a->data(), 16, DataType::kFloat32, ReduceOp::kSum);
      try {
        me.synchronize();
        ADD_FAILURE() << "rank " << me.rank << " did not fail";
      } catch (const TimeoutError& e) {
        const std::string what = e.what();
        for (const std::string& part : {std::string("all_reduce(sum, float32, 16 elements)"),
                                        fmt::format("rank {} ({}) did not arrive", missing, remote_name(missing)),
                                        std::string("within 500 ms")})
          EXPECT_NE(what.find(part), std::string::npos) << what;
      }
      const auto elapsed = Clock::now() - start;
      EXPECT_GE(elapsed, kShort - 50ms);
      EXPECT_LT(elapsed, kShort + 1000ms);
      EXPECT_TRUE(me.comm->broken());
      EXPECT_THROW(me.comm->barrier(me.rank), CollectiveError);
      EXPECT_FALSE(me.comm->recover());
      checked.count_down();
    }, kShort);
  }
}

// A step failed elsewhere on rank 0's worker: interrupt() makes its waiting part fail at once, far within
// the bound, with the reason; the peer, waiting too, fails as well; the communicator stays broken.
TEST(GlooCommunicatorTest, InterruptFailsAWaitingPartAtOnce) {
  std::latch interrupted(1);
  on_ranks(2, [&](Rank& me) {
    auto a = me.allocate(64, 0);
    if (me.rank == 1) {
      interrupted.wait();
      const auto start = Clock::now();
      me.comm->barrier(1);
      EXPECT_THROW(me.synchronize(), CollectiveError);
      EXPECT_LT(Clock::now() - start, 2s);
      return;
    }
    me.comm->all_reduce(0, a->data(), a->data(), 16, DataType::kFloat32, ReduceOp::kSum);
    std::this_thread::sleep_for(100ms);  // waiting for rank 1 now
    const auto start = Clock::now();
    me.comm->interrupt("host:1 failed: kernel exploded");
    try {
      me.synchronize();
      ADD_FAILURE() << "the part did not fail";
    } catch (const CollectiveError& e) {
      EXPECT_NE(std::string(e.what()).find("kernel exploded"), std::string::npos) << e.what();
    }
    EXPECT_LT(Clock::now() - start, 2s);
    EXPECT_TRUE(me.comm->broken());
    EXPECT_FALSE(me.comm->recover());  // Gloo cannot realign the ranks
    EXPECT_THROW(me.comm->barrier(0), CollectiveError);
    interrupted.count_down();
  });
}

// A peer whose process is gone (its connections closed) gives a CollectiveError with Gloo's reason, at once.
TEST(GlooCommunicatorTest, ADeadPeerFailsThePartWithGloosReason) {
  std::latch waiting(1);
  on_ranks(2, [&](Rank& me) {
    if (me.rank == 1) {
      waiting.wait();
      std::this_thread::sleep_for(50ms);
      me.comm.reset();
      me.context.reset();  // as the process's exit would
      return;
    }
    auto a = me.allocate(64, 0);
    const auto start = Clock::now();
    me.comm->all_reduce(0, a->data(), a->data(), 16, DataType::kFloat32, ReduceOp::kSum);
    waiting.count_down();
    try {
      me.synchronize();
      ADD_FAILURE() << "the part did not fail";
    } catch (const TimeoutError& e) {
      ADD_FAILURE() << "a dead peer timed out instead: " << e.what();
    } catch (const CollectiveError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("all_reduce(sum, float32, 16 elements)"), std::string::npos) << what;
      EXPECT_NE(what.find("closed"), std::string::npos) << what;
    }
    EXPECT_LT(Clock::now() - start, 5s);
    EXPECT_TRUE(me.comm->broken());
  });
}

TEST(GlooCommunicatorTest, DifferentCollectivesFailOnEveryRankNamingBoth) {
  on_ranks(2, [&](Rank& me) {
    auto a = me.allocate(64, 0);
    me.comm->all_reduce(me.rank, a->data(), a->data(), 4 + me.rank, DataType::kFloat32, ReduceOp::kSum);
    try {
      me.synchronize();
      ADD_FAILURE() << "rank " << me.rank << " did not fail";
    } catch (const CollectiveError& e) {
      const std::string what = e.what();
      for (const char* part : {"4 elements", "5 elements", "same order"})
        EXPECT_NE(what.find(part), std::string::npos) << what;
    }
  });
}

TEST(GlooCommunicatorTest, AMessageOfAnotherSizeFailsTheRecv) {
  on_ranks(2, [&](Rank& me) {
    auto a = me.allocate(64, 0);
    if (me.rank == 0) {
      me.comm->send(0, a->data(), 8, DataType::kInt64, 1);
      me.synchronize();
      return;
    }
    me.comm->recv(1, a->data(), 4, DataType::kInt64, 0);
    try {
      me.synchronize();
      ADD_FAILURE() << "the recv did not fail";
    } catch (const CollectiveError& e) {
      EXPECT_NE(std::string(e.what()).find("message #0 from rank 0 is 8 int64 elements but rank 1 expects 4 int64"),
                std::string::npos)
          << e.what();
    }
  });
}

TEST(GlooCommunicatorTest, OnlyTheLocalRankIssuesAndReducingBoolIsRefused) {
  on_ranks(2, [&](Rank& me) {
    auto a = me.allocate(64, 0);
    const int other = 1 - me.rank;
    EXPECT_EQ(me.comm->local_rank(), me.rank);
    try {
      me.comm->all_reduce(other, a->data(), a->data(), 4, DataType::kFloat32, ReduceOp::kSum);
      ADD_FAILURE() << "another rank's part was accepted";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(remote_name(other)), std::string::npos) << e.what();
    }
    EXPECT_THROW(me.comm->all_reduce(me.rank, a->data(), a->data(), 4, DataType::kBool, ReduceOp::kMax), ConfigError);
    EXPECT_FALSE(me.comm->broken());
    me.comm->barrier(me.rank);
    me.synchronize();
  });
}

TEST(GlooCommunicatorTest, ConstructionChecksTheContextAndTheLocalDevice) {
  MemoryStore kv;
  std::shared_ptr<GlooContext> context = connect_gloo(0, 1, kv, "127.0.0.1", kConnect);
  HostDevice host(0, kCapacity);
  RemoteDevice remote(1, remote_name(1), DeviceKind::kHost, kCapacity);
  RemoteDevice gpu(0, "worker 0 cuda:0", DeviceKind::kCuda, kCapacity);
  EXPECT_THROW((GlooCommunicator({&host, &remote}, context, kBound)), ConfigError);  // 2 devices, 1 rank
  EXPECT_THROW((GlooCommunicator({&gpu}, context, kBound)), ConfigError);            // not host memory
  EXPECT_THROW((GlooCommunicator({&host}, nullptr, kBound)), ConfigError);
  // One rank: every collective is local.
  GlooCommunicator comm({&host}, context, kBound);
  auto a = host.allocate(16);
  store(DataType::kInt32, a->data(), 0, 5);
  comm.all_reduce(0, a->data(), a->data(), 1, DataType::kInt32, ReduceOp::kSum);
  host.synchronize(kBound);
  EXPECT_EQ(load(DataType::kInt32, a->data(), 0), 5);
}

// A rank that never comes to the rendezvous: the others' connect fails within its bound, naming it; an
// address that is not this machine's is a ConfigError.
TEST(GlooCommunicatorTest, ConnectTimesOutOnAMissingRankAndRefusesABadRank) {
  MemoryStore kv;
  const auto start = Clock::now();
  try {
    connect_gloo(0, 2, kv, "127.0.0.1", 300ms);
    ADD_FAILURE() << "connected without rank 1";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 did not publish its address"), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - start, 2s);
  MemoryStore other;
  EXPECT_THROW(connect_gloo(2, 2, other, "127.0.0.1", 1s), ConfigError);
}

TEST(GlooRemoteDeviceTest, RefusesEverythingButItsIdentity) {
  RemoteDevice d(3, "worker 1 (127.0.0.1:7000) host:0", DeviceKind::kHost, 1 << 20);
  EXPECT_EQ(d.name(), "worker 1 (127.0.0.1:7000) host:0");
  EXPECT_EQ(d.kind(), DeviceKind::kHost);
  EXPECT_EQ(d.index(), 3);
  EXPECT_EQ(d.capacity(), 1u << 20);
  EXPECT_FALSE(d.busy());
  EXPECT_FALSE(d.host_accessible());
  EXPECT_EQ(d.busy_ns(), 0u);
  d.synchronize(1ms);
  char byte = 0;
  try {
    d.allocate(64);
    ADD_FAILURE() << "allocated";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("worker 1 (127.0.0.1:7000) host:0"), std::string::npos) << what;
    EXPECT_NE(what.find("not in this process"), std::string::npos) << what;
  }
  EXPECT_THROW(d.submit([] {}), ConfigError);
  EXPECT_THROW(d.read(&byte, &byte, 1), ConfigError);
  EXPECT_THROW(d.write(&byte, &byte, 1), ConfigError);
  EXPECT_THROW(d.copy_in_stream(&byte, &byte, 1), ConfigError);
  EXPECT_THROW(d.record_event(), ConfigError);
  EXPECT_THROW(d.pinned_host_memory(), ConfigError);
}

// Sets an environment variable for the scope, restoring it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_) setenv(name_, old_->c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(GlooLibraryTest, AMissingShimIsAConfigErrorNamingThePath) {
  const std::string missing = "/nonexistent/moreh/libmoreh_gloo.so";
  {
    ScopedEnv env("MOREH_GLOO_LIBRARY", missing.c_str());
    EXPECT_EQ(gloo::shim_paths(std::getenv("MOREH_GLOO_LIBRARY")), std::vector<std::string>{missing});
    for (int attempt = 0; attempt < 2; ++attempt) {
      try {
        gloo::Library::load();
        ADD_FAILURE() << "loaded " << missing;
      } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("MOREH_GLOO_LIBRARY"), std::string::npos) << e.what();
      }
    }
    MemoryStore store;
    EXPECT_THROW(connect_gloo(0, 1, store, "127.0.0.1", kConnect), ConfigError);
  }
  // Every path tried is named.
  try {
    gloo::Library::load_first({"/nonexistent/a.so", "/nonexistent/b.so"});
    ADD_FAILURE() << "loaded";
  } catch (const ConfigError& e) {
    for (const char* path : {"/nonexistent/a.so", "/nonexistent/b.so"})
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  // A library that is not the shim.
  EXPECT_THROW(gloo::Library::load_first({"libc.so.6"}), ConfigError);
  // Without the variable: beside this code first, then the build tree's; and that loads.
  ScopedEnv unset("MOREH_GLOO_LIBRARY", "");
  const std::vector<std::string> paths = gloo::shim_paths(nullptr);
  ASSERT_FALSE(paths.empty());
  EXPECT_NE(paths.front().find("libmoreh_gloo.so"), std::string::npos);
  EXPECT_NO_THROW(gloo::Library::load());
}

TEST(GlooLibraryTest, TheShimsGlooIsDebians050) {
  const auto lib = gloo::Library::load();
  EXPECT_EQ(lib->version(), 500);
  EXPECT_EQ(gloo::version_string(lib->version()), "0.5.0");
  EXPECT_NE(lib->gloo_file().find("libgloo.so"), std::string::npos) << lib->gloo_file();
}

#ifdef MOREH_TEST_LIBTORCH_CPU
// In a fresh process (the death test re-runs this binary): libtorch_cpu, which exports ~500 symbols of its
// own Gloo, is loaded globally first, as under torch. The shim's Gloo calls still land in Debian's libgloo,
// and a 2-rank all_reduce works.
void all_reduce_with_libtorch_loaded() {
  if (!dlopen(MOREH_TEST_LIBTORCH_CPU, RTLD_NOW | RTLD_GLOBAL)) {
    std::fprintf(stderr, "cannot load %s: %s\n", MOREH_TEST_LIBTORCH_CPU, dlerror());
    std::_Exit(2);
  }
  if (!dlsym(RTLD_DEFAULT, "_ZN4gloo9allreduceERKNS_16AllreduceOptionsE")) {
    std::fprintf(stderr, "libtorch_cpu exports no gloo::allreduce: nothing to check\n");
    std::_Exit(3);
  }
  const auto lib = gloo::Library::load();
  if (lib->gloo_file().find("libgloo.so") == std::string::npos) {
    std::fprintf(stderr, "the shim's Gloo is %s\n", lib->gloo_file().c_str());
    std::_Exit(4);
  }
  std::atomic<bool> ok{true};
  MemoryStore kv;
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      try {
        Rank me(r, 2, kv, kBound);
        auto a = me.allocate(37 * 4);
        for (uint64_t i = 0; i < 37; ++i) store(DataType::kFloat32, a->data(), i, value(ReduceOp::kSum, r, i));
        me.comm->all_reduce(r, a->data(), a->data(), 37, DataType::kFloat32, ReduceOp::kSum);
        me.synchronize();
        for (uint64_t i = 0; i < 37; ++i)
          if (load(DataType::kFloat32, a->data(), i) != expected(DataType::kFloat32, ReduceOp::kSum, 2, i)) ok = false;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s\n", r, e.what());
        ok = false;
      }
    });
  for (std::thread& t : threads) t.join();
  std::_Exit(ok ? 0 : 5);  // no static destructors: libtorch's are not this test's business
}

TEST(GlooLibraryTest, DebiansGlooEvenWithLibtorchLoadedFirst) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(all_reduce_with_libtorch_loaded(), ::testing::ExitedWithCode(0), "");
}
#else
TEST(GlooLibraryTest, DebiansGlooEvenWithLibtorchLoadedFirst) {
  GTEST_SKIP() << "torch was not found at configure time";
}
#endif

}  // namespace
}  // namespace moreh::runtime
