#include "scheduler/fusion/fusion_rules.h"

#include <cmath>
#include <initializer_list>
#include <string>
#include <unordered_map>
#include <vector>

namespace moreh::scheduler {

using runtime::Attribute;
using runtime::DataType;
using runtime::ElementwiseKernel;
using runtime::ElementwiseOp;
using runtime::ElementwiseValue;
using runtime::Node;
using runtime::StepValue;
using V = ElementwiseValue;
using Result = std::optional<V>;

DataType compute_type_of(DataType type) {
  return type == DataType::kBFloat16 || type == DataType::kFloat16 ? DataType::kFloat32 : type;
}

namespace {

// One rule's view of its node: operands by schema argument, in the node's result type T or the type T
// computes in (O).
class Operands {
 public:
  explicit Operands(FusionLowering& l) : l_(l), k(l.kernel), T(l.result), O(compute_type_of(l.result)) {}

  // The tensor at schema argument `arg`, as recorded, or nothing.
  std::optional<V> tensor(int arg) const {
    const int i = l_.node.input_of_arg(arg);
    if (i < 0) return std::nullopt;
    return l_.input(static_cast<size_t>(i));
  }
  // A number at `arg`: a per-step value becomes a kernel scalar of `type`, an integer or bool a constant.
  std::optional<V> number(int arg, DataType type) const {
    const auto& n = l_.node;
    for (size_t j = 0; j < n.attr_args.size() && j < n.attrs.size(); ++j) {
      if (n.attr_args[j] != arg) continue;
      const Attribute& a = n.attrs[j];
      if (std::holds_alternative<StepValue>(a)) return l_.scalar(j, type);
      if (const auto* i = std::get_if<int64_t>(&a)) return k.integer_constant(type, *i);
      if (const auto* b = std::get_if<bool>(&a)) return k.integer_constant(type, *b ? 1 : 0);
      return std::nullopt;
    }
    return std::nullopt;
  }
  // The integer recorded at `arg` (part of the graph, so a kernel may specialize on it).
  std::optional<int64_t> integer(int arg) const {
    const Attribute* a = l_.node.attr_of_arg(arg);
    if (const auto* i = a ? std::get_if<int64_t>(a) : nullptr) return *i;
    return std::nullopt;
  }
  std::optional<std::string> text(int arg) const {
    const Attribute* a = l_.node.attr_of_arg(arg);
    if (const auto* s = a ? std::get_if<std::string>(a) : nullptr) return *s;
    return std::nullopt;
  }
  // An operand as ATen's elementwise kernels see it: a tensor converted to the result type, then to the
  // compute type; a number in the compute type (torch's opmath scalar).
  std::optional<V> value(int arg) const {
    if (auto t = tensor(arg)) return k.cast(k.cast(*t, T), O);
    return number(arg, O);
  }
  V c(double x) const { return k.constant(O, x); }
  V add(V a, V b) const { return k.binary(ElementwiseOp::kAdd, a, b); }
  V sub(V a, V b) const { return k.binary(ElementwiseOp::kSub, a, b); }
  V mul(V a, V b) const { return k.binary(ElementwiseOp::kMul, a, b); }
  V div(V a, V b) const { return k.binary(ElementwiseOp::kDiv, a, b); }
  V un(ElementwiseOp op, V a) const { return k.unary(op, a); }
  V finish(V v) const { return k.cast(v, T); }

 private:
  FusionLowering& l_;

 public:
  ElementwiseKernel& k;
  const DataType T, O;
};

bool floating(DataType t) { return runtime::is_floating_point(t); }

// self (op) alpha * other: add and sub with their alpha (an integer 1 multiplies by nothing).
FusionRule with_alpha(ElementwiseOp op, bool reversed = false) {
  return [op, reversed](FusionLowering& l) -> Result {
    Operands o(l);
    const auto self = o.value(0), other = o.value(1);
    if (!self || !other) return std::nullopt;
    V a = reversed ? *other : *self, b = reversed ? *self : *other;  // rsub: other - alpha * self
    const auto one = o.integer(2);
    if (!(one && *one == 1)) {
      const auto alpha = o.number(2, o.O);
      if (!alpha) return std::nullopt;
      b = o.mul(*alpha, b);
    }
    return o.finish(o.k.binary(op, a, b));
  };
}

FusionRule binary(ElementwiseOp op) {
  return [op](FusionLowering& l) -> Result {
    Operands o(l);
    const auto a = o.value(0), b = o.value(1);
    if (!a || !b) return std::nullopt;
    return o.finish(o.k.binary(op, *a, *b));
  };
}

FusionRule unary(ElementwiseOp op) {
  return [op](FusionLowering& l) -> Result {
    Operands o(l);
    const auto x = o.value(0);
    if (!x) return std::nullopt;
    return o.finish(o.un(op, *x));
  };
}

// Comparisons compute in their operands' type (both tensors of one type, or a tensor and a number that
// type holds exactly as torch converts it); the result is bool (or written into self's type in place).
FusionRule comparison(ElementwiseOp op) {
  return [op](FusionLowering& l) -> Result {
    Operands o(l);
    const auto a = o.tensor(0), b = o.tensor(1);
    if (!a) return std::nullopt;
    const DataType t = o.k.type_of(*a);
    std::optional<V> rhs;
    if (b) {
      if (o.k.type_of(*b) != t) return std::nullopt;
      rhs = o.k.cast(*b, compute_type_of(t));
    } else {
      if (t == DataType::kBFloat16 || t == DataType::kFloat16) return std::nullopt;
      if (!floating(t) && !o.integer(1)) return std::nullopt;  // an int tensor against a float: float compare
      rhs = o.number(1, t);
    }
    if (!rhs) return std::nullopt;
    return o.finish(o.k.binary(op, o.k.cast(*a, compute_type_of(t)), *rhs));
  };
}

Result pow_scalar(FusionLowering& l) {
  Operands o(l);
  const auto x = o.value(0);
  if (!x || !floating(o.T)) return std::nullopt;
  if (const auto e = o.integer(1)) {  // ATen's special cases for integral exponents
    switch (*e) {
      case 0: return o.finish(o.c(1));
      case 1: return o.finish(*x);
      case 2: return o.finish(o.mul(*x, *x));
      case 3: return o.finish(o.mul(o.mul(*x, *x), *x));
      case -1: return o.finish(o.div(o.c(1), *x));
      case -2: return o.finish(o.div(o.c(1), o.mul(*x, *x)));
      default: return o.finish(o.k.pow(*x, o.c(static_cast<double>(*e))));
    }
  }
  const auto e = o.number(1, o.O);
  if (!e) return std::nullopt;
  return o.finish(o.k.pow(*x, *e));
}

Result where_self(FusionLowering& l) {
  Operands o(l);
  const auto cond = o.tensor(0), a = o.tensor(1), b = o.tensor(2);
  if (!cond || !a || !b || o.k.type_of(*cond) != DataType::kBool) return std::nullopt;
  return o.k.where(*cond, o.k.cast(*a, o.T), o.k.cast(*b, o.T));
}

Result masked_fill_scalar(FusionLowering& l) {
  Operands o(l);
  const auto self = o.tensor(0), mask = o.tensor(1);
  if (!self || !mask || o.k.type_of(*mask) != DataType::kBool) return std::nullopt;
  const auto value = o.number(2, o.T);  // ATen converts the value to self's type
  if (!value) return std::nullopt;
  return o.k.where(*mask, *value, o.k.cast(*self, o.T));
}

// ATen's lerp: self + w * (end - self) for |w| < 0.5, else end - (end - self) * (1 - w).
Result lerp_scalar(FusionLowering& l) {
  Operands o(l);
  const auto self = o.value(0), end = o.value(1), w = o.number(2, o.O);
  if (!self || !end || !w || !floating(o.T)) return std::nullopt;
  const V diff = o.sub(*end, *self);
  const V small = o.k.binary(ElementwiseOp::kLt, o.un(ElementwiseOp::kAbs, *w), o.c(0.5));
  return o.finish(o.k.where(small, o.add(*self, o.mul(*w, diff)), o.sub(*end, o.mul(diff, o.sub(o.c(1), *w)))));
}

// addcmul: self + value * t1 * t2; addcdiv: self + value * (t1 / t2) (the order of ATen's CUDA kernels).
FusionRule addc(bool divide) {
  return [divide](FusionLowering& l) -> Result {
    Operands o(l);
    const auto self = o.value(0), a = o.value(1), b = o.value(2);
    if (!self || !a || !b || (divide && !floating(o.T))) return std::nullopt;
    const auto one = o.integer(3);
    std::optional<V> value;
    if (!(one && *one == 1)) {
      value = o.number(3, o.O);
      if (!value) return std::nullopt;
    }
    V term;
    if (divide) {
      term = o.div(*a, *b);
      if (value) term = o.mul(*value, term);
    } else {
      term = value ? o.mul(o.mul(*value, *a), *b) : o.mul(*a, *b);
    }
    return o.finish(o.add(*self, term));
  };
}

// clamp, clamp_min, clamp_max: max with the lower bound, then min with the upper (both propagate NaN).
FusionRule clamp(int min_arg, int max_arg) {
  return [min_arg, max_arg](FusionLowering& l) -> Result {
    Operands o(l);
    auto x = o.value(0);
    if (!x) return std::nullopt;
    const auto lo = min_arg >= 0 ? o.number(min_arg, o.O) : std::nullopt;
    const auto hi = max_arg >= 0 ? o.number(max_arg, o.O) : std::nullopt;
    if (!lo && !hi) return std::nullopt;
    if (lo) x = o.k.binary(ElementwiseOp::kMaximum, *x, *lo);
    if (hi) x = o.k.binary(ElementwiseOp::kMinimum, *x, *hi);
    return o.finish(*x);
  };
}

// _to_copy, clone (arg 0) and copy_ (arg 1): the source converted to the result's type.
FusionRule convert(int source_arg) {
  return [source_arg](FusionLowering& l) -> Result {
    Operands o(l);
    const auto x = o.tensor(source_arg);
    if (!x) return std::nullopt;
    return o.k.cast(*x, o.T);
  };
}

Result fill_scalar(FusionLowering& l) {
  Operands o(l);
  return o.number(1, o.T);
}

Result zero(FusionLowering& l) { return l.kernel.integer_constant(l.result, 0); }

Result gelu(FusionLowering& l) {
  Operands o(l);
  const auto x = o.value(0);
  const auto approximate = o.text(1).value_or("none");
  if (!x || (approximate != "none" && approximate != "tanh")) return std::nullopt;
  return o.finish(o.un(approximate == "tanh" ? ElementwiseOp::kGeluTanh : ElementwiseOp::kGeluErf, *x));
}

// ATen's gelu_backward formulas, in the compute type.
Result gelu_backward(FusionLowering& l) {
  Operands o(l);
  const auto dy = o.value(0), x = o.value(1);
  const auto approximate = o.text(2).value_or("none");
  if (!dy || !x || !floating(o.T)) return std::nullopt;
  if (approximate == "none") {
    const V cdf = o.mul(o.c(0.5), o.add(o.c(1), o.un(ElementwiseOp::kErf, o.mul(*x, o.c(M_SQRT1_2)))));
    const V pdf = o.mul(o.un(ElementwiseOp::kExp, o.mul(o.mul(o.c(-0.5), *x), *x)), o.c(M_2_SQRTPI * M_SQRT1_2 * 0.5));
    return o.finish(o.mul(*dy, o.add(cdf, o.mul(*x, pdf))));
  }
  if (approximate != "tanh") return std::nullopt;
  const double beta = M_SQRT2 * M_2_SQRTPI * 0.5, kappa = 0.044715;
  const V x_sq = o.mul(*x, *x);
  const V x_cube = o.mul(x_sq, *x);
  const V inner = o.mul(o.c(beta), o.add(*x, o.mul(o.c(kappa), x_cube)));
  const V t = o.un(ElementwiseOp::kTanh, inner);
  const V left = o.mul(o.c(0.5), *x);
  const V right = o.add(o.c(1), t);
  const V left_derivative = o.mul(o.c(0.5), right);
  const V tanh_derivative = o.sub(o.c(1), o.mul(t, t));
  const V inner_derivative = o.mul(o.c(beta), o.add(o.c(1), o.mul(o.mul(o.c(3), o.c(kappa)), x_sq)));
  const V right_derivative = o.mul(o.mul(left, tanh_derivative), inner_derivative);
  return o.finish(o.mul(*dy, o.add(left_derivative, right_derivative)));
}

Result tanh_backward(FusionLowering& l) {
  Operands o(l);
  const auto dy = o.value(0), y = o.value(1);
  if (!dy || !y || !floating(o.T)) return std::nullopt;
  return o.finish(o.mul(*dy, o.sub(o.c(1), o.mul(*y, *y))));
}

Result sigmoid_backward(FusionLowering& l) {
  Operands o(l);
  const auto dy = o.value(0), y = o.value(1);
  if (!dy || !y || !floating(o.T)) return std::nullopt;
  return o.finish(o.mul(o.mul(*dy, o.sub(o.c(1), *y)), *y));
}

Result silu_backward(FusionLowering& l) {
  Operands o(l);
  const auto dy = o.value(0), x = o.value(1);
  if (!dy || !x || !floating(o.T)) return std::nullopt;
  const V s = o.div(o.c(1), o.add(o.c(1), o.un(ElementwiseOp::kExp, o.un(ElementwiseOp::kNeg, *x))));
  return o.finish(o.mul(o.mul(*dy, s), o.add(o.c(1), o.mul(*x, o.sub(o.c(1), s)))));
}

// grad where self > threshold, else 0 (the threshold in self's type, as ATen converts it).
Result threshold_backward(FusionLowering& l) {
  Operands o(l);
  const auto dy = o.tensor(0), x = o.tensor(1);
  const auto threshold = o.number(2, o.T);
  if (!dy || !x || !threshold) return std::nullopt;
  const V le = o.k.binary(ElementwiseOp::kLe, o.k.cast(o.k.cast(*x, o.T), o.O), o.k.cast(*threshold, o.O));
  return o.k.where(le, o.k.integer_constant(o.T, 0), o.k.cast(*dy, o.T));
}

// Logic on bool (bitwise_* of bool tensors; logical_* of any, as x != 0): and = where(a, b, false),
// or = where(a, true, b), xor = a != b, not = a == false.
enum class Logic { kAnd, kOr, kXor, kNot };

FusionRule logic(Logic op, bool logical) {
  return [op, logical](FusionLowering& l) -> Result {
    Operands o(l);
    auto as_bool = [&](int arg) -> std::optional<V> {
      const auto t = o.tensor(arg);
      if (!t) return std::nullopt;
      const DataType type = o.k.type_of(*t);
      if (type == DataType::kBool) return *t;
      if (!logical) return std::nullopt;  // bitwise ops of integers: not in the IR
      return o.k.binary(ElementwiseOp::kNe, *t, o.k.integer_constant(type, 0));
    };
    const auto a = as_bool(0);
    if (!a) return std::nullopt;
    const V no = o.k.integer_constant(DataType::kBool, 0), yes = o.k.integer_constant(DataType::kBool, 1);
    if (op == Logic::kNot) return o.finish(o.k.binary(ElementwiseOp::kEq, *a, no));
    const auto b = as_bool(1);
    if (!b) return std::nullopt;
    switch (op) {
      case Logic::kAnd: return o.finish(o.k.where(*a, *b, no));
      case Logic::kOr: return o.finish(o.k.where(*a, yes, *b));
      default: return o.finish(o.k.binary(ElementwiseOp::kNe, *a, *b));
    }
  };
}

// leaky_relu: x > 0 ? x : x * slope; its backward: x > 0 ? grad : grad * slope (ATen's kernels).
FusionRule leaky_relu(bool backward) {
  return [backward](FusionLowering& l) -> Result {
    Operands o(l);
    const int x_arg = backward ? 1 : 0;
    const auto x = o.value(x_arg), v = backward ? o.value(0) : x, slope = o.number(x_arg + 1, o.O);
    if (!x || !v || !slope || !floating(o.T)) return std::nullopt;
    const V positive = o.k.binary(ElementwiseOp::kGt, *x, o.c(0));
    return o.finish(o.k.where(positive, *v, o.mul(*v, *slope)));
  };
}

// hardtanh_backward: grad where min < self < max, else 0.
Result hardtanh_backward(FusionLowering& l) {
  Operands o(l);
  const auto dy = o.tensor(0), x = o.value(1), lo = o.number(2, o.O), hi = o.number(3, o.O);
  if (!dy || !x || !lo || !hi) return std::nullopt;
  const V outside = o.k.where(o.k.binary(ElementwiseOp::kLe, *x, *lo), o.k.integer_constant(DataType::kBool, 1),
                              o.k.binary(ElementwiseOp::kGe, *x, *hi));
  return o.k.where(outside, o.k.integer_constant(o.T, 0), o.k.cast(*dy, o.T));
}

using Table = std::unordered_map<runtime::OpId, FusionRule>;

void add(Table& t, std::initializer_list<const char*> names, const FusionRule& rule) {
  for (const char* name : names) t.emplace(runtime::intern_op(std::string("aten::") + name), rule);
}

// An op with its in-place and out= forms (a Tensor overload's out= form is ".out" for arithmetic, ".Tensor_out"
// for comparisons and bitwise ops: both are registered, a name no op has is never looked up).
void add_forms(Table& t, const std::string& name, const std::string& overload, const FusionRule& rule) {
  const std::string dot = overload.empty() ? "" : "." + overload;
  std::vector<std::string> names = {name + dot, name + "_" + dot};
  if (overload.empty() || overload == "Tensor") names.push_back(name + ".out");
  if (!overload.empty()) names.push_back(name + "." + overload + "_out");
  for (const std::string& n : names) t.emplace(runtime::intern_op("aten::" + n), rule);
}

Table build_table() {
  Table t;
  for (const char* overload : {"Tensor", "Scalar"}) {
    add_forms(t, "add", overload, with_alpha(ElementwiseOp::kAdd));
    add_forms(t, "sub", overload, with_alpha(ElementwiseOp::kSub));
    add_forms(t, "mul", overload, binary(ElementwiseOp::kMul));
    add_forms(t, "div", overload, binary(ElementwiseOp::kDiv));
    add_forms(t, "eq", overload, comparison(ElementwiseOp::kEq));
    add_forms(t, "ne", overload, comparison(ElementwiseOp::kNe));
    add_forms(t, "lt", overload, comparison(ElementwiseOp::kLt));
    add_forms(t, "le", overload, comparison(ElementwiseOp::kLe));
    add_forms(t, "gt", overload, comparison(ElementwiseOp::kGt));
    add_forms(t, "ge", overload, comparison(ElementwiseOp::kGe));
  }
  add(t, {"rsub.Tensor", "rsub.Scalar"}, with_alpha(ElementwiseOp::kSub, true));
  add(t, {"maximum", "maximum.out"}, binary(ElementwiseOp::kMaximum));
  add(t, {"minimum", "minimum.out"}, binary(ElementwiseOp::kMinimum));
  const std::pair<const char*, ElementwiseOp> unaries[] = {
      {"neg", ElementwiseOp::kNeg},   {"abs", ElementwiseOp::kAbs},         {"exp", ElementwiseOp::kExp},
      {"log", ElementwiseOp::kLog},   {"sqrt", ElementwiseOp::kSqrt},       {"rsqrt", ElementwiseOp::kRsqrt},
      {"tanh", ElementwiseOp::kTanh}, {"sigmoid", ElementwiseOp::kSigmoid}, {"relu", ElementwiseOp::kRelu},
      {"silu", ElementwiseOp::kSilu}, {"erf", ElementwiseOp::kErf}};
  for (const auto& [name, op] : unaries) add_forms(t, name, "", unary(op));
  add_forms(t, "reciprocal", "", [](FusionLowering& l) -> Result {
    Operands o(l);
    const auto x = o.value(0);
    if (!x || !floating(o.T)) return std::nullopt;
    return o.finish(o.div(o.c(1), *x));
  });
  add_forms(t, "gelu", "", gelu);
  add(t, {"gelu_backward", "gelu_backward.grad_input"}, gelu_backward);
  add(t, {"tanh_backward", "tanh_backward.grad_input"}, tanh_backward);
  add(t, {"sigmoid_backward", "sigmoid_backward.grad_input"}, sigmoid_backward);
  add(t, {"silu_backward", "silu_backward.grad_input"}, silu_backward);
  add(t, {"threshold_backward", "threshold_backward.grad_input"}, threshold_backward);
  add(t, {"pow.Tensor_Scalar", "pow_.Scalar", "pow.Tensor_Scalar_out"}, pow_scalar);
  add(t, {"where.self", "where.self_out"}, where_self);
  add(t, {"masked_fill.Scalar", "masked_fill_.Scalar"}, masked_fill_scalar);
  add(t, {"lerp.Scalar", "lerp_.Scalar", "lerp.Scalar_out"}, lerp_scalar);
  add(t, {"addcmul", "addcmul_", "addcmul.out"}, addc(false));
  add(t, {"addcdiv", "addcdiv_", "addcdiv.out"}, addc(true));
  add(t, {"clamp", "clamp_", "clamp.out"}, clamp(1, 2));
  add(t, {"clamp_min", "clamp_min_", "clamp_min.out"}, clamp(1, -1));
  add(t, {"clamp_max", "clamp_max_", "clamp_max.out"}, clamp(-1, 1));
  for (const auto& [name, op] : {std::pair{"and", Logic::kAnd}, {"or", Logic::kOr}, {"xor", Logic::kXor}}) {
    add_forms(t, std::string("bitwise_") + name, "Tensor", logic(op, false));
    add_forms(t, std::string("logical_") + name, "", logic(op, true));
  }
  add_forms(t, "bitwise_not", "", logic(Logic::kNot, false));
  add_forms(t, "logical_not", "", logic(Logic::kNot, true));
  add_forms(t, "leaky_relu", "", leaky_relu(false));
  add(t, {"leaky_relu_backward", "leaky_relu_backward.grad_input"}, leaky_relu(true));
  add_forms(t, "hardtanh", "", clamp(1, 2));
  add(t, {"hardtanh_backward", "hardtanh_backward.grad_input"}, hardtanh_backward);
  add(t, {"_to_copy", "clone"}, convert(0));
  add(t, {"copy_"}, convert(1));
  add(t, {"fill_.Scalar"}, fill_scalar);
  add(t, {"zero_"}, zero);
  return t;
}

}  // namespace

const FusionRule* fusion_rule(runtime::OpId op) {
  static const Table table = build_table();
  auto it = table.find(op);
  return it == table.end() ? nullptr : &it->second;
}

}  // namespace moreh::scheduler
