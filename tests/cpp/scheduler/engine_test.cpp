#include "scheduler/engine.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "runtime/base/errors.h"
#include "runtime/host/host_device.h"
#include "runtime/base/interrupt.h"
#include "runtime/device/kernel_provider.h"
#include "runtime/base/logging.h"
#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using namespace std::chrono_literals;
using moreh::testing::node;
using moreh::testing::ref;
using runtime::Attribute;
using runtime::Buffer;
using runtime::Config;
using runtime::HostDevice;
using runtime::LaunchContext;
using runtime::Node;
using runtime::OutOfMemoryError;
using runtime::PhysicalDevice;
using runtime::StepValue;

// A kernel provider over "test::" ops whose buffers hold one uint64 value in their first 8 bytes:
//   test::const  attrs[0]=int64 v      every output = v
//   test::fill   attrs[0]=StepValue v  every output = v (per-step data: not in the graph hash)
//   test::fill_  attrs[0]=StepValue v  every written input = v
//   test::add    -                     output = sum of the inputs
//   test::add_   -                     inputs[0] += inputs[1]   (written {0})
//   test::sleep  attrs[0]=int64 ms     sleeps, then outputs = 0
//   test::fail   attrs[0]=int64 ms?    sleeps if given, then throws
// Every input is read through ctx.input_memory (so a missing or failed input throws); every output is
// bound to fresh memory from ctx.device().allocate.
class FakeProvider : public runtime::KernelProvider {
 public:
  void launch(const Node& node, const LaunchContext& ctx) override {
    const std::string& name = runtime::op_name(node.op);
    {
      std::lock_guard<std::mutex> lock(mu_);
      launched_.push_back(name);
      threads_.push_back(std::this_thread::get_id());
    }
    std::vector<uint64_t> in;
    for (size_t i = 0; i < node.inputs.size(); ++i) in.push_back(read(ctx.input_memory(i)));

    uint64_t value = 0;
    if (name == "test::const") {
      value = static_cast<uint64_t>(std::get<int64_t>(node.attrs.at(0)));
    } else if (name == "test::fill" || name == "test::fill_") {
      value = static_cast<uint64_t>(std::get<StepValue>(node.attrs.at(0)).value);
    } else if (name == "test::add") {
      for (uint64_t v : in) value += v;
    } else if (name == "test::add_") {
      value = in.at(0) + in.at(1);
    } else if (name == "test::sleep") {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::get<int64_t>(node.attrs.at(0))));
    } else if (name == "test::fail") {
      if (!node.attrs.empty())
        std::this_thread::sleep_for(std::chrono::milliseconds(std::get<int64_t>(node.attrs.at(0))));
      throw std::runtime_error("kernel exploded");
    } else {
      throw std::logic_error("FakeProvider: unknown op " + name);
    }
    for (uint16_t w : node.written) write(ctx.input_memory(w), value);
    for (size_t i = 0; i < node.outputs.size(); ++i) {
      auto block = ctx.device().allocate(node.outputs[i].buffer->bytes());
      write(*block, value);
      ctx.bind_output(i, std::move(block));
    }
  }

  std::vector<std::string> launched() const {
    std::lock_guard<std::mutex> lock(mu_);
    return launched_;
  }
  std::vector<std::thread::id> threads() const {
    std::lock_guard<std::mutex> lock(mu_);
    return threads_;
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    launched_.clear();
    threads_.clear();
  }

  static uint64_t read(const runtime::PhysicalBlock& b) {
    uint64_t v = 0;
    if (b.bytes() >= sizeof v) std::memcpy(&v, b.data(), sizeof v);
    return v;
  }
  static void write(runtime::PhysicalBlock& b, uint64_t v) {
    if (b.bytes() >= sizeof v) std::memcpy(b.data(), &v, sizeof v);
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> launched_;
  std::vector<std::thread::id> threads_;
};

struct EngineOptions {
  uint64_t capacity = 1 << 20;
  uint64_t max_pending_ops = 1000;
  uint64_t graph_cache_size = 16;
  double sync_timeout_s = 5.0;
  int devices = 1;
};

class EngineTest : public ::testing::Test {
 protected:
  // Declared before the engine: the engine keeps a pointer to it.
  FakeProvider provider;
  std::unique_ptr<Engine> engine;

  static void SetUpTestSuite() { runtime::set_log_level("warning"); }

  void make_engine(EngineOptions o = {}) {
    Config c;
    c.graph_cache_size = o.graph_cache_size;
    c.max_pending_ops = o.max_pending_ops;
    c.sync_timeout_s = o.sync_timeout_s;
    c.host_memory_capacity = o.capacity;
    std::vector<std::unique_ptr<PhysicalDevice>> devices;
    for (int d = 0; d < o.devices; ++d) devices.push_back(std::make_unique<HostDevice>(d, o.capacity));
    engine = std::make_unique<Engine>(c, std::move(devices));
    engine->set_kernel_provider(&provider);
  }

  std::shared_ptr<Buffer> buf(uint64_t bytes = 64) { return engine->new_buffer(bytes); }

  static uint64_t value(const std::shared_ptr<Buffer>& b) {
    EXPECT_NE(b->memory(), nullptr) << "buffer " << b->id() << " has no memory";
    return b->memory() ? FakeProvider::read(*b->memory()) : ~0ull;
  }

  static Attribute i64(int64_t v) { return Attribute(v); }

  // Records out = const(a), out2 = const(b), sum = add(out, out2).
  void record_sum(const std::shared_ptr<Buffer>& x, const std::shared_ptr<Buffer>& y,
                  const std::shared_ptr<Buffer>& sum, int64_t a, int64_t b) {
    engine->record(node("test::const", {}, {ref(x)}, {}, {i64(a)}));
    engine->record(node("test::const", {}, {ref(y)}, {}, {i64(b)}));
    engine->record(node("test::add", {ref(x), ref(y)}, {ref(sum)}));
  }

  PhysicalDevice& dev() { return engine->device(0); }
};

TEST_F(EngineTest, RecordsLazilyAndRunsInOrderOnSynchronize) {
  make_engine();
  auto x = buf(), y = buf(), sum = buf();
  engine->record(node("test::const", {}, {ref(x)}, {}, {i64(2)}));
  engine->record(node("test::fill", {}, {ref(y)}, {}, {Attribute(StepValue{5})}));
  engine->record(node("test::add", {ref(x), ref(y)}, {ref(sum)}));
  EXPECT_EQ(engine->pending_ops(), 3u);
  EXPECT_TRUE(provider.launched().empty());  // nothing runs before a step boundary
  EXPECT_TRUE(x->defined());                 // record marks outputs defined
  EXPECT_TRUE(sum->defined());

  engine->synchronize();
  EXPECT_EQ(engine->pending_ops(), 0u);
  EXPECT_EQ(provider.launched(), (std::vector<std::string>{"test::const", "test::fill", "test::add"}));
  for (auto id : provider.threads()) EXPECT_EQ(id, provider.threads()[0]);  // one stream, one runner
  EXPECT_EQ(value(x), 2u);
  EXPECT_EQ(value(y), 5u);
  EXPECT_EQ(value(sum), 7u);
  EXPECT_EQ(dev().used(), 3 * 64u);

  EngineStats s = engine->stats();
  EXPECT_EQ(s.recorded_ops, 3u);
  EXPECT_EQ(s.flushes, 1u);
  EXPECT_EQ(s.cache_misses, 1u);
  EXPECT_EQ(s.cache_hits, 0u);
  EXPECT_EQ(s.last_graph_ops, 3u);
  EXPECT_NE(s.last_graph_hash, 0u);

  // An empty flush/synchronize is a no-op.
  engine->synchronize();
  EXPECT_EQ(engine->stats().flushes, 1u);
}

TEST_F(EngineTest, SameStructureOverNewBuffersHitsThePlanCache) {
  make_engine();
  auto x1 = buf(), y1 = buf(), s1 = buf();
  record_sum(x1, y1, s1, 1, 2);
  engine->synchronize();
  uint64_t first_hash = engine->stats().last_graph_hash;

  auto x2 = buf(), y2 = buf(), s2 = buf();
  engine->record(node("test::const", {}, {ref(x2)}, {}, {i64(1)}));
  engine->record(node("test::const", {}, {ref(y2)}, {}, {i64(2)}));
  engine->record(node("test::add", {ref(x2), ref(y2)}, {ref(s2)}));
  engine->synchronize();
  EngineStats s = engine->stats();
  EXPECT_EQ(s.cache_hits, 1u);
  EXPECT_EQ(s.cache_misses, 1u);
  EXPECT_EQ(s.last_graph_hash, first_hash);
  EXPECT_EQ(value(s2), 3u);
  EXPECT_EQ(value(s1), 3u);

  // Per-step data (a StepValue) is bound each step: a cached plan runs with the new value.
  auto f1 = buf(), f2 = buf();
  engine->record(node("test::fill", {}, {ref(f1)}, {}, {Attribute(StepValue{10})}));
  engine->synchronize();
  engine->record(node("test::fill", {}, {ref(f2)}, {}, {Attribute(StepValue{20})}));
  engine->synchronize();
  s = engine->stats();
  EXPECT_EQ(s.cache_misses, 2u);
  EXPECT_EQ(s.cache_hits, 2u);
  EXPECT_EQ(value(f1), 10u);
  EXPECT_EQ(value(f2), 20u);
}

TEST_F(EngineTest, FlushesAutomaticallyAtMaxPendingOps) {
  make_engine({.max_pending_ops = 3});
  auto x = buf(), y = buf(), sum = buf();
  engine->record(node("test::const", {}, {ref(x)}, {}, {i64(4)}));
  engine->record(node("test::const", {}, {ref(y)}, {}, {i64(5)}));
  EXPECT_EQ(engine->pending_ops(), 2u);
  EXPECT_EQ(engine->stats().flushes, 0u);
  engine->record(node("test::add", {ref(x), ref(y)}, {ref(sum)}));  // the third one flushes
  EXPECT_EQ(engine->pending_ops(), 0u);
  EXPECT_EQ(engine->stats().flushes, 1u);
  dev().synchronize(5s);  // flushed without anyone calling flush()
  EXPECT_EQ(provider.launched().size(), 3u);
  EXPECT_EQ(value(sum), 9u);

  // Seven more: two automatic flushes of three, one left pending.
  std::vector<std::shared_ptr<Buffer>> outs;
  for (int i = 0; i < 7; ++i) {
    outs.push_back(buf());
    engine->record(node("test::const", {}, {ref(outs.back())}, {}, {i64(i)}));
  }
  EXPECT_EQ(engine->stats().flushes, 3u);
  EXPECT_EQ(engine->pending_ops(), 1u);
  engine->synchronize();
  EXPECT_EQ(engine->stats().flushes, 4u);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(value(outs[i]), static_cast<uint64_t>(i));
}

TEST_F(EngineTest, TemporariesAreFreedAndLiveResultsKept) {
  make_engine({.capacity = 10000});
  auto x = buf(1000);
  auto t = buf(2000);
  auto r = buf(500);
  engine->record(node("test::const", {}, {ref(x)}, {}, {i64(3)}));
  engine->record(node("test::add", {ref(x), ref(x)}, {ref(t)}));
  engine->record(node("test::add", {ref(t), ref(x)}, {ref(r)}));
  t->release_frontend();  // the script dropped t before the boundary
  engine->synchronize();
  EXPECT_EQ(value(r), 9u);
  EXPECT_EQ(t->memory(), nullptr);  // released after its last use
  EXPECT_NE(x->memory(), nullptr);
  EXPECT_EQ(dev().used(), 1500u);
  EXPECT_EQ(dev().peak(), 3500u);
}

TEST_F(EngineTest, WrittenInputsAreUpdatedInPlace) {
  make_engine();
  auto w = buf(), g = buf();
  engine->record(node("test::const", {}, {ref(w)}, {}, {i64(10)}));
  engine->record(node("test::const", {}, {ref(g)}, {}, {i64(1)}));
  engine->synchronize();
  for (int i = 0; i < 3; ++i) engine->record(node("test::add_", {ref(w), ref(g)}, {}, {0}));
  engine->synchronize();
  EXPECT_EQ(value(w), 13u);
}

TEST_F(EngineTest, UnmaterializedInputIsAllocatedByThePlan) {
  make_engine();
  auto e = buf(128);  // torch.empty: read, never written before
  auto out = buf();
  engine->record(node("test::add", {ref(e), ref(e)}, {ref(out)}));
  engine->synchronize();
  ASSERT_NE(e->memory(), nullptr);
  EXPECT_EQ(e->memory()->bytes(), 128u);
  EXPECT_NE(out->memory(), nullptr);
  EXPECT_EQ(dev().used(), 128u + 64u);
}

// torch.empty(...) followed by an in-place write (fill_, copy_, zero_): the buffer has never been
// written, so the plan must allocate it. See the report: Engine::record marks written inputs defined
// before the graph is canonicalized, so the buffer looks materialized and never gets memory.
TEST_F(EngineTest, UnmaterializedBufferWrittenInPlaceGetsMemory) {
  make_engine();
  auto e = buf(64);
  engine->record(node("test::fill_", {ref(e)}, {}, {0}, {Attribute(StepValue{7})}));
  EXPECT_NO_THROW(engine->synchronize());
  EXPECT_EQ(value(e), 7u);
  EXPECT_EQ(e->failure(), nullptr);
}

TEST_F(EngineTest, StepPastCapacityThrowsOutOfMemoryAndRunsOnlyTheOpsBeforeTheOneThatDoesNotFit) {
  make_engine({.capacity = 1000});
  auto a = buf(600), b = buf(600);
  engine->record(node("test::const", {}, {ref(a)}, {}, {i64(1)}));
  engine->record(node("test::const", {}, {ref(b)}, {}, {i64(2)}));
  try {
    engine->flush();
    FAIL() << "flush did not throw";
  } catch (const OutOfMemoryError& e) {
    std::string what = e.what();
    EXPECT_EQ(e.requested(), 1200u);
    EXPECT_EQ(e.available(), 1000u);
    EXPECT_NE(what.find("Memory requested : 1200 bytes"), std::string::npos) << what;
    EXPECT_NE(what.find("Memory available : 1000 bytes"), std::string::npos) << what;
  }
  EXPECT_EQ(engine->pending_ops(), 0u);
  dev().synchronize(5s);
  // As on a GPU: the op before the one that runs out of memory ran, the rest did not.
  EXPECT_EQ(provider.launched(), (std::vector<std::string>{"test::const"}));
  EXPECT_EQ(a->failure(), nullptr);
  EXPECT_EQ(value(a), 1u);
  ASSERT_NE(b->failure(), nullptr);
  EXPECT_NE(b->failure()->find("OUT_OF_MEMORY"), std::string::npos) << *b->failure();
  EXPECT_EQ(b->memory(), nullptr);
  EXPECT_EQ(dev().used(), 600u);
  EXPECT_NO_THROW(engine->synchronize());  // the error was reported by flush

  // A step that reads a failed buffer fails with its reason.
  auto c = buf(8);
  engine->record(node("test::add", {ref(b)}, {ref(c)}));
  try {
    engine->synchronize();
    FAIL() << "reading a failed buffer did not throw";
  } catch (const runtime::Error& e) {
    EXPECT_NE(std::string(e.what()).find("OUT_OF_MEMORY"), std::string::npos) << e.what();
  }
  provider.clear();

  // A later small step still runs.
  auto small = buf(100);
  engine->record(node("test::const", {}, {ref(small)}, {}, {i64(42)}));
  engine->synchronize();
  EXPECT_EQ(value(small), 42u);
  EXPECT_EQ(small->failure(), nullptr);
  EXPECT_EQ(provider.launched().size(), 1u);
}

TEST_F(EngineTest, AStepWhoseFirstOpDoesNotFitRunsNothing) {
  make_engine({.capacity = 1000});
  auto a = buf(1200), b = buf(8);
  engine->record(node("test::const", {}, {ref(a)}, {}, {i64(1)}));
  engine->record(node("test::const", {}, {ref(b)}, {}, {i64(2)}));
  EXPECT_THROW(engine->flush(), OutOfMemoryError);
  dev().synchronize(5s);
  EXPECT_TRUE(provider.launched().empty());
  EXPECT_NE(a->failure(), nullptr);
  EXPECT_NE(b->failure(), nullptr);
  EXPECT_EQ(dev().used(), 0u);
}

// A model uploaded in the same step as a forward pass that is too large: the parameters (and any value
// the step wrote in place before the op that did not fit) survive; values written in place by ops that
// did not run keep what they held, like a GPU's tensors after an OOM.
TEST_F(EngineTest, ValuesRecordedBeforeAnOutOfMemoryOpSurviveIt) {
  make_engine({.capacity = 1000});
  auto state = buf(64);
  engine->record(node("test::const", {}, {ref(state)}, {}, {i64(5)}));
  engine->synchronize();
  auto upload = buf(64), big = buf(2000), tmp = buf(64);
  engine->record(node("test::fill_", {ref(upload)}, {}, {0}, {Attribute(StepValue{9})}));  // x.to("moreh")
  engine->record(node("test::add_", {ref(state), ref(upload)}, {}, {0}));                 // state = 14
  engine->record(node("test::add", {ref(state)}, {ref(tmp)}));
  engine->record(node("test::add", {ref(tmp)}, {ref(big)}));                              // too large
  engine->record(node("test::add_", {ref(state), ref(big)}, {}, {0}));                    // never runs
  EXPECT_THROW(engine->synchronize(), OutOfMemoryError);
  EXPECT_NO_THROW(engine->synchronize());  // the ops that fit were submitted; this waits for them
  EXPECT_EQ(upload->failure(), nullptr);
  EXPECT_EQ(value(upload), 9u);
  EXPECT_EQ(state->failure(), nullptr);
  EXPECT_EQ(value(state), 14u);
  EXPECT_EQ(tmp->failure(), nullptr);
  EXPECT_NE(big->failure(), nullptr);
}

TEST_F(EngineTest, OutOfMemoryCountsWhatEarlierStepsHold) {
  make_engine({.capacity = 1000});
  auto held = buf(600);
  engine->record(node("test::const", {}, {ref(held)}, {}, {i64(1)}));
  engine->synchronize();
  auto more = buf(500);
  engine->record(node("test::const", {}, {ref(more)}, {}, {i64(2)}));
  try {
    engine->synchronize();
    FAIL() << "synchronize did not throw";
  } catch (const OutOfMemoryError& e) {
    EXPECT_EQ(e.requested(), 500u);
    EXPECT_EQ(e.available(), 400u);
  }
  EXPECT_NE(more->failure(), nullptr);
  EXPECT_EQ(held->failure(), nullptr);
  EXPECT_EQ(value(held), 1u);  // earlier results are intact
  // Freeing the held tensor makes room.
  held.reset();
  auto again = buf(500);
  engine->record(node("test::const", {}, {ref(again)}, {}, {i64(3)}));
  engine->synchronize();
  EXPECT_EQ(value(again), 3u);
}

TEST_F(EngineTest, OutOfMemoryFromAnAutomaticFlushReachesRecord) {
  make_engine({.capacity = 1000, .max_pending_ops = 2});
  auto a = buf(600), b = buf(600);
  engine->record(node("test::const", {}, {ref(a)}, {}, {i64(1)}));
  EXPECT_THROW(engine->record(node("test::const", {}, {ref(b)}, {}, {i64(2)})), OutOfMemoryError);
  EXPECT_EQ(engine->pending_ops(), 0u);
  EXPECT_EQ(a->failure(), nullptr);
  EXPECT_NE(b->failure(), nullptr);
}

// With several devices a failed step fails on each of them; the user hears of it once, not again at each of
// the next N-1 unrelated reads (which would break "catch the error, retry smaller" loops).
TEST_F(EngineTest, AStepThatFailsOnEveryDeviceIsReportedOnce) {
  make_engine({.devices = 4});
  auto a = buf(), b = buf();
  engine->record(node("test::const", {}, {ref(a)}, {}, {i64(5)}));
  engine->record(node("test::fail", {ref(a)}, {ref(b)}));  // no sharding rule: runs on every device
  EXPECT_THROW(engine->synchronize(), runtime::Error);
  for (int read = 0; read < 4; ++read) {
    auto c = buf();
    engine->record(node("test::const", {}, {ref(c)}, {}, {i64(read)}));
    EXPECT_NO_THROW(engine->synchronize()) << "read " << read;
  }
}

// Ctrl-C (runtime/base/interrupt.h) stops the running step at its next kernel boundary, whichever thread runs it;
// the ops that ran keep their results, the rest carry the interruption, and the next step runs.
TEST_F(EngineTest, AnInterruptStopsTheStepAtTheNextKernelAndTheEngineGoesOn) {
  for (int devices : {1, 3}) {
    make_engine({.devices = devices});
    auto first = buf(), last = buf();
    engine->record(node("test::const", {}, {ref(first)}, {}, {i64(7)}));
    for (int i = 0; i < 100; ++i) engine->record(node("test::sleep", {}, {ref(buf())}, {}, {i64(20)}));  // 2 s
    engine->record(node("test::const", {}, {ref(last)}, {}, {i64(8)}));
    std::thread ctrl_c([] {
      std::this_thread::sleep_for(150ms);
      runtime::request_interrupt();
    });
    const auto start = std::chrono::steady_clock::now();
    try {
      engine->synchronize();
      ADD_FAILURE() << "the step was not interrupted";
    } catch (const runtime::InterruptedError& e) {
      EXPECT_NE(std::string(e.what()).find("interrupted (Ctrl-C) before op"), std::string::npos) << e.what();
    }
    ctrl_c.join();
    EXPECT_LT(std::chrono::steady_clock::now() - start, 1s) << devices << " devices";
    EXPECT_EQ(value(first), 7u);
    ASSERT_NE(last->failure(), nullptr);
    EXPECT_NE(last->failure()->find("interrupted"), std::string::npos);
    auto again = buf();
    engine->record(node("test::const", {}, {ref(again)}, {}, {i64(9)}));
    EXPECT_NO_THROW(engine->synchronize());  // a step submitted after the interrupt runs
    EXPECT_EQ(value(again), 9u);
  }
}

TEST_F(EngineTest, KernelFailureIsReportedBySynchronizeAndTheEngineKeepsWorking) {
  make_engine();
  auto a = buf(), b = buf(), c = buf(), d = buf();
  engine->record(node("test::const", {}, {ref(a)}, {}, {i64(5)}));
  engine->record(node("test::fail", {ref(a)}, {ref(b)}));
  engine->record(node("test::add", {ref(a), ref(b)}, {ref(c)}));
  engine->record(node("test::const", {}, {ref(d)}, {}, {i64(6)}));
  try {
    engine->synchronize();
    FAIL() << "synchronize did not throw";
  } catch (const runtime::Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("test::fail"), std::string::npos) << what;
    EXPECT_NE(what.find("kernel exploded"), std::string::npos) << what;
    EXPECT_NE(what.find("op 2 of 4"), std::string::npos) << what;
  }
  EXPECT_EQ(provider.launched(), (std::vector<std::string>{"test::const", "test::fail"}));
  // Before the failure: intact. The failing node and everything after it: failed.
  EXPECT_EQ(a->failure(), nullptr);
  EXPECT_EQ(value(a), 5u);
  for (const auto& failed : {b, c, d}) {
    ASSERT_NE(failed->failure(), nullptr) << failed->id();
    EXPECT_NE(failed->failure()->find("test::fail"), std::string::npos) << *failed->failure();
    EXPECT_EQ(failed->memory(), nullptr);
  }
  EXPECT_NO_THROW(engine->synchronize());  // reported once
  EXPECT_EQ(dev().used(), 64u);            // only a holds memory

  // The engine keeps working.
  provider.clear();
  auto x = buf(), y = buf(), sum = buf();
  record_sum(x, y, sum, 20, 22);
  engine->synchronize();
  EXPECT_EQ(value(sum), 42u);
  EXPECT_EQ(provider.launched().size(), 3u);
}

TEST_F(EngineTest, SynchronizeTimesOutOnASlowStep) {
  make_engine({.sync_timeout_s = 0.01});
  auto out = buf();
  engine->record(node("test::sleep", {}, {ref(out)}, {}, {i64(200)}));
  engine->flush();
  while (!dev().busy() || provider.launched().empty()) std::this_thread::sleep_for(1ms);  // the worker has it
  EXPECT_THROW(engine->synchronize(), runtime::TimeoutError);
  dev().synchronize(5s);  // wait properly
  EXPECT_NE(out->memory(), nullptr);
  EXPECT_NO_THROW(engine->synchronize());
}

TEST_F(EngineTest, NewBufferReservesVirtualMemory) {
  make_engine();
  uint64_t before = engine->virtual_memory().live_ranges();
  {
    auto b = engine->new_buffer(1000);
    EXPECT_EQ(b->bytes(), 1000u);
    EXPECT_EQ(b->address() % runtime::VirtualMemory::kAlignment, 0u);
    EXPECT_EQ(engine->virtual_memory().live_ranges(), before + 1);
    EXPECT_FALSE(b->defined());
    EXPECT_TRUE(b->frontend_alive());
  }
  EXPECT_EQ(engine->virtual_memory().live_ranges(), before);
  EXPECT_EQ(engine->num_devices(), 1u);
  EXPECT_FALSE(engine->advanced_parallelization());
  engine->set_advanced_parallelization(true);
  EXPECT_TRUE(engine->advanced_parallelization());
  engine->note_eager_op();
  EXPECT_EQ(engine->stats().eager_ops, 1u);
}

// A step's kernel failure must reach the caller's next synchronize even when a later flush had to
// wait for that step to free memory. See the report: Engine::flush_locked swallows the error that
// HostDevice::synchronize hands over (and clears) in its make-room wait.
TEST_F(EngineTest, KernelFailureIsNotLostWhenAFlushWaitsForMemory) {
  make_engine({.capacity = 1000});
  {
    auto big = buf(600), out = buf(8);
    engine->record(node("test::const", {}, {ref(big)}, {}, {i64(1)}));
    engine->record(node("test::fail", {ref(big)}, {ref(out)}, {}, {i64(200)}));
    big->release_frontend();  // a temporary: its memory goes with the step
    engine->flush();
  }
  // Wait until step 1 holds its 600 bytes (it then sleeps 200 ms and fails).
  for (int i = 0; i < 500 && dev().used() < 600; ++i) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(dev().used(), 600u);
  auto next = buf(500);
  engine->record(node("test::const", {}, {ref(next)}, {}, {i64(2)}));
  engine->flush();  // 600 + 500 > 1000 while busy: waits for step 1, which fails
  EXPECT_THROW(engine->synchronize(), runtime::Error) << "step 1's failure was lost";
}

// Two steps that each fit alone but not together: the second must fail as an OutOfMemoryError with
// its outputs marked. See the report: flush checks only what is bound now, not what queued steps will
// bind; an input the plan allocates (kAllocate) then fails on the stream outside the executor's
// try/catch, so the step's outputs never get failure() set.
TEST_F(EngineTest, AllocateFailureOnTheStreamMarksTheStepsOutputs) {
  make_engine({.capacity = 1000});
  auto first = buf(600);
  engine->record(node("test::sleep", {}, {ref(first)}, {}, {i64(100)}));
  engine->flush();  // runs on the stream; binds 600 bytes after 100 ms
  auto scratch = buf(600);  // never written: the plan allocates it
  auto out = buf(8);
  engine->record(node("test::add", {ref(scratch)}, {ref(out)}));
  try {
    engine->synchronize();
  } catch (const runtime::Error&) {
  }
  // Either the second step was refused at flush, or it failed on the stream; in both cases its
  // outputs must say why.
  ASSERT_NE(out->failure(), nullptr);
  EXPECT_NE(out->failure()->find("OUT_OF_MEMORY"), std::string::npos) << *out->failure();
}

// MOREH_SYNC_TIMEOUT accepts any positive number; a large one ("never time out") must not make every
// synchronize time out at once. See the report: timeout_of() overflows std::chrono's steady_clock.
TEST_F(EngineTest, HugeSyncTimeoutDoesNotTimeOutImmediately) {
  make_engine({.sync_timeout_s = 1e10});
  auto out = buf();
  engine->record(node("test::sleep", {}, {ref(out)}, {}, {i64(50)}));
  EXPECT_NO_THROW(engine->synchronize());
}

}  // namespace
}  // namespace moreh::scheduler
