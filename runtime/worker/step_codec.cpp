#include "runtime/worker/step_codec.h"

#include <fmt/format.h>

#include <cstring>
#include <unordered_map>

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

// A reference names its buffer by binding slot + 1 (0: none); the buffer's id travels with the bindings.
void put_ref(WireWriter& w, uint32_t slot, const TensorRef& t) {
  w.u32(slot);
  w.u64(static_cast<uint64_t>(t.offset)).u8(static_cast<uint8_t>(t.dtype)).u8(t.itemsize);
  w.u32(static_cast<uint32_t>(t.sizes.size()));
  for (int64_t s : t.sizes) w.u64(static_cast<uint64_t>(s));
  w.u32(static_cast<uint32_t>(t.strides.size()));
  for (int64_t s : t.strides) w.u64(static_cast<uint64_t>(s));
}
uint32_t get_ref(WireReader& r, TensorRef& t) {
  const uint32_t slot = r.u32();
  t.offset = static_cast<int64_t>(r.u64());
  t.dtype = static_cast<int8_t>(r.u8());
  t.itemsize = r.u8();
  for (uint32_t i = 0, n = count(r, "sizes", kMaxDims); i < n; ++i) t.sizes.push_back(static_cast<int64_t>(r.u64()));
  for (uint32_t i = 0, n = count(r, "strides", kMaxDims); i < n; ++i) t.strides.push_back(static_cast<int64_t>(r.u64()));
  return slot;
}

void put_attr(WireWriter& w, const Attribute& a) {
  w.u8(static_cast<uint8_t>(a.index()));
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) w.u8(v ? 1 : 0);
        else if constexpr (std::is_same_v<T, int64_t>) w.u64(static_cast<uint64_t>(v));
        else if constexpr (std::is_same_v<T, StepValue> || std::is_same_v<T, Seed>) {
          // the value goes with the step's values
        }        else if constexpr (std::is_same_v<T, std::string>) w.bytes(v);
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
    case 3: return StepValue{};
    case 4: return Seed{};
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

// A step's values (StepValue, Seed), in node and attribute order, as their 64 bits.
template <typename F>
void for_values(const Node& n, F&& f) {
  for (const auto& a : n.attrs) {
    if (const auto* v = std::get_if<StepValue>(&a)) f(v->value);
    else if (const auto* sd = std::get_if<Seed>(&a)) f(sd->value);
  }
}

// A changed node goes whole, or as the runs of bytes that differ from its last wire form when that is
// shorter (a recorded argument's new value: 8 bytes of a node's few hundred).
enum NodeForm : uint8_t { kWhole = 0, kPatch = 1 };

// The runs where `now` differs from `was` (same length): each as the gap since the last run, its length, its
// bytes. Runs fewer than 4 bytes apart are one run.
std::string patch_of(const std::string& was, const std::string& now) {
  WireWriter w;
  std::vector<std::pair<size_t, size_t>> runs;
  for (size_t i = 0; i < now.size(); ++i) {
    if (was[i] == now[i]) continue;
    if (!runs.empty() && i - (runs.back().first + runs.back().second) < 4) runs.back().second = i + 1 - runs.back().first;
    else runs.emplace_back(i, 1);
  }
  w.varint(runs.size());
  size_t end = 0;
  for (const auto& [at, n] : runs) {
    w.varint(at - end).varint(n);
    for (size_t k = 0; k < n; ++k) w.u8(static_cast<uint8_t>(now[at + k]));
    end = at + n;
  }
  return w.take();
}

std::string patched(std::string was, std::string_view patch) {
  WireReader r(patch);
  size_t end = 0;
  for (uint64_t k = 0, runs = r.varint(); k < runs; ++k) {
    const uint64_t gap = r.varint(), n = r.varint();
    if (gap > was.size() - end || n > was.size() - end - gap) throw ProtocolError("step: a node's patch runs past it");
    end += gap;
    for (uint64_t i = 0; i < n; ++i) was[end++] = static_cast<char>(r.u8());
  }
  r.finish();
  return was;
}

uint64_t zigzag(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }
int64_t unzigzag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }

std::string encode_node(const Node& n, const std::unordered_map<const Buffer*, uint32_t>& slot_of,
                        const PayloadCodec& codec, const PayloadShare& share) {
  auto slot = [&](const TensorRef& t) -> uint32_t {
    if (!t.buffer) return 0;
    const auto it = slot_of.find(t.buffer.get());
    if (it == slot_of.end())
      throw Error(fmt::format("encode_step: {} names buffer {}, which is not one of the step's bindings",
                              op_name(n.op), t.buffer->id()));
    return it->second + 1;
  };
  WireWriter w;
  w.bytes(op_name(n.op));
  w.u32(static_cast<uint32_t>(n.attrs.size()));
  for (const auto& a : n.attrs) put_attr(w, a);
  w.u32(static_cast<uint32_t>(n.inputs.size()));
  for (const auto& t : n.inputs) put_ref(w, slot(t), t);
  w.u32(static_cast<uint32_t>(n.outputs.size()));
  for (const auto& t : n.outputs) put_ref(w, slot(t), t);
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
  return w.take();
}

}  // namespace

std::string StepEncoder::encode(const StepGraph& graph, const std::vector<std::shared_ptr<Buffer>>& bindings,
                                const PayloadCodec& codec, const std::vector<PayloadShare>& shares) {
  if (!shares.empty() && shares.size() != graph.size())
    throw Error(fmt::format("encode_step: {} payload shares for {} nodes", shares.size(), graph.size()));
  std::unordered_map<const Buffer*, uint32_t> slot_of;
  for (uint32_t i = 0; i < bindings.size(); ++i)
    if (bindings[i]) slot_of.emplace(bindings[i].get(), i);
  // Nothing here changes until the whole step is encoded: a step that fails to encode was never sent.
  std::vector<std::string> nodes(graph.size());
  WireWriter w;
  w.u64(steps_).u32(static_cast<uint32_t>(graph.size()));
  std::vector<uint32_t> changed;
  for (uint32_t i = 0; i < graph.size(); ++i) {
    nodes[i] = encode_node(graph.nodes()[i], slot_of, codec, shares.empty() ? PayloadShare{} : shares[i]);
    if (i >= nodes_.size() || nodes[i] != nodes_[i]) changed.push_back(i);
  }
  w.u32(static_cast<uint32_t>(changed.size()));
  for (uint32_t i : changed) {
    w.u32(i);
    std::string patch = i < nodes_.size() && nodes_[i].size() == nodes[i].size() ? patch_of(nodes_[i], nodes[i]) : "";
    if (!patch.empty() && patch.size() < nodes[i].size()) w.u8(kPatch).bytes(patch);
    else w.u8(kWhole).bytes(nodes[i]);
  }
  // A host input's batch changes every step: neither side keeps it (it would be a copy of the batch per plan
  // and worker), so it goes whole every step.
  for (uint32_t i = 0; i < graph.size(); ++i)
    if (graph.nodes()[i].host_input) std::string().swap(nodes[i]);
  std::vector<uint64_t> ids, sizes;
  for (const auto& b : bindings) {
    ids.push_back(b ? b->id() : 0);
    sizes.push_back(b ? b->bytes() : 0);
  }
  w.u32(static_cast<uint32_t>(bindings.size()));
  w.u8(sizes != sizes_ ? 1 : 0);
  if (sizes != sizes_)
    for (uint64_t b : sizes) w.varint(b);
  // Each id as its change since the last step, less the change of the slot before: a parameter's id stays
  // (0), a fresh buffer's moves with its neighbours' (0 after the first of a run).
  int64_t before = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t change = static_cast<int64_t>(ids[i] - (i < ids_.size() ? ids_[i] : 0));
    w.varint(zigzag(change - before));
    before = change;
  }
  std::vector<uint64_t> values;
  for (const Node& n : graph.nodes())
    for_values(n, [&](auto v) {
      uint64_t bits;
      std::memcpy(&bits, &v, sizeof bits);
      values.push_back(bits);
    });
  w.u64s(values);
  nodes_ = std::move(nodes);
  ids_ = std::move(ids);
  sizes_ = std::move(sizes);
  ++steps_;
  return w.take();
}

StepWire StepDecoder::decode(std::string_view payload, const PayloadCodec& codec, const BufferResolver& resolve) {
  WireReader r(payload);
  const uint64_t steps = r.u64();
  if (steps != steps_)
    throw ProtocolError(fmt::format("step: changes to step {} of this graph, but this worker holds step {}", steps, steps_));
  const uint32_t total = count(r, "nodes", kMaxNodes);
  // The changed nodes, decoded apart; the copy changes only once the whole step is read.
  std::vector<std::pair<uint32_t, Held>> changed;
  for (uint32_t k = 0, n = count(r, "changed nodes", total); k < n; ++k) {
    const uint32_t index = r.u32();
    if (index >= total || (!changed.empty() && index <= changed.back().first))
      throw ProtocolError(fmt::format("step: changed node {} out of order or past the step's {} nodes", index, total));
    const uint8_t form = r.u8();
    if (form != kWhole && form != kPatch) throw ProtocolError("step: a changed node neither whole nor patched");
    if (form == kPatch && index >= nodes_.size())
      throw ProtocolError(fmt::format("step: a patch to node {}, which this worker does not hold", index));
    Held held;
    held.wire = form == kWhole ? r.bytes(kMaxPayload) : patched(nodes_[index].wire, r.bytes(kMaxPayload));
    WireReader nr(held.wire);
    Node& node = held.node;
    node.op = intern_op(nr.bytes(1024));
    for (uint32_t a = 0, m = count(nr, "attributes", kMaxRefs); a < m; ++a) node.attrs.push_back(get_attr(nr));
    for (uint32_t a = 0, m = count(nr, "inputs", kMaxRefs); a < m; ++a) held.refs.push_back(get_ref(nr, node.inputs.emplace_back()));
    for (uint32_t a = 0, m = count(nr, "outputs", kMaxRefs); a < m; ++a) held.refs.push_back(get_ref(nr, node.outputs.emplace_back()));
    get_small(nr, node.written, "written input", static_cast<uint32_t>(node.inputs.size()));
    get_small(nr, node.initializes, "initialized input", static_cast<uint32_t>(node.inputs.size()));
    node.host_input = nr.u8() != 0;
    get_small(nr, node.input_args, "input argument", 255);
    get_small(nr, node.attr_args, "attribute argument", 255);
    get_small(nr, node.output_rets, "output", 255);
    const std::string bytes = nr.bytes(kMaxPayload);
    switch (nr.u8()) {
      case kNoPayload: break;
      case kPayload: node.payload = codec.decode(node, bytes); break;
      case kWithheld: held.withheld = true; break;
      default: throw ProtocolError("step: a node's payload marked neither sent, withheld nor absent");
    }
    nr.finish();
    if (node.host_input) std::string().swap(held.wire);  // the batch: not kept (StepEncoder does not patch it)
    changed.emplace_back(index, std::move(held));
  }
  std::vector<const Held*> view(total, nullptr);
  for (uint32_t i = 0; i < total && i < nodes_.size(); ++i) view[i] = &nodes_[i];
  for (const auto& [i, held] : changed) view[i] = &held;
  for (uint32_t i = 0; i < total; ++i)
    if (!view[i]) throw ProtocolError(fmt::format("step: node {} is new but was not sent", i));

  const uint32_t slots = count(r, "bindings", kMaxList);
  std::vector<uint64_t> sizes = sizes_;
  if (r.u8()) {
    sizes.clear();
    for (uint32_t i = 0; i < slots; ++i) sizes.push_back(r.varint());
  } else if (sizes.size() != slots) {
    throw ProtocolError(fmt::format("step: {} bindings, but their sizes are those of {}", slots, sizes.size()));
  }
  std::vector<uint64_t> ids;
  int64_t before = 0;
  for (uint32_t i = 0; i < slots; ++i) {
    before += unzigzag(r.varint());
    ids.push_back((i < ids_.size() ? ids_[i] : 0) + static_cast<uint64_t>(before));
  }
  const std::vector<uint64_t> values = r.u64s(kMaxList);
  r.finish();
  size_t wanted = 0;
  for (const Held* h : view) {
    for_values(h->node, [&](auto) { ++wanted; });
    for (uint32_t slot : h->refs)
      if (slot > slots) throw ProtocolError(fmt::format("step: a reference to slot {} of {} bindings", slot - 1, slots));
  }
  if (wanted != values.size())
    throw ProtocolError(fmt::format("step: {} values for a graph of {}", values.size(), wanted));

  StepWire out;
  for (uint32_t i = 0; i < slots; ++i) out.bindings.push_back(ids[i] ? resolve(ids[i], sizes[i]) : nullptr);
  size_t value = 0;
  for (uint32_t i = 0; i < total; ++i) {
    const Held& h = *view[i];
    Node node = h.node;
    size_t ref = 0;
    for (auto& t : node.inputs) t.buffer = h.refs[ref] ? out.bindings[h.refs[ref] - 1] : nullptr, ++ref;
    for (auto& t : node.outputs) t.buffer = h.refs[ref] ? out.bindings[h.refs[ref] - 1] : nullptr, ++ref;
    for (auto& a : node.attrs) {
      if (auto* v = std::get_if<StepValue>(&a)) std::memcpy(&v->value, &values[value++], sizeof(double));
      else if (auto* sd = std::get_if<Seed>(&a)) sd->value = values[value++];
    }
    if (h.withheld) out.withheld.push_back(i);
    out.graph.append(std::move(node));
  }
  nodes_.resize(total);
  for (auto& [i, held] : changed) nodes_[i] = std::move(held);
  ids_ = std::move(ids);
  sizes_ = std::move(sizes);
  ++steps_;
  return out;
}

}  // namespace moreh::runtime
