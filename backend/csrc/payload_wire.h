// Recorded ATen calls on the wire (runtime/worker/step_codec.h's PayloadCodec): the operator by name, its
// recorded arguments (numbers, lists, host tensors by value, moreh tensors as placeholders), and where the
// node's inputs and outputs go, so that a worker's host devices run the call as this process would. A host
// tensor copied into the batch travels as the rows the worker's devices take.
#pragma once
#include "runtime/worker/step_codec.h"

namespace moreh::backend {

class AtenPayloadCodec final : public runtime::PayloadCodec {
 public:
  // ConfigError for an argument of a kind that does not travel yet (named).
  std::string encode(const runtime::Node& node, const runtime::RowWindow* rows = nullptr) const override;
  std::shared_ptr<const runtime::KernelPayload> decode(const runtime::Node& node, std::string_view bytes) const override;
};

const runtime::PayloadCodec& aten_payload_codec();

}  // namespace moreh::backend
