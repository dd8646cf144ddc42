// A two-layer training step for the pipeline tests: x [8,4] uploaded, h1 = x @ w1, a1 = relu(h1),
// h2 = a1 @ w2, loss = sum(h2); the backward seed, then gw2 = a1^T @ h2, ga1 = h2 @ w2^T, gw1 = x^T @ ga1,
// and the updates w1 += gw1, w2 += gw2.
#pragma once
#include <memory>
#include <utility>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "runtime/memory/virtual_memory.h"
#include "test_graph.h"

namespace moreh::testing {

struct PipelineStep {
  std::shared_ptr<runtime::Buffer> x, w1, h1, a1, w2, h2, loss, seed, gw2, ga1, gw1;
  runtime::StepGraph graph;

  static TensorRef transposed(TensorRef r) {
    std::swap(r.sizes[0], r.sizes[1]);
    std::swap(r.strides[0], r.strides[1]);
    return r;
  }

  PipelineStep(runtime::VirtualMemory& vm, int devices) {
    auto make = [&](uint64_t bytes) { return std::make_shared<runtime::Buffer>(vm, bytes, devices); };
    x = make(4 * 32), h1 = make(4 * 32), a1 = make(4 * 32), h2 = make(4 * 32);
    w1 = make(4 * 16), w2 = make(4 * 16), gw1 = make(4 * 16), gw2 = make(4 * 16), ga1 = make(4 * 32);
    loss = make(4), seed = make(4);
    for (auto& w : {w1, w2}) {
      w->mark_defined();
      w->set_placement({runtime::PlacementKind::kHome});
    }
    auto scalar = [](std::shared_ptr<runtime::Buffer> b) { return shaped(std::move(b), {}); };
    graph.append(upload(x, {8, 4}));
    graph.append(node("aten::mm", {shaped(x, {8, 4}), shaped(w1, {4, 4})}, {shaped(h1, {8, 4})}));
    graph.append(node("aten::relu", {shaped(h1, {8, 4})}, {shaped(a1, {8, 4})}));
    graph.append(node("aten::mm", {shaped(a1, {8, 4}), shaped(w2, {4, 4})}, {shaped(h2, {8, 4})}));
    graph.append(node("aten::sum", {shaped(h2, {8, 4})}, {scalar(loss)}));
    Node fill = node("aten::fill_.Scalar", {scalar(seed)}, {}, {0});
    fill.initializes.push_back(0);
    graph.append(std::move(fill));
    graph.append(node("aten::mm", {transposed(shaped(a1, {8, 4})), shaped(h2, {8, 4})}, {shaped(gw2, {4, 4})}));
    graph.append(node("aten::mm", {shaped(h2, {8, 4}), transposed(shaped(w2, {4, 4}))}, {shaped(ga1, {8, 4})}));
    graph.append(node("aten::mm", {transposed(shaped(x, {8, 4})), shaped(ga1, {8, 4})}, {shaped(gw1, {4, 4})}));
    graph.append(node("aten::add_.Tensor", {shaped(w1, {4, 4}), shaped(gw1, {4, 4})}, {}, {0}));
    graph.append(node("aten::add_.Tensor", {shaped(w2, {4, 4}), shaped(gw2, {4, 4})}, {}, {0}));
    for (auto* b : {&h1, &a1, &h2, &seed, &gw1, &gw2, &ga1, &x}) (*b)->release_frontend();
  }
};

// Node indices of PipelineStep's graph.
enum PipelineNode : size_t { kUpload, kMm1, kRelu, kMm2, kSum, kSeed, kGw2, kGa1, kGw1, kUpdate1, kUpdate2 };

}  // namespace moreh::testing
