#include "runtime/host/host_arithmetic.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "runtime/base/low_precision_float.h"

namespace moreh::runtime {
namespace {

double load(DataType type, const void* p, uint64_t i) {
  switch (type) {
    case DataType::kFloat32: return static_cast<const float*>(p)[i];
    case DataType::kFloat64: return static_cast<const double*>(p)[i];
    case DataType::kBFloat16: return bfloat16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DataType::kFloat16: return float16_to_float(static_cast<const uint16_t*>(p)[i]);
    default: throw std::invalid_argument("host arithmetic on " + std::string(name_of(type)));
  }
}

void store(DataType type, void* p, uint64_t i, double v) {
  switch (type) {
    case DataType::kFloat32: static_cast<float*>(p)[i] = static_cast<float>(v); return;
    case DataType::kFloat64: static_cast<double*>(p)[i] = v; return;
    case DataType::kBFloat16: static_cast<uint16_t*>(p)[i] = float_to_bfloat16(static_cast<float>(v)); return;
    case DataType::kFloat16: static_cast<uint16_t*>(p)[i] = float_to_float16(static_cast<float>(v)); return;
    default: throw std::invalid_argument("host arithmetic on " + std::string(name_of(type)));
  }
}

}  // namespace

void scale_elements(DataType type, void* data, uint64_t count, double factor) {
  if (factor == 0) {
    load(type, data, 0);  // rejects non-float types
    std::memset(data, 0, count * size_of(type));
    return;
  }
  if (type == DataType::kFloat32) {  // the common case, kept simple enough to vectorize
    float* f = static_cast<float*>(data);
    const float k = static_cast<float>(factor);
    for (uint64_t i = 0; i < count; ++i) f[i] *= k;
    return;
  }
  for (uint64_t i = 0; i < count; ++i) store(type, data, i, load(type, data, i) * factor);
}

void divide_elements(DataType type, void* data, uint64_t count, DataType divisor, const void* y) {
  if (type == DataType::kFloat32 && divisor == DataType::kFloat32) {  // float math, as the kernel's
    float* f = static_cast<float*>(data);
    const float d = *static_cast<const float*>(y);
    for (uint64_t i = 0; i < count; ++i) f[i] = f[i] / d;
    return;
  }
  const double d = load(divisor, y, 0);  // load and store reject non-float types
  for (uint64_t i = 0; i < count; ++i) store(type, data, i, load(type, data, i) / d);
}

void combine_scalars(DataType type, void* x, const void* y, ScalarOp op) {
  const double a = load(type, x, 0), b = load(type, y, 0);
  if (op == ScalarOp::kMultiply) store(type, x, 0, b == 0 ? 0.0 : a * b);
  else store(type, x, 0, a / b);
}

}  // namespace moreh::runtime
