#include "backend/csrc/lazy_fallback.h"
#include "backend/csrc/layout_support.h"
#include "backend/csrc/meta_probe.h"

#include <ATen/ATen.h>
#include <ATen/core/enum_tag.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "backend/csrc/aten_payload.h"
#include "backend/csrc/cpp_meta_kernels.h"
#include "backend/csrc/data_dependence.h"
#include "backend/csrc/device_hooks.h"
#include "backend/csrc/meta_cache.h"
#include "backend/csrc/moreh_storage.h"
#include "runtime/base/errors.h"
#include "runtime/base/logging.h"

namespace moreh::backend {
namespace {

using c10::DispatchKey;

bool has_key(const c10::OperatorHandle& op, DispatchKey k) { return op.hasKernelForDispatchKey(k); }
bool has_composite(const c10::OperatorHandle& op) {
  return has_key(op, DispatchKey::CompositeExplicitAutograd) ||
         has_key(op, DispatchKey::CompositeExplicitAutogradNonFunctional);
}
bool has_meta(const c10::OperatorHandle& op) { return has_key(op, DispatchKey::Meta) || has_composite(op); }
bool is_generator_type(const c10::TypePtr& type) {
  if (type->kind() == c10::TypeKind::GeneratorType) return true;
  if (type->kind() == c10::TypeKind::OptionalType)
    return type->castRaw<c10::OptionalType>()->getElementType()->kind() == c10::TypeKind::GeneratorType;
  return false;
}

bool has_cpu(const c10::OperatorHandle& op) { return has_key(op, DispatchKey::CPU) || has_composite(op); }

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
};

void record_node(runtime::Node node) {
  try {
    engine().record(std::move(node));
  } catch (const runtime::OutOfMemoryError& e) {
    TORCH_CHECK_WITH(OutOfMemoryError, false, e.what());
  }
}

// Gives a written (out=) moreh tensor the geometry its op's Meta kernel gave it, growing its buffer
// when needed.
void adopt_geometry(const at::Tensor& real, c10::IntArrayRef sizes, c10::IntArrayRef strides, int64_t offset,
                    int64_t nbytes) {
  if (real.sizes() == sizes && real.strides() == strides && real.storage_offset() == offset) return;
  if (nbytes > static_cast<int64_t>(real.storage().nbytes())) {
    TORCH_CHECK(real.numel() == 0 || !buffer_of(real.storage())->defined(),
                "moreh: growing a defined out= tensor in place is not supported; pass an out tensor of the result's size");
    real.storage().set_data_ptr_noswap(moreh_allocator()->allocate(nbytes));
    real.storage().set_nbytes(nbytes);
  }
  real.unsafeGetTensorImpl()->set_sizes_and_strides(sizes, strides, offset);
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
  check_strided_layout(op.schema().operator_name(), t.layout());
  TORCH_CHECK(t.device().is_cpu() || t.device().type() == kMoreh, "moreh: ", op.schema().operator_name(),
              " got a tensor on ", t.device(), "; moreh ops take moreh tensors (and CPU tensors as inputs)");
}

// Data-dependent ops and ops with no Meta kernel: flush, then run the CPU kernel on materialized memory.
void run_eagerly(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  const size_t n = schema.arguments().size();
  const size_t base = stack->size() - n;
  engine().note_eager_op(c10::toString(schema.operator_name()));
  if (runtime::log_enabled(runtime::LogLevel::kDebug))
    runtime::log_message(runtime::LogLevel::kDebug,
                         "moreh: " + c10::toString(schema.operator_name()) + " ends the step graph and runs eagerly");
  synchronize_device();
  std::vector<c10::IValue> originals(stack->begin() + base, stack->end());
  std::unordered_set<const void*> input_memory;
  auto to_cpu = [&](const at::Tensor& t) -> at::Tensor {
    if (!is_moreh(t)) return t;
    at::Tensor v = materialized_cpu_view(t);
    input_memory.insert(v.storage().data());
    return v;
  };
  // Written tensors go in as resizable CPU copies (out= kernels resize them) and come back after.
  std::vector<std::pair<at::Tensor, at::Tensor>> written;  // (moreh tensor, its CPU stand-in)
  for (size_t i = 0; i < n; ++i) {
    auto& a = (*stack)[base + i];
    const auto& arg = schema.arguments()[i];
    bool writes = arg.alias_info() && arg.alias_info()->isWrite();
    if (a.isTensor() && writes && is_moreh(a.toTensor())) {
      at::Tensor m = a.toTensor();
      at::Tensor stand_in = materialized_cpu_view(m).clone(at::MemoryFormat::Preserve);
      written.emplace_back(m, stand_in);
      a = stand_in;
    } else if (a.isTensor()) {
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
    } else if (is_generator_type(schema.arguments()[i].type())) {
      a = at::make_generator<at::CPUGeneratorImpl>(next_seed(a));
    }
  }
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(c10::DispatchKeySet(DispatchKey::CPU), stack);
  }
  const size_t r = schema.returns().size();
  auto adopt = [&](const at::Tensor& src, const std::shared_ptr<runtime::Buffer>& buffer) {
    try {
      bind_cpu_storage(*buffer, src.storage());
    } catch (const runtime::OutOfMemoryError& e) {
      TORCH_CHECK_WITH(OutOfMemoryError, false, e.what());
    }
    buffer->mark_defined();
  };
  for (auto& [m, stand_in] : written) {
    if (stand_in.sizes() == m.sizes() && stand_in.strides() == m.strides()) {
      store_from_cpu(m, stand_in);
    } else {  // the kernel resized it: m takes a new buffer holding the kernel's memory
      c10::Storage storage(c10::Storage::use_byte_size_t(), stand_in.storage().nbytes(), moreh_allocator(), true);
      adopt(stand_in, buffer_of(storage));
      m.unsafeGetTensorImpl()->set_storage_keep_dtype(storage);
      m.unsafeGetTensorImpl()->set_sizes_and_strides(stand_in.sizes(), stand_in.strides(), stand_in.storage_offset());
    }
  }
  auto wrap = [&](const at::Tensor& t) -> at::Tensor {
    if (!t.defined() || !t.device().is_cpu()) return t;
    check_strided_layout(schema.operator_name(), t.layout());
    at::Tensor src = input_memory.count(t.storage().data()) ? t.clone() : t;
    at::Tensor out = new_moreh_tensor(static_cast<int64_t>(src.storage().nbytes()), src.sizes(), src.strides(),
                                      src.storage_offset(), src.scalar_type());
    adopt(src, buffer_of(out.storage()));
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

namespace {

// What the recorder needs to know about an op, worked out once per op (per thread).
struct OpTraits {
  runtime::OpId id = 0;
  DataDependence data_dependence = DataDependence::kNone;
  bool has_meta = false, has_cpu = false, seeded = false;
  bool reads_tensors = false;  // has a tensor argument it does not write: shapes come from inputs
  bool is_copy = false;        // aten::copy_: with a host source it brings the step's data in
  std::vector<bool> writes;    // per argument
  // Per argument: a host (CPU) tensor of any size is taken, as CUDA takes one there (copy_'s source, the
  // `Tensor?[] indices` of indexing). Elsewhere only a 0-dim CPU tensor (a number) is.
  std::vector<bool> host_ok;
  int generator_arg = -1;      // the Generator? argument, if any (None when the script passes none)
  // ATen's C++ Meta kernel where a Python one shadows it (cpp_meta_kernels.h): shape inference without
  // Python. Null: the dispatcher's Meta kernel.
  const c10::KernelFunction* cpp_meta = nullptr;
};


const OpTraits& traits_of(const c10::OperatorHandle& op) {
  thread_local std::unordered_map<const c10::FunctionSchema*, OpTraits> table;
  const auto* key = &op.schema();
  auto it = table.find(key);
  if (it != table.end()) return it->second;
  OpTraits t;
  t.id = runtime::intern_op(c10::toString(op.schema().operator_name()));
  runtime::set_op_facts(t.id, runtime::OpFacts{op.hasTag(at::Tag::pointwise), op.hasTag(at::Tag::nondeterministic_seeded)});
  t.data_dependence = data_dependence_of(op);
  t.has_meta = has_meta(op);
  t.cpp_meta = cpp_meta_kernel(op.schema().operator_name());
  t.has_cpu = has_cpu(op);
  t.seeded = op.hasTag(at::Tag::nondeterministic_seeded);
  t.is_copy = op.schema().name() == "aten::copy_" && op.schema().overload_name().empty();
  for (const auto& a : op.schema().arguments()) {
    if (is_generator_type(a.type())) t.generator_arg = static_cast<int>(t.writes.size());
    bool w = a.alias_info() && a.alias_info()->isWrite();
    t.writes.push_back(w);
    const bool optional_tensor_list =
        a.type()->kind() == c10::TypeKind::ListType &&
        a.type()->castRaw<c10::ListType>()->getElementType()->kind() == c10::TypeKind::OptionalType;
    t.host_ok.push_back((t.is_copy && a.name() == "src") || (a.name() == "indices" && optional_tensor_list));
    auto kind = a.type()->kind();
    if (kind == c10::TypeKind::OptionalType) kind = a.type()->castRaw<c10::OptionalType>()->getElementType()->kind();
    bool tensorish = kind == c10::TypeKind::TensorType || kind == c10::TypeKind::ListType;
    if (tensorish && !w) t.reads_tensors = true;
  }
  return table.emplace(key, std::move(t)).first->second;
}

std::atomic<uint64_t> g_meta_misses{0};

MetaCache& meta_cache() {
  thread_local MetaCache cache;  // recording happens on the script's thread and autograd's
  return cache;
}

constexpr uint64_t kMorehTag = 1, kCpuTag = 2, kCpuScalarTag = 3;

uint64_t location_of(const at::Tensor& t) {
  if (is_moreh(t)) return kMorehTag;
  return t.dim() == 0 ? kCpuScalarTag : kCpuTag;
}

// Adds a non-tensor argument to the key. Floating-point scalars never decide an output's geometry
// (their kind does, for type promotion), except in ops that read no tensor (arange's bounds).
void key_value(MetaKey& key, const c10::IValue& v, bool values_matter) {
  key.add(static_cast<uint64_t>(v.tagKind().size()) * 131 + static_cast<uint64_t>(v.isDouble()));
  if (v.isDouble()) {
    if (values_matter) {
      double d = v.toDouble();
      uint64_t bits;
      std::memcpy(&bits, &d, sizeof bits);
      key.add(bits);
    }
  } else if (v.isScalar()) {
    const c10::Scalar s = v.toScalar();
    key.add(static_cast<uint64_t>(s.type()));
    if (s.isIntegral(true) || values_matter) key.add(static_cast<uint64_t>(s.toLong()));
  } else if (v.isInt()) {
    key.add(static_cast<uint64_t>(v.toInt()));
  } else if (v.isBool()) {
    key.add(v.toBool());
  } else if (v.isIntList()) {
    auto l = v.toIntList();
    key.add(l.size());
    for (int64_t x : l) key.add(static_cast<uint64_t>(x));
  } else if (v.isDoubleList()) {  // scale factors decide upsampled sizes
    auto l = v.toDoubleList();
    key.add(l.size());
    for (double d : l) {
      uint64_t bits;
      std::memcpy(&bits, &d, sizeof bits);
      key.add(bits);
    }
  } else if (v.isString()) {
    key.add(std::hash<std::string>()(v.toStringRef()));
  } else if (v.isList()) {
    key.add(v.toListRef().size());
  } else if (v.isDevice()) {
    key.add(static_cast<uint64_t>(v.toDevice().type()));
  }
}

OutSpec spec_of(const at::Tensor& m, const MetaTwins& twins, const std::vector<at::Tensor>& moreh_inputs,
                const c10::FunctionSchema& schema) {
  OutSpec o;
  if (!m.defined()) return o;
  check_strided_layout(schema.operator_name(), m.layout());
  o.sizes.assign(m.sizes().begin(), m.sizes().end());
  o.strides.assign(m.strides().begin(), m.strides().end());
  o.offset = m.storage_offset();
  o.nbytes = static_cast<int64_t>(m.storage().nbytes());
  o.dtype = m.scalar_type();
  if (const c10::StorageImpl* src = twins.source_of(m)) {
    for (size_t k = 0; k < moreh_inputs.size(); ++k)
      if (moreh_inputs[k].storage().unsafeGetStorageImpl() == src) {
        o.kind = OutSpec::Kind::kViewOfInput;
        o.source = static_cast<int>(k);
        o.offset -= moreh_inputs[k].storage_offset();  // relative: the key holds no absolute offset
        return o;
      }
    TORCH_CHECK(false, "moreh: ", schema.operator_name(), " returned a view of a CPU tensor");
  }
  o.kind = OutSpec::Kind::kFresh;
  // A fresh result's storage is what its view reaches: some C++ Meta kernels size it first for another
  // shape and then shrink the view (mse_loss with a reduction: a batch-sized storage under a 0-dim
  // result), where the CPU kernel returns a storage of the view's size.
  if (m.numel() > 0) {
    int64_t last = m.storage_offset();
    for (int64_t d = 0; d < m.dim(); ++d) last += (m.size(d) - 1) * m.stride(d);
    o.nbytes = std::min<int64_t>(o.nbytes, (last + 1) * static_cast<int64_t>(m.element_size()));
  }
  return o;
}

// Runs the Meta kernel on meta twins of the arguments and describes what it returned. Integers and
// booleans it returns are part of the entry (shape arithmetic: the key decides them), as are Nones where a
// Tensor is declared (undefined tensors). Returns false when a return is something else (a float, a
// symbolic size: such entries are not cached); `other` holds the values that are not tensors.
bool infer_with_meta(const c10::OperatorHandle& op, const OpTraits& tr, const c10::IValue* args,
                     const std::vector<at::Tensor>& moreh_inputs, MetaEntry& entry, std::vector<c10::IValue>& other) {
  const auto& schema = op.schema();
  const size_t n = schema.arguments().size();
  MetaTwins twins;
  torch::jit::Stack meta_stack;
  meta_stack.reserve(n);
  auto twin = [&](const at::Tensor& t) -> at::Tensor {
    if (!t.defined() || (!is_moreh(t) && t.dim() == 0)) return t;
    return twins.twin(t);
  };
  for (size_t i = 0; i < n; ++i) {
    const c10::IValue& a = args[i];
    if (a.isTensor()) {
      meta_stack.emplace_back(twin(a.toTensor()));
    } else if (a.isTensorList()) {
      c10::List<at::Tensor> l;
      for (const at::Tensor& t : a.toTensorList()) l.push_back(twin(t));
      meta_stack.emplace_back(l);
    } else if (a.isOptionalTensorList()) {
      c10::List<std::optional<at::Tensor>> l;
      for (const auto& e : a.toOptionalTensorList()) {
        std::optional<at::Tensor> t = e;
        l.push_back(t && t->defined() ? std::optional<at::Tensor>(twin(*t)) : std::nullopt);
      }
      meta_stack.emplace_back(l);
    } else if (a.isDevice()) {
      meta_stack.emplace_back(c10::Device(c10::kMeta));
    } else if (a.isGenerator()) {
      meta_stack.emplace_back(c10::IValue());
    } else {
      meta_stack.push_back(a);
    }
  }
  if (tr.cpp_meta) {
    tr.cpp_meta->callBoxed(op, c10::DispatchKeySet(DispatchKey::Meta), &meta_stack);
  } else {
    op.redispatchBoxed(c10::DispatchKeySet(DispatchKey::Meta), &meta_stack);
  }
  const size_t r = schema.returns().size();
  TORCH_INTERNAL_ASSERT(meta_stack.size() == r, "moreh: meta kernel of ", schema.operator_name(), " left ",
                        meta_stack.size(), " values for ", r, " returns");
  bool cacheable = true;
  other.assign(r, c10::IValue());
  entry.returns.assign(r, ReturnSpec());
  for (size_t j = 0; j < r; ++j) {
    const c10::IValue& mr = meta_stack[j];
    ReturnSpec& rs = entry.returns[j];
    size_t ai = 0;
    if (aliased_argument(schema, schema.returns()[j], &ai) && tr.writes[ai]) {
      OutSpec o = mr.isTensor() ? spec_of(mr.toTensor(), MetaTwins(), {}, schema) : OutSpec();
      o.kind = OutSpec::Kind::kWrittenArgument;
      o.source = static_cast<int>(ai);
      if (args[ai].isTensor()) o.offset -= args[ai].toTensor().storage_offset();  // relative, as for views
      rs.items.push_back(std::move(o));
    } else if (mr.isTensor()) {
      rs.items.push_back(spec_of(mr.toTensor(), twins, moreh_inputs, schema));
    } else if (mr.isTensorList()) {
      rs.is_list = true;
      for (const at::Tensor& t : mr.toTensorList()) rs.items.push_back(spec_of(t, twins, moreh_inputs, schema));
    } else if (mr.isNone() && schema.returns()[j].type()->kind() == c10::TypeKind::TensorType) {
      // No tensor where one is declared (a gradient its output mask turned off, flash attention's
      // cum_seq_q): an undefined tensor, which C++ callers unbox as a Tensor and Python sees as None.
      rs.items.push_back(OutSpec());
    } else {
      other[j] = mr;
      if (mr.isInt() || mr.isBool()) rs.value = mr;
      else if (mr.isSymInt() && mr.toSymInt().maybe_as_int()) rs.value = c10::IValue(*mr.toSymInt().maybe_as_int());
      else cacheable = false;
    }
  }
  return cacheable;
}

}  // namespace

void lazy_fallback(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
  check_not_forked();  // before any lock a parent thread may have held at fork time
  const auto& schema = op.schema();
  const OpTraits& tr = traits_of(op);
  if (tr.data_dependence != DataDependence::kNone &&
      call_needs_values(tr.data_dependence, schema, stack->data() + stack->size() - schema.arguments().size())) {
    run_eagerly(op, stack);
    return;
  }
  if (!tr.has_meta) {
    TORCH_CHECK_NOT_IMPLEMENTED(tr.has_cpu, "moreh does not support ", schema.operator_name(),
                                ": it has neither a Meta nor a CPU kernel");
    warn_once(op, "has no Meta kernel");
    run_eagerly(op, stack);
    return;
  }
  static const bool on_cuda = engine().device(0).kind() == runtime::DeviceKind::kCuda;
  if (on_cuda) {
    TORCH_CHECK_NOT_IMPLEMENTED(has_key(op, DispatchKey::CUDA) || has_composite(op), "moreh does not support ",
                                schema.operator_name(), ": it has no CUDA kernel for moreh's CUDA devices to run");
  } else {
    TORCH_CHECK_NOT_IMPLEMENTED(tr.has_cpu, "moreh does not support ", schema.operator_name(),
                                ": it has no CPU kernel for moreh's host devices to run");
  }

  const size_t n = schema.arguments().size();
  const size_t base = stack->size() - n;
  const c10::IValue* args = stack->data() + base;
  auto payload = std::make_shared<AtenPayload>(op);
  payload->args.reserve(n);
  runtime::Node node;
  node.op = tr.id;
  std::vector<at::Tensor> moreh_inputs;
  MetaKey key;  // not shared: resolving a conjugate input below records ops re-entrantly
  key.reset(&schema);
  payload->grad_mode = at::GradMode::is_enabled();
  key.add(payload->grad_mode);

  auto take = [&](const at::Tensor& t, size_t arg, int32_t elem) -> at::Tensor {
    key.add_tensor(t, t.defined() ? location_of(t) : 0);
    if (!t.defined()) return t;
    check_device(t, op);
    if (is_moreh(t)) {
      payload->inputs.push_back({static_cast<uint16_t>(arg), elem});
      node.input_args.push_back(static_cast<uint8_t>(arg));
      // Conjugate/negative views reach conj-aware kernels (mm) with the bit set; the recorded ref has
      // no bit, so record the resolved values instead (written arguments never carry a bit).
      moreh_inputs.push_back(!tr.writes[arg] && (t.is_conj() || t.is_neg()) ? at::resolve_neg(at::resolve_conj(t)) : t);
      if (tr.writes[arg]) node.written.push_back(static_cast<uint16_t>(moreh_inputs.size() - 1));
      return at::Tensor();
    }
    TORCH_CHECK(!tr.writes[arg], "moreh: ", schema.operator_name(),
                " would write into a CPU tensor; compute on moreh and copy the result with .cpu()");
    // CUDA's rule, so that a script that runs on moreh runs on a GPU: a CPU tensor with elements is refused
    // where a GPU kernel would refuse it (a number wrapped in a 0-dim tensor is fine).
    TORCH_CHECK(t.dim() == 0 || tr.host_ok[arg], "Expected all tensors to be on the same device, but got ",
                schema.arguments()[arg].name(), " is on ", t.device(),
                ", different from other tensors on moreh:0 (when checking argument for ", schema.operator_name(),
                "). Move it with .to(\"moreh\") first.");
    node.host_input = node.host_input || (tr.is_copy && t.dim() > 0);
    return t.clone();  // a CPU input is a snapshot of its value now
  };

  for (size_t i = 0; i < n; ++i) {
    const c10::IValue& a = args[i];
    if (a.isTensor()) {
      const at::Tensor& t = a.toTensor();
      payload->args.emplace_back(take(t, i, -1));
      if (t.defined() && !is_moreh(t) && t.device().is_cpu() && t.dim() == 0 && !t.is_complex()) {
        // A number given as a CPU tensor (x * 0.5 wraps 0.5 in one): step data the graph can see, like a
        // Scalar argument (fused kernels take it as a parameter). An integer a double does not hold exactly
        // stays out of sight (its node then runs as ATen's kernel, never fused).
        const c10::Scalar v = t.item();
        constexpr int64_t kExact = int64_t{1} << 53;
        if (!v.isIntegral(true) || (v.toLong() <= kExact && v.toLong() >= -kExact)) {
          node.attrs.push_back(runtime::StepValue{v.toDouble()});
          node.attr_args.push_back(static_cast<uint8_t>(i));
        }
      }
    } else if (a.isTensorList()) {
      auto list = a.toTensorList();
      key.add(list.size());
      c10::List<at::Tensor> keep;
      keep.reserve(list.size());
      for (size_t j = 0; j < list.size(); ++j) keep.push_back(take(list[j], i, static_cast<int32_t>(j)));
      payload->args.emplace_back(keep);
    } else if (a.isOptionalTensorList()) {
      auto list = a.toOptionalTensorList();
      key.add(list.size());
      c10::List<std::optional<at::Tensor>> keep;
      for (size_t j = 0; j < list.size(); ++j) {
        std::optional<at::Tensor> t = list[j];
        if (!t || !t->defined()) {
          key.add(0xdeadull);
          keep.push_back(std::nullopt);
        } else {
          keep.push_back(std::optional<at::Tensor>(take(*t, i, static_cast<int32_t>(j))));
        }
      }
      payload->args.emplace_back(keep);
    } else if (a.isDevice()) {
      key_value(key, a, true);
      payload->args.emplace_back(c10::Device(c10::kCPU));
      node.attrs.push_back(std::string("device"));
      node.attr_args.push_back(static_cast<uint8_t>(i));
    } else if (static_cast<int>(i) == tr.generator_arg) {
      payload->generator_arg = static_cast<int>(i);
      payload->args.emplace_back(c10::IValue());
      node.attrs.push_back(runtime::Seed{});
      node.attr_args.push_back(static_cast<uint8_t>(i));
    } else {
      key_value(key, a, !tr.reads_tensors);
      payload->args.push_back(a);
      node.attrs.push_back(to_attribute(a));
      node.attr_args.push_back(static_cast<uint8_t>(i));
    }
  }
  if (tr.seeded) {
    payload->seeded = true;
    payload->seed = next_seed(payload->generator_arg >= 0 ? args[payload->generator_arg] : c10::IValue());
    node.attrs.push_back(runtime::Seed{payload->seed});
  }

  MetaEntry computed;
  std::vector<c10::IValue> other;
  const MetaEntry* entry = meta_cache().find(key);
  if (!entry) {
    g_meta_misses.fetch_add(1, std::memory_order_relaxed);
    const bool cacheable = infer_with_meta(op, tr, args, moreh_inputs, computed, other);
    probe_meta_result(op, args, computed);
    if (cacheable) {
      meta_cache().insert(key, computed);
    }
    entry = &computed;
  }

  const size_t r = schema.returns().size();
  std::vector<c10::IValue> results(r);
  auto make = [&](const OutSpec& o, uint16_t ret, int32_t elem) -> c10::IValue {
    switch (o.kind) {
      case OutSpec::Kind::kUndefined:
        return at::Tensor();
      case OutSpec::Kind::kViewOfInput:
        return moreh_view(moreh_inputs[o.source].storage(), o.sizes, o.strides,
                          o.offset + moreh_inputs[o.source].storage_offset(), o.dtype);
      case OutSpec::Kind::kWrittenArgument: {
        const c10::IValue& orig = args[o.source];
        if (orig.isTensor() && o.dtype != c10::ScalarType::Undefined)
          adopt_geometry(orig.toTensor(), o.sizes, o.strides, o.offset + orig.toTensor().storage_offset(), o.nbytes);
        return orig;
      }
      case OutSpec::Kind::kFresh: {
        at::Tensor out = new_moreh_tensor(o.nbytes, o.sizes, o.strides, o.offset, o.dtype);
        node.outputs.push_back(make_ref(out));
        node.output_rets.push_back(static_cast<uint8_t>(ret));
        payload->outputs.push_back({ret, elem});
        return out;
      }
    }
    return c10::IValue();
  };
  for (size_t j = 0; j < r; ++j) {
    const ReturnSpec& rs = entry->returns[j];
    if (!other.empty() && !other[j].isNone()) {
      results[j] = other[j];
    } else if (!rs.value.isNone()) {
      results[j] = rs.value;
    } else if (rs.is_list) {
      c10::List<at::Tensor> outs;
      for (size_t e = 0; e < rs.items.size(); ++e)
        outs.push_back(make(rs.items[e], static_cast<uint16_t>(j), static_cast<int32_t>(e)).toTensor());
      results[j] = outs;
    } else if (!rs.items.empty()) {
      results[j] = make(rs.items[0], static_cast<uint16_t>(j), -1);
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

uint64_t meta_cache_misses() { return g_meta_misses.load(std::memory_order_relaxed); }

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) { m.fallback(torch::CppFunction::makeFromBoxedFunction<&lazy_fallback>()); }

}  // namespace moreh::backend
