#include "backend/csrc/aten_payload.h"

#include <algorithm>
#include <map>

namespace moreh::backend {

namespace {

// The length of the op's lists of tensors (the most inputs one argument takes), 0 when it takes none.
size_t list_length(const AtenPayload& p) {
  std::map<uint16_t, size_t> count;
  size_t length = 0;
  for (const auto& slot : p.inputs)
    if (slot.elem >= 0) length = std::max(length, ++count[slot.arg]);
  return length;
}

}  // namespace

torch::jit::Stack payload_stack(const AtenPayload& p, const c10::Device& device,
                                const std::function<at::Tensor(size_t)>& input, const std::vector<uint32_t>& elements) {
  torch::jit::Stack stack(p.args.begin(), p.args.end());
  for (auto& a : stack) {
    if (a.isTensorList()) a = a.toTensorList().copy();
    else if (a.isOptionalTensorList()) a = a.toOptionalTensorList().copy();
    else if (a.isDevice()) a = device;  // the recorded device ("moreh", kept as CPU) is where it runs
  }
  const size_t length = elements.empty() ? 0 : list_length(p);
  auto list_arg = [&](const c10::IValue& a) { return length > 1 && a.isList() && a.toListRef().size() == length; };
  // Of a list of `length`, the element that goes to position `at` of the elements kept (-1: left out).
  auto position = [&](int elem) -> int {
    const auto it = std::lower_bound(elements.begin(), elements.end(), static_cast<uint32_t>(elem));
    return it != elements.end() && *it == static_cast<uint32_t>(elem) ? static_cast<int>(it - elements.begin()) : -1;
  };
  size_t next = 0;  // the node's inputs are the kept ones, in order
  for (size_t i = 0; i < p.inputs.size(); ++i) {
    const auto& slot = p.inputs[i];
    c10::IValue& a = stack[slot.arg];
    int elem = slot.elem;
    if (elem >= 0 && list_arg(a)) {
      elem = position(elem);
      if (elem < 0) continue;
    }
    at::Tensor t = input(next++);
    if (elem < 0) a = std::move(t);
    else if (a.isTensorList()) a.toTensorList().set(elem, t);
    else a.toOptionalTensorList().set(elem, std::optional<at::Tensor>(t));
  }
  if (length > 1) {  // every list of `length` keeps the elements kept
    for (auto& a : stack) {
      if (!list_arg(a)) continue;
      if (a.isTensorList()) {  // filled in the kept order above
        auto l = a.toTensorList();
        l.resize(elements.size());
      } else if (a.isOptionalTensorList()) {
        auto l = a.toOptionalTensorList();
        l.resize(elements.size());
      } else {  // scalars, one per element
        const auto all = a.toList();
        c10::impl::GenericList kept(all.elementType());
        for (uint32_t e : elements) kept.push_back(all.get(e));
        a = c10::IValue(std::move(kept));
      }
    }
  }
  return stack;
}

at::Tensor payload_result(const AtenPayload& p, const torch::jit::Stack& stack, size_t k,
                          const std::vector<uint32_t>& elements) {
  const size_t r = p.op.schema().returns().size();
  size_t original = k;
  int position = -1;
  if (!elements.empty()) {  // output k of the kept ones
    size_t seen = 0;
    for (original = 0; original < p.outputs.size(); ++original) {
      const int elem = p.outputs[original].elem;
      const auto it = std::lower_bound(elements.begin(), elements.end(), static_cast<uint32_t>(std::max(elem, 0)));
      const bool kept = elem < 0 || (it != elements.end() && *it == static_cast<uint32_t>(elem));
      if (!kept) continue;
      if (seen++ == k) {
        position = elem < 0 ? -1 : static_cast<int>(it - elements.begin());
        break;
      }
    }
  }
  const auto& slot = p.outputs.at(original);
  const c10::IValue& v = stack[stack.size() - r + slot.ret];
  if (slot.elem < 0) return v.toTensor();
  return v.toTensorList().get(elements.empty() ? slot.elem : position);
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
