#include "backend/csrc/aten_payload.h"

namespace moreh::backend {

torch::jit::Stack payload_stack(const AtenPayload& p, const c10::Device& device,
                                const std::function<at::Tensor(size_t)>& input) {
  torch::jit::Stack stack(p.args.begin(), p.args.end());
  for (auto& a : stack) {
    if (a.isTensorList()) a = a.toTensorList().copy();
    else if (a.isOptionalTensorList()) a = a.toOptionalTensorList().copy();
    else if (a.isDevice()) a = device;  // the recorded device ("moreh", kept as CPU) is where it runs
  }
  for (size_t i = 0; i < p.inputs.size(); ++i) {
    at::Tensor t = input(i);
    const auto& slot = p.inputs[i];
    c10::IValue& a = stack[slot.arg];
    if (slot.elem < 0) a = std::move(t);
    else if (a.isTensorList()) a.toTensorList().set(slot.elem, t);
    else a.toOptionalTensorList().set(slot.elem, std::optional<at::Tensor>(t));
  }
  return stack;
}

at::Tensor payload_result(const AtenPayload& p, const torch::jit::Stack& stack, size_t k) {
  const size_t r = p.op.schema().returns().size();
  const auto& slot = p.outputs.at(k);
  const c10::IValue& v = stack[stack.size() - r + slot.ret];
  return slot.elem < 0 ? v.toTensor() : v.toTensorList().get(slot.elem);
}

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
