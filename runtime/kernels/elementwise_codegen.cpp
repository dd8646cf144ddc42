// ElementwiseKernel::source(): the CUDA C text of a fused elementwise kernel. The text needs no header
// (NVRTC compiles it as is): float16/bfloat16 conversions are spelled out here, and float16's go through
// PTX's cvt. Arithmetic of the IR's own ops uses the _rn intrinsics, which the compiler never contracts
// into FMAs, so a chain rounds exactly as torch's eager kernels do op by op; composite ops (gelu, silu, ...)
// are written the way ATen's CUDA kernels write them.
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <string>

#include "runtime/kernels/elementwise_kernel.h"

namespace moreh::runtime {
namespace {

enum class Class { kFloat, kDouble, kInt64, kInt32, kBool };  // how a type is computed on

Class class_of(DataType t) {
  switch (t) {
    case DataType::kFloat32:
    case DataType::kBFloat16:
    case DataType::kFloat16: return Class::kFloat;
    case DataType::kFloat64: return Class::kDouble;
    case DataType::kInt64: return Class::kInt64;
    case DataType::kInt32: return Class::kInt32;
    case DataType::kBool: return Class::kBool;
  }
  return Class::kFloat;
}

// The C type a value is held in while computing.
std::string_view compute_type(DataType t) {
  switch (class_of(t)) {
    case Class::kFloat: return "float";
    case Class::kDouble: return "double";
    case Class::kInt64: return "long long";
    case Class::kInt32: return "int";
    case Class::kBool: return "bool";
  }
  return "?";
}

// The C type of an element in memory.
std::string_view storage_type(DataType t) {
  switch (t) {
    case DataType::kFloat32: return "float";
    case DataType::kFloat64: return "double";
    case DataType::kBFloat16:
    case DataType::kFloat16: return "unsigned short";
    case DataType::kInt64: return "long long";
    case DataType::kInt32: return "int";
    case DataType::kBool: return "unsigned char";
  }
  return "?";
}

// The C type a scalar parameter travels as (what KernelParameters packs).
std::string_view parameter_type(DataType t) {
  switch (class_of(t)) {
    case Class::kFloat: return "float";
    case Class::kDouble: return "double";
    case Class::kInt64: return "long long";
    case Class::kInt32:
    case Class::kBool: return "int";
  }
  return "?";
}

// Exact literals: 9 (float) or 17 (double) significant digits round-trip; non-finite values as bits.
std::string float_literal(float v) {
  if (!std::isfinite(v)) return fmt::format("__uint_as_float(0x{:08x}u)", std::bit_cast<uint32_t>(v));
  return fmt::format("{:.9e}f", v);
}
std::string double_literal(double v) {
  if (!std::isfinite(v)) return fmt::format("__longlong_as_double(0x{:016x}ll)", std::bit_cast<uint64_t>(v));
  return fmt::format("{:.17e}", v);
}
// A literal of the computing type of class `c`.
std::string literal(Class c, double v) { return c == Class::kDouble ? double_literal(v) : float_literal(static_cast<float>(v)); }

std::string integer_literal(DataType t, int64_t v) {
  switch (t) {
    case DataType::kInt64: return fmt::format("(long long)0x{:016x}ull", static_cast<uint64_t>(v));
    case DataType::kInt32: return fmt::format("(int)0x{:08x}u", static_cast<uint32_t>(v));
    default: return v ? "true" : "false";
  }
}

std::string round_to(DataType t, const std::string& expr) {
  if (t == DataType::kBFloat16) return "moreh_round_bf16(" + expr + ")";
  if (t == DataType::kFloat16) return "moreh_round_f16(" + expr + ")";
  return expr;
}

// Integer arithmetic wraps (two's complement), as torch's does: computed unsigned.
std::string wrapping(DataType t, const std::string& a, char op, const std::string& b) {
  if (t == DataType::kInt64) return fmt::format("(long long)((unsigned long long){} {} (unsigned long long){})", a, op, b);
  return fmt::format("(int)((unsigned int){} {} (unsigned int){})", a, op, b);
}

std::string cast_expression(DataType from, DataType to, const std::string& a) {
  if (from == to) return a;
  const Class cf = class_of(from), ct = class_of(to);
  if (to == DataType::kBool) return fmt::format("({} != 0)", a);
  if (from == DataType::kBool) {
    return ct == Class::kDouble ? fmt::format("({} ? 1.0 : 0.0)", a)
           : ct == Class::kFloat ? fmt::format("({} ? 1.0f : 0.0f)", a)
                                 : fmt::format("({})({} ? 1 : 0)", compute_type(to), a);
  }
  switch (to) {
    case DataType::kInt64: return fmt::format("(long long){}", a);  // from floats: cvt.rzi saturates, NaN -> 0
    case DataType::kInt32:
      if (from == DataType::kInt64) return fmt::format("(int)(unsigned int)(unsigned long long){}", a);
      return fmt::format("(int){}", a);
    case DataType::kFloat64: return fmt::format("(double){}", a);
    case DataType::kFloat32: return cf == Class::kFloat ? a : fmt::format("(float){}", a);
    case DataType::kBFloat16:
    case DataType::kFloat16: return round_to(to, cf == Class::kFloat ? a : fmt::format("(float){}", a));
    case DataType::kBool: break;
  }
  return a;
}

class Generator {
 public:
  explicit Generator(const ElementwiseKernel& k) : k_(k), rank_(k.rank()) {}

  std::string run() {
    std::string s;
    s += fmt::format("// moreh fused elementwise kernel\n// key: {}\n", k_.key());
    s += kPrelude;
    if (rank_ > 0) s += fmt::format("struct moreh_dims {{ long long v[{}]; }};\n", rank_);
    s += "\n";
    const std::vector<bool> live = live_values();
    const std::string body_params = body_parameters();
    // Elements [first, n), one per thread per turn of a grid-stride loop.
    s += fmt::format("template <typename I>\n__device__ __forceinline__ void moreh_body({}I first, I n) {{\n",
                     body_params);
    s += "  const I step = (I)blockDim.x * (I)gridDim.x;\n";
    s += "  for (I i = first + (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < n; i += step) {\n";
    s += offsets(live);
    s += values(live, "    ");
    for (size_t o = 0; o < k_.outputs().size(); ++o) {
      const ElementwiseValue v = k_.outputs()[o];
      s += fmt::format("    out{}[i] = {};\n", o, store_expression(k_.type_of(v), fmt::format("v{}", v)));
    }
    s += "  }\n}\n\n";
    const int width = vector_width(live);
    if (width > 1) s += vector_body(live, width, body_params);
    s += fmt::format("extern \"C\" __global__ void __launch_bounds__({}) {}({}unsigned long long n, int narrow{}) {{\n",
                     kElementwiseBlockSize, k_.function_name(), data_parameters(), shape_list(", moreh_dims ", ""));
    const std::string args = body_arguments();
    if (width > 1) {
      s += fmt::format("  if ({}) {{\n", aligned_condition(live, width));
      s += fmt::format("    if (narrow) moreh_body_vector<unsigned int>({}(unsigned int)n);\n", args);
      s += fmt::format("    else moreh_body_vector<unsigned long long>({}n);\n    return;\n  }}\n", args);
    }
    s += fmt::format("  if (narrow) moreh_body<unsigned int>({}0u, (unsigned int)n);\n", args);
    s += fmt::format("  else moreh_body<unsigned long long>({}0ull, n);\n}}\n", args);
    return s;
  }

 private:
  static constexpr const char* kPrelude = R"(
__device__ __forceinline__ float moreh_bf16_to_f32(unsigned short h) {
  return __uint_as_float(((unsigned int)h) << 16);
}
// Round to nearest, ties to even; NaN stays a quiet NaN with its sign.
__device__ __forceinline__ unsigned short moreh_f32_to_bf16(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}
__device__ __forceinline__ float moreh_f16_to_f32(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ unsigned short moreh_f32_to_f16(float f) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
__device__ __forceinline__ float moreh_round_bf16(float f) { return moreh_bf16_to_f32(moreh_f32_to_bf16(f)); }
__device__ __forceinline__ float moreh_round_f16(float f) { return moreh_f16_to_f32(moreh_f32_to_f16(f)); }
)";

  // The values the outputs need, one "const T vN = ...;" line each.
  std::string values(const std::vector<bool>& live, std::string_view indent) const {
    std::string s;
    for (size_t v = 0; v < k_.nodes().size(); ++v) {
      const ElementwiseNode& node = k_.nodes()[v];
      if (!live[v]) continue;
      s += fmt::format("{}const {} v{} = {};\n", indent, compute_type(node.type), v, expression(node));
    }
    return s;
  }

  // Contiguous inputs and outputs read and written as whole vectors of `width` elements (one 16-byte
  // access for the narrowest type, as ATen's vectorized kernels do): for kernels whose inputs are all
  // contiguous or single values (those the outputs read). 1: no vector path.
  int vector_width(const std::vector<bool>& live) const {
    size_t narrowest = 16;
    for (size_t v = 0; v < k_.nodes().size(); ++v) {
      const ElementwiseNode& n = k_.nodes()[v];
      if (n.op != ElementwiseOp::kInput || !live[v]) continue;
      const ElementwiseInput& in = k_.inputs()[n.index];
      if (in.layout.strided && !reads_at_zero(in.layout)) return 1;
      if (!in.layout.strided) narrowest = std::min(narrowest, size_of(in.type));
    }
    for (ElementwiseValue v : k_.outputs()) narrowest = std::min(narrowest, size_of(k_.type_of(v)));
    return static_cast<int>(std::min<size_t>(8, 16 / narrowest));
  }

  // A vector of `width` elements of type t, aligned as one access of up to 16 bytes.
  static std::string vector_type(DataType t, int width) {
    return fmt::format("moreh_vector<{}, {}, {}>", storage_type(t), width,
                       std::min<size_t>(16, size_of(t) * static_cast<size_t>(width)));
  }

  // Every vector-accessed pointer sits on its vector's alignment (else the kernel takes the scalar path).
  std::string aligned_condition(const std::vector<bool>& live, int width) const {
    std::string c;
    auto add = [&](const std::string& ptr, DataType t) {
      c += fmt::format("{}(unsigned long long){} % {}ull == 0", c.empty() ? "" : " && ", ptr,
                       std::min<size_t>(16, size_of(t) * static_cast<size_t>(width)));
    };
    for (size_t v = 0; v < k_.nodes().size(); ++v) {
      const ElementwiseNode& n = k_.nodes()[v];
      if (n.op == ElementwiseOp::kInput && live[v] && !k_.inputs()[n.index].layout.strided)
        add(fmt::format("in{}", n.index), k_.inputs()[n.index].type);
    }
    for (size_t o = 0; o < k_.outputs().size(); ++o) add(fmt::format("out{}", o), k_.type_of(k_.outputs()[o]));
    return c;
  }

  // Groups of `width` elements per thread per turn, then the last n % width elements by moreh_body. Each
  // group's inputs are all read before its outputs are written (an output may be its input's buffer).
  std::string vector_body(const std::vector<bool>& live, int width, const std::string& body_params) {
    std::string s = "template <typename T, int N, int A>\nstruct alignas(A) moreh_vector { T v[N]; };\n\n";
    s += fmt::format("template <typename I>\n__device__ __forceinline__ void moreh_body_vector({}I n) {{\n",
                     body_params);
    s += "  const I step = (I)blockDim.x * (I)gridDim.x;\n";
    s += fmt::format("  const I groups = n / {};\n", width);
    s += "  for (I g = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; g < groups; g += step) {\n";
    for (size_t v = 0; v < k_.nodes().size(); ++v) {
      const ElementwiseNode& n = k_.nodes()[v];
      if (n.op != ElementwiseOp::kInput || !live[v] || k_.inputs()[n.index].layout.strided) continue;
      const std::string type = vector_type(k_.inputs()[n.index].type, width);
      s += fmt::format("    const {0} r{1} = reinterpret_cast<const {0}*>(in{1})[g];\n", type, n.index);
    }
    for (size_t o = 0; o < k_.outputs().size(); ++o)
      s += fmt::format("    {} w{};\n", vector_type(k_.type_of(k_.outputs()[o]), width), o);
    s += fmt::format("#pragma unroll\n    for (int e = 0; e < {}; ++e) {{\n", width);
    vector_element_ = true;
    s += values(live, "      ");
    vector_element_ = false;
    for (size_t o = 0; o < k_.outputs().size(); ++o) {
      const ElementwiseValue v = k_.outputs()[o];
      s += fmt::format("      w{}.v[e] = {};\n", o, store_expression(k_.type_of(v), fmt::format("v{}", v)));
    }
    s += "    }\n";
    for (size_t o = 0; o < k_.outputs().size(); ++o) {
      s += fmt::format("    reinterpret_cast<{}*>(out{})[g] = w{};\n", vector_type(k_.type_of(k_.outputs()[o]), width),
                       o, o);
    }
    s += "  }\n";
    s += fmt::format("  moreh_body<I>({}groups * {}, n);\n}}\n\n", body_arguments(), width);
    return s;
  }

  // Inputs, scalars and outputs, each followed by ", ".
  std::string data_parameters() const {
    std::string p;
    for (size_t i = 0; i < k_.inputs().size(); ++i) {
      p += fmt::format("const {}* __restrict__ in{}, ", storage_type(k_.inputs()[i].type), i);
    }
    for (size_t i = 0; i < k_.scalars().size(); ++i) p += fmt::format("{} s{}, ", parameter_type(k_.scalars()[i]), i);
    for (size_t o = 0; o < k_.outputs().size(); ++o) {
      p += fmt::format("{}* __restrict__ out{}, ", storage_type(k_.type_of(k_.outputs()[o])), o);
    }
    return p;
  }

  // The shape and the strided inputs' strides, each prefixed by `prefix` and followed by `suffix`.
  std::string shape_list(std::string_view prefix, std::string_view suffix) const {
    if (rank_ == 0) return "";
    std::string p = fmt::format("{}sizes{}", prefix, suffix);
    for (size_t i = 0; i < k_.inputs().size(); ++i) {
      if (k_.inputs()[i].layout.strided) p += fmt::format("{}st{}{}", prefix, i, suffix);
    }
    return p;
  }

  std::string body_parameters() const { return data_parameters() + shape_list("const moreh_dims& ", ", "); }

  std::string body_arguments() const {
    std::string a;
    for (size_t i = 0; i < k_.inputs().size(); ++i) a += fmt::format("in{}, ", i);
    for (size_t i = 0; i < k_.scalars().size(); ++i) a += fmt::format("s{}, ", i);
    for (size_t o = 0; o < k_.outputs().size(); ++o) a += fmt::format("out{}, ", o);
    return a + shape_list("", ", ");
  }

  // Values an output depends on (others are not emitted: no unused loads or variables).
  std::vector<bool> live_values() const {
    std::vector<bool> live(k_.nodes().size(), false);
    for (ElementwiseValue v : k_.outputs()) live[v] = true;
    for (size_t v = live.size(); v-- > 0;) {
      const ElementwiseNode& n = k_.nodes()[v];
      if (!live[v]) continue;
      for (int i = 0; i < arity(n.op); ++i) {
        if (i == 1 && n.op == ElementwiseOp::kPow && special_exponent(k_.nodes()[n.operands[1]])) continue;
        live[n.operands[i]] = true;
      }
    }
    return live;
  }

  // ATen's special exponents (pow_tensor_scalar_optimized_kernel), computed without pow.
  static bool special_exponent(const ElementwiseNode& e) {
    if (e.op != ElementwiseOp::kConstant) return false;
    for (double x : {0.5, 2.0, 3.0, -0.5, -1.0, -2.0}) {
      if (e.real == x) return true;
    }
    return false;
  }

  bool reads_at_zero(const InputLayout& l) const { return l.strided && l.broadcast == (1u << rank_) - 1; }

  // Each strided input's element offset for output element i, splitting i into coordinates once.
  std::string offsets(const std::vector<bool>& live) const {
    std::vector<size_t> walked;
    for (size_t v = 0; v < k_.nodes().size(); ++v) {
      const ElementwiseNode& n = k_.nodes()[v];
      if (n.op != ElementwiseOp::kInput || !live[v]) continue;
      const InputLayout& l = k_.inputs()[n.index].layout;
      if (l.strided && !reads_at_zero(l)) walked.push_back(n.index);
    }
    if (walked.empty()) return "";
    std::string s;
    for (size_t i : walked) s += fmt::format("    I o{} = 0;\n", i);
    s += "    {\n      I r = i;\n";
    for (int d = rank_ - 1; d >= 0; --d) {
      const char* c = d > 0 ? "c" : "r";  // the outermost coordinate is what remains
      if (d > 0) {
        s += fmt::format("      {{\n        const I c = r % (I)sizes.v[{0}];\n        r /= (I)sizes.v[{0}];\n", d);
      }
      for (size_t i : walked) {
        if (!(k_.inputs()[i].layout.broadcast >> d & 1u)) {
          s += fmt::format("        o{} += {} * (I)st{}.v[{}];\n", i, c, i, d);
        }
      }
      if (d > 0) s += "      }\n";
    }
    s += "    }\n";
    return s;
  }

  std::string load_expression(uint32_t index) const {
    const ElementwiseInput& in = k_.inputs()[index];
    const std::string at = !in.layout.strided ? "i" : reads_at_zero(in.layout) ? "0" : fmt::format("o{}", index);
    // In the vector path a contiguous input's element comes from the group read whole.
    const std::string raw = vector_element_ && !in.layout.strided ? fmt::format("r{}.v[e]", index)
                                                                   : fmt::format("in{}[{}]", index, at);
    switch (in.type) {
      case DataType::kBFloat16: return "moreh_bf16_to_f32(" + raw + ")";
      case DataType::kFloat16: return "moreh_f16_to_f32(" + raw + ")";
      case DataType::kBool: return "(" + raw + " != 0)";
      default: return raw;
    }
  }

  static std::string store_expression(DataType t, const std::string& v) {
    switch (t) {
      case DataType::kBFloat16: return "moreh_f32_to_bf16(" + v + ")";
      case DataType::kFloat16: return "moreh_f32_to_f16(" + v + ")";
      case DataType::kBool: return "(unsigned char)(" + v + " ? 1 : 0)";
      default: return v;
    }
  }

  std::string pow_expression(const ElementwiseNode& n, const std::string& a) const {
    const ElementwiseNode& e = k_.nodes()[n.operands[1]];
    const Class c = class_of(n.type);
    const bool f = c == Class::kFloat;
    const std::string mul = f ? "__fmul_rn" : "__dmul_rn", div = f ? "__fdiv_rn" : "__ddiv_rn", one = literal(c, 1.0);
    if (special_exponent(e)) {
      const double x = e.real;
      if (x == 0.5) return fmt::format("{}({})", f ? "sqrtf" : "sqrt", a);
      if (x == 2) return fmt::format("{}({}, {})", mul, a, a);
      if (x == 3) return fmt::format("{0}({0}({1}, {1}), {1})", mul, a);
      if (x == -0.5) return fmt::format("{}({})", f ? "rsqrtf" : "rsqrt", a);
      if (x == -1) return fmt::format("{}({}, {})", div, one, a);
      if (x == -2) return fmt::format("{}({}, {}({}, {}))", div, one, mul, a, a);
    }
    return fmt::format("{}({}, ({})v{})", f ? "powf" : "pow", a, compute_type(n.type), n.operands[1]);
  }

  std::string expression(const ElementwiseNode& n) const {
    // The operands' variables.
    const std::string a = fmt::format("v{}", n.operands[0]), b = fmt::format("v{}", n.operands[1]),
                      c3 = fmt::format("v{}", n.operands[2]);
    const DataType t = n.type;
    const Class c = class_of(t);
    const bool is_float = c == Class::kFloat, is_real = is_float || c == Class::kDouble;
    auto fn = [&](std::string_view name) { return fmt::format("{}{}({})", name, is_float ? "f" : "", a); };
    auto lit = [&](double v) { return literal(c, v); };
    auto arith = [&](std::string_view intrinsic, char op) {
      if (is_real) return fmt::format("__{}{}_rn({}, {})", is_float ? 'f' : 'd', intrinsic, a, b);
      return wrapping(t, a, op, b);
    };
    switch (n.op) {
      case ElementwiseOp::kInput: return load_expression(n.index);
      case ElementwiseOp::kScalar: return t == DataType::kBool ? fmt::format("(s{} != 0)", n.index) : fmt::format("s{}", n.index);
      case ElementwiseOp::kConstant: return is_real ? lit(n.real) : integer_literal(t, n.integer);
      case ElementwiseOp::kNeg: return is_real ? "-" + a : wrapping(t, "0", '-', a);
      case ElementwiseOp::kAbs:
        return is_real ? fn("fabs") : fmt::format("({0} < 0 ? {1} : {0})", a, wrapping(t, "0", '-', a));
      case ElementwiseOp::kExp: return round_to(t, fn("exp"));
      case ElementwiseOp::kLog: return round_to(t, fn("log"));
      case ElementwiseOp::kSqrt: return round_to(t, fn("sqrt"));
      case ElementwiseOp::kRsqrt: return round_to(t, fn("rsqrt"));
      case ElementwiseOp::kTanh: return round_to(t, fn("tanh"));
      case ElementwiseOp::kErf: return round_to(t, fn("erf"));
      case ElementwiseOp::kSigmoid:
        return round_to(t, fmt::format("{0} / ({0} + {1}{2}(-{3}))", lit(1), "exp", is_float ? "f" : "", a));
      case ElementwiseOp::kRelu: return fmt::format("({0} < 0 ? ({1})0 : {0})", a, compute_type(t));
      case ElementwiseOp::kGeluErf:
        return round_to(t, fmt::format("{0} * {1} * ({2} + erf{3}({0} * {4}))", a, lit(0.5), lit(1), is_float ? "f" : "",
                                       lit(M_SQRT1_2)));
      case ElementwiseOp::kGeluTanh:
        return round_to(t, fmt::format("{1} * {0} * ({2} + tanh{3}({4} * ({0} + {5} * ({0} * {0} * {0}))))", a, lit(0.5),
                                       lit(1), is_float ? "f" : "", lit(M_SQRT2 * M_2_SQRTPI * 0.5), lit(0.044715)));
      case ElementwiseOp::kSilu:
        return round_to(t, fmt::format("{0} / ({1} + exp{2}(-{0}))", a, lit(1), is_float ? "f" : ""));
      case ElementwiseOp::kCast: return cast_expression(k_.type_of(n.operands[0]), t, a);
      case ElementwiseOp::kAdd: return round_to(t, arith("add", '+'));
      case ElementwiseOp::kSub: return round_to(t, arith("sub", '-'));
      case ElementwiseOp::kMul: return round_to(t, arith("mul", '*'));
      case ElementwiseOp::kDiv: return round_to(t, arith("div", '/'));
      case ElementwiseOp::kMaximum:
        return is_real ? fmt::format("(({0} > {1} || {0} != {0}) ? {0} : {1})", a, b) : fmt::format("({0} > {1} ? {0} : {1})", a, b);
      case ElementwiseOp::kMinimum:
        return is_real ? fmt::format("(({0} < {1} || {0} != {0}) ? {0} : {1})", a, b) : fmt::format("({0} < {1} ? {0} : {1})", a, b);
      case ElementwiseOp::kPow: return round_to(t, pow_expression(n, a));
      case ElementwiseOp::kLt: return fmt::format("({} < {})", a, b);
      case ElementwiseOp::kLe: return fmt::format("({} <= {})", a, b);
      case ElementwiseOp::kGt: return fmt::format("({} > {})", a, b);
      case ElementwiseOp::kGe: return fmt::format("({} >= {})", a, b);
      case ElementwiseOp::kEq: return fmt::format("({} == {})", a, b);
      case ElementwiseOp::kNe: return fmt::format("({} != {})", a, b);
      case ElementwiseOp::kWhere: return fmt::format("({} ? {} : {})", a, b, c3);  // a is the condition
    }
    return "?";
  }

  const ElementwiseKernel& k_;
  const int rank_;
  bool vector_element_ = false;  // expressions read element e of the vector path's groups
};

}  // namespace

std::string ElementwiseKernel::source() const { return Generator(*this).run(); }

}  // namespace moreh::runtime
