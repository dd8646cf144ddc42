// Host devices and a communicator over them, for the tests of the communicators that run on host devices
// (HostCommunicator, NcclCommunicator over the fake NCCL, HierarchicalCommunicator), and the checks they
// share.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "runtime/comm/collective_test_values.h"
#include "runtime/comm/communicator.h"
#include "runtime/base/errors.h"
#include "runtime/host/host_device.h"

namespace moreh::runtime::test_values {

using namespace std::chrono_literals;
constexpr std::chrono::milliseconds kWait = 5s;

// N host devices; a test's group sets `comm`. Parts still queued when it goes are drained first.
struct HostGroup {
  std::vector<std::unique_ptr<HostDevice>> devices;
  std::unique_ptr<Communicator> comm;

  explicit HostGroup(int n) {
    for (int i = 0; i < n; ++i) devices.push_back(std::make_unique<HostDevice>(i, 1ull << 30));
  }
  ~HostGroup() {
    for (auto& d : devices) {
      try {
        d->synchronize(kWait);
      } catch (...) {
      }
    }
    comm.reset();
  }
  int size() const { return static_cast<int>(devices.size()); }
  std::vector<PhysicalDevice*> raw() const {
    std::vector<PhysicalDevice*> r;
    for (auto& d : devices) r.push_back(d.get());
    return r;
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

// One all_reduce of `count` elements of `t` with `op`, in or out of place: every rank holds the reduction of
// value(op, rank, i) over the ranks; an average to within `avg_tolerance` (relative) when it is not 0.
inline void check_all_reduce(HostGroup& g, DataType t, ReduceOp op, uint64_t count, bool in_place,
                             double avg_tolerance = 0) {
  const int n = g.size();
  const uint64_t es = size_of(t);
  std::vector<std::unique_ptr<PhysicalBlock>> send, recv;
  for (int r = 0; r < n; ++r) {
    send.push_back(g.allocate(r, count * es));
    for (uint64_t i = 0; i < count; ++i) store(t, send[r]->data(), i, value(op, r, i));
    recv.push_back(in_place ? nullptr : g.allocate(r, count * es));
  }
  for (int r = 0; r < n; ++r)
    g.comm->all_reduce(r, send[r]->data(), in_place ? send[r]->data() : recv[r]->data(), count, t, op);
  g.synchronize();
  const std::string what = "all_reduce " + std::string(name_of(op)) + (in_place ? " in place" : "");
  for (int r = 0; r < n; ++r) {
    const void* out = in_place ? send[r]->data() : recv[r]->data();
    if (op != ReduceOp::kAvg || avg_tolerance == 0) {
      EXPECT_TRUE(holds(t, out, 0, count, [&](uint64_t i) { return expected(t, op, n, i); },
                        what + " rank " + std::to_string(r)));
      continue;
    }
    for (uint64_t i = 0; i < count; ++i) {
      const double got = load(t, out, i), want = expected(t, op, n, i);
      EXPECT_LE(std::abs(got - want), avg_tolerance * std::max(1.0, std::abs(want)))
          << what << " " << name_of(t) << " rank " << r << " element " << i;
    }
  }
}

// Where each rank's slice starts, and the elements of all of them.
struct Slices {
  std::vector<uint64_t> offsets;
  uint64_t total = 0;
};
inline Slices slices_of(const std::vector<uint64_t>& counts) {
  std::vector<uint64_t> offsets = offsets_of(counts);
  const uint64_t total = offsets.back() + counts.back();
  return {std::move(offsets), total};
}

// One reduce_scatter of `counts` slices of `t` with `op`, in or out of place: each rank's slice is the
// reduction of value(op, rank, i) over the ranks.
inline void check_reduce_scatter(HostGroup& g, const std::vector<uint64_t>& counts, DataType t, ReduceOp op,
                                 bool in_place) {
  const int n = g.size();
  const uint64_t es = size_of(t);
  const auto [offsets, total] = slices_of(counts);
  std::vector<std::unique_ptr<PhysicalBlock>> send, recv;
  for (int r = 0; r < n; ++r) {
    send.push_back(g.allocate(r, total * es));
    for (uint64_t i = 0; i < total; ++i) store(t, send[r]->data(), i, value(op, r, i));
    recv.push_back(g.allocate(r, counts[r] * es));
  }
  for (int r = 0; r < n; ++r) {
    void* out = in_place ? element_at(send[r]->data(), offsets[r], es) : recv[r]->data();
    g.comm->reduce_scatter(r, send[r]->data(), out, counts, t, op);
  }
  g.synchronize();
  for (int r = 0; r < n; ++r)
    EXPECT_TRUE(holds(t, in_place ? send[r]->data() : recv[r]->data(), in_place ? offsets[r] : 0, counts[r],
                      [&](uint64_t i) { return expected(t, op, n, offsets[r] + i); },
                      "reduce_scatter " + std::string(name_of(op)) + (in_place ? " in place" : "") + " rank " +
                          std::to_string(r)));
}

// One all_gather of `counts` slices of `t`, in or out of place: every rank ends with every rank's slice.
inline void check_all_gather(HostGroup& g, const std::vector<uint64_t>& counts, DataType t, bool in_place) {
  const int n = g.size();
  const uint64_t es = size_of(t);
  const auto [offsets, total] = slices_of(counts);
  std::vector<std::unique_ptr<PhysicalBlock>> send, recv;
  for (int r = 0; r < n; ++r) {
    recv.push_back(g.allocate(r, total * es));
    send.push_back(g.allocate(r, counts[r] * es));
    void* mine = in_place ? element_at(recv[r]->data(), offsets[r], es) : send[r]->data();
    for (uint64_t i = 0; i < counts[r]; ++i) store(t, mine, i, value(ReduceOp::kSum, r, i));
  }
  for (int r = 0; r < n; ++r) {
    const void* mine = in_place ? element_at(recv[r]->data(), offsets[r], es) : send[r]->data();
    g.comm->all_gather(r, mine, recv[r]->data(), counts, t);
  }
  g.synchronize();
  for (int r = 0; r < n; ++r)
    for (int c = 0; c < n; ++c)
      EXPECT_TRUE(holds(t, recv[r]->data(), offsets[c], counts[c], [&](uint64_t i) { return value(ReduceOp::kSum, c, i); },
                        "all_gather slice " + std::to_string(c) + " on rank " + std::to_string(r) +
                            (in_place ? " in place" : "")));
}

// Every rank's synchronize() fails with a CollectiveError whose text has each of `expected`, and the
// communicator is broken.
inline void expect_every_rank_fails(HostGroup& g, std::initializer_list<std::string> expected) {
  for (int r = 0; r < g.size(); ++r) {
    try {
      g.devices[r]->synchronize(kWait);
      ADD_FAILURE() << "rank " << r << " did not fail";
    } catch (const CollectiveError& e) {
      const std::string what = e.what();
      for (const std::string& text : expected) EXPECT_NE(what.find(text), std::string::npos) << what;
    }
  }
  EXPECT_TRUE(g.comm->broken());
}

// One group of collectives from each rank's stream (run_group_in_stream): in-place all_reduces of three
// types and sizes, an uneven all_gather and a broadcast from the last rank; each result as if issued alone.
inline void check_group(HostGroup& g) {
  const int n = g.size();
  const std::vector<std::pair<DataType, uint64_t>> reduced = {
      {DataType::kFloat32, 37}, {DataType::kBFloat16, 5}, {DataType::kInt64, 1}};
  const std::vector<uint64_t> counts = uneven_counts(n);
  const auto [offsets, total] = slices_of(counts);
  const int root = n - 1;
  constexpr uint64_t kBroadcast = 7;
  std::vector<std::vector<std::unique_ptr<PhysicalBlock>>> blocks(n);
  std::vector<std::vector<CollectivePart>> parts(n);
  for (int r = 0; r < n; ++r) {
    for (const auto& [t, count] : reduced) {
      auto& b = blocks[r].emplace_back(g.allocate(r, count * size_of(t)));
      for (uint64_t i = 0; i < count; ++i) store(t, b->data(), i, value(ReduceOp::kSum, r, i));
      parts[r].push_back(CollectivePart::all_reduce(b->data(), b->data(), count, t, ReduceOp::kSum));
    }
    auto& mine = blocks[r].emplace_back(g.allocate(r, counts[r] * 4));
    for (uint64_t i = 0; i < counts[r]; ++i) store(DataType::kFloat32, mine->data(), i, value(ReduceOp::kSum, r, i));
    auto& all = blocks[r].emplace_back(g.allocate(r, total * 4));
    CollectivePart gather;
    gather.kind = CollectiveKind::kAllGather;
    gather.send = mine->data();
    gather.recv = all->data();
    gather.counts = counts;
    parts[r].push_back(gather);
    auto& b = blocks[r].emplace_back(g.allocate(r, kBroadcast * 4, 0));
    if (r == root)
      for (uint64_t i = 0; i < kBroadcast; ++i) store(DataType::kFloat32, b->data(), i, value(ReduceOp::kSum, r, i));
    CollectivePart bcast;
    bcast.kind = CollectiveKind::kBroadcast;
    bcast.send = bcast.recv = b->data();
    bcast.count = kBroadcast;
    bcast.peer = root;
    parts[r].push_back(bcast);
  }
  for (int r = 0; r < n; ++r) g.devices[r]->submit([&, r] { g.comm->run_group_in_stream(r, parts[r]); });
  g.synchronize();
  for (int r = 0; r < n; ++r) {
    const std::string on = " on rank " + std::to_string(r);
    for (size_t k = 0; k < reduced.size(); ++k) {
      const DataType t = reduced[k].first;
      EXPECT_TRUE(holds(t, blocks[r][k]->data(), 0, reduced[k].second,
                        [&](uint64_t i) { return expected(t, ReduceOp::kSum, n, i); },
                        "grouped all_reduce " + std::string(name_of(t)) + on));
    }
    for (int c = 0; c < n; ++c)
      EXPECT_TRUE(holds(DataType::kFloat32, blocks[r][4]->data(), offsets[c], counts[c],
                        [&](uint64_t i) { return value(ReduceOp::kSum, c, i); },
                        "grouped all_gather slice " + std::to_string(c) + on));
    EXPECT_TRUE(holds(DataType::kFloat32, blocks[r][5]->data(), 0, kBroadcast,
                      [&](uint64_t i) { return value(ReduceOp::kSum, root, i); }, "grouped broadcast" + on));
  }
}

// Two ranks issue all_reduces of 4 and 5 elements: both fail with a CollectiveError naming both.
inline void check_different_collectives_fail(HostGroup& g) {
  std::vector<std::unique_ptr<PhysicalBlock>> a;
  for (int r = 0; r < 2; ++r) a.push_back(g.allocate(r, 64, 0));
  g.comm->all_reduce(0, a[0]->data(), a[0]->data(), 4, DataType::kFloat32, ReduceOp::kSum);
  g.comm->all_reduce(1, a[1]->data(), a[1]->data(), 5, DataType::kFloat32, ReduceOp::kSum);
  expect_every_rank_fails(g, {"4 elements", "5 elements", "same order"});
}

// Each rank's own thread issues `steps` rounds of: +1 on its stream, an in-place int64 all_reduce(sum), and a
// barrier every `barrier_every` rounds; every element ends as the sum those rounds make.
inline void check_back_to_back_all_reduces(HostGroup& g, int steps, int barrier_every, uint64_t count = 16) {
  const int n = g.size();
  std::vector<std::unique_ptr<PhysicalBlock>> x;
  for (int r = 0; r < n; ++r) {
    x.push_back(g.allocate(r, count * 8));
    for (uint64_t i = 0; i < count; ++i) store(DataType::kInt64, x[r]->data(), i, r);
  }
  std::vector<std::thread> issuers;
  for (int r = 0; r < n; ++r)
    issuers.emplace_back([&, r] {
      auto* p = static_cast<int64_t*>(x[r]->data());
      for (int s = 0; s < steps; ++s) {
        g.devices[r]->submit([p, count] {
          for (uint64_t i = 0; i < count; ++i) p[i] += 1;
        });
        g.comm->all_reduce(r, p, p, count, DataType::kInt64, ReduceOp::kSum);
        if (s % barrier_every == 0) g.comm->barrier(r);
      }
    });
  for (auto& t : issuers) t.join();
  g.synchronize();
  int64_t v = n * (n - 1) / 2 + n;
  for (int s = 1; s < steps; ++s) v = n * (v + 1);
  for (int r = 0; r < n; ++r)
    for (uint64_t i = 0; i < count; ++i)
      ASSERT_EQ(static_cast<int64_t*>(x[r]->data())[i], v) << "rank " << r << " element " << i;
}

// Every rank but `missing` issues an all_reduce of 16 floats; each fails within `bound` with a TimeoutError
// (or, with `interrupted_too`, a CollectiveError from a communicator its peers' failure broke) whose text
// has every one of `expected`.
inline void check_missing_rank_fails(HostGroup& g, int missing, std::initializer_list<std::string> expected,
                                     std::chrono::milliseconds bound, bool interrupted_too = false) {
  std::vector<std::unique_ptr<PhysicalBlock>> a;
  for (int r = 0; r < g.size(); ++r) a.push_back(g.allocate(r, 64, 0));
  for (int r = 0; r < g.size(); ++r)
    if (r != missing) g.comm->all_reduce(r, a[r]->data(), a[r]->data(), 16, DataType::kFloat32, ReduceOp::kSum);
  const auto start = std::chrono::steady_clock::now();
  auto check = [&](const std::string& what) {
    for (const std::string& e : expected) EXPECT_NE(what.find(e), std::string::npos) << what;
  };
  for (int r = 0; r < g.size(); ++r) {
    if (r == missing) continue;
    try {
      g.devices[r]->synchronize(kWait);
      ADD_FAILURE() << "rank " << r << " did not fail";
    } catch (const TimeoutError& e) {
      check(e.what());
    } catch (const CollectiveError& e) {
      if (!interrupted_too) ADD_FAILURE() << "rank " << r << " failed without timing out: " << e.what();
      check(e.what());
    }
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, bound);
  EXPECT_TRUE(g.comm->broken());
}

// A step failed on rank `failed` before its all_reduce: the executor interrupts the communicator, so the ranks
// already waiting fail at once (far within the timeout) instead of waiting for it; once every rank is idle
// recover() lets the next step's collectives run on every rank, with correct results.
inline void check_recovers_after_a_failed_rank(HostGroup& g, int failed) {
  std::vector<std::unique_ptr<PhysicalBlock>> a;
  for (int r = 0; r < g.size(); ++r) a.push_back(g.allocate(r, 64, 0));
  for (int r = 0; r < g.size(); ++r)
    if (r != failed) g.comm->all_reduce(r, a[r]->data(), a[r]->data(), 16, DataType::kFloat32, ReduceOp::kSum);
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(20ms);  // the others are waiting for it now
  g.comm->interrupt("host:" + std::to_string(failed) + " failed: kernel exploded");
  for (int r = 0; r < g.size(); ++r) {
    if (r == failed) continue;
    try {
      g.devices[r]->synchronize(kWait);
      ADD_FAILURE() << "rank " << r << " did not fail";
    } catch (const CollectiveError& e) {
      EXPECT_NE(std::string(e.what()).find("kernel exploded"), std::string::npos) << e.what();
    }
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, kWait / 2);
  ASSERT_TRUE(g.comm->broken());
  ASSERT_TRUE(g.comm->recover());
  EXPECT_FALSE(g.comm->broken());
  EXPECT_EQ(g.comm->broken_reason(), "");
  for (int step = 0; step < 2; ++step) check_all_reduce(g, DataType::kFloat32, ReduceOp::kSum, 37, step == 0);
}

}  // namespace moreh::runtime::test_values
