// A step on the wire, for the workers that run its programs: the step graph's nodes (operator, attributes,
// tensor references by binding slot, the kernel payload through the backend's codec) and the slot bindings,
// as changes to the worker's copy of the plan's graph. Each worker gets the payloads of the nodes it runs
// only, and of the batch only its rows (payload_shares.h). The plan travels apart, once (plan_codec.h).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/graph/step_graph.h"

namespace moreh::runtime {

// Rows [begin, begin + count) of a batch of `whole` rows.
struct RowWindow {
  int64_t begin = 0, count = 0, whole = 0;
};

// What one worker receives of a node's kernel payload.
struct PayloadShare {
  enum class Kind : uint8_t {
    kWhole,     // the payload as recorded
    kWithheld,  // none: the worker's programs do not run the node
    kRows,      // a host tensor copied into the batch (Node::host_input) is cut to `rows`
  };
  Kind kind = Kind::kWhole;
  RowWindow rows{};
};

// Turns kernel payloads into bytes and back; the backend implements it (runtime/ cannot see them).
class PayloadCodec {
 public:
  virtual ~PayloadCodec() = default;
  // `rows`: a host_input node's host tensors of rows->whole rows travel as those rows only, and the decoded
  // payload's launches read them there (a launch reading rows outside them is an error, not a wrong value).
  virtual std::string encode(const Node& node, const RowWindow* rows = nullptr) const = 0;
  // ProtocolError for bytes it cannot read; the node's other fields are already decoded.
  virtual std::shared_ptr<const KernelPayload> decode(const Node& node, std::string_view bytes) const = 0;
};

// The buffer a worker holds for the client's buffer `id` of `bytes` bytes (made on first sight).
using BufferResolver = std::function<std::shared_ptr<Buffer>(uint64_t id, uint64_t bytes)>;

struct StepWire {
  StepGraph graph;
  std::vector<std::shared_ptr<Buffer>> bindings;  // slot -> buffer
  std::vector<uint32_t> withheld;                 // nodes sent without their payload, ascending
};

// The client's side of one worker's copy of one plan's step graph. The first step sends every node; later
// steps send only the nodes whose wire form changed (a host input's new batch, a recorded argument's new
// value), each whole or as the bytes that changed, the bindings' buffer ids as differences from the last
// step's, and the step's values (StepValue, Seed). A host input (the batch) goes whole every step: neither
// side keeps a copy of it.
// Nodes name buffers by their slot in the bindings, so a node whose buffers are fresh each step is unchanged.
class StepEncoder {
 public:
  // `shares`: per node, what of its payload goes (empty: every payload whole). Every buffer a node names must
  // be one of `bindings`.
  std::string encode(const StepGraph& graph, const std::vector<std::shared_ptr<Buffer>>& bindings,
                     const PayloadCodec& codec, const std::vector<PayloadShare>& shares = {});
  uint64_t steps() const { return steps_; }

 private:
  std::vector<std::string> nodes_;     // each node's wire form as last sent
  std::vector<uint64_t> ids_, sizes_;  // the bindings' as last sent
  uint64_t steps_ = 0;
};

// The worker's side: what it holds of the graph between steps, kept with the plan and forgotten with it.
class StepDecoder {
 public:
  // ProtocolError for a malformed payload, an unknown attribute kind, a size past its bound, a slot past the
  // bindings, or changes to another copy than this one (a step of the encoder's this decoder did not see).
  // A step that fails leaves the copy as it was.
  StepWire decode(std::string_view payload, const PayloadCodec& codec, const BufferResolver& resolve);

 private:
  struct Held {
    std::string wire;            // as last sent (a patch applies to it)
    Node node;                   // buffers unset, values as last sent
    std::vector<uint32_t> refs;  // each input's then output's binding slot + 1 (0: no buffer)
    bool withheld = false;
  };
  std::vector<Held> nodes_;
  std::vector<uint64_t> ids_, sizes_;
  uint64_t steps_ = 0;
};

}  // namespace moreh::runtime
