// CudaCommunicator over logical CudaDevices sharing GPU 0 (the same-GPU path), and CudaDevice's generated
// arithmetic against host_arithmetic. GPU tests skip (with the reason) without a CUDA driver, a GPU or
// NVRTC; path selection runs everywhere CUDA is built.
#include "runtime/comm/cuda_communicator.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "runtime/cuda/cuda_device.h"
#include "runtime/cuda/cuda_driver.h"
#include "runtime/base/errors.h"
#include "runtime/host/host_arithmetic.h"
#include "runtime/kernels/elementwise_reduction.h"
#include "runtime/host/host_device.h"
#include "runtime/base/low_precision_float.h"
#include "runtime/comm/collective_test_values.h"
#ifdef MOREH_WITH_NVRTC
#include "runtime/cuda/nvrtc.h"
#endif

namespace moreh::runtime {
namespace {

using namespace test_values;

using namespace std::chrono_literals;
constexpr std::chrono::milliseconds kWait = 20s;

// Why GPU tests cannot run here, or "".
std::string gpu_unavailable() {
  if (!cuda::driver()) return "no CUDA driver: " + cuda::driver_unavailable_reason();
  int n = 0;
  if (cuda::require_driver().DeviceGetCount(&n) != CUDA_SUCCESS || n == 0) return "no CUDA device";
#ifdef MOREH_WITH_NVRTC
  if (!cuda::nvrtc_available()) return "NVRTC cannot be loaded: " + cuda::nvrtc_unavailable_reason();
#else
  return "built without NVRTC (the same-GPU path reduces with generated kernels)";
#endif
  return "";
}

#define MOREH_REQUIRE_GPU()                                           \
  do {                                                                \
    const std::string why = gpu_unavailable();                        \
    if (!why.empty()) GTEST_SKIP() << why;                            \
  } while (0)

// N logical devices on GPU 0 and a communicator over them. Buffers are filled and read through the host.
struct Group {
  std::vector<std::unique_ptr<CudaDevice>> devices;
  std::unique_ptr<CudaCommunicator> comm;

  explicit Group(int n, std::chrono::milliseconds timeout = kWait) {
    std::vector<PhysicalDevice*> raw;
    for (int i = 0; i < n; ++i) {
      devices.push_back(std::make_unique<CudaDevice>(i, 0, 256ull << 20, kWait));
      raw.push_back(devices.back().get());
    }
    comm = std::make_unique<CudaCommunicator>(raw, timeout);
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
  // A block of `count` elements of `t` on rank's device, element i = fill(i).
  std::unique_ptr<PhysicalBlock> make(int rank, DataType t, uint64_t count, const std::function<double(uint64_t)>& fill) {
    auto block = devices[rank]->allocate(std::max<uint64_t>(count * size_of(t), 1));
    std::vector<std::byte> host(block->bytes());
    std::memset(host.data(), 0xcd, host.size());
    for (uint64_t i = 0; i < count; ++i) store(t, host.data(), i, fill(i));
    devices[rank]->write(block->data(), host.data(), host.size());
    return block;
  }
  std::vector<std::byte> fetch(int rank, const void* data, uint64_t bytes) {
    std::vector<std::byte> host(bytes);
    devices[rank]->read(host.data(), data, bytes);
    return host;
  }
};

std::byte* offset(void* p, uint64_t elements, DataType t) { return static_cast<std::byte*>(p) + elements * size_of(t); }

TEST(CudaCommunicatorPathTest, ChosenFromTheRanksGpus) {
  EXPECT_EQ(choose_cuda_collective_path({0}), CudaCollectivePath::kSameGpu);
  EXPECT_EQ(choose_cuda_collective_path({0, 0, 0, 0}), CudaCollectivePath::kSameGpu);
  EXPECT_EQ(choose_cuda_collective_path({1, 1}), CudaCollectivePath::kSameGpu);
  EXPECT_EQ(choose_cuda_collective_path({0, 1}), CudaCollectivePath::kNccl);
  EXPECT_EQ(choose_cuda_collective_path({3, 0, 2, 1}), CudaCollectivePath::kNccl);
  EXPECT_EQ(choose_cuda_collective_path({0, 0, 1}), CudaCollectivePath::kMixed);
  EXPECT_EQ(name_of(CudaCollectivePath::kSameGpu), "same-GPU");
  EXPECT_EQ(name_of(CudaCollectivePath::kNccl), "NCCL");
}

TEST(CudaCommunicatorPathTest, RefusesHostDevices) {
  HostDevice a(0, 1 << 20), b(1, 1 << 20);
  try {
    CudaCommunicator comm({&a, &b}, kWait);
    ADD_FAILURE() << "took host devices";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA devices only"), std::string::npos) << e.what();
  }
  EXPECT_THROW(CudaCommunicator({}, kWait), ConfigError);
}

class CudaCollectivesTest : public ::testing::TestWithParam<int> {};

TEST_P(CudaCollectivesTest, AllReduceEveryOpAndTypeInAndOutOfPlace) {
  MOREH_REQUIRE_GPU();
  const int n = GetParam();
  Group g(n);
  for (DataType t : kTypes) {
    struct Case {
      ReduceOp op;
      uint64_t count;
      bool in_place;
      std::vector<std::unique_ptr<PhysicalBlock>> send, recv;
    };
    std::vector<Case> cases;
    for (ReduceOp op : kOps)
      for (uint64_t count : {uint64_t{1}, uint64_t{37}, uint64_t{1030}})
        for (bool in_place : {false, true}) cases.push_back({op, count, in_place, {}, {}});
    for (Case& c : cases)
      for (int r = 0; r < n; ++r) {
        c.send.push_back(g.make(r, t, c.count, [&](uint64_t i) { return value(c.op, r, i); }));
        if (!c.in_place) c.recv.push_back(g.make(r, t, c.count, [](uint64_t) { return 99.0; }));
      }
    for (Case& c : cases)
      for (int r = 0; r < n; ++r)
        g.comm->all_reduce(r, c.send[r]->data(), c.in_place ? c.send[r]->data() : c.recv[r]->data(), c.count, t, c.op);
    g.synchronize();
    for (Case& c : cases)
      for (int r = 0; r < n; ++r) {
        const auto out = g.fetch(r, c.in_place ? c.send[r]->data() : c.recv[r]->data(), c.count * size_of(t));
        EXPECT_TRUE(holds(t, out, 0, c.count, [&](uint64_t i) { return expected(t, c.op, n, i); },
                          "all_reduce " + std::string(name_of(c.op)) + " count " + std::to_string(c.count) +
                              (c.in_place ? " in place" : "") + " rank " + std::to_string(r)));
      }
  }
}

TEST_P(CudaCollectivesTest, ReduceScatterUnevenCountsInAndOutOfPlace) {
  MOREH_REQUIRE_GPU();
  const int n = GetParam();
  Group g(n);
  const std::vector<uint64_t> counts = uneven_counts(n);
  std::vector<uint64_t> offsets(n);
  std::exclusive_scan(counts.begin(), counts.end(), offsets.begin(), uint64_t{0});
  const uint64_t total = std::accumulate(counts.begin(), counts.end(), uint64_t{0});
  for (DataType t : kTypes)
    for (ReduceOp op : kOps)
      for (bool in_place : {false, true}) {
        std::vector<std::unique_ptr<PhysicalBlock>> send, recv;
        for (int r = 0; r < n; ++r) {
          send.push_back(g.make(r, t, total, [&](uint64_t i) { return value(op, r, i); }));
          recv.push_back(g.make(r, t, counts[r], [](uint64_t) { return 99.0; }));
        }
        for (int r = 0; r < n; ++r)
          g.comm->reduce_scatter(r, send[r]->data(), in_place ? offset(send[r]->data(), offsets[r], t) : recv[r]->data(),
                                 counts, t, op);
        g.synchronize();
        for (int r = 0; r < n; ++r) {
          const auto out = in_place ? g.fetch(r, send[r]->data(), total * size_of(t))
                                    : g.fetch(r, recv[r]->data(), counts[r] * size_of(t));
          EXPECT_TRUE(holds(t, out, in_place ? offsets[r] : 0, counts[r],
                            [&](uint64_t i) { return expected(t, op, n, offsets[r] + i); },
                            "reduce_scatter " + std::string(name_of(op)) + " rank " + std::to_string(r)));
        }
      }
}

TEST_P(CudaCollectivesTest, AllGatherUnevenCountsInAndOutOfPlace) {
  MOREH_REQUIRE_GPU();
  const int n = GetParam();
  Group g(n);
  const std::vector<uint64_t> counts = uneven_counts(n);
  std::vector<uint64_t> offsets(n);
  std::exclusive_scan(counts.begin(), counts.end(), offsets.begin(), uint64_t{0});
  const uint64_t total = std::accumulate(counts.begin(), counts.end(), uint64_t{0});
  for (DataType t : kTypes)
    for (bool in_place : {false, true}) {
      std::vector<std::unique_ptr<PhysicalBlock>> send, recv;
      for (int r = 0; r < n; ++r) {
        // In place: the rank's slice of recv holds its data already.
        recv.push_back(g.make(r, t, total, [&](uint64_t i) {
          return in_place && i >= offsets[r] && i < offsets[r] + counts[r] ? value(ReduceOp::kSum, r, i - offsets[r])
                                                                            : 99.0;
        }));
        send.push_back(g.make(r, t, counts[r], [&](uint64_t i) { return value(ReduceOp::kSum, r, i); }));
      }
      for (int r = 0; r < n; ++r)
        g.comm->all_gather(r, in_place ? offset(recv[r]->data(), offsets[r], t) : send[r]->data(), recv[r]->data(),
                           counts, t);
      g.synchronize();
      for (int r = 0; r < n; ++r) {
        const auto out = g.fetch(r, recv[r]->data(), total * size_of(t));
        for (int c = 0; c < n; ++c)
          EXPECT_TRUE(holds(t, out, offsets[c], counts[c], [&](uint64_t i) { return value(ReduceOp::kSum, c, i); },
                            "all_gather slice " + std::to_string(c) + " on rank " + std::to_string(r)));
      }
    }
}

TEST_P(CudaCollectivesTest, BroadcastFromEveryRoot) {
  MOREH_REQUIRE_GPU();
  const int n = GetParam();
  Group g(n);
  const uint64_t count = 37;
  for (DataType t : kTypes)
    for (int root = 0; root < n; ++root) {
      std::vector<std::unique_ptr<PhysicalBlock>> buf;
      for (int r = 0; r < n; ++r) buf.push_back(g.make(r, t, count, [&](uint64_t i) { return value(ReduceOp::kSum, r, i); }));
      for (int r = 0; r < n; ++r) g.comm->broadcast(r, r == root ? buf[r]->data() : nullptr, buf[r]->data(), count, t, root);
      g.synchronize();
      for (int r = 0; r < n; ++r)
        EXPECT_TRUE(holds(t, g.fetch(r, buf[r]->data(), count * size_of(t)), 0, count,
                          [&](uint64_t i) { return value(ReduceOp::kSum, root, i); },
                          "broadcast from " + std::to_string(root) + " on rank " + std::to_string(r)));
    }
}

TEST_P(CudaCollectivesTest, SendRecvAroundTheRingInOrderEagerly) {
  MOREH_REQUIRE_GPU();
  const int n = GetParam();
  if (n < 2) GTEST_SKIP() << "a rank cannot send to itself";
  Group g(n);
  const uint64_t count = 100;
  const DataType t = DataType::kInt64;
  std::vector<std::unique_ptr<PhysicalBlock>> out, other, in1, in2;
  for (int r = 0; r < n; ++r) {
    out.push_back(g.make(r, t, count, [&](uint64_t i) { return r * 1000.0 + i; }));
    other.push_back(g.make(r, t, count, [&](uint64_t i) { return -(r * 1000.0 + i); }));
    in1.push_back(g.make(r, t, count, [](uint64_t) { return 7.0; }));
    in2.push_back(g.make(r, t, count, [](uint64_t) { return 7.0; }));
  }
  // The buffer changes on the stream between the two sends: the first message must keep the old values.
  for (int r = 0; r < n; ++r) {
    g.comm->send(r, out[r]->data(), count, t, (r + 1) % n);
    g.devices[r]->submit([&, r] { g.devices[r]->copy_in_stream(out[r]->data(), other[r]->data(), count * 8); });
    g.comm->send(r, out[r]->data(), count, t, (r + 1) % n);
    g.comm->recv(r, in1[r]->data(), count, t, (r + n - 1) % n);
    g.comm->recv(r, in2[r]->data(), count, t, (r + n - 1) % n);
  }
  g.synchronize();
  for (int r = 0; r < n; ++r) {
    const int from = (r + n - 1) % n;
    EXPECT_TRUE(holds(t, g.fetch(r, in1[r]->data(), count * 8), 0, count, [&](uint64_t i) { return from * 1000.0 + i; }, "first"));
    EXPECT_TRUE(holds(t, g.fetch(r, in2[r]->data(), count * 8), 0, count, [&](uint64_t i) { return -(from * 1000.0 + i); }, "second"));
    EXPECT_EQ(g.comm->traffic(r).bytes_sent, 2 * count * 8);
  }
}

TEST_P(CudaCollectivesTest, BackToBackWithStreamArithmeticFromOneThreadPerRank) {
  MOREH_REQUIRE_GPU();
  const int n = GetParam();
  Group g(n);
  constexpr int kSteps = 10;
  constexpr uint64_t kCount = 50;
  const DataType t = DataType::kFloat64;
  std::vector<std::unique_ptr<PhysicalBlock>> x, gathered;
  for (int r = 0; r < n; ++r) {
    x.push_back(g.make(r, t, kCount, [&](uint64_t) { return r + 1.0; }));
    gathered.push_back(g.make(r, t, kCount * n, [](uint64_t) { return 0.0; }));
  }
  std::vector<std::thread> issuers;
  for (int r = 0; r < n; ++r)
    issuers.emplace_back([&, r] {
      void* p = x[r]->data();
      for (int s = 0; s < kSteps; ++s) {
        g.devices[r]->submit([&, r, p] { g.devices[r]->scale_in_stream(t, p, kCount, 2.0); });
        g.comm->all_reduce(r, p, p, kCount, t, ReduceOp::kSum);
        if (s % 4 == 0) g.comm->barrier(r);
      }
      g.comm->all_gather(r, p, gathered[r]->data(), std::vector<uint64_t>(n, kCount), t);
    });
  for (auto& th : issuers) th.join();
  g.synchronize();
  double v = n * (n + 1.0);  // step 0: sum of 2 (r + 1)
  for (int s = 1; s < kSteps; ++s) v = n * 2.0 * v;
  for (int r = 0; r < n; ++r) {
    EXPECT_TRUE(holds(t, g.fetch(r, x[r]->data(), kCount * 8), 0, kCount, [&](uint64_t) { return v; }, "x"));
    EXPECT_TRUE(holds(t, g.fetch(r, gathered[r]->data(), kCount * 8 * n), 0, kCount * n, [&](uint64_t) { return v; }, "gathered"));
  }
  EXPECT_EQ(g.comm->traffic(0).operations, static_cast<uint64_t>(kSteps + (kSteps + 3) / 4 + 1));
}

TEST_P(CudaCollectivesTest, BytesSentFollowTheRingFormula) {
  MOREH_REQUIRE_GPU();
  const int n = GetParam();
  Group g(n);
  const uint64_t even = 16 * static_cast<uint64_t>(n);
  std::vector<std::unique_ptr<PhysicalBlock>> a;
  for (int r = 0; r < n; ++r) a.push_back(g.make(r, DataType::kFloat32, even, [](uint64_t) { return 1.0; }));
  for (int r = 0; r < n; ++r) g.comm->all_reduce(r, a[r]->data(), a[r]->data(), even, DataType::kFloat32, ReduceOp::kSum);
  g.synchronize();
  for (int r = 0; r < n; ++r)
    EXPECT_EQ(static_cast<double>(g.comm->traffic(r).bytes_sent), ring_all_reduce_bytes_per_rank(even * 4, n));
  g.comm->reset_traffic();
  for (int r = 0; r < n; ++r) g.comm->broadcast(r, a[r]->data(), a[r]->data(), 5, DataType::kInt32, n - 1);
  g.synchronize();
  EXPECT_EQ(g.comm->total_bytes_sent(), (n - 1) * 5 * 4u);
}

INSTANTIATE_TEST_SUITE_P(RanksOnOneGpu, CudaCollectivesTest, ::testing::Values(1, 2, 3, 4),
                         [](const ::testing::TestParamInfo<int>& info) { return "N" + std::to_string(info.param); });

TEST(CudaCommunicatorTest, ARankThatNeverArrivesTimesOutNamingItAndBreaksTheCommunicator) {
  MOREH_REQUIRE_GPU();
  Group g(3, 300ms);
  std::vector<std::unique_ptr<PhysicalBlock>> a;
  for (int r = 0; r < 3; ++r) a.push_back(g.make(r, DataType::kFloat32, 16, [](uint64_t) { return 0.0; }));
  for (int r : {0, 1}) g.comm->all_reduce(r, a[r]->data(), a[r]->data(), 16, DataType::kFloat32, ReduceOp::kSum);
  const auto start = std::chrono::steady_clock::now();
  for (int r : {0, 1}) {
    try {
      g.devices[r]->synchronize(kWait);
      ADD_FAILURE() << "rank " << r << " did not fail";
    } catch (const TimeoutError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("all_reduce(sum, float32, 16 elements)"), std::string::npos) << what;
      EXPECT_NE(what.find("rank 2 (cuda:2"), std::string::npos) << what;
      EXPECT_NE(what.find("same-GPU path"), std::string::npos) << what;
      EXPECT_NE(what.find("MOREH_COLLECTIVE_TIMEOUT"), std::string::npos) << what;
    }
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_TRUE(g.comm->broken());
  EXPECT_THROW(g.comm->barrier(2), CollectiveError);
  // The devices stay usable.
  bool ran = false;
  g.devices[0]->submit([&] { ran = true; });
  g.devices[0]->synchronize(kWait);
  EXPECT_TRUE(ran);
}

TEST(CudaCommunicatorTest, RanksIssuingDifferentCollectivesFail) {
  MOREH_REQUIRE_GPU();
  Group g(2);
  std::vector<std::unique_ptr<PhysicalBlock>> a;
  for (int r = 0; r < 2; ++r) a.push_back(g.make(r, DataType::kFloat32, 8, [](uint64_t) { return 0.0; }));
  g.comm->all_reduce(0, a[0]->data(), a[0]->data(), 4, DataType::kFloat32, ReduceOp::kSum);
  g.comm->all_reduce(1, a[1]->data(), a[1]->data(), 5, DataType::kFloat32, ReduceOp::kSum);
  for (int r = 0; r < 2; ++r) EXPECT_THROW(g.devices[r]->synchronize(kWait), CollectiveError);
  EXPECT_TRUE(g.comm->broken());
}

// A pipeline stage adds a micro-batch's partial sums to the earlier ones on the device.
TEST(CudaDeviceArithmeticTest, AccumulateMatchesHostArithmetic) {
  MOREH_REQUIRE_GPU();
  CudaDevice device(0, 0, 64ull << 20, kWait);
  constexpr uint64_t kCount = 1000;
  for (DataType t : {DataType::kFloat32, DataType::kFloat64, DataType::kBFloat16, DataType::kFloat16}) {
    std::vector<std::byte> dst(kCount * size_of(t)), src(kCount * size_of(t));
    for (uint64_t i = 0; i < kCount; ++i) {
      store(t, dst.data(), i, (static_cast<double>(i % 37) - 18) / 8);
      store(t, src.data(), i, (static_cast<double>(i % 11) - 5) / 4);
    }
    auto bd = device.allocate(dst.size()), bs = device.allocate(src.size());
    device.write(bd->data(), dst.data(), dst.size());
    device.write(bs->data(), src.data(), src.size());
    device.submit([&] { device.accumulate_in_stream(t, bd->data(), bs->data(), kCount); });
    device.synchronize(kWait);
    std::vector<std::byte> got(dst.size());
    device.read(got.data(), bd->data(), got.size());
    const void* parts[2] = {dst.data(), src.data()};
    reduce_elements(t, ReduceOp::kSum, parts, dst.data(), kCount);
    EXPECT_EQ(got, dst) << name_of(t);
  }
}

TEST(CudaDeviceArithmeticTest, ScaleAndCombineMatchHostArithmetic) {
  MOREH_REQUIRE_GPU();
  CudaDevice device(0, 0, 64ull << 20, kWait);
  const DataType types[] = {DataType::kFloat32, DataType::kFloat64, DataType::kBFloat16, DataType::kFloat16};
  constexpr uint64_t kCount = 1000;
  for (DataType t : types)
    for (double factor : {0.0, 0.5, -3.0, 0.25, 1.0 / 3.0}) {
      std::vector<std::byte> host(kCount * size_of(t));
      for (uint64_t i = 0; i < kCount; ++i)
        store(t, host.data(), i, i == 7 ? std::numeric_limits<double>::quiet_NaN() : (static_cast<double>(i % 37) - 18) / 8);
      auto block = device.allocate(host.size());
      device.write(block->data(), host.data(), host.size());
      device.submit([&] { device.scale_in_stream(t, block->data(), kCount, factor); });
      device.synchronize(kWait);
      std::vector<std::byte> got(host.size());
      device.read(got.data(), block->data(), got.size());
      scale_elements(t, host.data(), kCount, factor);
      for (uint64_t i = 0; i < kCount; ++i) {
        const double w = load(t, host.data(), i), g = load(t, got.data(), i);
        if (std::isnan(w) && std::isnan(g)) continue;
        // float16/bfloat16 may round the double product once (kernel) or through float (host): 1 ulp.
        const bool low = t == DataType::kBFloat16 || t == DataType::kFloat16;
        if (low && factor == 1.0 / 3.0) EXPECT_NEAR(g, w, std::abs(w) / 64 + 1e-6) << name_of(t) << " " << i;
        else EXPECT_EQ(g, w) << name_of(t) << " * " << factor << " element " << i;
      }
    }
  for (DataType t : types)
    for (ScalarOp op : {ScalarOp::kMultiply, ScalarOp::kDivide})
      for (double a : {3.0, -0.75, std::numeric_limits<double>::quiet_NaN()})
        for (double b : {0.0, 2.0, 1.0 / 3.0}) {
          uint64_t x = 0, y = 0;
          store(t, &x, 0, a);
          store(t, &y, 0, b);
          auto bx = device.allocate(8), by = device.allocate(8);
          device.write(bx->data(), &x, 8);
          device.write(by->data(), &y, 8);
          device.submit([&] { device.combine_scalars_in_stream(t, bx->data(), by->data(), op); });
          device.synchronize(kWait);
          uint64_t got = 0;
          device.read(&got, bx->data(), 8);
          combine_scalars(t, &x, &y, op);
          const double w = load(t, &x, 0), g = load(t, &got, 0);
          if (std::isnan(w) && std::isnan(g)) continue;
          EXPECT_EQ(g, w) << name_of(t) << " " << a << (op == ScalarOp::kMultiply ? " * " : " / ") << b;
        }
  EXPECT_THROW(device.scale_in_stream(DataType::kInt64, nullptr, 1, 2.0), std::invalid_argument);
}

}  // namespace
}  // namespace moreh::runtime
