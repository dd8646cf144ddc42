// A step on the wire, for the workers that run its programs: the step graph's nodes (operator, attributes,
// tensor references by buffer id, the kernel payload through the backend's codec) and the slot bindings.
// The plan travels apart, once per graph hash (plan_codec.h).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/graph/step_graph.h"

namespace moreh::runtime {

// Turns kernel payloads into bytes and back; the backend implements it (runtime/ cannot see them).
class PayloadCodec {
 public:
  virtual ~PayloadCodec() = default;
  virtual std::string encode(const Node& node) const = 0;
  // ProtocolError for bytes it cannot read; the node's other fields are already decoded.
  virtual std::shared_ptr<const KernelPayload> decode(const Node& node, std::string_view bytes) const = 0;
};

// The buffer a worker holds for the client's buffer `id` of `bytes` bytes (made on first sight).
using BufferResolver = std::function<std::shared_ptr<Buffer>(uint64_t id, uint64_t bytes)>;

struct StepWire {
  StepGraph graph;
  std::vector<std::shared_ptr<Buffer>> bindings;  // slot -> buffer
};

std::string encode_step(const StepGraph& graph, const std::vector<std::shared_ptr<Buffer>>& bindings,
                        const PayloadCodec& codec);
// ProtocolError for a malformed payload, an unknown attribute kind, or a size past its bound.
StepWire decode_step(std::string_view payload, const PayloadCodec& codec, const BufferResolver& resolve);

}  // namespace moreh::runtime
