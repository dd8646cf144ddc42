// Steps through the wire with a stand-in payload codec: nodes, references and bindings come back as sent; a
// withheld payload is named, a host input's rows reach the codec; torn, flipped or lying steps are ProtocolErrors.
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
  StepWire decode(std::string_view wire) {
    return decode_step(wire, codec_, [&](uint64_t id, uint64_t bytes) {
      auto& b = seen_[id];
      if (!b) b = std::make_shared<Buffer>(vm_, bytes);
      return b;
    });
  }
  VirtualMemory vm_;
  std::shared_ptr<Buffer> a_, b_;
  StepGraph graph_;
  TextCodec codec_;
  std::map<uint64_t, std::shared_ptr<Buffer>> seen_;
};

TEST_F(StepCodecTest, NodesReferencesAndBindingsComeBackAsSent) {
  const StepWire back = decode(encode_step(graph_, {a_, nullptr, b_}, codec_));
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
  const std::string wire = encode_step(graph_, {}, codec_, shares);
  EXPECT_EQ(wire.find("RELUBODY"), std::string::npos);  // withheld: not on the wire at all
  const StepWire back = decode(wire);
  EXPECT_EQ(back.withheld, (std::vector<uint32_t>{1}));  // node 2 has no payload to withhold
  EXPECT_EQ(static_cast<const TextPayload&>(*back.graph.nodes()[0].payload).text, "COPYBODY@2+2/4");
  EXPECT_EQ(back.graph.nodes()[1].payload, nullptr);
  EXPECT_THROW(encode_step(graph_, {}, codec_, {shares[0]}), Error);  // shares for another graph
}

TEST_F(StepCodecTest, TornFlippedAndLyingStepsAreProtocolErrors) {
  const std::string wire = encode_step(graph_, {a_, b_}, codec_);
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
