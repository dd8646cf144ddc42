// Results whose size a Meta kernel cannot know: oneDNN's RNN workspace (aten::mkldnn_rnn_layer), which Meta
// gives as empty (and the CPU kernel leaves out without gradients). Its size comes from running the CPU kernel
// once on zeros of the same shapes, in the same grad mode; the Meta cache then keeps it with the rest of the
// op's geometry.
#pragma once
#include <ATen/core/dispatch/Dispatcher.h>

#include "backend/csrc/meta_cache.h"

namespace moreh::backend {

// Corrects `entry` (what the Meta kernel said `op` returns for `args`) where the Meta kernel is known to be
// wrong; a no-op for every other op.
void probe_meta_result(const c10::OperatorHandle& op, const c10::IValue* args, MetaEntry& entry);

}  // namespace moreh::backend
