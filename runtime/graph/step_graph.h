// The lazy step graph: the ops a script issued since the last step boundary, over virtual buffers,
// in a torch-free form (an operator name, typed attributes, tensor references).
#pragma once
#include <boost/container/small_vector.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "runtime/memory/buffer.h"

namespace moreh::runtime {

using Dims = boost::container::small_vector<int64_t, 6>;

// A tensor as an op sees it: a window of a buffer.
struct TensorRef {
  std::shared_ptr<Buffer> buffer;
  int64_t offset = 0;  // in elements, like a storage offset
  Dims sizes, strides;
  int8_t dtype = 0;      // the backend's dtype code
  uint8_t itemsize = 0;  // bytes per element
};

// A non-tensor argument. Floating-point values are per-step data (a learning rate, a random seed):
// they are bound each step and left out of the graph hash, so a changing value does not recompile.
struct StepValue {
  double value = 0;
};
struct Seed {
  uint64_t value = 0;
};
using Attribute =
    std::variant<std::monostate, bool, int64_t, StepValue, Seed, std::string, std::vector<int64_t>, std::vector<double>>;

using OpId = uint32_t;
// Operator names ("aten::addmm.default") interned once per process.
OpId intern_op(std::string_view name);
const std::string& op_name(OpId id);

// What the recorder knows about an operator from its schema (torch's tags), for the scheduler's sharding
// rules; set when the recorder first meets the operator.
struct OpFacts {
  bool pointwise = false;  // elementwise over broadcast inputs (torch's `pointwise` tag)
  bool seeded = false;     // draws random numbers (`nondeterministic_seeded`)
};
void set_op_facts(OpId id, OpFacts facts);
OpFacts op_facts(OpId id);

// What the kernel provider needs to run a node; opaque to the runtime and the scheduler.
struct KernelPayload {
  virtual ~KernelPayload() = default;
};

struct Node {
  OpId op = 0;
  std::vector<Attribute> attrs;
  std::vector<TensorRef> inputs;   // every tensor argument, in argument order
  std::vector<TensorRef> outputs;  // fresh buffers this node produces
  boost::container::small_vector<uint16_t, 2> written;  // indices into inputs the node writes in place
  // Written inputs whose buffers held nothing before this node (torch.empty(...).fill_()): the plan
  // gives them memory. Filled in by the engine when it records the node.
  boost::container::small_vector<uint16_t, 1> initializes;
  // The node copies host data into its written input (`x.to("moreh")`): that buffer is one of the
  // step's data inputs, whose leading dimension is the batch (DESIGN.md §2.5, analysis).
  bool host_input = false;
  // Where inputs, attributes and outputs sit in the operator's schema: input i is argument input_args[i],
  // attribute j is argument attr_args[j], output k is return output_rets[k]. The sharding rules read
  // arguments by their schema position.
  boost::container::small_vector<uint8_t, 4> input_args, attr_args, output_rets;
  std::shared_ptr<const KernelPayload> payload;

  // The attribute for schema argument `arg` (nullptr when that argument is a tensor or out of range).
  const Attribute* attr_of_arg(int arg) const;
  // The first input that is schema argument `arg`, or -1.
  int input_of_arg(int arg) const;
  // The output that is schema return `ret`, or -1 (an undefined result has no output).
  int output_of_ret(int ret) const;
};

// An op over lists of tensors (torch's _foreach_ ops): their length, and each input's and output's place in
// them (-1: a tensor argument beside the lists, such as the clipping factor of _foreach_mul_). An op with no
// list longer than one has length 0.
struct ListElements {
  size_t length = 0;
  std::vector<int> inputs, outputs;
};
ListElements list_elements(const Node& node);

class StepGraph {
 public:
  void append(Node node) { nodes_.push_back(std::move(node)); }
  size_t size() const { return nodes_.size(); }
  bool empty() const { return nodes_.empty(); }
  const std::vector<Node>& nodes() const { return nodes_; }
  std::vector<Node>& nodes() { return nodes_; }

 private:
  std::vector<Node> nodes_;
};

}  // namespace moreh::runtime
