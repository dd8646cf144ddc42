// A chain of k blocks for recomputation's tests: block i is a = h @ w_i, b = repeat(a) (4 times a's bytes),
// c = a + b; loss = sum(c_k); the backward pass reads every b (the last first) and then updates w_0. Each c is a
// checkpoint; the b's are what recomputation drops and makes again.
#pragma once
#include <algorithm>
#include <memory>
#include <vector>

#include "runtime/memory/virtual_memory.h"
#include "test_graph.h"

namespace moreh::scheduler {

struct Blocks {
  runtime::StepGraph graph;
  std::vector<std::shared_ptr<runtime::Buffer>> keep;
  Blocks(runtime::VirtualMemory& vm, int k, int devices = 1) {
    auto make = [&](uint64_t bytes) { return keep.emplace_back(std::make_shared<runtime::Buffer>(vm, bytes, devices)); };
    auto m = [](const std::shared_ptr<runtime::Buffer>& buf) { return testing::shaped(buf, {static_cast<int64_t>(buf->bytes() / 16), 4}); };
    auto x = make(128), loss = make(4), seed = make(4);
    std::vector<std::shared_ptr<runtime::Buffer>> ws, reps;
    graph.append(testing::upload(x, {8, 4}));
    auto h = x;
    for (int i = 0; i < k; ++i) {
      auto w = ws.emplace_back(make(64));
      w->mark_defined();
      w->set_placement({runtime::PlacementKind::kHome});
      auto a = make(128), b = reps.emplace_back(make(512)), c = make(128);
      graph.append(testing::node("aten::mm", {m(h), testing::shaped(w, {4, 4})}, {m(a)}));
      graph.append(testing::node("aten::repeat", {m(a)}, {m(b)}, {}, {std::vector<int64_t>{4, 1}}));
      graph.append(testing::node("aten::add.Tensor", {m(a), m(b)}, {m(c)}));
      h = c;
    }
    graph.append(testing::node("aten::sum", {m(h)}, {testing::shaped(loss, {})}));
    runtime::Node fill = testing::node("aten::fill_.Scalar", {testing::shaped(seed, {})}, {}, {0});
    fill.initializes.push_back(0);
    graph.append(std::move(fill));
    auto g = make(512);
    graph.append(testing::node("aten::mul.Tensor", {m(reps.back()), testing::shaped(seed, {})}, {m(g)}));
    for (int i = k - 2; i >= 0; --i) {
      auto next = make(512);
      graph.append(testing::node("aten::mul.Tensor", {m(reps[i]), m(g)}, {m(next)}));
      g = next;
    }
    graph.append(testing::node("aten::add_.Tensor", {testing::shaped(ws[0], {4, 4}), testing::shaped(g, {4, 4})}, {}, {0}));
    for (const auto& b : keep)
      if (std::find(ws.begin(), ws.end(), b) == ws.end()) b->release_frontend();
  }
};

}  // namespace moreh::scheduler
