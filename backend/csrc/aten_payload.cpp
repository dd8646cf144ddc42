#include "backend/csrc/aten_payload.h"

namespace moreh::backend {

runtime::Attribute to_attribute(const c10::IValue& v) {
  if (v.isNone()) return std::monostate{};
  if (v.isBool()) return v.toBool();
  if (v.isInt()) return v.toInt();
  if (v.isDouble()) return runtime::StepValue{v.toDouble()};
  if (v.isString()) return std::string(v.toStringRef());
  if (v.isIntList()) return v.toIntVector();
  if (v.isDoubleList()) return v.toDoubleVector();
  if (v.isScalar()) {
    const c10::Scalar s = v.toScalar();
    if (s.isBoolean()) return s.toBool();
    if (s.isIntegral(false)) return s.toLong();
    return runtime::StepValue{s.isComplex() ? s.toComplexDouble().real() : s.toDouble()};
  }
  if (v.isDevice()) return std::string(v.toDevice().str());
  if (v.isList()) {  // Scalar[] (foreach scalar lists) and friends: values are step data
    std::vector<double> out;
    for (const auto& e : v.toListRef()) {
      if (e.isScalar() || e.isDouble() || e.isInt()) out.push_back(e.toScalar().toDouble());
      else out.push_back(0.0);
    }
    return out;
  }
  if (v.isGenerator()) return runtime::Seed{};
  return std::string(v.tagKind());
}

}  // namespace moreh::backend
