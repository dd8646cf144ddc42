#include "runtime/worker/step_codec.h"

#include <fmt/format.h>

#include "runtime/base/errors.h"
#include "runtime/net/wire_codec.h"

namespace moreh::runtime {
namespace {

constexpr uint32_t kMaxNodes = 1u << 22, kMaxRefs = 1u << 16, kMaxDims = 64, kMaxList = 1u << 24;
constexpr uint32_t kMaxPayload = 1u << 30;

uint32_t count(WireReader& r, const char* what, uint32_t bound) {
  const uint32_t n = r.u32();
  if (n > bound) throw ProtocolError(fmt::format("step: {} {} (at most {})", n, what, bound));
  return n;
}

void put_buffer(WireWriter& w, const std::shared_ptr<Buffer>& b) {
  w.u64(b ? b->id() : 0).u64(b ? b->bytes() : 0);
}
std::shared_ptr<Buffer> get_buffer(WireReader& r, const BufferResolver& resolve) {
  const uint64_t id = r.u64(), bytes = r.u64();
  return id ? resolve(id, bytes) : nullptr;
}

void put_ref(WireWriter& w, const TensorRef& t) {
  put_buffer(w, t.buffer);
  w.u64(static_cast<uint64_t>(t.offset)).u8(static_cast<uint8_t>(t.dtype)).u8(t.itemsize);
  w.u32(static_cast<uint32_t>(t.sizes.size()));
  for (int64_t s : t.sizes) w.u64(static_cast<uint64_t>(s));
  w.u32(static_cast<uint32_t>(t.strides.size()));
  for (int64_t s : t.strides) w.u64(static_cast<uint64_t>(s));
}
void get_ref(WireReader& r, const BufferResolver& resolve, TensorRef& t) {
  t.buffer = get_buffer(r, resolve);
  t.offset = static_cast<int64_t>(r.u64());
  t.dtype = static_cast<int8_t>(r.u8());
  t.itemsize = r.u8();
  for (uint32_t i = 0, n = count(r, "sizes", kMaxDims); i < n; ++i) t.sizes.push_back(static_cast<int64_t>(r.u64()));
  for (uint32_t i = 0, n = count(r, "strides", kMaxDims); i < n; ++i) t.strides.push_back(static_cast<int64_t>(r.u64()));
}

void put_attr(WireWriter& w, const Attribute& a) {
  w.u8(static_cast<uint8_t>(a.index()));
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) w.u8(v ? 1 : 0);
        else if constexpr (std::is_same_v<T, int64_t>) w.u64(static_cast<uint64_t>(v));
        else if constexpr (std::is_same_v<T, StepValue>) w.f64(v.value);
        else if constexpr (std::is_same_v<T, Seed>) w.u64(v.value);
        else if constexpr (std::is_same_v<T, std::string>) w.bytes(v);
        else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          w.u32(static_cast<uint32_t>(v.size()));
          for (int64_t x : v) w.u64(static_cast<uint64_t>(x));
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          w.u32(static_cast<uint32_t>(v.size()));
          for (double x : v) w.f64(x);
        }
      },
      a);
}
Attribute get_attr(WireReader& r) {
  switch (r.u8()) {
    case 0: return std::monostate{};
    case 1: return r.u8() != 0;
    case 2: return static_cast<int64_t>(r.u64());
    case 3: return StepValue{r.f64()};
    case 4: return Seed{r.u64()};
    case 5: return r.bytes(1u << 20);
    case 6: {
      std::vector<int64_t> v;
      for (uint32_t i = 0, n = count(r, "integers", kMaxList); i < n; ++i) v.push_back(static_cast<int64_t>(r.u64()));
      return v;
    }
    case 7: {
      std::vector<double> v;
      for (uint32_t i = 0, n = count(r, "numbers", kMaxList); i < n; ++i) v.push_back(r.f64());
      return v;
    }
    default: throw ProtocolError("step: an attribute of an unknown kind");
  }
}

template <typename V>
void put_small(WireWriter& w, const V& v) {
  w.u32(static_cast<uint32_t>(v.size()));
  for (auto x : v) w.u32(x);
}
template <typename V>
void get_small(WireReader& r, V& v, const char* what, uint32_t limit) {
  for (uint32_t i = 0, n = count(r, what, kMaxRefs); i < n; ++i) {
    const uint32_t x = r.u32();
    if (x > limit) throw ProtocolError(fmt::format("step: {} {} is out of range", what, x));
    v.push_back(static_cast<typename V::value_type>(x));
  }
}

// The byte after a node's payload.
enum PayloadFlag : uint8_t { kNoPayload = 0, kPayload = 1, kWithheld = 2 };

}  // namespace

std::string encode_step(const StepGraph& graph, const std::vector<std::shared_ptr<Buffer>>& bindings,
                        const PayloadCodec& codec, const std::vector<PayloadShare>& shares) {
  if (!shares.empty() && shares.size() != graph.size())
    throw Error(fmt::format("encode_step: {} payload shares for {} nodes", shares.size(), graph.size()));
  WireWriter w;
  w.u32(static_cast<uint32_t>(graph.size()));
  for (uint32_t i = 0; i < graph.size(); ++i) {
    const Node& n = graph.nodes()[i];
    const PayloadShare share = shares.empty() ? PayloadShare{} : shares[i];
    w.bytes(op_name(n.op));
    w.u32(static_cast<uint32_t>(n.attrs.size()));
    for (const auto& a : n.attrs) put_attr(w, a);
    w.u32(static_cast<uint32_t>(n.inputs.size()));
    for (const auto& t : n.inputs) put_ref(w, t);
    w.u32(static_cast<uint32_t>(n.outputs.size()));
    for (const auto& t : n.outputs) put_ref(w, t);
    put_small(w, n.written);
    put_small(w, n.initializes);
    w.u8(n.host_input ? 1 : 0);
    put_small(w, n.input_args);
    put_small(w, n.attr_args);
    put_small(w, n.output_rets);
    if (!n.payload) {
      w.bytes({}).u8(kNoPayload);
    } else if (share.kind == PayloadShare::Kind::kWithheld) {
      w.bytes({}).u8(kWithheld);
    } else {
      w.bytes(codec.encode(n, share.kind == PayloadShare::Kind::kRows ? &share.rows : nullptr)).u8(kPayload);
    }
  }
  w.u32(static_cast<uint32_t>(bindings.size()));
  for (const auto& b : bindings) put_buffer(w, b);
  return w.take();
}

StepWire decode_step(std::string_view payload, const PayloadCodec& codec, const BufferResolver& resolve) {
  WireReader r(payload);
  StepWire out;
  for (uint32_t i = 0, nodes = count(r, "nodes", kMaxNodes); i < nodes; ++i) {
    Node node;
    node.op = intern_op(r.bytes(1024));
    for (uint32_t k = 0, m = count(r, "attributes", kMaxRefs); k < m; ++k) node.attrs.push_back(get_attr(r));
    for (uint32_t k = 0, m = count(r, "inputs", kMaxRefs); k < m; ++k) get_ref(r, resolve, node.inputs.emplace_back());
    for (uint32_t k = 0, m = count(r, "outputs", kMaxRefs); k < m; ++k) get_ref(r, resolve, node.outputs.emplace_back());
    get_small(r, node.written, "written input", static_cast<uint32_t>(node.inputs.size()));
    get_small(r, node.initializes, "initialized input", static_cast<uint32_t>(node.inputs.size()));
    node.host_input = r.u8() != 0;
    get_small(r, node.input_args, "input argument", 255);
    get_small(r, node.attr_args, "attribute argument", 255);
    get_small(r, node.output_rets, "output", 255);
    const std::string bytes = r.bytes(kMaxPayload);
    switch (r.u8()) {
      case kNoPayload: break;
      case kPayload: node.payload = codec.decode(node, bytes); break;
      case kWithheld: out.withheld.push_back(i); break;
      default: throw ProtocolError("step: a node's payload marked neither sent, withheld nor absent");
    }
    out.graph.append(std::move(node));
  }
  for (uint32_t i = 0, n = count(r, "bindings", kMaxList); i < n; ++i) out.bindings.push_back(get_buffer(r, resolve));
  r.finish();
  return out;
}

}  // namespace moreh::runtime
