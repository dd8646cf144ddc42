#include "backend/csrc/host_read.h"

#include <ATen/ops/is_nonzero_native.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <algorithm>
#include <unordered_map>

#include "backend/csrc/aten_payload.h"
#include "backend/csrc/moreh_storage.h"

namespace moreh::backend {
namespace {

constexpr size_t kMaxNodes = 64;
constexpr uint64_t kMaxBytes = 1 << 20;

// CPU copies of the buffers the read touches, keyed by buffer; bounded in bytes.
class HostCopies {
 public:
  bool has(const runtime::Buffer* b) const { return storages_.count(b) != 0; }
  // A zeroed copy of `b` (its value is about to be written); false past the bound.
  bool fresh(const runtime::Buffer* b) {
    if (has(b)) return true;
    if (bytes_ + b->bytes() > kMaxBytes) return false;
    bytes_ += b->bytes();
    storages_.emplace(b, at::zeros({static_cast<int64_t>(b->bytes())}, at::kByte).storage());
    return true;
  }
  // A copy of what earlier steps left in `b` (they have all run); false when it has no value to copy.
  bool from_device(runtime::Buffer& b) {
    if (b.failure() || !fresh(&b)) return false;
    if (engine().plan_only()) return true;  // nothing ran: zeros
    engine().bring_home(b);  // rows or partial sums on several devices
    runtime::PhysicalBlock* m = b.memory();
    if (!m) return false;
    m->device().read(storages_.at(&b).mutable_data(), m->data(), std::min<uint64_t>(b.bytes(), m->bytes()));
    return true;
  }
  at::Tensor view(const runtime::TensorRef& r) const {
    at::Tensor t = at::empty({0}, at::TensorOptions().dtype(static_cast<c10::ScalarType>(r.dtype)));
    t.set_(storages_.at(r.buffer.get()), r.offset, c10::IntArrayRef(r.sizes.data(), r.sizes.size()),
           c10::IntArrayRef(r.strides.data(), r.strides.size()));
    return t;
  }

 private:
  std::unordered_map<const runtime::Buffer*, c10::Storage> storages_;
  uint64_t bytes_ = 0;
};

// A node the host can run again as recorded: an ATen op that draws no random numbers (an upload's source is
// among its arguments), and not the attention kernels the provider runs its own way.
bool runs_on_the_host(const runtime::Node& node) {
  const auto* p = dynamic_cast<const AtenPayload*>(node.payload.get());
  return p && !p->seeded && p->op.schema().name().find("overrideable") == std::string::npos;
}

// Runs one pending node's CPU kernel on the host copies (written inputs are updated in them).
void run_on_host(const runtime::Node& node, HostCopies& copies) {
  const auto& p = static_cast<const AtenPayload&>(*node.payload);
  torch::jit::Stack stack =
      payload_stack(p, c10::Device(c10::kCPU), [&](size_t i) { return copies.view(node.inputs[i]); });
  {
    PayloadKernelScope scope(p);
    p.op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CPU), &stack);
  }
  for (size_t k = 0; k < p.outputs.size(); ++k) copies.view(node.outputs[k]).copy_(payload_result(p, stack, k));
}

}  // namespace

std::optional<at::Tensor> value_without_ending_the_step(const at::Tensor& self) {
  auto& e = engine();
  const runtime::TensorRef ref = make_ref(self);
  auto deps = e.pending_dependencies(*ref.buffer, kMaxNodes);
  // Nothing pending writes it, or the read needs the whole pending step: ending the step is what it costs.
  if (!deps || deps->empty() || deps->size() == e.pending_ops()) return std::nullopt;
  for (const auto& node : *deps)
    if (!runs_on_the_host(node)) return std::nullopt;
  HostCopies copies;
  bool waited = false;
  for (const auto& node : *deps) {
      for (const auto& o : node.outputs)
        if (!copies.fresh(o.buffer.get())) return std::nullopt;
      for (size_t i = 0; i < node.inputs.size(); ++i) {
        runtime::Buffer& b = *node.inputs[i].buffer;
        if (copies.has(&b)) continue;
        const bool initialized_here = std::find(node.initializes.begin(), node.initializes.end(), i) != node.initializes.end();
        if (initialized_here) {
          if (!copies.fresh(&b)) return std::nullopt;
          continue;
        }
        if (!waited) {
          e.wait_submitted();  // what earlier steps left is final (a failed one is reported here, as a read would)
          waited = true;
        }
        if (!copies.from_device(b)) return std::nullopt;
      }
    try {
      run_on_host(node, copies);
    } catch (const std::exception&) {
      return std::nullopt;  // the step itself will say what is wrong, naming the op
    }
  }
  e.note_read_without_step();
  return copies.view(ref).clone();
}

namespace {

// bool(tensor) on a moreh tensor of one element: from the host when the pending step need not end for it.
bool is_nonzero(const at::Tensor& self) {
  if (self.device().type() == kMoreh && self.numel() == 1)
    if (auto value = value_without_ending_the_step(self)) return at::is_nonzero(*value);
  return at::native::is_nonzero(self);
}

}  // namespace

// Above autograd, as composites are (is_nonzero is one: it reads the value with item()).
TORCH_LIBRARY_IMPL(aten, AutogradPrivateUse1, m) { m.impl("is_nonzero", TORCH_FN(is_nonzero)); }

}  // namespace moreh::backend
