#include "backend/csrc/lazy_fallback.h"

#include <ATen/ATen.h>
#include <ATen/core/enum_tag.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "backend/csrc/aten_payload.h"
#include "backend/csrc/device_hooks.h"
#include "backend/csrc/moreh_storage.h"
#include "runtime/errors.h"
#include "runtime/logging.h"

namespace moreh::backend {
namespace {

using c10::DispatchKey;

bool has_key(const c10::OperatorHandle& op, DispatchKey k) { return op.hasKernelForDispatchKey(k); }
bool has_composite(const c10::OperatorHandle& op) {
  return has_key(op, DispatchKey::CompositeExplicitAutograd) ||
         has_key(op, DispatchKey::CompositeExplicitAutogradNonFunctional);
}
bool has_meta(const c10::OperatorHandle& op) { return has_key(op, DispatchKey::Meta) || has_composite(op); }
bool has_cpu(const c10::OperatorHandle& op) { return has_key(op, DispatchKey::CPU) || has_composite(op); }

runtime::OpId op_id(const c10::OperatorHandle& op) {
  thread_local std::unordered_map<const c10::FunctionSchema*, runtime::OpId> ids;
  const auto* key = &op.schema();
  auto it = ids.find(key);
  if (it != ids.end()) return it->second;
  return ids.emplace(key, runtime::intern_op(c10::toString(op.schema().operator_name()))).first->second;
}

void warn_once(const c10::OperatorHandle& op, const char* why) {
  static std::mutex mu;
  static std::unordered_set<std::string> seen;
  std::string name = c10::toString(op.schema().operator_name());
  std::lock_guard<std::mutex> lock(mu);
  if (seen.insert(name).second)
    runtime::log_message(runtime::LogLevel::kWarning,
                         "moreh: " + name + " " + why +
                             "; it ends the step graph and runs eagerly on materialized data (warned once)");
}

// Meta twins of real tensors. Tensors that share a storage get meta tensors that share one, so meta
// kernels see the same aliasing the CPU kernels will.
class MetaTwins {
 public:
  at::Tensor twin(const at::Tensor& t) {
    auto& st = storages_[t.storage().unsafeGetStorageImpl()];
    if (!st) {
      st = c10::Storage(c10::Storage::use_byte_size_t(), t.storage().nbytes(),
                        c10::DataPtr(nullptr, c10::Device(c10::kMeta)), c10::GetAllocator(c10::kMeta), true);
      meta_impls_.insert(st.unsafeGetStorageImpl());
    }
    auto m = at::detail::make_tensor<c10::TensorImpl>(c10::Storage(st), c10::DispatchKeySet(DispatchKey::Meta),
                                                      t.dtype());
    m.unsafeGetTensorImpl()->set_sizes_and_strides(t.sizes(), t.strides(), t.storage_offset());
    return m;
  }
  // The real storage a meta result aliases, if any.
  const c10::StorageImpl* source_of(const at::Tensor& meta) const {
    auto* impl = meta.storage().unsafeGetStorageImpl();
    for (const auto& [real, st] : storages_)
      if (st.unsafeGetStorageImpl() == impl) return real;
    return nullptr;
  }

 private:
  std::unordered_map<const c10::StorageImpl*, c10::Storage> storages_;
  std::unordered_set<const c10::StorageImpl*> meta_impls_;
};

void record_node(runtime::Node node) {
  try {
    engine().record(std::move(node));
  } catch (const runtime::OutOfMemoryError& e) {
    TORCH_CHECK_WITH(OutOfMemoryError, false, e.what());
  }
}

// Grows a moreh tensor whose out= argument the meta kernel resized.
void adopt_meta_geometry(const at::Tensor& real, const at::Tensor& meta) {
  if (real.sizes() == meta.sizes() && real.strides() == meta.strides() &&
      real.storage_offset() == meta.storage_offset())
    return;
  int64_t needed = static_cast<int64_t>(meta.storage().nbytes());
  if (needed > static_cast<int64_t>(real.storage().nbytes())) {
    TORCH_CHECK(!real.storage().data_ptr() || real.numel() == 0 || !buffer_of(real.storage())->defined(),
                "moreh: growing a defined out= tensor in place is not supported; pass an out tensor of the result's size");
    real.storage().set_data_ptr_noswap(moreh_allocator()->allocate(needed));
    real.storage().set_nbytes(needed);
  }
  real.unsafeGetTensorImpl()->set_sizes_and_strides(meta.sizes(), meta.strides(), meta.storage_offset());
}

const c10::Argument* aliased_argument(const c10::FunctionSchema& schema, const c10::Argument& ret, size_t* index) {
  if (!ret.alias_info()) return nullptr;
  for (size_t i = 0; i < schema.arguments().size(); ++i) {
    const auto& a = schema.arguments()[i];
    if (a.alias_info() && a.alias_info()->beforeSets() == ret.alias_info()->beforeSets()) {
      *index = i;
      return &a;
    }
  }
  return nullptr;
}

void check_device(const at::Tensor& t, const c10::OperatorHandle& op) {
  TORCH_CHECK(t.device().is_cpu() || t.device().type() == kMoreh, "moreh: ", op.schema().operator_name(),
              " got a tensor on ", t.device(), "; moreh ops take moreh tensors (and CPU tensors as inputs)");
}

// Data-dependent ops and ops with no Meta kernel: flush, then run the CPU kernel on materialized memory.
void run_eagerly(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  const size_t n = schema.arguments().size();
  const size_t base = stack->size() - n;
  engine().note_eager_op();
  synchronize_device();
  std::vector<c10::IValue> originals(stack->begin() + base, stack->end());
  std::unordered_set<const void*> input_memory;
  auto to_cpu = [&](const at::Tensor& t) -> at::Tensor {
    if (!is_moreh(t)) return t;
    at::Tensor v = materialized_cpu_view(t);
    input_memory.insert(v.storage().data());
    return v;
  };
  for (size_t i = 0; i < n; ++i) {
    auto& a = (*stack)[base + i];
    if (a.isTensor()) {
      a = to_cpu(a.toTensor());
    } else if (a.isTensorList()) {
      auto list = a.toTensorList();
      c10::List<at::Tensor> out;
      for (const at::Tensor& t : list) out.push_back(to_cpu(t));
      a = out;
    } else if (a.isOptionalTensorList()) {
      c10::List<std::optional<at::Tensor>> out;
      for (const auto& e : a.toOptionalTensorList()) {
        std::optional<at::Tensor> t = e;
        out.push_back(t ? std::optional<at::Tensor>(to_cpu(*t)) : std::nullopt);
      }
      a = out;
    } else if (a.isDevice()) {
      a = c10::Device(c10::kCPU);
    } else if (a.isGenerator() || (a.isNone() && schema.arguments()[i].type()->kind() == c10::TypeKind::OptionalType &&
                                   op.hasTag(at::Tag::nondeterministic_seeded) &&
                                   schema.arguments()[i].name() == "generator")) {
      a = at::make_generator<at::CPUGeneratorImpl>(next_seed(a));
    }
  }
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(c10::DispatchKeySet(DispatchKey::CPU), stack);
  }
  const size_t r = schema.returns().size();
  auto wrap = [&](const at::Tensor& t) -> at::Tensor {
    if (!t.defined() || !t.device().is_cpu()) return t;
    at::Tensor src = input_memory.count(t.storage().data()) ? t.clone() : t;
    at::Tensor out = new_moreh_tensor(static_cast<int64_t>(src.storage().nbytes()), src.sizes(), src.strides(),
                                      src.storage_offset(), src.scalar_type());
    const auto& buffer = buffer_of(out.storage());
    auto owner = std::make_shared<c10::Storage>(src.storage());
    try {
      auto block = engine().device(0).adopt(src.storage().mutable_data(), src.storage().nbytes(), owner);
      block->provider_view() = owner;
      buffer->bind(std::move(block));
    } catch (const runtime::OutOfMemoryError& e) {
      TORCH_CHECK_WITH(OutOfMemoryError, false, e.what());
    }
    buffer->mark_defined();
    return out;
  };
  for (size_t j = 0; j < r; ++j) {
    auto& v = (*stack)[stack->size() - r + j];
    size_t ai = 0;
    if (aliased_argument(schema, schema.returns()[j], &ai)) {
      v = originals[ai];
    } else if (v.isTensor()) {
      v = wrap(v.toTensor());
    } else if (v.isTensorList()) {
      c10::List<at::Tensor> out;
      for (const at::Tensor& t : v.toTensorList()) out.push_back(wrap(t));
      v = out;
    }
  }
}

}  // namespace

void lazy_fallback(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  if (op.hasTag(at::Tag::dynamic_output_shape) || op.hasTag(at::Tag::data_dependent_output)) {
    run_eagerly(op, stack);
    return;
  }
  if (!has_meta(op)) {
    TORCH_CHECK_NOT_IMPLEMENTED(has_cpu(op), "moreh does not support ", schema.operator_name(),
                                ": it has neither a Meta nor a CPU kernel");
    warn_once(op, "has no Meta kernel");
    run_eagerly(op, stack);
    return;
  }
  TORCH_CHECK_NOT_IMPLEMENTED(has_cpu(op), "moreh does not support ", schema.operator_name(),
                              ": it has no CPU kernel for moreh's host devices to run");

  const size_t n = schema.arguments().size();
  const size_t base = stack->size() - n;
  auto payload = std::make_shared<AtenPayload>(op);
  payload->args.assign(stack->begin() + base, stack->end());
  runtime::Node node;
  node.op = op_id(op);
  MetaTwins twins;
  torch::jit::Stack meta_stack;
  meta_stack.reserve(n);
  std::vector<at::Tensor> moreh_inputs;
  std::vector<uint16_t> input_arg;  // input index -> argument index

  auto take = [&](const at::Tensor& t, size_t arg, int32_t elem) -> at::Tensor {
    if (!t.defined()) return t;
    check_device(t, op);
    if (is_moreh(t)) {
      payload->inputs.push_back({static_cast<uint16_t>(arg), elem});
      moreh_inputs.push_back(t);
      input_arg.push_back(static_cast<uint16_t>(arg));
      return twins.twin(t);
    }
    TORCH_CHECK(!(schema.arguments()[arg].alias_info() && schema.arguments()[arg].alias_info()->isWrite()),
                "moreh: ", schema.operator_name(), " would write into a CPU tensor; copy the result with .cpu()");
    return t.dim() == 0 ? t : twins.twin(t);
  };

  for (size_t i = 0; i < n; ++i) {
    c10::IValue& a = payload->args[i];
    if (a.isTensor()) {
      at::Tensor t = a.toTensor();
      meta_stack.emplace_back(take(t, i, -1));
      if (is_moreh(t)) a = at::Tensor();
      else if (t.defined()) a = t.clone();  // a CPU input is a snapshot of its value now
    } else if (a.isTensorList()) {
      auto list = a.toTensorList();
      c10::List<at::Tensor> metas, keep;
      for (size_t j = 0; j < list.size(); ++j) {
        at::Tensor t = list[j];
        metas.push_back(take(t, i, static_cast<int32_t>(j)));
        keep.push_back(is_moreh(t) ? at::Tensor() : (t.defined() ? t.clone() : t));
      }
      meta_stack.emplace_back(metas);
      a = keep;
    } else if (a.isOptionalTensorList()) {
      auto list = a.toOptionalTensorList();
      c10::List<std::optional<at::Tensor>> metas, keep;
      for (size_t j = 0; j < list.size(); ++j) {
        std::optional<at::Tensor> t = list[j];
        if (!t || !t->defined()) {
          metas.push_back(std::nullopt);
          keep.push_back(std::nullopt);
          continue;
        }
        metas.push_back(take(*t, i, static_cast<int32_t>(j)));
        keep.push_back(is_moreh(*t) ? std::optional<at::Tensor>(at::Tensor()) : std::optional<at::Tensor>(t->clone()));
      }
      meta_stack.emplace_back(metas);
      a = keep;
    } else if (a.isDevice()) {
      meta_stack.emplace_back(c10::Device(c10::kMeta));
      a = c10::Device(c10::kCPU);
      node.attrs.push_back(std::string("device"));
    } else if (a.isGenerator()) {
      payload->generator_arg = static_cast<int>(i);
      meta_stack.emplace_back(c10::IValue());
      node.attrs.push_back(runtime::Seed{});
    } else {
      meta_stack.push_back(a);
      node.attrs.push_back(to_attribute(a));
    }
  }
  if (op.hasTag(at::Tag::nondeterministic_seeded)) {
    payload->seeded = true;
    c10::IValue gen = payload->generator_arg >= 0 ? (*stack)[base + payload->generator_arg] : c10::IValue();
    payload->seed = next_seed(gen);
    if (payload->generator_arg >= 0) payload->args[payload->generator_arg] = c10::IValue();
    node.attrs.push_back(runtime::Seed{payload->seed});
  }

  op.redispatchBoxed(c10::DispatchKeySet(DispatchKey::Meta), &meta_stack);

  // Written inputs (in-place and out=): the returns loop below gives them the meta kernel's geometry.
  for (size_t k = 0; k < moreh_inputs.size(); ++k) {
    const auto& arg = schema.arguments()[input_arg[k]];
    if (arg.alias_info() && arg.alias_info()->isWrite()) node.written.push_back(static_cast<uint16_t>(k));
  }
  const size_t r = schema.returns().size();
  TORCH_INTERNAL_ASSERT(meta_stack.size() == r, "moreh: meta kernel of ", schema.operator_name(),
                        " left ", meta_stack.size(), " values for ", r, " returns");

  std::vector<c10::IValue> results(r);
  auto fresh = [&](const at::Tensor& m, uint16_t ret, int32_t elem) -> at::Tensor {
    if (!m.defined()) return m;
    if (const c10::StorageImpl* src = twins.source_of(m)) {
      for (const at::Tensor& in : moreh_inputs)
        if (in.storage().unsafeGetStorageImpl() == src)
          return moreh_view(in.storage(), m.sizes(), m.strides(), m.storage_offset(), m.scalar_type());
      TORCH_CHECK(false, "moreh: ", schema.operator_name(), " returned a view of a CPU tensor");
    }
    at::Tensor out = new_moreh_tensor(static_cast<int64_t>(m.storage().nbytes()), m.sizes(), m.strides(),
                                      m.storage_offset(), m.scalar_type());
    node.outputs.push_back(make_ref(out));
    payload->outputs.push_back({ret, elem});
    return out;
  };
  for (size_t j = 0; j < r; ++j) {
    const c10::IValue& mr = meta_stack[j];
    size_t ai = 0;
    if (aliased_argument(schema, schema.returns()[j], &ai)) {
      const c10::IValue& orig = (*stack)[base + ai];
      if (orig.isTensor() && mr.isTensor()) adopt_meta_geometry(orig.toTensor(), mr.toTensor());
      results[j] = orig;
    } else if (mr.isTensor()) {
      results[j] = fresh(mr.toTensor(), static_cast<uint16_t>(j), -1);
    } else if (mr.isTensorList()) {
      c10::List<at::Tensor> outs;
      auto list = mr.toTensorList();
      for (size_t e = 0; e < list.size(); ++e) outs.push_back(fresh(list[e], static_cast<uint16_t>(j), static_cast<int32_t>(e)));
      results[j] = outs;
    } else {
      results[j] = mr;
    }
  }
  node.inputs.reserve(moreh_inputs.size());
  for (const at::Tensor& t : moreh_inputs) node.inputs.push_back(make_ref(t));
  node.payload = std::move(payload);
  record_node(std::move(node));

  torch::jit::drop(*stack, n);
  for (auto& v : results) stack->push_back(std::move(v));
}

namespace {
std::once_flag g_registered;
size_t g_registered_count = 0;
}  // namespace

void register_recorded_composites() {
  std::call_once(g_registered, [] {
    static auto* lib = new torch::Library(torch::Library::IMPL, "aten", DispatchKey::PrivateUse1, __FILE__, __LINE__);
    auto& dispatcher = c10::Dispatcher::singleton();
    for (const auto& name : dispatcher.getAllOpNames()) {
      if (name.name.rfind("aten::", 0) != 0) continue;
      auto handle = dispatcher.findOp(name);
      if (!handle || has_key(*handle, DispatchKey::PrivateUse1)) continue;
      if (!has_key(*handle, DispatchKey::CPU) || !has_composite(*handle)) continue;
      bool returns_view = false;
      for (const auto& ret : handle->schema().returns())
        if (ret.alias_info() && !ret.alias_info()->isWrite()) returns_view = true;
      if (returns_view) continue;
      std::string impl_name = name.name.substr(6) + (name.overload_name.empty() ? "" : "." + name.overload_name);
      lib->impl(impl_name.c_str(), torch::CppFunction::makeFromBoxedFunction<&lazy_fallback>());
      ++g_registered_count;
    }
  });
}

size_t recorded_composite_count() { return g_registered_count; }

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) { m.fallback(torch::CppFunction::makeFromBoxedFunction<&lazy_fallback>()); }

}  // namespace moreh::backend
