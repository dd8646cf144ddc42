// Steps through the wire with a stand-in payload codec: nodes, references and bindings come back as sent; a
// withheld payload is named, a host input's rows reach the codec; later steps carry only what changed; torn,
// flipped, lying or out-of-step steps are ProtocolErrors that leave the worker's copy as it was.
#include "runtime/worker/step_codec.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "runtime/base/errors.h"
#include "runtime/memory/buffer.h"
#include "runtime/memory/virtual_memory.h"

namespace moreh::runtime {
namespace {

struct TextPayload final : KernelPayload {
  explicit TextPayload(std::string t) : text(std::move(t)) {}
  std::string text;
};

// Payloads are their text; a row window is appended as "@begin+count/whole".
class TextCodec final : public PayloadCodec {
 public:
  std::string encode(const Node& node, const RowWindow* rows) const override {
    std::string out = static_cast<const TextPayload&>(*node.payload).text;
    if (rows) out += "@" + std::to_string(rows->begin) + "+" + std::to_string(rows->count) + "/" + std::to_string(rows->whole);
    return out;
  }
  std::shared_ptr<const KernelPayload> decode(const Node&, std::string_view bytes) const override {
    if (bytes.find('!') != std::string_view::npos) throw ProtocolError("a payload this codec cannot read");
    return std::make_shared<TextPayload>(std::string(bytes));
  }
};

class StepCodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = std::make_shared<Buffer>(vm_, 64);
    b_ = std::make_shared<Buffer>(vm_, 32);
    Node copy;
    copy.op = intern_op("aten::copy_");
    copy.inputs.push_back(TensorRef{a_, 0, {4, 4}, {4, 1}, 6, 4});
    copy.written = {0};
    copy.host_input = true;
    copy.attrs = {int64_t{3}, StepValue{0.5}, std::string("x"), std::vector<int64_t>{1, 2}};
    copy.input_args = {0};
    copy.payload = std::make_shared<TextPayload>("COPYBODY");
    graph_.append(copy);
    Node relu;
    relu.op = intern_op("aten::relu");
    relu.inputs.push_back(TensorRef{a_, 0, {4, 4}, {4, 1}, 6, 4});
    relu.outputs.push_back(TensorRef{b_, 2, {2, 4}, {4, 1}, 6, 4});
    relu.payload = std::make_shared<TextPayload>("RELUBODY");
    graph_.append(relu);
    Node native;  // a runtime kernel: no payload at all
    native.op = intern_op("moreh::fill");
    native.inputs.push_back(TensorRef{b_, 0, {8}, {1}, 6, 4});
    graph_.append(native);
  }
  StepWire decode(std::string_view wire, StepDecoder* decoder = nullptr) {
    StepDecoder fresh;
    return (decoder ? *decoder : fresh).decode(wire, codec_, [&](uint64_t id, uint64_t bytes) {
      auto& b = seen_[id];
      if (!b) b = std::make_shared<Buffer>(vm_, bytes);
      return b;
    });
  }
  static std::string encode(const StepGraph& graph, const std::vector<std::shared_ptr<Buffer>>& bindings,
                            const PayloadCodec& codec, const std::vector<PayloadShare>& shares = {}) {
    return StepEncoder().encode(graph, bindings, codec, shares);
  }
  // The same step again, as a script's next one: fresh buffers, a new value, and (when `batch` is set) a new
  // host tensor in the copy's payload.
  StepGraph next_step(std::shared_ptr<Buffer>& a, std::shared_ptr<Buffer>& b, double value, const char* batch) {
    a = std::make_shared<Buffer>(vm_, 64);
    b = std::make_shared<Buffer>(vm_, 32);
    StepGraph g = graph_;
    for (auto& n : g.nodes()) {
      for (auto& t : n.inputs) t.buffer = t.buffer == a_ ? a : b;
      for (auto& t : n.outputs) t.buffer = t.buffer == a_ ? a : b;
    }
    g.nodes()[0].attrs[1] = StepValue{value};
    if (batch) g.nodes()[0].payload = std::make_shared<TextPayload>(batch);
    return g;
  }
  VirtualMemory vm_;
  std::shared_ptr<Buffer> a_, b_;
  StepGraph graph_;
  TextCodec codec_;
  std::map<uint64_t, std::shared_ptr<Buffer>> seen_;
};

TEST_F(StepCodecTest, NodesReferencesAndBindingsComeBackAsSent) {
  const StepWire back = decode(encode(graph_, {a_, nullptr, b_}, codec_));
  ASSERT_EQ(back.graph.size(), 3u);
  EXPECT_TRUE(back.withheld.empty());
  const Node& copy = back.graph.nodes()[0];
  EXPECT_EQ(op_name(copy.op), "aten::copy_");
  EXPECT_TRUE(copy.host_input);
  ASSERT_EQ(copy.attrs.size(), 4u);
  EXPECT_EQ(std::get<int64_t>(copy.attrs[0]), 3);
  EXPECT_EQ(std::get<StepValue>(copy.attrs[1]).value, 0.5);
  EXPECT_EQ(std::get<std::string>(copy.attrs[2]), "x");
  EXPECT_EQ(static_cast<const TextPayload&>(*copy.payload).text, "COPYBODY");
  const Node& relu = back.graph.nodes()[1];
  EXPECT_EQ(relu.outputs[0].offset, 2);
  EXPECT_EQ(relu.outputs[0].sizes, (Dims{2, 4}));
  // One buffer per id of the sender's: node 0's input and node 1's are the same buffer here too.
  EXPECT_EQ(copy.inputs[0].buffer, relu.inputs[0].buffer);
  EXPECT_EQ(copy.inputs[0].buffer->bytes(), 64u);
  EXPECT_EQ(back.graph.nodes()[2].payload, nullptr);
  ASSERT_EQ(back.bindings.size(), 3u);
  EXPECT_EQ(back.bindings[0], copy.inputs[0].buffer);
  EXPECT_EQ(back.bindings[1], nullptr);
  EXPECT_EQ(back.bindings[2], relu.outputs[0].buffer);
}

TEST_F(StepCodecTest, SharesWithholdPayloadsAndGiveTheCodecItsRows) {
  const std::vector<PayloadShare> shares{{PayloadShare::Kind::kRows, {2, 2, 4}}, {PayloadShare::Kind::kWithheld, {}},
                                         {PayloadShare::Kind::kWithheld, {}}};
  const std::string wire = encode(graph_, {a_, b_}, codec_, shares);
  EXPECT_EQ(wire.find("RELUBODY"), std::string::npos);  // withheld: not on the wire at all
  const StepWire back = decode(wire);
  EXPECT_EQ(back.withheld, (std::vector<uint32_t>{1}));  // node 2 has no payload to withhold
  EXPECT_EQ(static_cast<const TextPayload&>(*back.graph.nodes()[0].payload).text, "COPYBODY@2+2/4");
  EXPECT_EQ(back.graph.nodes()[1].payload, nullptr);
  EXPECT_THROW(encode(graph_, {a_, b_}, codec_, {shares[0]}), Error);  // shares for another graph
}

TEST_F(StepCodecTest, LaterStepsCarryOnlyWhatChanged) {
  StepEncoder encoder;
  StepDecoder decoder;
  const std::string first = encoder.encode(graph_, {a_, b_}, codec_);
  decode(first, &decoder);
  // Fresh buffers and a new value: of the nodes, only the host input goes again (the batch goes whole every
  // step, and neither side keeps it); then 2 ids and the value.
  std::shared_ptr<Buffer> a, b;
  StepGraph second = next_step(a, b, 0.25, nullptr);
  const std::string wire = encoder.encode(second, {a, b}, codec_);
  EXPECT_EQ(wire.find("RELUBODY"), std::string::npos);
  EXPECT_EQ(wire.find("aten::relu"), std::string::npos);
  EXPECT_EQ(wire.find("moreh::fill"), std::string::npos);
  EXPECT_NE(wire.find("COPYBODY"), std::string::npos);
  StepGraph copy_only;
  copy_only.append(graph_.nodes()[0]);
  const size_t copy_bytes = StepEncoder().encode(copy_only, {a_}, codec_).size();
  EXPECT_LT(wire.size(), copy_bytes + 32) << wire.size();  // + 4 (nodes) + 1 id + the value
  StepWire back = decode(wire, &decoder);
  ASSERT_EQ(back.graph.size(), 3u);
  EXPECT_EQ(back.bindings[0], seen_[a->id()]);
  EXPECT_EQ(back.bindings[1], seen_[b->id()]);
  EXPECT_EQ(back.graph.nodes()[0].inputs[0].buffer, seen_[a->id()]);
  EXPECT_EQ(back.graph.nodes()[1].outputs[0].buffer, seen_[b->id()]);
  EXPECT_EQ(back.graph.nodes()[1].outputs[0].offset, 2);
  EXPECT_EQ(std::get<StepValue>(back.graph.nodes()[0].attrs[1]).value, 0.25);
  EXPECT_EQ(static_cast<const TextPayload&>(*back.graph.nodes()[1].payload).text, "RELUBODY");
  // A new batch: the copy's node goes again, and only it.
  std::shared_ptr<Buffer> a3, b3;
  const StepGraph g3 = next_step(a3, b3, 0.125, "BATCH3");
  const std::string third = encoder.encode(g3, {a3, b3}, codec_);
  EXPECT_NE(third.find("BATCH3"), std::string::npos);
  EXPECT_EQ(third.find("RELUBODY"), std::string::npos);
  back = decode(third, &decoder);
  EXPECT_EQ(static_cast<const TextPayload&>(*back.graph.nodes()[0].payload).text, "BATCH3");
  EXPECT_EQ(std::get<StepValue>(back.graph.nodes()[0].attrs[1]).value, 0.125);
  // A recorded argument's new value (one byte of the relu's payload): only the bytes that changed go.
  std::shared_ptr<Buffer> a4, b4;
  StepGraph g4 = next_step(a4, b4, 0.125, "BATCH3");
  g4.nodes()[1].payload = std::make_shared<TextPayload>("RELUBODZ");
  const std::string fourth = encoder.encode(g4, {a4, b4}, codec_);
  EXPECT_EQ(fourth.find("RELUBOD"), std::string::npos);
  EXPECT_LT(fourth.size(), copy_bytes + 48) << fourth.size();  // the batch, and the relu's patch
  back = decode(fourth, &decoder);
  EXPECT_EQ(static_cast<const TextPayload&>(*back.graph.nodes()[1].payload).text, "RELUBODZ");
  EXPECT_EQ(static_cast<const TextPayload&>(*back.graph.nodes()[0].payload).text, "BATCH3");
  EXPECT_EQ(encoder.steps(), 4u);
}

TEST_F(StepCodecTest, AStepOfAnotherCopyOrATornOneLeavesTheWorkersCopyAsItWas) {
  StepEncoder encoder;
  StepDecoder decoder;
  decode(encoder.encode(graph_, {a_, b_}, codec_), &decoder);
  std::shared_ptr<Buffer> a, b, a3, b3;
  const StepGraph g2 = next_step(a, b, 0.25, "BATCH2"), g3 = next_step(a3, b3, 0.5, "BATCH2");
  const std::string second = encoder.encode(g2, {a, b}, codec_);
  const std::string third = encoder.encode(g3, {a3, b3}, codec_);
  // The worker missed the second step: the third is refused, by name.
  try {
    decode(third, &decoder);
    ADD_FAILURE() << "a step of another copy was decoded";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("changes to step 2 of this graph, but this worker holds step 1"),
              std::string::npos) << e.what();
  }
  // A torn second step changes nothing: the whole one, then the third, still decode.
  EXPECT_THROW(decode(second.substr(0, second.size() - 3), &decoder), ProtocolError);
  decode(second, &decoder);
  EXPECT_NE(third.find("BATCH2"), std::string::npos);  // the batch again: whole, as every step
  const StepWire back = decode(third, &decoder);
  EXPECT_EQ(static_cast<const TextPayload&>(*back.graph.nodes()[0].payload).text, "BATCH2");
  EXPECT_EQ(back.bindings[0], seen_[a3->id()]);
  // A node naming a buffer outside the bindings is not encoded, and the encoder's copy stays as it was.
  EXPECT_THROW(encoder.encode(graph_, {a_}, codec_), Error);
  std::shared_ptr<Buffer> a4, b4;
  StepGraph g4 = next_step(a4, b4, 1.0, "BATCH2");
  g4.nodes()[1].payload = std::make_shared<TextPayload>("RELUBODZ");
  const std::string patch = encoder.encode(g4, {a4, b4}, codec_);
  // Random flips of a step with a patch, on copies of the worker's copy: an error or a step, never a crash or
  // a write past a node.
  std::mt19937 rng(11);
  for (int i = 0; i < 2000; ++i) {
    std::string m = patch;
    for (int k = 0; k < 2; ++k) m[rng() % m.size()] = static_cast<char>(rng());
    StepDecoder copy = decoder;
    try {
      decode(m, &copy);
    } catch (const Error&) {
    }
  }
  EXPECT_EQ(static_cast<const TextPayload&>(*decode(patch, &decoder).graph.nodes()[1].payload).text, "RELUBODZ");
}

TEST_F(StepCodecTest, TornFlippedAndLyingStepsAreProtocolErrors) {
  const std::string wire = encode(graph_, {a_, b_}, codec_);
  for (size_t cut = 0; cut < wire.size(); ++cut) EXPECT_THROW(decode(wire.substr(0, cut)), ProtocolError) << cut;
  EXPECT_THROW(decode(wire + "x"), ProtocolError);
  // A payload flag that is neither absent, sent nor withheld.
  const size_t flag = wire.find("COPYBODY") + 8;
  std::string bad = wire;
  bad[flag] = 7;
  EXPECT_THROW(decode(bad), ProtocolError);
  // A codec that cannot read a payload.
  bad = wire;
  bad[wire.find("RELUBODY")] = '!';
  EXPECT_THROW(decode(bad), ProtocolError);
  // Random flips: an error or a step, never a crash or a read past the end.
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string m = wire;
    for (int k = 0; k < 3; ++k) m[rng() % m.size()] = static_cast<char>(rng());
    try {
      decode(m);
    } catch (const ProtocolError&) {
    } catch (const Error&) {
    }
  }
}

}  // namespace
}  // namespace moreh::runtime
