#include "backend/csrc/data_dependence.h"

#include <ATen/core/enum_tag.h>

#include <string>
#include <unordered_set>

namespace moreh::backend {

DataDependence data_dependence_of(const c10::OperatorHandle& op) {
  const auto& name = op.schema().operator_name();
  // _embedding_bag's Meta kernel sizes its bookkeeping outputs differently from the CPU kernel, and
  // backward reads them: the shapes must come from the real kernel.
  static const std::unordered_set<std::string> meta_disagrees = {"aten::_embedding_bag",
                                                                 "aten::_embedding_bag_forward_only"};
  if (meta_disagrees.count(name.name)) return DataDependence::kAlways;
  if (!op.hasTag(at::Tag::dynamic_output_shape) && !op.hasTag(at::Tag::data_dependent_output))
    return DataDependence::kNone;
  if (name.name == "aten::index" && name.overload_name == "Tensor") return DataDependence::kBooleanIndices;
  if (name.name == "aten::repeat_interleave" && name.overload_name == "Tensor") return DataDependence::kNoOutputSize;
  return DataDependence::kAlways;
}

bool call_needs_values(DataDependence kind, const c10::FunctionSchema& schema, const c10::IValue* args) {
  switch (kind) {
    case DataDependence::kNone:
      return false;
    case DataDependence::kAlways:
      return true;
    case DataDependence::kBooleanIndices: {
      // index.Tensor(Tensor self, Tensor?[] indices)
      for (const auto& e : args[1].toOptionalTensorList()) {
        std::optional<at::Tensor> t = e;
        if (t && t->defined() && (t->scalar_type() == at::kBool || t->scalar_type() == at::kByte)) return true;
      }
      return false;
    }
    case DataDependence::kNoOutputSize: {
      // repeat_interleave.Tensor(Tensor repeats, *, SymInt? output_size=None)
      auto index = schema.argumentIndexWithName("output_size");
      return !index || args[*index].isNone();
    }
  }
  return true;
}

}  // namespace moreh::backend
