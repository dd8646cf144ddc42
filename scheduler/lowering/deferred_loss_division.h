// 1F1B with a mean loss (DESIGN.md §2.5): a micro-batch's backward pass starts before the later
// micro-batches' forward passes, so the loss's total weight (the count of targets not ignored, or their
// class weights' sum), which a mean's gradient divides by, is not known yet. This pass takes that gradient
// as a sum instead (nll_loss_backward with reduction sum), lets the backward pass carry gradients scaled by
// the total weight, and divides each by it where it leaves the pipelined part of the step: before the
// first op that needs every micro-batch's value (a gradient's all-reduce, the optimizer) or at the step's
// end. The loss's own division, and any other op of the forward pass that reads what its micro-batches
// made (the script's `loss / accumulate`, a second loss's sum), waits until every micro-batch is in.
#pragma once
#include <string>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "scheduler/lowering/batch_split.h"

namespace moreh::scheduler {

struct DeferredDivision {
  bool rewritten = false;        // `steps` were rewritten (false: nothing waits, or refused)
  int sum_gradients = 0;         // mean losses' gradients taken as sums
  int divisions = 0;             // gradients divided by the total weight afterwards
  std::string refused;           // why the division cannot be deferred ("" when it was, or there is none)
};

// Rewrites `steps` (batch_split's sequence for micro-batches) as above, in place; refused, or where nothing
// waits, leaves them as they were. The backward pass must be linear in the loss's gradient, as autograd's is;
// an op that adds a gradient of the deferred loss to a value that is not one (a second loss's gradient, say)
// refuses, as does a second mean loss or an op of the backward pass that reads the loss itself.
DeferredDivision defer_loss_division(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                     std::vector<SplitStep>& steps, size_t forward_end);

}  // namespace moreh::scheduler
