#include "backend/csrc/payload_wire.h"

#include <ATen/ATen.h>

#include <cstring>

#include "backend/csrc/aten_payload.h"
#include "runtime/base/errors.h"
#include "runtime/net/wire_codec.h"

namespace moreh::backend {
namespace {

using runtime::ProtocolError;
using runtime::WireReader;
using runtime::WireWriter;

enum Tag : uint8_t {
  kNone, kBool, kInt, kDouble, kString, kUndefinedTensor, kHostTensor, kTensorList, kOptionalTensorList,
  kIntList, kDoubleList, kBoolList, kDevice, kGenericList, kComplex,
  kHostTensorRows,  // a host tensor's rows [begin, begin + count) of `whole`: u64 begin, u64 whole, the rows
};

constexpr uint32_t kMaxList = 1u << 24;
constexpr uint32_t kMaxDims = 64;

void put_tensor(WireWriter& w, const at::Tensor& t) {
  if (!t.defined()) {
    w.u8(kUndefinedTensor);
    return;
  }
  TORCH_CHECK(t.device().is_cpu(), "moreh: a recorded argument on ", t.device(), " cannot be sent to a worker");
  const at::Tensor c = t.contiguous();
  w.u8(kHostTensor).u8(static_cast<uint8_t>(c.scalar_type())).u32(static_cast<uint32_t>(c.dim()));
  for (int64_t s : c.sizes()) w.u64(static_cast<uint64_t>(s));
  w.bytes(std::string_view(static_cast<const char*>(c.const_data_ptr()), c.nbytes()));
}

at::Tensor get_tensor(WireReader& r, uint8_t tag) {
  if (tag == kUndefinedTensor) return at::Tensor();
  const auto type = static_cast<c10::ScalarType>(r.u8());
  const uint32_t dims = r.u32();
  if (dims > kMaxDims) throw ProtocolError("payload: a host tensor of too many dimensions");
  std::vector<int64_t> sizes;
  for (uint32_t i = 0; i < dims; ++i) sizes.push_back(static_cast<int64_t>(r.u64()));
  const std::string data = r.bytes();
  at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(type));
  if (static_cast<uint64_t>(t.nbytes()) != data.size())
    throw ProtocolError("payload: a host tensor's bytes do not match its shape");
  std::memcpy(t.data_ptr(), data.data(), data.size());
  return t;
}

void put_value(WireWriter& w, const c10::IValue& v) {
  if (v.isNone()) {
    w.u8(kNone);
  } else if (v.isBool()) {
    w.u8(kBool).u8(v.toBool() ? 1 : 0);
  } else if (v.isInt()) {
    w.u8(kInt).u64(static_cast<uint64_t>(v.toInt()));
  } else if (v.isDouble()) {
    w.u8(kDouble).f64(v.toDouble());
  } else if (v.isComplexDouble()) {
    const auto c = v.toComplexDouble();
    w.u8(kComplex).f64(c.real()).f64(c.imag());
  } else if (v.isString()) {
    w.u8(kString).bytes(v.toStringRef());
  } else if (v.isTensor()) {
    put_tensor(w, v.toTensor());
  } else if (v.isDevice()) {
    w.u8(kDevice);  // the recorded device is where the node runs (payload_stack)
  } else if (v.isTensorList()) {
    const auto l = v.toTensorList();
    w.u8(kTensorList).u32(static_cast<uint32_t>(l.size()));
    for (size_t i = 0; i < l.size(); ++i) put_tensor(w, l[i]);
  } else if (v.isOptionalTensorList()) {
    const auto l = v.toOptionalTensorList();
    w.u8(kOptionalTensorList).u32(static_cast<uint32_t>(l.size()));
    for (size_t i = 0; i < l.size(); ++i) {
      const std::optional<at::Tensor> t = l[i];
      w.u8(t.has_value() ? 1 : 0);
      if (t) put_tensor(w, *t);
    }
  } else if (v.isIntList()) {
    const auto l = v.toIntList();
    w.u8(kIntList).u32(static_cast<uint32_t>(l.size()));
    for (int64_t x : l) w.u64(static_cast<uint64_t>(x));
  } else if (v.isDoubleList()) {
    const auto l = v.toDoubleList();
    w.u8(kDoubleList).u32(static_cast<uint32_t>(l.size()));
    for (double x : l) w.f64(x);
  } else if (v.isBoolList()) {
    const auto l = v.toBoolList();
    w.u8(kBoolList).u32(static_cast<uint32_t>(l.size()));
    for (bool x : l) w.u8(x ? 1 : 0);
  } else if (v.isList()) {
    const auto l = v.toList();
    w.u8(kGenericList).u32(static_cast<uint32_t>(l.size()));
    for (size_t i = 0; i < l.size(); ++i) put_value(w, l.get(i));
  } else {
    throw runtime::ConfigError("moreh: a recorded argument of kind " + v.tagKind() +
                               " does not travel to workers yet");
  }
}

c10::IValue get_value(WireReader& r, int depth = 0);

// The value whose tag was just read.
c10::IValue value_of(WireReader& r, uint8_t tag, int depth) {
  if (depth > 8) throw ProtocolError("payload: lists nested too deep");
  auto length = [&] {
    const uint32_t n = r.u32();
    if (n > kMaxList) throw ProtocolError("payload: a list too long");
    return n;
  };
  switch (tag) {
    case kNone: return c10::IValue();
    case kBool: return c10::IValue(r.u8() != 0);
    case kInt: return c10::IValue(static_cast<int64_t>(r.u64()));
    case kDouble: return c10::IValue(r.f64());
    case kComplex: {
      const double re = r.f64(), im = r.f64();
      return c10::IValue(c10::complex<double>(re, im));
    }
    case kString: return c10::IValue(r.bytes(1u << 20));
    case kUndefinedTensor:
    case kHostTensor: return c10::IValue(get_tensor(r, tag));
    case kDevice: return c10::IValue(c10::Device(c10::kCPU));
    case kTensorList: {
      c10::List<at::Tensor> l;
      for (uint32_t i = 0, n = length(); i < n; ++i) {
        const uint8_t t = r.u8();
        if (t != kUndefinedTensor && t != kHostTensor) throw ProtocolError("payload: a tensor list holds a non-tensor");
        l.push_back(get_tensor(r, t));
      }
      return c10::IValue(l);
    }
    case kOptionalTensorList: {
      c10::List<std::optional<at::Tensor>> l;
      for (uint32_t i = 0, n = length(); i < n; ++i) {
        if (r.u8() == 0) {
          l.push_back(std::nullopt);
          continue;
        }
        const uint8_t t = r.u8();
        if (t != kUndefinedTensor && t != kHostTensor) throw ProtocolError("payload: a tensor list holds a non-tensor");
        l.push_back(std::optional<at::Tensor>(get_tensor(r, t)));
      }
      return c10::IValue(l);
    }
    case kIntList: {
      c10::List<int64_t> l;
      for (uint32_t i = 0, n = length(); i < n; ++i) l.push_back(static_cast<int64_t>(r.u64()));
      return c10::IValue(l);
    }
    case kDoubleList: {
      c10::List<double> l;
      for (uint32_t i = 0, n = length(); i < n; ++i) l.push_back(r.f64());
      return c10::IValue(l);
    }
    case kBoolList: {
      c10::List<bool> l;
      for (uint32_t i = 0, n = length(); i < n; ++i) l.push_back(r.u8() != 0);
      return c10::IValue(l);
    }
    case kGenericList: {
      c10::impl::GenericList l(c10::AnyType::get());
      for (uint32_t i = 0, n = length(); i < n; ++i) l.push_back(get_value(r, depth + 1));
      return c10::IValue(l);
    }
    default: throw ProtocolError("payload: an argument of an unknown kind");
  }
}

c10::IValue get_value(WireReader& r, int depth) { return value_of(r, r.u8(), depth); }

// A host_input node's tensor argument with the batch's rows (what the kernel provider cuts by rows).
bool cut_by_rows(const runtime::Node& node, const c10::IValue& a, const runtime::RowWindow& rows) {
  return node.host_input && a.isTensor() && a.toTensor().defined() && a.toTensor().dim() > 0 &&
         a.toTensor().size(0) == rows.whole;
}

}  // namespace

std::string AtenPayloadCodec::encode(const runtime::Node& node, const runtime::RowWindow* rows) const {
  const auto& p = static_cast<const AtenPayload&>(*node.payload);
  WireWriter w;
  w.bytes(p.op.schema().name()).bytes(p.op.schema().overload_name());
  w.u32(static_cast<uint32_t>(p.args.size()));
  for (const auto& a : p.args) {
    if (rows && cut_by_rows(node, a, *rows)) {
      if (rows->begin < 0 || rows->count < 0 || rows->begin + rows->count > rows->whole)
        throw runtime::Error("moreh: rows past the batch sent to a worker");
      w.u8(kHostTensorRows).u64(static_cast<uint64_t>(rows->begin)).u64(static_cast<uint64_t>(rows->whole));
      put_tensor(w, a.toTensor().narrow(0, rows->begin, rows->count));
    } else {
      put_value(w, a);
    }
  }
  w.u32(static_cast<uint32_t>(p.inputs.size()));
  for (const auto& s : p.inputs) w.u32(s.arg).u32(static_cast<uint32_t>(s.elem));
  w.u32(static_cast<uint32_t>(p.outputs.size()));
  for (const auto& s : p.outputs) w.u32(s.ret).u32(static_cast<uint32_t>(s.elem));
  w.u64(static_cast<uint64_t>(static_cast<int64_t>(p.generator_arg))).u8(p.seeded ? 1 : 0).u64(p.seed);
  w.u8(p.grad_mode ? 1 : 0);
  return w.take();
}

std::shared_ptr<const runtime::KernelPayload> AtenPayloadCodec::decode(const runtime::Node&,
                                                                      std::string_view bytes) const {
  WireReader r(bytes);
  const std::string name = r.bytes(1024), overload = r.bytes(1024);
  const auto op = c10::Dispatcher::singleton().findSchema({name, overload});
  if (!op) throw ProtocolError("payload: this worker's torch has no operator " + name + "." + overload);
  auto p = std::make_shared<AtenPayload>(*op);
  const uint32_t args = r.u32();
  if (args > 4096) throw ProtocolError("payload: too many arguments");
  for (uint32_t i = 0; i < args; ++i) {
    const uint8_t tag = r.u8();
    if (tag != kHostTensorRows) {
      p->args.push_back(value_of(r, tag, 0));
      continue;
    }
    const auto begin = static_cast<int64_t>(r.u64()), whole = static_cast<int64_t>(r.u64());
    if (r.u8() != kHostTensor)
      throw ProtocolError("payload: rows of the batch that are not a host tensor");
    at::Tensor t = get_tensor(r, kHostTensor);
    if (begin < 0 || whole <= 0 || t.dim() == 0 || begin + t.size(0) > whole)
      throw ProtocolError("payload: rows of the batch past its end");
    p->row_cuts.push_back({static_cast<uint16_t>(i), begin, whole});
    p->args.push_back(c10::IValue(std::move(t)));
  }
  const uint32_t inputs = r.u32();
  if (inputs > kMaxList) throw ProtocolError("payload: too many inputs");
  for (uint32_t i = 0; i < inputs; ++i) {
    const uint32_t arg = r.u32(), elem = r.u32();
    if (arg >= args) throw ProtocolError("payload: an input names an argument that is not there");
    p->inputs.push_back({static_cast<uint16_t>(arg), static_cast<int32_t>(elem)});
  }
  const uint32_t outputs = r.u32();
  if (outputs > kMaxList) throw ProtocolError("payload: too many outputs");
  for (uint32_t i = 0; i < outputs; ++i) {
    const uint32_t ret = r.u32(), elem = r.u32();
    p->outputs.push_back({static_cast<uint16_t>(ret), static_cast<int32_t>(elem)});
  }
  p->generator_arg = static_cast<int>(static_cast<int64_t>(r.u64()));
  if (p->generator_arg >= static_cast<int>(args)) throw ProtocolError("payload: a generator argument out of range");
  p->seeded = r.u8() != 0;
  p->seed = r.u64();
  p->grad_mode = r.u8() != 0;
  r.finish();
  return p;
}

const runtime::PayloadCodec& aten_payload_codec() {
  static const AtenPayloadCodec codec;
  return codec;
}

}  // namespace moreh::backend
