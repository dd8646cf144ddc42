#include "runtime/graph/canonical_graph.h"

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/memory/virtual_memory.h"
#include "test_graph.h"

namespace moreh::runtime {
namespace {

using moreh::testing::node;
using moreh::testing::ref;

// A small training-like step over fresh buffers:
//   y = mm(w, x)          attrs: int 1, StepValue 0.1, Seed 5
//   z = relu(y)
//   w.add_(z)             written {0}, attrs: StepValue (a learning rate)
// w and x exist before the step; y and z are produced.
struct Step {
  std::shared_ptr<Buffer> w, x, y, z;
  StepGraph graph;
};

using Mutation = std::function<void(Step&)>;

class CanonicalGraphTest : public ::testing::Test {
 protected:
  VirtualMemory vm;

  Step make_step(const Mutation& before_nodes = nullptr, const Mutation& after_nodes = nullptr) {
    Step s;
    s.w = std::make_shared<Buffer>(vm, 64);
    s.x = std::make_shared<Buffer>(vm, 64);
    s.y = std::make_shared<Buffer>(vm, 64);
    s.z = std::make_shared<Buffer>(vm, 64);
    s.w->mark_defined();
    s.x->mark_defined();
    if (before_nodes) before_nodes(s);
    s.graph.append(node("aten::mm", {ref(s.w), ref(s.x)}, {ref(s.y)}, {},
                        {Attribute(int64_t{1}), Attribute(StepValue{0.1}), Attribute(Seed{5})}));
    s.graph.append(node("aten::relu", {ref(s.y)}, {ref(s.z)}));
    s.graph.append(node("aten::add_", {ref(s.w), ref(s.z)}, {}, {0}, {Attribute(StepValue{0.01})}));
    if (after_nodes) after_nodes(s);
    return s;
  }

  uint64_t hash_of(const Mutation& after_nodes) { return CanonicalGraph::build(make_step(nullptr, after_nodes).graph).hash; }
  uint64_t base_hash() { return CanonicalGraph::build(make_step().graph).hash; }
};

TEST_F(CanonicalGraphTest, SameStructureOverDifferentBuffersHashesEqual) {
  Step a = make_step();
  Step b = make_step();
  ASSERT_NE(a.w.get(), b.w.get());
  CanonicalGraph ga = CanonicalGraph::build(a.graph);
  CanonicalGraph gb = CanonicalGraph::build(b.graph);
  EXPECT_EQ(ga.hash, gb.hash);
  EXPECT_EQ(ga.node_inputs, gb.node_inputs);
  EXPECT_EQ(ga.node_outputs, gb.node_outputs);
  ASSERT_EQ(ga.buffers.size(), gb.buffers.size());
  for (size_t i = 0; i < ga.buffers.size(); ++i) {
    EXPECT_EQ(ga.buffers[i].bytes, gb.buffers[i].bytes);
    EXPECT_EQ(ga.buffers[i].origin, gb.buffers[i].origin);
    EXPECT_EQ(ga.buffers[i].live_after, gb.buffers[i].live_after);
  }
  // The bindings are this step's own buffers.
  ASSERT_EQ(gb.bindings.size(), 4u);
  EXPECT_EQ(gb.bindings[0], b.w);
  EXPECT_EQ(gb.bindings[1], b.x);
  EXPECT_EQ(gb.bindings[2], b.y);
  EXPECT_EQ(gb.bindings[3], b.z);
  // Building twice is deterministic.
  EXPECT_EQ(CanonicalGraph::build(a.graph).hash, ga.hash);
}

TEST_F(CanonicalGraphTest, SlotsAndOrigins) {
  Step s = make_step();
  CanonicalGraph g = CanonicalGraph::build(s.graph);
  ASSERT_EQ(g.buffers.size(), 4u);  // w used twice, one slot
  EXPECT_EQ(g.node_inputs, (std::vector<std::vector<uint32_t>>{{0, 1}, {2}, {0, 3}}));
  EXPECT_EQ(g.node_outputs, (std::vector<std::vector<uint32_t>>{{2}, {3}, {}}));
  EXPECT_EQ(g.buffers[0].origin, BufferOrigin::kMaterialized);
  EXPECT_EQ(g.buffers[1].origin, BufferOrigin::kMaterialized);
  EXPECT_EQ(g.buffers[2].origin, BufferOrigin::kProduced);
  EXPECT_EQ(g.buffers[3].origin, BufferOrigin::kProduced);
  for (const auto& b : g.buffers) {
    EXPECT_EQ(b.bytes, 64u);
    EXPECT_TRUE(b.live_after);
  }
}

TEST_F(CanonicalGraphTest, UndefinedInputIsUnmaterialized) {
  VirtualMemory& v = vm;
  auto fresh = std::make_shared<Buffer>(v, 32);  // torch.empty: never written
  auto out = std::make_shared<Buffer>(v, 32);
  StepGraph graph;
  graph.append(node("aten::neg", {ref(fresh)}, {ref(out)}));
  CanonicalGraph g = CanonicalGraph::build(graph);
  ASSERT_EQ(g.buffers.size(), 2u);
  EXPECT_EQ(g.buffers[0].origin, BufferOrigin::kUnmaterialized);
  EXPECT_EQ(g.buffers[1].origin, BufferOrigin::kProduced);
  uint64_t before = g.hash;

  auto fresh2 = std::make_shared<Buffer>(v, 32);
  auto out2 = std::make_shared<Buffer>(v, 32);
  fresh2->mark_defined();
  StepGraph graph2;
  graph2.append(node("aten::neg", {ref(fresh2)}, {ref(out2)}));
  CanonicalGraph g2 = CanonicalGraph::build(graph2);
  EXPECT_EQ(g2.buffers[0].origin, BufferOrigin::kMaterialized);
  EXPECT_NE(g2.hash, before);  // the origin is part of the hash
}

TEST_F(CanonicalGraphTest, BuffersAreRenumberedByFirstUse) {
  // Create buffers in one order, use them in another: slots follow use, not creation or id.
  auto c = std::make_shared<Buffer>(vm, 96);
  auto b = std::make_shared<Buffer>(vm, 64);
  auto a = std::make_shared<Buffer>(vm, 32);
  auto out1 = std::make_shared<Buffer>(vm, 32);
  auto out2 = std::make_shared<Buffer>(vm, 32);
  for (auto& buf : {a, b, c}) buf->mark_defined();
  StepGraph graph;
  graph.append(node("aten::add", {ref(a), ref(b)}, {ref(out1)}));
  graph.append(node("aten::add", {ref(out1), ref(c)}, {ref(out2)}));
  graph.append(node("aten::add_", {ref(a), ref(out2)}, {}, {0}));
  CanonicalGraph g = CanonicalGraph::build(graph);
  ASSERT_EQ(g.bindings.size(), 5u);
  EXPECT_EQ(g.bindings[0], a);
  EXPECT_EQ(g.bindings[1], b);
  EXPECT_EQ(g.bindings[2], out1);
  EXPECT_EQ(g.bindings[3], c);
  EXPECT_EQ(g.bindings[4], out2);
  EXPECT_EQ(g.buffers[0].bytes, 32u);
  EXPECT_EQ(g.buffers[1].bytes, 64u);
  EXPECT_EQ(g.buffers[3].bytes, 96u);
  EXPECT_EQ(g.node_inputs, (std::vector<std::vector<uint32_t>>{{0, 1}, {2, 3}, {0, 4}}));
  EXPECT_EQ(g.node_outputs, (std::vector<std::vector<uint32_t>>{{2}, {4}, {}}));

  // Swapping the first two inputs (different sizes) is a different graph.
  auto out3 = std::make_shared<Buffer>(vm, 32);
  auto out4 = std::make_shared<Buffer>(vm, 32);
  StepGraph swapped;
  swapped.append(node("aten::add", {ref(b), ref(a)}, {ref(out3)}));
  swapped.append(node("aten::add", {ref(out3), ref(c)}, {ref(out4)}));
  swapped.append(node("aten::add_", {ref(a), ref(out4)}, {}, {0}));
  EXPECT_NE(CanonicalGraph::build(swapped).hash, g.hash);
}

TEST_F(CanonicalGraphTest, AliasingStructureIsPartOfTheHash) {
  // add(a, b) vs add(a, a) with equal sizes: different slot structure, different hash.
  auto a = std::make_shared<Buffer>(vm, 64), b = std::make_shared<Buffer>(vm, 64);
  a->mark_defined();
  b->mark_defined();
  auto o1 = std::make_shared<Buffer>(vm, 64), o2 = std::make_shared<Buffer>(vm, 64);
  StepGraph g1, g2;
  g1.append(node("aten::add", {ref(a), ref(b)}, {ref(o1)}));
  g2.append(node("aten::add", {ref(a), ref(a)}, {ref(o2)}));
  EXPECT_NE(CanonicalGraph::build(g1).hash, CanonicalGraph::build(g2).hash);
}

TEST_F(CanonicalGraphTest, StructuralChangesChangeTheHash) {
  const uint64_t base = base_hash();
  struct Case {
    const char* what;
    Mutation mutate;
  };
  std::vector<Case> cases = {
      {"int attribute", [](Step& s) { s.graph.nodes()[0].attrs[0] = int64_t{2}; }},
      {"attribute kind (bool vs int)", [](Step& s) { s.graph.nodes()[0].attrs[0] = true; }},
      {"attribute count", [](Step& s) { s.graph.nodes()[1].attrs.emplace_back(std::in_place_type<int64_t>, 0); }},
      {"string attribute", [](Step& s) { s.graph.nodes()[1].attrs.emplace_back(std::in_place_type<std::string>, "tanh"); }},
      {"int list attribute",
       [](Step& s) { s.graph.nodes()[1].attrs.emplace_back(std::in_place_type<std::vector<int64_t>>, std::vector<int64_t>{1, 2}); }},
      {"size", [](Step& s) { s.graph.nodes()[1].inputs[0].sizes = {8}; }},
      {"rank", [](Step& s) { s.graph.nodes()[1].inputs[0].sizes = {4, 4}; s.graph.nodes()[1].inputs[0].strides = {4, 1}; }},
      {"stride", [](Step& s) { s.graph.nodes()[1].inputs[0].strides = {2}; }},
      {"offset", [](Step& s) { s.graph.nodes()[1].inputs[0].offset = 4; }},
      {"dtype", [](Step& s) { s.graph.nodes()[1].inputs[0].dtype = 5; }},
      {"output dtype", [](Step& s) { s.graph.nodes()[1].outputs[0].dtype = 15; }},
      {"op name", [](Step& s) { s.graph.nodes()[1].op = intern_op("aten::gelu"); }},
      {"written index", [](Step& s) { s.graph.nodes()[2].written = {1}; }},
      {"written count", [](Step& s) { s.graph.nodes()[2].written.push_back(1); }},
      {"no longer written", [](Step& s) { s.graph.nodes()[2].written.clear(); }},
      {"extra node", [](Step& s) { s.graph.append(node("aten::relu", {ref(s.z)}, {})); }},
  };
  for (const auto& c : cases) EXPECT_NE(hash_of(c.mutate), base) << c.what;

  // A different buffer size (same views) also changes the hash.
  uint64_t bigger = CanonicalGraph::build(make_step([&](Step& s) {
                                            s.x = std::make_shared<Buffer>(vm, 128);
                                            s.x->mark_defined();
                                          }).graph)
                        .hash;
  EXPECT_NE(bigger, base);

  // Where a value from before the step rests decides the plan's collectives: split by leading rows or in
  // blocks along a later dimension hash apart.
  auto resting = [&](int64_t outer) {
    return CanonicalGraph::build(make_step([&](Step& s) {
                                   Placement p{PlacementKind::kShard, 4};
                                   p.outer = outer;
                                   s.w->set_placement(p);
                                 }).graph)
        .hash;
  };
  EXPECT_NE(resting(1), base);
  EXPECT_NE(resting(4), resting(1));
  // A tensor-parallel part whose rows rest over the replicas (a sharded optimizer's state) needs a gather first.
  auto part = [&](int64_t inner_rows) {
    return CanonicalGraph::build(make_step([&](Step& s) {
                                   Placement p{PlacementKind::kShard, 4};
                                   p.ranks = 2;
                                   p.inner_rows = inner_rows;
                                   p.inner_ranks = inner_rows ? 2 : 0;
                                   p.inner_stride = 2;
                                   s.w->set_placement(p);
                                 }).graph)
        .hash;
  };
  EXPECT_NE(part(2), part(0));
}

TEST_F(CanonicalGraphTest, StepDataDoesNotChangeTheHash) {
  const uint64_t base = base_hash();
  EXPECT_EQ(hash_of([](Step& s) { s.graph.nodes()[0].attrs[1] = StepValue{0.5}; }), base);
  EXPECT_EQ(hash_of([](Step& s) { s.graph.nodes()[0].attrs[2] = Seed{123456}; }), base);
  EXPECT_EQ(hash_of([](Step& s) { s.graph.nodes()[2].attrs[0] = StepValue{-3.0}; }), base);
  // But the kind of the attribute still counts.
  EXPECT_NE(hash_of([](Step& s) { s.graph.nodes()[0].attrs[1] = Seed{0}; }), base);
  // A list of doubles: its values are step data, its length is structure.
  uint64_t d2 = hash_of([](Step& s) { s.graph.nodes()[1].attrs.push_back(std::vector<double>{1.0, 2.0}); });
  EXPECT_EQ(hash_of([](Step& s) { s.graph.nodes()[1].attrs.push_back(std::vector<double>{7.0, -1.0}); }), d2);
  EXPECT_NE(hash_of([](Step& s) { s.graph.nodes()[1].attrs.push_back(std::vector<double>{7.0}); }), d2);
  // The payload and the itemsize byte are not structure the plan depends on.
  EXPECT_EQ(hash_of([](Step& s) { s.graph.nodes()[0].payload = std::make_shared<KernelPayload>(); }), base);
}

// A sliding window (data = source[i:i+35], target = source[i+1:i+36]) is one graph for every i when offsets
// are step data: only each view's distance from the buffer's first view in the step is structure.
TEST_F(CanonicalGraphTest, RelativeOffsetsMakeASlidingWindowOneGraph) {
  auto source = std::make_shared<Buffer>(vm, 4096);
  source->mark_defined();
  auto window = [&](int64_t first, int64_t second, CanonicalGraph::Offsets offsets) {
    TensorRef data = ref(source), target = ref(source);
    data.sizes = target.sizes = {35};
    data.offset = first;
    target.offset = second;
    StepGraph g;
    g.append(node("aten::nll_loss", {data, target}, {ref(std::make_shared<Buffer>(vm, 4))}));
    return CanonicalGraph::build(g, offsets).hash;
  };
  using O = CanonicalGraph::Offsets;
  EXPECT_EQ(window(0, 1, O::kRelative), window(35, 36, O::kRelative));
  EXPECT_EQ(window(0, 1, O::kRelative), window(700, 701, O::kRelative));
  EXPECT_NE(window(0, 1, O::kRelative), window(0, 2, O::kRelative));    // how the views overlap is structure
  EXPECT_NE(window(0, 1, O::kRelative), window(1, 0, O::kRelative));
  EXPECT_NE(window(0, 1, O::kAbsolute), window(35, 36, O::kAbsolute));  // plans over several devices
}

TEST_F(CanonicalGraphTest, ReleasedFrontendIsNotLiveAfterAndChangesTheHash) {
  const uint64_t base = base_hash();
  Step s = make_step();
  s.y->release_frontend();  // a temporary: the script dropped it
  CanonicalGraph g = CanonicalGraph::build(s.graph);
  EXPECT_FALSE(g.buffers[2].live_after);
  EXPECT_TRUE(g.buffers[0].live_after);
  EXPECT_TRUE(g.buffers[1].live_after);
  EXPECT_TRUE(g.buffers[3].live_after);
  EXPECT_NE(g.hash, base);

  // The same release on another step's buffer gives the same hash again.
  Step t = make_step();
  t.y->release_frontend();
  EXPECT_EQ(CanonicalGraph::build(t.graph).hash, g.hash);
  // A different buffer released is a different graph.
  Step u = make_step();
  u.z->release_frontend();
  EXPECT_NE(CanonicalGraph::build(u.graph).hash, g.hash);
}

TEST_F(CanonicalGraphTest, EmptyGraph) {
  StepGraph empty;
  CanonicalGraph g = CanonicalGraph::build(empty);
  EXPECT_TRUE(g.buffers.empty());
  EXPECT_TRUE(g.node_inputs.empty());
  EXPECT_EQ(CanonicalGraph::build(StepGraph()).hash, g.hash);
}

TEST(InternOpTest, SameNameSameId) {
  OpId a = intern_op("test::intern_a");
  OpId b = intern_op("test::intern_b");
  EXPECT_NE(a, b);
  EXPECT_NE(a, 0u);
  EXPECT_EQ(intern_op("test::intern_a"), a);
  EXPECT_EQ(op_name(a), "test::intern_a");
  EXPECT_EQ(op_name(b), "test::intern_b");
  EXPECT_EQ(op_name(0), "<none>");
  EXPECT_EQ(op_name(0xffffffu), "<none>");
}

}  // namespace
}  // namespace moreh::runtime
