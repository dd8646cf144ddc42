#include "backend/csrc/host_calibration.h"

#include "scheduler/analysis/node_work.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#include <algorithm>
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

double matmul_flops(at::ScalarType type, int64_t n, double budget_s) {
  const at::Tensor a = at::rand({n, n}).to(type), b = at::rand({n, n}).to(type);
  const double s = seconds_per_call([&] { (void)at::mm(a, b); }, budget_s);
  return 2.0 * static_cast<double>(n * n * n) / s;
}

}  // namespace

scheduler::HostMeasurements measure_host() {
  scheduler::HostMeasurements m;
  // Matmuls of a small transformer's shapes (activations of 1024 rows against 256-wide weights), not the
  // square sizes that reach a BLAS's best.
  {
    const at::Tensor a = at::rand({1024, 256}), b = at::rand({256, 512});
    const double s = seconds_per_call([&] { (void)at::mm(a, b); }, 0.1);
    m.fp32_flops = 2.0 * 1024 * 256 * 512 / s;
  }
  m.low_prec_flops = matmul_flops(at::kBFloat16, 256, 0.05);
  {  // causal attention of a small transformer's heads: QK^T and PV, 2 × numel(q) × L multiply-adds
    const at::Tensor q = at::rand({8, 4, 128, 64}), k = at::rand({8, 4, 128, 64}), v = at::rand({8, 4, 128, 64});
    const double s = seconds_per_call([&] {
      (void)at::scaled_dot_product_attention(q, k, v, std::nullopt, 0.0, /*is_causal=*/true);
    }, 0.05);
    m.attention_flops = 2.0 * 2.0 * static_cast<double>(q.numel()) * 128 / s;
  }
  {  // a transcendental function per element (scheduler/analysis/node_work.h counts its FLOPs)
    const at::Tensor x = at::rand({1 << 20});
    const double s = seconds_per_call([&] { (void)at::gelu(x); }, 0.05);
    m.elementwise_flops = scheduler::kTranscendentalFlops * (1 << 20) / s;
  }
  {  // a streaming add: 2 reads and a write of 16 MiB each
    const at::Tensor x = at::ones({4 << 20}), y = at::ones({4 << 20});
    at::Tensor out = at::empty({4 << 20});
    const double s = seconds_per_call([&] { at::add_out(out, x, y); }, 0.1);
    m.memory_bytes_per_s = 3.0 * 4 * (4 << 20) / s;
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
