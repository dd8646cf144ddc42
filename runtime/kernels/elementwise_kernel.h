// A fused elementwise kernel as a small IR: tensor inputs, scalar parameters, constants and a list of ops
// over earlier values, some of them written out. The IR is the kernel's structure only; sizes, strides,
// pointers and scalar values come at launch (ElementwiseArguments), so one compiled kernel serves every
// size with the same structure: key() and hash() never depend on them. source() generates the CUDA C
// (runtime/kernels/elementwise_codegen.cpp); runtime/kernels/elementwise_reference.h evaluates the same IR on the host.
//
// Types are explicit: binary ops take two operands of one type (a caller following torch's promotion rules
// inserts casts). float16 and bfloat16 values are computed on in float and rounded to their type after
// every op, so a chain gives the bits torch's eager kernels give op by op; declare an intermediate float32
// (cast) to keep it unrounded.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "runtime/base/data_type.h"

namespace moreh::runtime {

// Strided inputs index the output's shape with up to this many dimensions.
inline constexpr int kElementwiseMaxRank = 8;
// Threads per block the generated kernels are compiled for (__launch_bounds__); launch with at most this.
inline constexpr int kElementwiseBlockSize = 256;

enum class ElementwiseOp : uint8_t {
  // leaves
  kInput,     // a tensor input, read at the output's element
  kScalar,    // a kernel parameter, the same for every element
  kConstant,  // a literal compiled into the kernel (part of the key)
  // unary; kNeg, kAbs, kRelu on numbers, the rest on floating types
  kNeg, kAbs, kExp, kLog, kSqrt, kRsqrt, kTanh, kSigmoid, kRelu, kGeluErf, kGeluTanh, kSilu, kErf,
  kCast,  // to the node's type
  // binary, operands of one type; kDiv on floating types; kMaximum/kMinimum propagate NaN
  kAdd, kSub, kMul, kDiv, kMaximum, kMinimum,
  kPow,  // floating base; exponent a floating scalar or constant
  // comparisons of one type, giving bool
  kLt, kLe, kGt, kGe, kEq, kNe,
  kWhere,  // where(bool cond, a, b)
};

std::string_view name_of(ElementwiseOp op);
// How many operands an op reads (0 for leaves).
int arity(ElementwiseOp op);

// How a tensor input is read relative to the output's elements.
struct InputLayout {
  // false: the output's shape, contiguous (read at the output's linear index).
  // true: read through strides over the output's shape, passed at launch (any view, and broadcasts).
  bool strided = false;
  // Strided: bit d is set when the input's stride over output dimension d is 0 (broadcast). Part of the
  // key, so a kernel specializes on which dimensions broadcast but not on the sizes.
  uint32_t broadcast = 0;

  static InputLayout contiguous() { return {}; }
  static InputLayout with_strides(uint32_t broadcast_mask) { return {true, broadcast_mask}; }
  // From an input's strides over the output's `sizes` (elements, 0 for broadcast dimensions):
  // contiguous when they are the row-major strides of `sizes` (dimensions of size 1 may have any
  // stride), else strided with the mask of the zero strides.
  static InputLayout of(std::span<const int64_t> sizes, std::span<const int64_t> strides);
  bool operator==(const InputLayout&) const = default;
};

struct ElementwiseInput {
  DataType type;
  InputLayout layout;
};

// A value of the kernel: the index of the node that computes it.
using ElementwiseValue = uint32_t;

struct ElementwiseNode {
  ElementwiseOp op;
  DataType type;                                // the value's type
  std::array<ElementwiseValue, 3> operands{};   // earlier values, arity(op) of them
  uint32_t index = 0;                           // kInput: which input; kScalar: which scalar
  double real = 0;                              // kConstant of a floating type, rounded to it
  int64_t integer = 0;                          // kConstant of an integer type or bool (0/1)
};

// A scalar parameter's value at launch: converted to the scalar's type (and rounded for float16/bfloat16).
using ElementwiseScalar = std::variant<double, int64_t>;

// What one launch needs besides the kernel's structure. Pointers are device pointers for a GPU launch and
// host pointers for the reference evaluator. An output may be the very buffer of a contiguous input with the
// same element size (in place: each element is read before it is written); no other overlap is allowed.
struct ElementwiseArguments {
  uint64_t count = 0;                          // elements of every output
  std::vector<int64_t> sizes;                  // the output's shape; strided kernels only: rank() sizes, product count
  std::vector<const void*> inputs;             // one per input, in order
  std::vector<std::vector<int64_t>> strides;   // one per input: strided inputs' strides over `sizes` (elements, >= 0), else empty
  std::vector<ElementwiseScalar> scalars;      // one per scalar, in order
  std::vector<void*> outputs;                  // one per output: `count` contiguous elements
};

// A kernel's parameters in cuLaunchKernel's form (an array of pointers to each parameter's bytes). Owns the
// bytes; moving keeps the pointers valid.
class KernelParameters {
 public:
  KernelParameters() = default;
  KernelParameters(KernelParameters&&) = default;
  KernelParameters& operator=(KernelParameters&&) = default;
  KernelParameters(const KernelParameters&) = delete;
  KernelParameters& operator=(const KernelParameters&) = delete;

  // Appends one parameter (copied, 8-byte aligned).
  void add(const void* bytes, size_t size);
  template <typename T>
  void add(const T& value) {
    add(&value, sizeof(T));
  }
  // Ready for cuLaunchKernel's kernelParams (valid until the next add or destruction).
  void** pointers();
  size_t count() const { return offsets_.size(); }
  size_t size_of(size_t i) const { return sizes_.at(i); }
  const void* data_of(size_t i) const { return storage_.data() + offsets_.at(i) / 8; }

 private:
  std::vector<uint64_t> storage_;
  std::vector<size_t> offsets_, sizes_;
  std::vector<void*> pointers_;
};

class ElementwiseKernel {
 public:
  // `rank`: dimensions of the output's shape as strided inputs see it (0 to kElementwiseMaxRank); a kernel
  // whose inputs are all contiguous ignores it (one linear index, any shape).
  explicit ElementwiseKernel(int rank = 0);

  // Builders; each returns the new value. Type errors throw std::invalid_argument.
  ElementwiseValue input(DataType type, InputLayout layout = InputLayout::contiguous());
  ElementwiseValue scalar(DataType type);
  // A literal of `type`: floating types take `value` rounded to the type, integers and bool its truncation.
  ElementwiseValue constant(DataType type, double value);
  ElementwiseValue integer_constant(DataType type, int64_t value);
  ElementwiseValue unary(ElementwiseOp op, ElementwiseValue x);
  ElementwiseValue binary(ElementwiseOp op, ElementwiseValue a, ElementwiseValue b);
  ElementwiseValue pow(ElementwiseValue base, ElementwiseValue exponent) { return binary(ElementwiseOp::kPow, base, exponent); }
  ElementwiseValue where(ElementwiseValue condition, ElementwiseValue a, ElementwiseValue b);
  ElementwiseValue cast(ElementwiseValue x, DataType type);
  // Writes `value` to the next output (contiguous, converted to `type` when that differs). Returns the
  // output's index.
  size_t output(ElementwiseValue value);
  size_t output(ElementwiseValue value, DataType type);

  // The rank strided inputs index (0 when every input is contiguous).
  int rank() const { return contiguous() ? 0 : rank_; }
  // No strided input: the kernel walks one linear index over every input and output.
  bool contiguous() const;
  const std::vector<ElementwiseNode>& nodes() const { return nodes_; }
  const std::vector<ElementwiseInput>& inputs() const { return inputs_; }
  const std::vector<DataType>& scalars() const { return scalars_; }
  // The values written, output i from outputs()[i] (its type is the node's).
  const std::vector<ElementwiseValue>& outputs() const { return outputs_; }
  DataType type_of(ElementwiseValue value) const { return nodes_.at(value).type; }

  // The structure as text: ops, types, constants, layouts, rank; never sizes, strides or pointers. Built
  // on each call until freeze() (hold on to hash() where it is needed often).
  std::string key() const;
  // 64-bit FNV-1a of key().
  uint64_t hash() const;
  // Fixes the structure (a kernel a plan launches every step): key() and hash() are computed once, and the
  // builders throw std::logic_error from here on.
  void freeze();
  bool frozen() const { return frozen_; }
  // A frozen kernel's key, without building or copying it (for per-launch lookups); empty before freeze().
  const std::string& frozen_key() const { return frozen_key_; }
  // "moreh_ew_<16 hex digits of hash()>": the generated kernel's extern "C" name.
  std::string function_name() const;
  // The CUDA C source of the kernel (no headers needed): an extern "C" __global__ function named
  // function_name() taking the parameters parameters() packs, looping grid-stride over count elements.
  std::string source() const;

  // Throws std::invalid_argument unless `args` fit this kernel (counts, ranks, sizes, strides).
  void check(const ElementwiseArguments& args) const;
  // The launch parameters, in the generated function's order: input pointers, scalars, output pointers,
  // count (unsigned long long), narrow (int: 1 when 32-bit indices suffice), then for strided kernels the
  // sizes and each strided input's strides (rank() long longs each). Checks `args` first.
  KernelParameters parameters(const ElementwiseArguments& args) const;
  // Whether every index and offset of this launch fits 32 bits (the generated code then uses them).
  bool narrow_indexing(const ElementwiseArguments& args) const;

 private:
  ElementwiseValue add_node(ElementwiseNode node);
  void require_value(ElementwiseValue v) const;

  std::string build_key() const;

  int rank_;
  bool frozen_ = false;
  std::string frozen_key_;
  uint64_t frozen_hash_ = 0;
  std::vector<ElementwiseNode> nodes_;
  std::vector<ElementwiseInput> inputs_;
  std::vector<DataType> scalars_;
  std::vector<ElementwiseValue> outputs_;
};

// Short names used in keys and generated code: "f32", "f64", "bf16", "f16", "i64", "i32", "b8".
std::string_view short_name_of(DataType type);

}  // namespace moreh::runtime
