// NcclCommunicator and the NCCL loader. Everywhere: over host devices with the fake NCCL of fake_nccl.cpp
// (a host-memory stand-in with NCCL's calling rules), which checks the communicator's own logic. On a GPU
// machine where NCCL loads (MOREH_NCCL_LIBRARY, or libnccl.so.2 on the loader's path): the real library on
// CudaDevices, one rank per GPU (skipped, with the reason, elsewhere).
#include "runtime/comm/nccl_communicator.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "runtime/comm/host_collective_group.h"
#include "runtime/base/errors.h"
#include "runtime/host/host_device.h"
#ifdef MOREH_WITH_CUDA
#include "runtime/cuda/cuda_device.h"
#include "runtime/cuda/cuda_driver.h"
#endif

namespace moreh::runtime {
namespace {

using namespace test_values;
using namespace std::chrono_literals;

// The fake library's control functions.
struct FakeControl {
  void (*fail)(const char*, int, int, int);
  void (*fail_init)(int);
  void (*set_version)(int);
  int (*count)(const char*);
  void (*reset)();
};

FakeControl& fake() {
  static FakeControl c = [] {
    void* h = dlopen(MOREH_FAKE_NCCL_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (!h) throw std::runtime_error(std::string("cannot load the fake NCCL: ") + dlerror());
    FakeControl f{};
    f.fail = reinterpret_cast<decltype(f.fail)>(dlsym(h, "moreh_fake_nccl_fail"));
    f.fail_init = reinterpret_cast<decltype(f.fail_init)>(dlsym(h, "moreh_fake_nccl_fail_init"));
    f.set_version = reinterpret_cast<decltype(f.set_version)>(dlsym(h, "moreh_fake_nccl_set_version"));
    f.count = reinterpret_cast<decltype(f.count)>(dlsym(h, "moreh_fake_nccl_count"));
    f.reset = reinterpret_cast<decltype(f.reset)>(dlsym(h, "moreh_fake_nccl_reset"));
    return f;
  }();
  return c;
}

std::shared_ptr<const nccl::Library> fake_library() { return nccl::Library::load(MOREH_FAKE_NCCL_LIBRARY); }

// N host devices and an NCCL communicator over them (through the fake library).
struct Group : HostGroup {
  explicit Group(int n, std::chrono::milliseconds timeout = kWait) : HostGroup(n) {
    fake().reset();
    comm = std::make_unique<NcclCommunicator>(raw(), timeout, fake_library());
  }
};

// A pipeline stage's replicas all-reduce among themselves: a group over some of the devices, with NCCL
// communicators of its own (ncclCommInitAll over them).
TEST(NcclCommunicatorTest, AGroupOfSomeDevicesReducesAmongThem) {
  Group g(4);
  std::unique_ptr<Communicator> stage = g.comm->make_group({1, 3});
  ASSERT_NE(stage, nullptr);
  ASSERT_EQ(stage->size(), 2);
  EXPECT_EQ(&stage->device(0), g.devices[1].get());
  EXPECT_EQ(&stage->device(1), g.devices[3].get());
  std::vector<std::unique_ptr<PhysicalBlock>> blocks;
  for (int r = 0; r < 2; ++r) {
    blocks.push_back(g.allocate(r == 0 ? 1 : 3, 3 * sizeof(float)));
    float* f = static_cast<float*>(blocks[r]->data());
    for (int i = 0; i < 3; ++i) f[i] = static_cast<float>((r + 1) * (i + 1));
  }
  const int calls = fake().count("ncclAllReduce");
  for (int r = 0; r < 2; ++r)
    stage->all_reduce(r, blocks[r]->data(), blocks[r]->data(), 3, DataType::kFloat32, ReduceOp::kSum);
  g.synchronize();
  for (int r = 0; r < 2; ++r)
    for (int i = 0; i < 3; ++i) EXPECT_EQ(static_cast<const float*>(blocks[r]->data())[i], 3.0f * (i + 1));
  EXPECT_EQ(fake().count("ncclAllReduce") - calls, 2);
}

TEST(NcclLibraryTest, AMissingLibraryIsAConfigErrorNamingItAndTheVariable) {
  try {
    nccl::Library::load("/nonexistent/libnccl.so.2");
    FAIL() << "loaded a library that does not exist";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("/nonexistent/libnccl.so.2"), std::string::npos) << what;
    EXPECT_NE(what.find("MOREH_NCCL_LIBRARY"), std::string::npos) << what;
  }
}

TEST(NcclLibraryTest, ALibraryThatIsNotNcclSaysWhichCallItLacks) {
  try {
    nccl::Library::load("libm.so.6");
    FAIL() << "libm passed for NCCL";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("lacks ncclGetVersion"), std::string::npos) << e.what();
  }
}

TEST(NcclLibraryTest, AnNcclOlderThanTwoThirteenIsRefused) {
  // Another name for the fake, so that the loader checks its version afresh.
  const auto dir = std::filesystem::temp_directory_path() / ("moreh-old-nccl-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const auto link = dir / "libnccl.so.2";
  std::filesystem::remove(link);
  std::filesystem::create_symlink(MOREH_FAKE_NCCL_LIBRARY, link);
  fake().reset();
  fake().set_version(21205);
  try {
    nccl::Library::load(link.string());
    ADD_FAILURE() << "NCCL 2.12.5 was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("it is NCCL 2.12.5, and moreh needs 2.13.0 or newer"), std::string::npos)
        << e.what();
  }
  fake().reset();
  std::filesystem::remove_all(dir);
}

TEST(NcclLibraryTest, TheFakeLoadsWithItsVersionAndAsHostMemory) {
  fake().reset();
  const auto lib = fake_library();
  EXPECT_EQ(lib->version(), 22105);
  EXPECT_TRUE(lib->host_memory());
  EXPECT_EQ(fake_library().get(), lib.get()) << "loaded once per name";
  EXPECT_EQ(nccl::version_string(22105), "2.21.5");
  EXPECT_EQ(nccl::version_string(2708), "2.7.8");
}

TEST(NcclLibraryTest, TypesAndOpsMapToNcclsCodes) {
  EXPECT_EQ(nccl::type_code(DataType::kFloat32), 7);
  EXPECT_EQ(nccl::type_code(DataType::kFloat64), 8);
  EXPECT_EQ(nccl::type_code(DataType::kBFloat16), 9);
  EXPECT_EQ(nccl::type_code(DataType::kFloat16), 6);
  EXPECT_EQ(nccl::type_code(DataType::kInt64), 4);
  EXPECT_EQ(nccl::type_code(DataType::kInt32), 2);
  EXPECT_EQ(nccl::type_code(DataType::kBool), 1);
  EXPECT_EQ(nccl::red_op(ReduceOp::kSum), 0);
  EXPECT_EQ(nccl::red_op(ReduceOp::kProd), 1);
  EXPECT_EQ(nccl::red_op(ReduceOp::kMax), 2);
  EXPECT_EQ(nccl::red_op(ReduceOp::kMin), 3);
  EXPECT_EQ(nccl::red_op(ReduceOp::kAvg), 4);
}

class NcclCollectivesTest : public ::testing::TestWithParam<int> {};

TEST_P(NcclCollectivesTest, AllReduceEveryOpAndTypeInAndOutOfPlace) {
  const int n = GetParam();
  Group g(n);
  for (DataType t : kTypes)
    for (ReduceOp op : kOps)
      for (uint64_t count : {uint64_t{1}, uint64_t{37}})
        for (bool in_place : {false, true}) check_all_reduce(g, t, op, count, in_place);
  EXPECT_EQ(fake().count("ncclAllReduce"), n * 6 * 5 * 2 * 2);
}

// Even slices go to ncclReduceScatter; uneven ones, which NCCL lacks, to a group of ncclReduce (one per
// non-empty slice).
TEST_P(NcclCollectivesTest, ReduceScatterEvenAndUnevenInAndOutOfPlace) {
  const int n = GetParam();
  Group g(n);
  int expected_reduces = 0;
  for (bool even : {true, false})
    for (bool in_place : {false, true}) {
      const std::vector<uint64_t> counts = even ? std::vector<uint64_t>(n, 5) : uneven_counts(n);
      check_reduce_scatter(g, counts, DataType::kFloat32, ReduceOp::kSum, in_place);
      if (!even && n > 1)
        for (uint64_t c : counts) expected_reduces += c != 0 ? n : 0;
    }
  const bool uneven_differs = n > 1;
  EXPECT_EQ(fake().count("ncclReduceScatter"), n * 2 + (uneven_differs ? 0 : n * 2));
  EXPECT_EQ(fake().count("ncclReduce"), expected_reduces);
}

TEST_P(NcclCollectivesTest, AllGatherEvenAndUnevenInAndOutOfPlace) {
  const int n = GetParam();
  Group g(n);
  for (bool even : {true, false})
    for (bool in_place : {false, true})
      check_all_gather(g, even ? std::vector<uint64_t>(n, 4) : uneven_counts(n), DataType::kInt64, in_place);
  EXPECT_EQ(fake().count("ncclAllGather"), n * 2 + (n > 1 ? 0 : n * 2));
  if (n > 1) {
    EXPECT_GT(fake().count("ncclBroadcast"), 0);
  }
}

TEST_P(NcclCollectivesTest, BroadcastFromEveryRoot) {
  const int n = GetParam();
  Group g(n);
  for (int root = 0; root < n; ++root) {
    std::vector<std::unique_ptr<PhysicalBlock>> buf;
    for (int r = 0; r < n; ++r) {
      buf.push_back(g.allocate(r, 10 * 4, 0));
      if (r == root)
        for (uint64_t i = 0; i < 10; ++i) store(DataType::kInt32, buf[r]->data(), i, root * 10.0 + i);
    }
    for (int r = 0; r < n; ++r) g.comm->broadcast(r, buf[r]->data(), buf[r]->data(), 10, DataType::kInt32, root);
    g.synchronize();
    for (int r = 0; r < n; ++r)
      EXPECT_TRUE(holds(DataType::kInt32, buf[r]->data(), 0, 10, [&](uint64_t i) { return root * 10.0 + i; },
                        "root " + std::to_string(root)));
  }
}

// On the NCCL path a send goes once its recv is issued: even ranks send first, odd ranks receive first.
TEST_P(NcclCollectivesTest, SendRecvAroundTheRingEvenRanksFirst) {
  const int n = GetParam();
  if (n < 2) GTEST_SKIP() << "a rank cannot send to itself";
  Group g(n);
  const uint64_t count = 64;
  std::vector<std::unique_ptr<PhysicalBlock>> out, in;
  for (int r = 0; r < n; ++r) {
    out.push_back(g.allocate(r, count * 8));
    in.push_back(g.allocate(r, count * 8));
    for (uint64_t i = 0; i < count; ++i) store(DataType::kInt64, out[r]->data(), i, r * 1000.0 + i);
  }
  for (int r = 0; r < n; ++r) {
    const int to = (r + 1) % n, from = (r + n - 1) % n;
    if (r % 2 == 0) g.comm->send(r, out[r]->data(), count, DataType::kInt64, to);
    g.comm->recv(r, in[r]->data(), count, DataType::kInt64, from);
    if (r % 2 == 1) g.comm->send(r, out[r]->data(), count, DataType::kInt64, to);
  }
  g.synchronize();
  for (int r = 0; r < n; ++r) {
    const int from = (r + n - 1) % n;
    EXPECT_TRUE(holds(DataType::kInt64, in[r]->data(), 0, count, [&](uint64_t i) { return from * 1000.0 + i; },
                      "rank " + std::to_string(r)));
    EXPECT_EQ(g.comm->traffic(r).bytes_sent, count * 8);
  }
}

TEST_P(NcclCollectivesTest, BackToBackWithBarriersFromOneThreadPerRank) {
  Group g(GetParam());
  constexpr int kSteps = 12;
  check_back_to_back_all_reduces(g, kSteps, 4, 20);
  EXPECT_EQ(g.comm->traffic(0).operations, static_cast<uint64_t>(kSteps + 3));
}

// A group meets once and goes to NCCL inside one ncclGroupStart/End (the uneven all_gather's broadcasts
// nest their own group in it).
TEST_P(NcclCollectivesTest, AGroupOfCollectivesIsOneNcclGroup) {
  const int n = GetParam();
  Group g(n);
  check_group(g);
  EXPECT_EQ(fake().count("ncclAllReduce"), 3 * n);
  EXPECT_EQ(fake().count("ncclGroupStart"), n * (n > 1 ? 2 : 1));
  EXPECT_EQ(g.comm->traffic(0).operations, 5u);
}

TEST_P(NcclCollectivesTest, BytesSentFollowTheRingFormula) {
  const int n = GetParam();
  Group g(n);
  std::vector<std::unique_ptr<PhysicalBlock>> a;
  for (int r = 0; r < n; ++r) a.push_back(g.allocate(r, 1000 * 4, 0));
  for (int r = 0; r < n; ++r) g.comm->all_reduce(r, a[r]->data(), a[r]->data(), 1000, DataType::kFloat32, ReduceOp::kSum);
  g.synchronize();
  uint64_t total = 0;
  for (int r = 0; r < n; ++r) total += g.comm->traffic(r).bytes_sent;
  EXPECT_DOUBLE_EQ(static_cast<double>(total) / n, ring_all_reduce_bytes_per_rank(4000, n));
}

INSTANTIATE_TEST_SUITE_P(Ranks, NcclCollectivesTest, ::testing::Values(1, 2, 3, 4),
                         [](const ::testing::TestParamInfo<int>& info) { return "N" + std::to_string(info.param); });

// A failure at the host-side meeting leaves NCCL untouched (no rank issued the call), so the ranks start again.
TEST(NcclCommunicatorTest, RecoversAfterAStepFailedOnOneRankBeforeAnyNcclCall) {
  Group g(3);
  check_recovers_after_a_failed_rank(g, 0);
  EXPECT_EQ(fake().count("ncclCommAbort"), 0);
}

TEST(NcclCommunicatorTest, ARankThatNeverArrivesTimesOutBeforeAnyNcclCall) {
  {
    Group g(3, 200ms);
    check_missing_rank_fails(g, 2, {"NCCL path", "rank 2 (host:2) did not arrive within 200 ms"}, 2s);
    EXPECT_EQ(fake().count("ncclAllReduce"), 0) << "no rank may reach NCCL without its peers";
    EXPECT_THROW(g.comm->barrier(2), CollectiveError);
  }
  // A broken communicator is aborted, not destroyed (destroying waits for every rank).
  EXPECT_EQ(fake().count("ncclCommAbort"), 3);
  EXPECT_EQ(fake().count("ncclCommDestroy"), 0);
}

TEST(NcclCommunicatorTest, RanksIssuingDifferentCollectivesFailWithBothBeforeNccl) {
  Group g(2);
  check_different_collectives_fail(g);
  EXPECT_EQ(fake().count("ncclAllReduce"), 0);
}

// Ranks whose groups differ (another length, or another collective in it) fail before any NCCL call,
// naming both; send/recv in a group is refused at the call.
TEST(NcclCommunicatorTest, GroupsThatDifferFailBeforeNccl) {
  for (bool shorter : {true, false}) {
    Group g(2);
    std::vector<std::unique_ptr<PhysicalBlock>> a;
    std::vector<std::vector<CollectivePart>> parts(2);
    for (int r = 0; r < 2; ++r) {
      a.push_back(g.allocate(r, 64, 0));
      for (int k = 0; k < 2; ++k)
        parts[r].push_back(CollectivePart::all_reduce(a[r]->data(), a[r]->data(), r == 1 && k == 1 && !shorter ? 5 : 4,
                                                      DataType::kFloat32, ReduceOp::kSum));
    }
    if (shorter) parts[1].pop_back();
    for (int r = 0; r < 2; ++r) g.devices[r]->submit([&, r] { g.comm->run_group_in_stream(r, parts[r]); });
    expect_every_rank_fails(g, {shorter ? "a group of 1 collectives" : "5 elements", "same order"});
    EXPECT_EQ(fake().count("ncclAllReduce"), 0);
  }
  Group g(2);
  auto b = g.allocate(0, 16);
  CollectivePart send;
  send.kind = CollectiveKind::kSend;
  send.send = b->data();
  send.count = 4;
  send.peer = 1;
  EXPECT_THROW(g.comm->run_group_in_stream(0, {send, send}), ConfigError);
}

TEST(NcclCommunicatorTest, SendsAndRecvsOfDifferentSizesFailBeforeNccl) {
  Group g(2);
  auto a = g.allocate(0, 64, 0), b = g.allocate(1, 64, 0);
  g.comm->send(0, a->data(), 8, DataType::kInt32, 1);
  g.comm->recv(1, b->data(), 4, DataType::kInt32, 0);
  for (int r = 0; r < 2; ++r) {
    try {
      g.devices[r]->synchronize(kWait);
      ADD_FAILURE() << "rank " << r << " did not fail";
    } catch (const CollectiveError& e) {
      EXPECT_NE(std::string(e.what()).find("message #0 from rank 0 to rank 1"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(fake().count("ncclSend"), 0);
  EXPECT_EQ(fake().count("ncclRecv"), 0);
}

// Eager sends (the host and same-GPU paths) would let every rank send first; NCCL's sends wait for their
// recvs, so here that is a bounded wait naming the peer, not a hang.
TEST(NcclCommunicatorTest, EveryRankSendingFirstTimesOutNamingThePeer) {
  Group g(2, 200ms);
  auto a = g.allocate(0, 64, 0), b = g.allocate(1, 64, 0);
  g.comm->send(0, a->data(), 8, DataType::kInt32, 1);
  g.comm->send(1, b->data(), 8, DataType::kInt32, 0);
  g.comm->recv(0, a->data(), 8, DataType::kInt32, 1);
  g.comm->recv(1, b->data(), 8, DataType::kInt32, 0);
  try {
    g.devices[0]->synchronize(kWait);
    ADD_FAILURE() << "the exchange did not fail";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("did not receive within 200 ms"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(g.comm->broken());
}

TEST(NcclCommunicatorTest, AnNcclErrorBreaksTheCommunicatorWithNcclsWords) {
  Group g(2);
  for (int r = 0; r < 2; ++r) fake().fail("ncclAllReduce", r, nccl::kRemoteError, 0);
  std::vector<std::unique_ptr<PhysicalBlock>> a;
  for (int r = 0; r < 2; ++r) a.push_back(g.allocate(r, 64, 0));
  g.comm->all_reduce(0, a[0]->data(), a[0]->data(), 4, DataType::kFloat32, ReduceOp::kSum);
  g.comm->all_reduce(1, a[1]->data(), a[1]->data(), 4, DataType::kFloat32, ReduceOp::kSum);
  bool any = false;
  for (int r = 0; r < 2; ++r) {
    try {
      g.devices[r]->synchronize(kWait);
    } catch (const CollectiveError& e) {
      any = true;
      const std::string what = e.what();
      EXPECT_NE(what.find("NCCL path"), std::string::npos) << what;
      if (what.find("ncclAllReduce returned") != std::string::npos) {
        EXPECT_NE(what.find("ncclRemoteError (remote process exited"), std::string::npos) << what;
        EXPECT_NE(what.find("injected failure of ncclAllReduce on rank"), std::string::npos) << what;
      }
    } catch (const Error& e) {
      ADD_FAILURE() << "rank " << r << ": " << e.what();
    }
  }
  EXPECT_TRUE(any);
  EXPECT_TRUE(g.comm->broken());
}

TEST(NcclCommunicatorTest, AnAsynchronousNcclErrorBreaksTheCommunicator) {
  Group g(1);
  fake().fail("ncclAllReduce", 0, nccl::kRemoteError, 1);
  auto a = g.allocate(0, 64, 0);
  g.comm->all_reduce(0, a->data(), a->data(), 4, DataType::kFloat32, ReduceOp::kSum);
  try {
    g.devices[0]->synchronize(kWait);
    ADD_FAILURE() << "the asynchronous error was not seen";
  } catch (const CollectiveError& e) {
    EXPECT_NE(std::string(e.what()).find("ncclAllReduce left the communicator with ncclRemoteError"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(g.comm->broken());
}

TEST(NcclCommunicatorTest, AFailedInitIsAConfigErrorWithNcclsReason) {
  fake().reset();
  fake().fail_init(nccl::kSystemError);
  HostDevice d0(0, 1 << 20), d1(1, 1 << 20);
  try {
    NcclCommunicator comm({&d0, &d1}, kWait, fake_library());
    ADD_FAILURE() << "init did not fail";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("ncclCommInitAll over 2 ranks"), std::string::npos) << what;
    EXPECT_NE(what.find("NCCL 2.21.5"), std::string::npos) << what;
    EXPECT_NE(what.find("injected init failure"), std::string::npos) << what;
  }
  fake().reset();
}

TEST(NcclCommunicatorTest, ReducingBoolsIsAConfigErrorAtTheCall) {
  Group g(1);
  auto a = g.allocate(0, 8, 0);
  const CollectivePart p = CollectivePart::all_reduce(a->data(), a->data(), 8, DataType::kBool, ReduceOp::kSum);
  EXPECT_THROW(g.comm->run_in_stream(0, p), ConfigError);
  EXPECT_FALSE(g.comm->broken());
}

// ncclCommDestroy is collective among a node's ranks: destroying them one after another from one thread
// would wait (the fake: its bound) on the first.
TEST(NcclCommunicatorTest, DestroysEveryRanksCommunicatorTogether) {
  const auto start = std::chrono::steady_clock::now();
  {
    Group g(4);
    g.comm->barrier(0);
    g.comm->barrier(1);
    g.comm->barrier(2);
    g.comm->barrier(3);
    g.synchronize();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
  EXPECT_EQ(fake().count("ncclCommDestroy"), 4);
  EXPECT_EQ(fake().count("ncclCommAbort"), 0);
}

#ifdef MOREH_WITH_CUDA
// The real NCCL on real GPUs: one rank per GPU, up to 4 GPUs (1 where the machine has one).
TEST(NcclGpuTest, CollectivesOnRealGpusOneRankEach) {
  if (!cuda::driver()) GTEST_SKIP() << "no CUDA driver: " << cuda::driver_unavailable_reason();
  int gpus = 0;
  if (cuda::require_driver().DeviceGetCount(&gpus) != CUDA_SUCCESS || gpus == 0) GTEST_SKIP() << "no CUDA device";
  const char* env = std::getenv("MOREH_NCCL_LIBRARY");
  std::shared_ptr<const nccl::Library> lib;
  try {
    lib = nccl::Library::load(env && *env ? env : "libnccl.so.2");
  } catch (const ConfigError& e) {
    GTEST_SKIP() << e.what();
  }
  const int n = std::min(gpus, 4);
  std::vector<std::unique_ptr<CudaDevice>> devices;
  std::vector<PhysicalDevice*> raw;
  for (int r = 0; r < n; ++r) {
    devices.push_back(std::make_unique<CudaDevice>(r, r, 256ull << 20, 20s));
    raw.push_back(devices.back().get());
  }
  auto comm = std::make_unique<NcclCommunicator>(raw, 20s, lib);
  const uint64_t count = 4099;
  for (DataType t : kTypes) {
    const ReduceOp op = ReduceOp::kSum;
    std::vector<std::unique_ptr<PhysicalBlock>> x, gathered;
    for (int r = 0; r < n; ++r) {
      std::vector<std::byte> host(count * size_of(t));
      for (uint64_t i = 0; i < count; ++i) store(t, host.data(), i, value(op, r, i));
      x.push_back(devices[r]->allocate(host.size()));
      devices[r]->write(x[r]->data(), host.data(), host.size());
      gathered.push_back(devices[r]->allocate(host.size() * n));
    }
    for (int r = 0; r < n; ++r) {
      comm->all_reduce(r, x[r]->data(), x[r]->data(), count, t, op);
      comm->all_gather(r, x[r]->data(), gathered[r]->data(), std::vector<uint64_t>(n, count), t);
      comm->barrier(r);
    }
    for (auto& d : devices) d->synchronize(20s);
    for (int r = 0; r < n; ++r) {
      std::vector<std::byte> host(count * size_of(t) * n);
      devices[r]->read(host.data(), gathered[r]->data(), host.size());
      for (int c = 0; c < n; ++c)
        EXPECT_TRUE(holds(t, host.data(), c * count, count, [&](uint64_t i) { return expected(t, op, n, i); },
                          "GPU " + std::to_string(r) + " slice " + std::to_string(c)));
    }
  }
  comm.reset();
}
#endif

}  // namespace
}  // namespace moreh::runtime
