// Which calls of PyTorch's data-dependent ops (tags dynamic_output_shape / data_dependent_output)
// really need their inputs' values to size their results. Some such ops are data-dependent only for
// some arguments: `x[idx]` (index.Tensor) with integer indices has a result shaped by the indices'
// shapes, and only boolean masks make it depend on values; repeat_interleave with output_size given
// needs no values either. Those calls are recorded like any op (sized by their Meta kernels) instead
// of ending the step graph: Hugging Face's attention masks index this way in every forward.
#pragma once
#include <ATen/core/dispatch/Dispatcher.h>

namespace moreh::backend {

enum class DataDependence {
  kNone,            // not tagged: recorded
  kAlways,          // every call needs values: ends the step and runs eagerly
  kBooleanIndices,  // only when an index is a bool/uint8 mask (index.Tensor)
  kNoOutputSize,    // only when output_size is None (repeat_interleave.Tensor)
};

DataDependence data_dependence_of(const c10::OperatorHandle& op);

// Whether this call (its arguments start at `args`) needs its inputs' values to size its results.
bool call_needs_values(DataDependence kind, const c10::FunctionSchema& schema, const c10::IValue* args);

}  // namespace moreh::backend
