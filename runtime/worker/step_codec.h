// A step on the wire, for the workers that run its programs: the step graph's nodes (operator, attributes,
// tensor references by buffer id, the kernel payload through the backend's codec) and the slot bindings.
// Each worker gets the payloads of the nodes it runs only, and of the batch only its rows (payload_shares.h).
// The plan travels apart, once per plan (plan_codec.h).
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

// `shares`: per node, what of its payload goes (empty: every payload whole).
std::string encode_step(const StepGraph& graph, const std::vector<std::shared_ptr<Buffer>>& bindings,
                        const PayloadCodec& codec, const std::vector<PayloadShare>& shares = {});
// ProtocolError for a malformed payload, an unknown attribute kind, or a size past its bound.
StepWire decode_step(std::string_view payload, const PayloadCodec& codec, const BufferResolver& resolve);

}  // namespace moreh::runtime
