#include "backend/csrc/aten_kernel_provider.h"

#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <algorithm>
#include <string>

#include "backend/csrc/aten_payload.h"
#include "backend/csrc/moreh_storage.h"
#include "backend/csrc/overrideable_attention.h"
#include "runtime/base/errors.h"

namespace moreh::backend {
namespace {

bool is_native_dropout(const c10::OperatorHandle& op) {
  static const auto id = c10::Dispatcher::singleton().findSchemaOrThrow("aten::native_dropout", "").operator_name();
  return op.operator_name() == id;
}

// native_dropout has no generator argument (the kernel would draw from the device's global generator),
// so moreh draws the mask itself from the node's seed, with the CPU kernel's formula.
void native_dropout(torch::jit::Stack& stack, at::Generator gen, const runtime::LocalLaunch* local) {
  at::Tensor input = stack[0].toTensor();
  double p = stack[1].toDouble();
  std::optional<bool> train = stack[2].toOptional<bool>();
  torch::jit::drop(stack, 3);
  if (input.numel() == 0 || (train && !*train)) {
    at::Tensor out = input.clone();
    stack.emplace_back(out);
    stack.emplace_back(at::ones_like(input, input.options().dtype(at::kBool)));
    return;
  }
  double keep = 1.0 - p;
  double scale = keep == 0 ? 0.0 : 1.0 / keep;
  at::Tensor mask;
  if (local && local->input0_dim >= 0 && local->rows.count > 0) {
    // Split by rows: draw the whole batch's mask, as one device would, and keep this device's rows.
    const int dim = local->input0_dim;
    const int64_t per_row = input.size(dim) / local->rows.count;
    std::vector<int64_t> whole(input.sizes().begin(), input.sizes().end());
    whole[dim] = per_row * local->batch_rows;
    mask = at::empty(whole, input.options()).bernoulli_(keep, gen).narrow(dim, local->rows.begin * per_row,
                                                                          input.size(dim));
  } else {
    mask = at::empty_like(input, at::MemoryFormat::Contiguous).bernoulli_(keep, gen);
  }
  at::Tensor out = input.mul(mask).mul_(scale);
  stack.emplace_back(out);
  stack.emplace_back(mask.to(at::kBool));
}

// The inputs' memory of the launch running on this thread (each device's stream launches on its own).
std::vector<const void*>& input_data() {
  thread_local std::vector<const void*> data;
  return data;
}

}  // namespace

void AtenKernelProvider::launch(const runtime::Node& node, const runtime::LaunchContext& ctx) {
  thread_local bool threads_ready = (at::init_num_threads(), true);
  (void)threads_ready;
  const auto& p = static_cast<const AtenPayload&>(*node.payload);
  const c10::Device device = torch_device(ctx.device());
  std::vector<const void*>& inputs = input_data();
  inputs.clear();
  static const std::vector<uint32_t> kAll;
  const std::vector<uint32_t>& elements = ctx.local() ? ctx.local()->elements : kAll;
  torch::jit::Stack stack = payload_stack(p, device, [&](size_t i) {
    runtime::PhysicalBlock& block = ctx.input_memory(i);
    inputs.push_back(block.data());
    return view(block, node.inputs[i]);
  }, elements);
  if (p.seeded && p.generator_arg >= 0) stack[p.generator_arg] = generator(p.seed, ctx.device());
  if (ctx.local())
    for (const auto& [arg, value] : ctx.local()->int_args) stack.at(static_cast<size_t>(arg)) = value;
  if (!p.row_cuts.empty() && !(node.host_input && ctx.local()))
    throw runtime::Error("moreh: this worker was sent some rows of the batch for a launch that reads it whole");
  if (node.host_input && ctx.local()) {
    // x.to("moreh") split by rows: this device copies its rows of the host tensor.
    // On a worker the tensor may have come as some rows of the batch only (payload_wire.cpp).
    const runtime::RowRange rows = ctx.local()->rows;
    for (size_t i = 0; i < stack.size(); ++i) {
      auto& a = stack[i];
      if (!a.isTensor() || !a.toTensor().defined() || a.toTensor().dim() == 0) continue;
      const auto cut = std::find_if(p.row_cuts.begin(), p.row_cuts.end(), [&](const auto& c) { return c.arg == i; });
      if (cut == p.row_cuts.end()) {
        if (a.toTensor().size(0) == ctx.local()->batch_rows) a = a.toTensor().narrow(0, rows.begin, rows.count);
        continue;
      }
      if (cut->whole != ctx.local()->batch_rows || rows.begin < cut->begin ||
          rows.begin + rows.count > cut->begin + a.toTensor().size(0))
        throw runtime::Error("moreh: this worker was sent rows " + std::to_string(cut->begin) + " to " +
                             std::to_string(cut->begin + a.toTensor().size(0)) + " of a batch of " +
                             std::to_string(cut->whole) + " and asked for rows " + std::to_string(rows.begin) +
                             " to " + std::to_string(rows.begin + rows.count) + " of a batch of " +
                             std::to_string(ctx.local()->batch_rows));
      a = a.toTensor().narrow(0, rows.begin - cut->begin, rows.count);
    }
  }

  on_device(ctx.device(), [&] {
    // The recorded arguments hold host tensors as themselves and moreh tensors as undefined placeholders.
    for (size_t i = 0; i < p.args.size(); ++i)
      if (p.args[i].isTensor() && p.args[i].toTensor().defined())
        stack[i] = host_argument(stack[i].toTensor(), ctx.device());
    {
      PayloadKernelScope scope(p);
      if (p.seeded && p.generator_arg < 0 && is_native_dropout(p.op))
        native_dropout(stack, generator(p.seed, ctx.device()), ctx.local());
      else if (is_overrideable_attention(p.op))
        run_overrideable_attention(p.op, stack, torch_device(ctx.device()).type());
      else
        p.op.redispatchBoxed(c10::DispatchKeySet(dispatch_key()), &stack);
    }
    for (size_t k = 0; k < node.outputs.size(); ++k)
      bind(ctx, k, node.outputs[k], payload_result(p, stack, k, elements));
  });
}

void AtenKernelProvider::bind(const runtime::LaunchContext& ctx, size_t k, const runtime::TensorRef& ref,
                              const at::Tensor& r) const {
  const std::vector<const void*>& inputs = input_data();
  // A launch on one device's rows of the batch holds that device's part of the buffer (what the plan counted),
  // not the whole batch's: the bytes from the buffer's start to the end of the local view.
  uint64_t bytes = ref.buffer->bytes();
  if (ctx.local()) {
    const int64_t span = view_span(ref);
    bytes = std::min<uint64_t>(bytes, span == 0 ? 0 : static_cast<uint64_t>(ref.offset + span) * ref.itemsize);
  }
  bool adoptable = r.defined() && r.device() == torch_device(ctx.device()) &&
                   r.scalar_type() == static_cast<c10::ScalarType>(ref.dtype) && r.storage_offset() == ref.offset &&
                   r.sizes().equals({ref.sizes.data(), ref.sizes.size()}) &&
                   r.strides().equals({ref.strides.data(), ref.strides.size()}) && r.storage().nbytes() >= bytes &&
                   r.storage().data() != nullptr &&
                   std::find(inputs.begin(), inputs.end(), r.storage().data()) == inputs.end();
  if (adoptable) {
    auto owner = std::make_shared<c10::Storage>(r.storage());
    auto block = ctx.device().adopt(owner->mutable_data(), owner->nbytes(), owner);
    block->provider_view() = owner;
    ctx.bind_output(k, std::move(block));
    return;
  }
  // The kernel chose another layout than its meta kernel: copy into the recorded one.
  auto block = ctx.device().allocate(bytes);
  at::Tensor dst = view(*block, ref);
  if (r.defined() && r.sizes() == dst.sizes()) {
    // A host result going to a GPU (a kernel that returns a CPU scalar): no blocking copy, whose stream
    // synchronization would stop the replay until the GPU caught up. `r` is this kernel's own fresh tensor.
    dst.copy_(r, /*non_blocking=*/r.device().is_cpu() && !dst.device().is_cpu());
  } else if (!r.defined() || r.numel() == 0) {
    // Meta and device kernels disagree on an unused result (eval-mode batch norm's saved statistics are
    // sized by Meta and empty on CPU): the recorded tensor exists and holds zeros.
    dst.zero_();
  } else {
    TORCH_CHECK(false, "the ", c10::toString(dispatch_key()), " kernel returned shape ", r.sizes(),
                " where its Meta kernel promised ", dst.sizes());
  }
  ctx.bind_output(k, std::move(block));
}

}  // namespace moreh::backend
