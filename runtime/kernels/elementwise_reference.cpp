// Compiled with -ffp-contract=off (runtime/CMakeLists.txt): a float multiply followed by an add must round
// twice here, as the generated code's _rn intrinsics do.
#include "runtime/kernels/elementwise_reference.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "runtime/base/low_precision_float.h"

namespace moreh::runtime {
namespace {

// A value while computing: `real` for floating types (a float's value for float32/float16/bfloat16),
// `integer` for integers and bool.
struct Value {
  double real = 0;
  int64_t integer = 0;
};

bool is_single(DataType t) { return is_floating_point(t) && t != DataType::kFloat64; }

float round_single(DataType t, float v) {
  if (t == DataType::kBFloat16) return bfloat16_to_float(float_to_bfloat16(v));
  if (t == DataType::kFloat16) return float16_to_float(float_to_float16(v));
  return v;
}

int64_t wrap(DataType t, uint64_t v) {
  if (t == DataType::kInt32) return static_cast<int32_t>(static_cast<uint32_t>(v));
  if (t == DataType::kBool) return v != 0;
  return static_cast<int64_t>(v);
}

// CUDA's cvt.rzi: truncates, saturates to the range, NaN -> 0.
int64_t saturating_integer(DataType t, double v) {
  if (std::isnan(v)) return 0;
  const double lo = t == DataType::kInt32 ? -2147483648.0 : -9223372036854775808.0;
  const double hi = t == DataType::kInt32 ? 2147483648.0 : 9223372036854775808.0;
  if (v <= lo) return t == DataType::kInt32 ? std::numeric_limits<int32_t>::min() : std::numeric_limits<int64_t>::min();
  if (v >= hi) return t == DataType::kInt32 ? std::numeric_limits<int32_t>::max() : std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(v);
}

Value cast(DataType from, DataType to, Value x) {
  Value r;
  if (from == to) return x;
  const bool from_real = is_floating_point(from);
  if (to == DataType::kBool) {
    r.integer = from_real ? x.real != 0 : x.integer != 0;
  } else if (to == DataType::kInt64 || to == DataType::kInt32) {
    r.integer = from_real ? saturating_integer(to, x.real) : wrap(to, static_cast<uint64_t>(x.integer));
  } else if (to == DataType::kFloat64) {
    r.real = from_real ? x.real : static_cast<double>(x.integer);
  } else {  // to a single-precision type: through float, as torch converts
    const float f = from_real ? static_cast<float>(x.real) : static_cast<float>(x.integer);
    r.real = round_single(to, f);
  }
  return r;
}

Value load(DataType t, const void* base, uint64_t at) {
  Value v;
  switch (t) {
    case DataType::kFloat32: v.real = static_cast<const float*>(base)[at]; break;
    case DataType::kFloat64: v.real = static_cast<const double*>(base)[at]; break;
    case DataType::kBFloat16: v.real = bfloat16_to_float(static_cast<const uint16_t*>(base)[at]); break;
    case DataType::kFloat16: v.real = float16_to_float(static_cast<const uint16_t*>(base)[at]); break;
    case DataType::kInt64: v.integer = static_cast<const int64_t*>(base)[at]; break;
    case DataType::kInt32: v.integer = static_cast<const int32_t*>(base)[at]; break;
    case DataType::kBool: v.integer = static_cast<const uint8_t*>(base)[at] != 0; break;
  }
  return v;
}

void store(DataType t, void* base, uint64_t at, Value v) {
  switch (t) {
    case DataType::kFloat32: static_cast<float*>(base)[at] = static_cast<float>(v.real); break;
    case DataType::kFloat64: static_cast<double*>(base)[at] = v.real; break;
    case DataType::kBFloat16: static_cast<uint16_t*>(base)[at] = float_to_bfloat16(static_cast<float>(v.real)); break;
    case DataType::kFloat16: static_cast<uint16_t*>(base)[at] = float_to_float16(static_cast<float>(v.real)); break;
    case DataType::kInt64: static_cast<int64_t*>(base)[at] = v.integer; break;
    case DataType::kInt32: static_cast<int32_t*>(base)[at] = static_cast<int32_t>(v.integer); break;
    case DataType::kBool: static_cast<uint8_t*>(base)[at] = v.integer != 0; break;
  }
}

// The transcendental and composite ops, written as the generated code writes them, in T (float or double).
template <typename T>
T math(ElementwiseOp op, T a) {
  const T one = 1, half = 0.5;
  switch (op) {
    case ElementwiseOp::kExp: return std::exp(a);
    case ElementwiseOp::kLog: return std::log(a);
    case ElementwiseOp::kSqrt: return std::sqrt(a);
    case ElementwiseOp::kRsqrt: return one / std::sqrt(a);
    case ElementwiseOp::kTanh: return std::tanh(a);
    case ElementwiseOp::kErf: return std::erf(a);
    case ElementwiseOp::kSigmoid: return one / (one + std::exp(-a));
    case ElementwiseOp::kGeluErf: return a * half * (one + std::erf(a * static_cast<T>(M_SQRT1_2)));
    case ElementwiseOp::kGeluTanh: {
      const T beta = static_cast<T>(M_SQRT2 * M_2_SQRTPI * 0.5), kappa = static_cast<T>(0.044715);
      return half * a * (one + std::tanh(beta * (a + kappa * (a * a * a))));
    }
    case ElementwiseOp::kSilu: return a / (one + std::exp(-a));
    default: return a;
  }
}

template <typename T>
T power(T a, double exponent, bool constant) {
  if (constant) {  // ATen's special exponents, as the generated code has them
    if (exponent == 0.5) return std::sqrt(a);
    if (exponent == 2) return a * a;
    if (exponent == 3) return (a * a) * a;
    if (exponent == -0.5) return T(1) / std::sqrt(a);
    if (exponent == -1) return T(1) / a;
    if (exponent == -2) return T(1) / (a * a);
  }
  return std::pow(a, static_cast<T>(exponent));
}

template <typename T>
T arithmetic(ElementwiseOp op, T a, T b) {
  switch (op) {
    case ElementwiseOp::kAdd: return a + b;
    case ElementwiseOp::kSub: return a - b;
    case ElementwiseOp::kMul: return a * b;
    case ElementwiseOp::kDiv: return a / b;
    case ElementwiseOp::kMaximum: return (a > b || a != a) ? a : b;
    case ElementwiseOp::kMinimum: return (a < b || a != a) ? a : b;
    default: return a;
  }
}

template <typename T>
bool compare(ElementwiseOp op, T a, T b) {
  switch (op) {
    case ElementwiseOp::kLt: return a < b;
    case ElementwiseOp::kLe: return a <= b;
    case ElementwiseOp::kGt: return a > b;
    case ElementwiseOp::kGe: return a >= b;
    case ElementwiseOp::kEq: return a == b;
    case ElementwiseOp::kNe: return a != b;
    default: return false;
  }
}

class Evaluator {
 public:
  Evaluator(const ElementwiseKernel& k, const ElementwiseArguments& args) : k_(k), args_(args), values_(k.nodes().size()) {
    for (size_t i = 0; i < k.scalars().size(); ++i) {
      const DataType t = k.scalars()[i];
      const ElementwiseScalar& s = args.scalars[i];
      // As ElementwiseKernel::parameters converts them.
      Value v;
      if (is_floating_point(t)) {
        v.real = std::holds_alternative<double>(s) ? std::get<double>(s) : static_cast<double>(std::get<int64_t>(s));
        v = cast(DataType::kFloat64, t, v);
      } else if (std::holds_alternative<int64_t>(s)) {
        v.integer = wrap(t, static_cast<uint64_t>(std::get<int64_t>(s)));
      } else {
        const double real = std::get<double>(s);
        v.integer = t == DataType::kBool ? real != 0 : wrap(t, static_cast<uint64_t>(static_cast<int64_t>(real)));
      }
      scalars_.push_back(v);
    }
  }

  void run() {
    const int rank = k_.rank();
    std::vector<uint64_t> offsets(k_.inputs().size());
    for (uint64_t i = 0; i < args_.count; ++i) {
      for (size_t in = 0; in < k_.inputs().size(); ++in) {
        if (!k_.inputs()[in].layout.strided) {
          offsets[in] = i;
          continue;
        }
        uint64_t rest = i, offset = 0;
        for (int d = rank - 1; d >= 0; --d) {
          const uint64_t size = static_cast<uint64_t>(args_.sizes[d]);
          offset += (rest % size) * static_cast<uint64_t>(args_.strides[in][d]);
          rest /= size;
        }
        offsets[in] = offset;
      }
      for (size_t v = 0; v < values_.size(); ++v) values_[v] = evaluate(k_.nodes()[v], offsets);
      for (size_t o = 0; o < k_.outputs().size(); ++o) {
        const ElementwiseValue v = k_.outputs()[o];
        store(k_.type_of(v), args_.outputs[o], i, values_[v]);
      }
    }
  }

 private:
  Value evaluate(const ElementwiseNode& n, const std::vector<uint64_t>& offsets) const {
    const DataType t = n.type;
    const Value& a = values_[n.operands[0]];
    const Value& b = values_[n.operands[1]];
    Value r;
    switch (n.op) {
      case ElementwiseOp::kInput: return load(t, args_.inputs[n.index], offsets[n.index]);
      case ElementwiseOp::kScalar: return scalars_[n.index];
      case ElementwiseOp::kConstant:
        r.real = n.real;
        r.integer = n.integer;
        return r;
      case ElementwiseOp::kCast: return cast(k_.type_of(n.operands[0]), t, a);
      case ElementwiseOp::kWhere: return a.integer ? b : values_[n.operands[2]];
      case ElementwiseOp::kLt:
      case ElementwiseOp::kLe:
      case ElementwiseOp::kGt:
      case ElementwiseOp::kGe:
      case ElementwiseOp::kEq:
      case ElementwiseOp::kNe: {
        const DataType operand = k_.type_of(n.operands[0]);
        r.integer = is_floating_point(operand) ? compare(n.op, a.real, b.real) : compare(n.op, a.integer, b.integer);
        return r;
      }
      default: break;
    }
    if (t == DataType::kFloat64) {
      r.real = real_op<double>(n, a.real, b.real);
    } else if (is_single(t)) {
      r.real = round_single(t, real_op<float>(n, static_cast<float>(a.real), static_cast<float>(b.real)));
    } else {
      r.integer = integer_op(n, a.integer, b.integer);
    }
    return r;
  }

  template <typename T>
  T real_op(const ElementwiseNode& n, T a, T b) const {
    switch (n.op) {
      case ElementwiseOp::kNeg: return -a;
      case ElementwiseOp::kAbs: return std::fabs(a);
      case ElementwiseOp::kRelu: return a < 0 ? T(0) : a;
      case ElementwiseOp::kPow: {
        const ElementwiseNode& e = k_.nodes()[n.operands[1]];
        return power(a, values_[n.operands[1]].real, e.op == ElementwiseOp::kConstant);
      }
      case ElementwiseOp::kAdd:
      case ElementwiseOp::kSub:
      case ElementwiseOp::kMul:
      case ElementwiseOp::kDiv:
      case ElementwiseOp::kMaximum:
      case ElementwiseOp::kMinimum: return arithmetic(n.op, a, b);
      default: return math(n.op, a);
    }
  }

  int64_t integer_op(const ElementwiseNode& n, int64_t a, int64_t b) const {
    const uint64_t ua = static_cast<uint64_t>(a), ub = static_cast<uint64_t>(b);
    switch (n.op) {
      case ElementwiseOp::kNeg: return wrap(n.type, 0 - ua);
      case ElementwiseOp::kAbs: return a < 0 ? wrap(n.type, 0 - ua) : a;
      case ElementwiseOp::kRelu: return a < 0 ? 0 : a;
      case ElementwiseOp::kAdd: return wrap(n.type, ua + ub);
      case ElementwiseOp::kSub: return wrap(n.type, ua - ub);
      case ElementwiseOp::kMul: return wrap(n.type, ua * ub);
      case ElementwiseOp::kMaximum: return a > b ? a : b;
      case ElementwiseOp::kMinimum: return a < b ? a : b;
      default: return 0;  // the builders let no other op take integers
    }
  }

  const ElementwiseKernel& k_;
  const ElementwiseArguments& args_;
  std::vector<Value> values_;
  std::vector<Value> scalars_;
};

}  // namespace

void evaluate_on_host(const ElementwiseKernel& kernel, const ElementwiseArguments& args) {
  kernel.check(args);
  Evaluator(kernel, args).run();
}

}  // namespace moreh::runtime
