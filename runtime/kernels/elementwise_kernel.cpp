#include "runtime/kernels/elementwise_kernel.h"

#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "runtime/base/low_precision_float.h"

namespace moreh::runtime {
namespace {

bool is_unary(ElementwiseOp op) { return op >= ElementwiseOp::kNeg && op <= ElementwiseOp::kErf; }
bool is_binary(ElementwiseOp op) { return op >= ElementwiseOp::kAdd && op <= ElementwiseOp::kNe; }
bool is_comparison(ElementwiseOp op) { return op >= ElementwiseOp::kLt && op <= ElementwiseOp::kNe; }

[[noreturn]] void type_error(ElementwiseOp op, DataType type) {
  throw std::invalid_argument(fmt::format("elementwise {} does not take {}", name_of(op), name_of(type)));
}

// A floating value rounded to `type` (float32, float16, bfloat16 or float64).
double round_to(DataType type, double value) {
  switch (type) {
    case DataType::kFloat32: return static_cast<float>(value);
    case DataType::kBFloat16: return bfloat16_to_float(float_to_bfloat16(static_cast<float>(value)));
    case DataType::kFloat16: return float16_to_float(float_to_float16(static_cast<float>(value)));
    default: return value;
  }
}

// An integer value wrapped to `type` (int64, int32 or bool as 0/1).
int64_t wrap_to(DataType type, int64_t value) {
  if (type == DataType::kInt32) return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(value)));
  if (type == DataType::kBool) return value != 0;
  return value;
}

uint64_t fnv1a(std::string_view text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace

std::string_view name_of(ElementwiseOp op) {
  switch (op) {
    case ElementwiseOp::kInput: return "input";
    case ElementwiseOp::kScalar: return "scalar";
    case ElementwiseOp::kConstant: return "constant";
    case ElementwiseOp::kNeg: return "neg";
    case ElementwiseOp::kAbs: return "abs";
    case ElementwiseOp::kExp: return "exp";
    case ElementwiseOp::kLog: return "log";
    case ElementwiseOp::kSqrt: return "sqrt";
    case ElementwiseOp::kRsqrt: return "rsqrt";
    case ElementwiseOp::kTanh: return "tanh";
    case ElementwiseOp::kSigmoid: return "sigmoid";
    case ElementwiseOp::kRelu: return "relu";
    case ElementwiseOp::kGeluErf: return "gelu";
    case ElementwiseOp::kGeluTanh: return "gelu_tanh";
    case ElementwiseOp::kSilu: return "silu";
    case ElementwiseOp::kErf: return "erf";
    case ElementwiseOp::kCast: return "cast";
    case ElementwiseOp::kAdd: return "add";
    case ElementwiseOp::kSub: return "sub";
    case ElementwiseOp::kMul: return "mul";
    case ElementwiseOp::kDiv: return "div";
    case ElementwiseOp::kMaximum: return "maximum";
    case ElementwiseOp::kMinimum: return "minimum";
    case ElementwiseOp::kPow: return "pow";
    case ElementwiseOp::kLt: return "lt";
    case ElementwiseOp::kLe: return "le";
    case ElementwiseOp::kGt: return "gt";
    case ElementwiseOp::kGe: return "ge";
    case ElementwiseOp::kEq: return "eq";
    case ElementwiseOp::kNe: return "ne";
    case ElementwiseOp::kWhere: return "where";
  }
  return "?";
}

int arity(ElementwiseOp op) {
  if (op == ElementwiseOp::kWhere) return 3;
  if (is_binary(op)) return 2;
  if (is_unary(op) || op == ElementwiseOp::kCast) return 1;
  return 0;
}

std::string_view short_name_of(DataType type) {
  switch (type) {
    case DataType::kFloat32: return "f32";
    case DataType::kFloat64: return "f64";
    case DataType::kBFloat16: return "bf16";
    case DataType::kFloat16: return "f16";
    case DataType::kInt64: return "i64";
    case DataType::kInt32: return "i32";
    case DataType::kBool: return "b8";
  }
  return "?";
}

InputLayout InputLayout::of(std::span<const int64_t> sizes, std::span<const int64_t> strides) {
  if (sizes.size() != strides.size()) {
    throw std::invalid_argument(fmt::format("{} strides for {} dimensions", strides.size(), sizes.size()));
  }
  bool contiguous = true;
  int64_t expected = 1;
  for (size_t d = sizes.size(); d-- > 0;) {
    if (sizes[d] == 0) return InputLayout::contiguous();  // nothing is read
    if (sizes[d] != 1 && strides[d] != expected) contiguous = false;
    expected *= sizes[d];
  }
  if (contiguous) return InputLayout::contiguous();
  uint32_t mask = 0;
  for (size_t d = 0; d < strides.size(); ++d) {
    if (strides[d] == 0) mask |= 1u << d;
  }
  return InputLayout::with_strides(mask);
}

void KernelParameters::add(const void* bytes, size_t size) {
  const size_t offset = storage_.size() * 8;
  storage_.resize(storage_.size() + (size + 7) / 8, 0);
  std::memcpy(reinterpret_cast<unsigned char*>(storage_.data()) + offset, bytes, size);
  offsets_.push_back(offset);
  sizes_.push_back(size);
}

void** KernelParameters::pointers() {
  pointers_.clear();
  for (size_t offset : offsets_) pointers_.push_back(reinterpret_cast<unsigned char*>(storage_.data()) + offset);
  return pointers_.data();
}

ElementwiseKernel::ElementwiseKernel(int rank) : rank_(rank) {
  if (rank < 0 || rank > kElementwiseMaxRank) {
    throw std::invalid_argument(fmt::format("elementwise kernel rank {} (0 to {})", rank, kElementwiseMaxRank));
  }
}

ElementwiseValue ElementwiseKernel::add_node(ElementwiseNode node) {
  if (frozen_) throw std::logic_error("a frozen elementwise kernel takes no more nodes");
  nodes_.push_back(node);
  return static_cast<ElementwiseValue>(nodes_.size() - 1);
}

void ElementwiseKernel::require_value(ElementwiseValue v) const {
  if (v >= nodes_.size()) throw std::invalid_argument(fmt::format("elementwise value {} does not exist", v));
}

bool ElementwiseKernel::contiguous() const {
  for (const ElementwiseInput& in : inputs_) {
    if (in.layout.strided) return false;
  }
  return true;
}

ElementwiseValue ElementwiseKernel::input(DataType type, InputLayout layout) {
  if (frozen_) throw std::logic_error("a frozen elementwise kernel takes no more inputs");
  if (layout.strided) {
    if (rank_ == 0) throw std::invalid_argument("a strided elementwise input needs a kernel of rank >= 1");
    if (rank_ < 32 && (layout.broadcast >> rank_) != 0) {
      throw std::invalid_argument(fmt::format("broadcast mask {:#x} exceeds rank {}", layout.broadcast, rank_));
    }
  } else {
    layout.broadcast = 0;
  }
  ElementwiseNode node{ElementwiseOp::kInput, type};
  node.index = static_cast<uint32_t>(inputs_.size());
  inputs_.push_back({type, layout});
  return add_node(node);
}

ElementwiseValue ElementwiseKernel::scalar(DataType type) {
  if (frozen_) throw std::logic_error("a frozen elementwise kernel takes no more scalars");
  ElementwiseNode node{ElementwiseOp::kScalar, type};
  node.index = static_cast<uint32_t>(scalars_.size());
  scalars_.push_back(type);
  return add_node(node);
}

ElementwiseValue ElementwiseKernel::constant(DataType type, double value) {
  if (!is_floating_point(type)) {
    if (!std::isfinite(value) || std::fabs(value) >= 9.2e18) {
      throw std::invalid_argument(fmt::format("constant {} does not fit {}", value, name_of(type)));
    }
    return integer_constant(type, static_cast<int64_t>(value));
  }
  ElementwiseNode node{ElementwiseOp::kConstant, type};
  node.real = round_to(type, value);
  return add_node(node);
}

ElementwiseValue ElementwiseKernel::integer_constant(DataType type, int64_t value) {
  if (is_floating_point(type)) return constant(type, static_cast<double>(value));
  ElementwiseNode node{ElementwiseOp::kConstant, type};
  node.integer = wrap_to(type, value);
  return add_node(node);
}

ElementwiseValue ElementwiseKernel::unary(ElementwiseOp op, ElementwiseValue x) {
  require_value(x);
  if (!is_unary(op)) throw std::invalid_argument(fmt::format("{} is not a unary elementwise op", name_of(op)));
  const DataType t = type_of(x);
  const bool numeric_op = op == ElementwiseOp::kNeg || op == ElementwiseOp::kAbs || op == ElementwiseOp::kRelu;
  if (numeric_op ? t == DataType::kBool : !is_floating_point(t)) type_error(op, t);
  return add_node({op, t, {x}});
}

ElementwiseValue ElementwiseKernel::binary(ElementwiseOp op, ElementwiseValue a, ElementwiseValue b) {
  require_value(a);
  require_value(b);
  if (!is_binary(op)) throw std::invalid_argument(fmt::format("{} is not a binary elementwise op", name_of(op)));
  const DataType ta = type_of(a), tb = type_of(b);
  if (op == ElementwiseOp::kPow) {
    if (!is_floating_point(ta)) type_error(op, ta);
    const ElementwiseOp e = nodes_[b].op;
    if ((e != ElementwiseOp::kScalar && e != ElementwiseOp::kConstant) || !is_floating_point(tb)) {
      throw std::invalid_argument("elementwise pow takes a floating scalar or constant exponent");
    }
    return add_node({op, ta, {a, b}});
  }
  if (ta != tb) {
    throw std::invalid_argument(
        fmt::format("elementwise {} of {} and {} (cast one operand first)", name_of(op), name_of(ta), name_of(tb)));
  }
  if (is_comparison(op)) return add_node({op, DataType::kBool, {a, b}});
  if (op == ElementwiseOp::kDiv && !is_floating_point(ta)) type_error(op, ta);
  if ((op == ElementwiseOp::kAdd || op == ElementwiseOp::kSub || op == ElementwiseOp::kMul) && ta == DataType::kBool) {
    type_error(op, ta);
  }
  return add_node({op, ta, {a, b}});
}

ElementwiseValue ElementwiseKernel::where(ElementwiseValue condition, ElementwiseValue a, ElementwiseValue b) {
  require_value(condition);
  require_value(a);
  require_value(b);
  if (type_of(condition) != DataType::kBool) {
    throw std::invalid_argument(fmt::format("elementwise where's condition is {}, not bool", name_of(type_of(condition))));
  }
  if (type_of(a) != type_of(b)) {
    throw std::invalid_argument(fmt::format("elementwise where of {} and {}", name_of(type_of(a)), name_of(type_of(b))));
  }
  return add_node({ElementwiseOp::kWhere, type_of(a), {condition, a, b}});
}

ElementwiseValue ElementwiseKernel::cast(ElementwiseValue x, DataType type) {
  require_value(x);
  if (type_of(x) == type) return x;
  return add_node({ElementwiseOp::kCast, type, {x}});
}

size_t ElementwiseKernel::output(ElementwiseValue value) {
  require_value(value);
  if (frozen_) throw std::logic_error("a frozen elementwise kernel takes no more outputs");
  outputs_.push_back(value);
  return outputs_.size() - 1;
}

size_t ElementwiseKernel::output(ElementwiseValue value, DataType type) {
  require_value(value);
  return output(type_of(value) == type ? value : cast(value, type));
}

std::string ElementwiseKernel::key() const { return frozen_ ? frozen_key_ : build_key(); }

void ElementwiseKernel::freeze() {
  if (frozen_) return;
  frozen_key_ = build_key();
  frozen_hash_ = fnv1a(frozen_key_);
  frozen_ = true;
}

std::string ElementwiseKernel::build_key() const {
  std::string k = fmt::format("ew1|r{}|", rank());
  for (const ElementwiseNode& n : nodes_) {
    switch (n.op) {
      case ElementwiseOp::kInput: {
        const InputLayout& l = inputs_[n.index].layout;
        k += l.strided ? fmt::format("in{}:{}:s{:x};", n.index, short_name_of(n.type), l.broadcast)
                       : fmt::format("in{}:{}:c;", n.index, short_name_of(n.type));
        break;
      }
      case ElementwiseOp::kScalar: k += fmt::format("sc{}:{};", n.index, short_name_of(n.type)); break;
      case ElementwiseOp::kConstant:
        k += is_floating_point(n.type)
                 ? fmt::format("k:{}:{:x};", short_name_of(n.type), std::bit_cast<uint64_t>(n.real))
                 : fmt::format("k:{}:{};", short_name_of(n.type), n.integer);
        break;
      default: {
        k += fmt::format("{}:{}(", name_of(n.op), short_name_of(n.type));
        for (int i = 0; i < arity(n.op); ++i) k += fmt::format("{}{}", i ? "," : "", n.operands[i]);
        k += ");";
      }
    }
  }
  k += "|out:";
  for (size_t i = 0; i < outputs_.size(); ++i) k += fmt::format("{}{}", i ? "," : "", outputs_[i]);
  return k;
}

uint64_t ElementwiseKernel::hash() const { return frozen_ ? frozen_hash_ : fnv1a(build_key()); }

std::string ElementwiseKernel::function_name() const { return fmt::format("moreh_ew_{:016x}", hash()); }

void ElementwiseKernel::check(const ElementwiseArguments& args) const {
  auto count_error = [](std::string_view what, size_t given, size_t expected) {
    throw std::invalid_argument(fmt::format("elementwise kernel takes {} {}, given {}", expected, what, given));
  };
  if (args.inputs.size() != inputs_.size()) count_error("inputs", args.inputs.size(), inputs_.size());
  if (args.scalars.size() != scalars_.size()) count_error("scalars", args.scalars.size(), scalars_.size());
  if (args.outputs.size() != outputs_.size()) count_error("outputs", args.outputs.size(), outputs_.size());
  if (!args.strides.empty() && args.strides.size() != inputs_.size()) {
    count_error("stride lists", args.strides.size(), inputs_.size());
  }
  const int r = rank();
  if (r > 0) {
    if (args.sizes.size() != static_cast<size_t>(r)) count_error("sizes", args.sizes.size(), r);
    uint64_t product = 1;
    for (int64_t s : args.sizes) {
      if (s < 0) throw std::invalid_argument(fmt::format("elementwise size {} is negative", s));
      product *= static_cast<uint64_t>(s);
    }
    if (product != args.count) {
      throw std::invalid_argument(fmt::format("elementwise sizes hold {} elements, count is {}", product, args.count));
    }
  }
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const InputLayout& l = inputs_[i].layout;
    const std::vector<int64_t> none;
    const std::vector<int64_t>& st = args.strides.empty() ? none : args.strides[i];
    if (!l.strided) {
      if (!st.empty()) throw std::invalid_argument(fmt::format("elementwise input {} is contiguous but has strides", i));
      continue;
    }
    if (st.size() != static_cast<size_t>(r)) {
      throw std::invalid_argument(fmt::format("elementwise input {} has {} strides for rank {}", i, st.size(), r));
    }
    for (int d = 0; d < r; ++d) {
      if (st[d] < 0) throw std::invalid_argument(fmt::format("elementwise input {} has a negative stride", i));
      if ((l.broadcast >> d & 1u) && st[d] != 0) {
        throw std::invalid_argument(fmt::format("elementwise input {} broadcasts dimension {} but its stride is {}", i, d, st[d]));
      }
    }
  }
  for (size_t i = 0; i < scalars_.size(); ++i) {
    const DataType t = scalars_[i];
    if (is_floating_point(t) || t == DataType::kBool || !std::holds_alternative<double>(args.scalars[i])) continue;
    const double real = std::get<double>(args.scalars[i]);
    if (!std::isfinite(real) || std::fabs(real) >= 9.2e18) {
      throw std::invalid_argument(fmt::format("elementwise scalar {} is {}, which {} cannot hold", i, real, name_of(t)));
    }
  }
  if (args.count > 0) {
    for (size_t i = 0; i < args.inputs.size(); ++i) {
      if (!args.inputs[i]) throw std::invalid_argument(fmt::format("elementwise input {} is null", i));
    }
    for (size_t i = 0; i < args.outputs.size(); ++i) {
      if (!args.outputs[i]) throw std::invalid_argument(fmt::format("elementwise output {} is null", i));
    }
  }
}

bool ElementwiseKernel::narrow_indexing(const ElementwiseArguments& args) const {
  constexpr uint64_t kLimit = std::numeric_limits<int32_t>::max();
  if (args.count > kLimit) return false;
  if (rank() == 0 || args.count == 0) return true;
  for (size_t i = 0; i < inputs_.size(); ++i) {
    if (!inputs_[i].layout.strided) continue;
    uint64_t last = 0;  // the largest offset read
    for (int d = 0; d < rank(); ++d) {
      const uint64_t extent = static_cast<uint64_t>(args.sizes[d] - 1), stride = static_cast<uint64_t>(args.strides[i][d]);
      if (stride != 0 && extent > (kLimit - last) / stride) return false;
      last += extent * stride;
    }
  }
  return true;
}

KernelParameters ElementwiseKernel::parameters(const ElementwiseArguments& args) const {
  check(args);
  KernelParameters p;
  for (const void* in : args.inputs) p.add(in);
  for (size_t i = 0; i < scalars_.size(); ++i) {
    const DataType t = scalars_[i];
    const ElementwiseScalar& v = args.scalars[i];
    if (is_floating_point(t)) {
      const double real = std::holds_alternative<double>(v) ? std::get<double>(v) : static_cast<double>(std::get<int64_t>(v));
      if (t == DataType::kFloat64) {
        p.add(real);
      } else {
        p.add(static_cast<float>(round_to(t, real)));
      }
    } else {
      int64_t integer;
      if (std::holds_alternative<int64_t>(v)) {
        integer = std::get<int64_t>(v);
      } else {
        const double real = std::get<double>(v);
        integer = t == DataType::kBool ? real != 0 : static_cast<int64_t>(real);  // check() bounded it
      }
      integer = wrap_to(t, integer);
      if (t == DataType::kInt64) {
        p.add(static_cast<long long>(integer));
      } else {
        p.add(static_cast<int>(integer));  // int32 and bool (0/1) travel as int
      }
    }
  }
  for (void* out : args.outputs) p.add(out);
  p.add(static_cast<unsigned long long>(args.count));
  p.add(static_cast<int>(narrow_indexing(args) ? 1 : 0));
  if (rank() > 0) {
    std::array<long long, kElementwiseMaxRank> dims{};
    for (int d = 0; d < rank(); ++d) dims[d] = args.sizes[d];
    p.add(dims.data(), sizeof(long long) * rank());
    for (size_t i = 0; i < inputs_.size(); ++i) {
      if (!inputs_[i].layout.strided) continue;
      for (int d = 0; d < rank(); ++d) dims[d] = args.strides[i][d];
      p.add(dims.data(), sizeof(long long) * rank());
    }
  }
  return p;
}

}  // namespace moreh::runtime
