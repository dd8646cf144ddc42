#include "backend/csrc/host_calibration.h"

#include "scheduler/analysis/node_work.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <functional>
#include <thread>
#include <vector>

namespace moreh::backend {

namespace {

using Clock = std::chrono::steady_clock;

// Seconds per call of `f`, repeated until `budget_s` has passed (after one warm-up call).
template <typename F>
double seconds_per_call(F&& f, double budget_s) {
  f();
  int calls = 0;
  const auto start = Clock::now();
  double elapsed = 0;
  do {
    f();
    ++calls;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < budget_s);
  return elapsed / calls;
}

// A training step touches far more memory than a cache holds (every layer's activations, the parameters,
// their gradients and the optimizer's state), each tensor once or twice: kernels timed on operands that stay
// in cache run up to 3x faster than they do in a step. So each rate is measured over operand sets that
// together fill this much, taken in turn.
constexpr int64_t kWorkingSetBytes = 256ll << 20;

// How many operand sets of `bytes_per_set` fill the working set (at least 2).
int64_t sets_for(int64_t bytes_per_set) { return std::max<int64_t>(2, kWorkingSetBytes / bytes_per_set); }

// Seconds per call of `f(set)`, the sets taken in turn (each touched once before the clock starts). The
// values are constants: filling 256 MiB with random numbers took longer than the timing.
template <typename Set, typename F>
double seconds_per_call_over(const std::vector<Set>& sets, F&& f, double budget_s) {
  size_t next = 0;
  for (const Set& s : sets) f(s);
  return seconds_per_call([&] {
    f(sets[next]);
    next = (next + 1) % sets.size();
  }, budget_s);
}

double matmul_flops(at::ScalarType type, int64_t m, int64_t k, int64_t n, double budget_s) {
  std::vector<std::pair<at::Tensor, at::Tensor>> sets;
  const int64_t bytes = (m * k + k * n + m * n) * static_cast<int64_t>(c10::elementSize(type));
  for (int64_t i = 0; i < sets_for(bytes); ++i) sets.emplace_back(at::full({m, k}, 0.5, type), at::full({k, n}, 0.5, type));
  const double s = seconds_per_call_over(sets, [](const auto& ab) { (void)at::mm(ab.first, ab.second); }, budget_s);
  return 2.0 * static_cast<double>(m * k * n) / s;
}

}  // namespace

scheduler::HostMeasurements measure_host() {
  scheduler::HostMeasurements m;
  // Matmuls of a small transformer's shapes (activations of 1024 rows against 256-wide weights), not the
  // square sizes that reach a BLAS's best.
  m.fp32_flops = matmul_flops(at::kFloat, 1024, 256, 512, 0.1);
  m.low_prec_flops = matmul_flops(at::kBFloat16, 256, 256, 256, 0.05);
  {  // causal attention of a small transformer's heads: QK^T and PV, 2 × numel(q) × L multiply-adds
    std::vector<std::array<at::Tensor, 3>> sets;
    const int64_t numel = 8 * 4 * 128 * 64;
    for (int64_t i = 0; i < sets_for(4 * numel * 4); ++i)
      sets.push_back({at::full({8, 4, 128, 64}, 0.5), at::full({8, 4, 128, 64}, 0.25), at::full({8, 4, 128, 64}, 0.5)});
    const double s = seconds_per_call_over(sets, [](const auto& qkv) {
      (void)at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], std::nullopt, 0.0, /*is_causal=*/true);
    }, 0.05);
    m.attention_flops = 2.0 * 2.0 * static_cast<double>(numel) * 128 / s;
  }
  {  // a transcendental function per element (scheduler/analysis/node_work.h counts its FLOPs)
    std::vector<at::Tensor> sets;
    for (int64_t i = 0; i < sets_for(2 * 4 << 20); ++i) sets.push_back(at::full({1 << 20}, 0.5));
    const double s = seconds_per_call_over(sets, [](const at::Tensor& x) { (void)at::gelu(x); }, 0.05);
    m.elementwise_flops = scheduler::kTranscendentalFlops * (1 << 20) / s;
  }
  {  // a streaming add: 2 reads and a write of 4 MiB each
    std::vector<std::array<at::Tensor, 3>> sets;
    for (int64_t i = 0; i < sets_for(3 * 4 << 20); ++i)
      sets.push_back({at::ones({1 << 20}), at::ones({1 << 20}), at::empty({1 << 20})});
    const double s = seconds_per_call_over(sets, [](const auto& xyo) {
      at::Tensor out = xyo[2];  // a handle: the set's own storage
      at::add_out(out, xyo[0], xyo[1]);
    }, 0.1);
    m.memory_bytes_per_s = 3.0 * 4 * (1 << 20) / s;
  }
  {  // a small kernel through the boxed call a host device's launch makes: what it takes beyond its bytes
     // (the dispatcher, the output's allocation, the intra-op pool's fork and join)
    const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("aten::add", "Tensor");
    const at::Tensor x = at::ones({1 << 16}), y = at::ones({1 << 16});
    const double s = seconds_per_call([&] {
      torch::jit::Stack stack{x, y, at::Scalar(1)};
      op.callBoxed(&stack);
    }, 0.05);
    m.launch_s = std::max(s - 3.0 * 4 * (1 << 16) / m.memory_bytes_per_s, 1e-6);
  }
  // Several devices' streams at once (each device runs its kernels on its own thread, with ATen's intra-op
  // pool beside it). Large kernels: the work k streams finish per second against one stream's. Small ones:
  // what a launch costs beyond its bytes when k streams launch together (their parallel regions contend).
  const at::Tensor a = at::rand({512, 256}), b = at::rand({256, 256});
  const at::Tensor small = at::ones({1 << 16});
  const double alone = seconds_per_call([&] { (void)at::mm(a, b); }, 0.04);
  auto together = [&](int k, int calls, const std::function<void()>& work) {
    const auto start = Clock::now();
    std::vector<std::thread> streams;
    for (int t = 0; t < k; ++t)
      streams.emplace_back([&] {
        for (int i = 0; i < calls; ++i) work();
      });
    for (auto& t : streams) t.join();
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  // Threads contending for cores time noisily: each figure is the median of three tries.
  auto median_of_3 = [](const std::function<double()>& f) {
    double v[3] = {f(), f(), f()};
    std::sort(v, v + 3);
    return v[1];
  };
  for (int k : {2, 4, 8}) {
    constexpr int kCalls = 24, kSmallCalls = 200;
    const double took = median_of_3([&] { return together(k, kCalls, [&] { (void)at::mm(a, b); }); });
    m.speedup.push_back(took > 0 ? alone * kCalls * k / took : 1.0);
    const double small_took =
        median_of_3([&] { return together(k, kSmallCalls, [&] { (void)at::add(small, small); }); });
    m.stream_launch_s.push_back(std::max(small_took / kSmallCalls - 3.0 * 4 * (1 << 16) / m.memory_bytes_per_s, 1e-6));
  }
  {  // a value handed from one device's thread to another's while two more compute: a receive's wake-up
    std::atomic<bool> stop{false};
    std::vector<std::thread> load;
    for (int t = 0; t < 2; ++t)
      load.emplace_back([&] {
        while (!stop.load()) (void)at::mm(a, b);
      });
    std::mutex mu;
    std::condition_variable cv;
    int turn = 0;
    constexpr int kRounds = 40;
    std::thread peer([&] {
      for (int i = 0; i < kRounds; ++i) {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return turn == 1; });
        turn = 0;
        cv.notify_all();
      }
    });
    const auto start = Clock::now();
    for (int i = 0; i < kRounds; ++i) {
      std::unique_lock<std::mutex> lock(mu);
      turn = 1;
      cv.notify_all();
      cv.wait(lock, [&] { return turn == 0; });
    }
    m.handoff_s = std::chrono::duration<double>(Clock::now() - start).count() / (2 * kRounds);
    peer.join();
    stop = true;
    for (auto& t : load) t.join();
  }
  return m;
}

}  // namespace moreh::backend
