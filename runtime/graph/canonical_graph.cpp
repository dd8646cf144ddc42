#include "runtime/graph/canonical_graph.h"

#include <algorithm>
#include <unordered_map>

namespace moreh::runtime {
namespace {

// FNV-1a over 64-bit words, then a final mix: cheap and stable within a process.
struct Hasher {
  uint64_t h = 1469598103934665603ull;
  void word(uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (i * 8)) & 0xff;
      h *= 1099511628211ull;
    }
  }
  void bytes(const std::string& s) {
    word(s.size());
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  }
  uint64_t done() const {
    uint64_t x = h;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
  }
};

void hash_attribute(Hasher& hs, const Attribute& a) {
  hs.word(a.index());
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, int64_t>) {
          hs.word(static_cast<uint64_t>(v));
        } else if constexpr (std::is_same_v<T, std::string>) {
          hs.bytes(v);
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          hs.word(v.size());
          for (int64_t x : v) hs.word(static_cast<uint64_t>(x));
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          hs.word(v.size());  // values are step data; only the count shapes the plan
        }
        // StepValue, Seed, monostate: the kind alone
      },
      a);
}

}  // namespace

CanonicalGraph CanonicalGraph::build(const StepGraph& graph, Offsets offsets) {
  CanonicalGraph g;
  std::unordered_map<const Buffer*, uint32_t> slot_of;
  slot_of.reserve(graph.size() * 2);
  Hasher hs;
  hs.word(graph.size());

  std::vector<int64_t> first_offset;  // slot -> the offset of its first view in the step (kRelative)
  auto slot = [&](const TensorRef& r, bool produced, bool initialized_here) -> uint32_t {
    const std::shared_ptr<Buffer>& b = r.buffer;
    auto [it, inserted] = slot_of.try_emplace(b.get(), static_cast<uint32_t>(g.buffers.size()));
    if (inserted) {
      first_offset.push_back(offsets == Offsets::kRelative ? r.offset : 0);
      CanonicalBuffer cb;
      cb.bytes = b->bytes();
      cb.origin = produced ? BufferOrigin::kProduced
                           : (b->defined() && !initialized_here ? BufferOrigin::kMaterialized
                                                                : BufferOrigin::kUnmaterialized);
      g.buffers.push_back(cb);
      g.bindings.push_back(b);
    }
    return it->second;
  };
  auto hash_ref = [&](const TensorRef& r, uint32_t s) {
    hs.word(s);
    hs.word(static_cast<uint64_t>(r.offset - first_offset[s]));
    hs.word(r.sizes.size());
    for (int64_t d : r.sizes) hs.word(static_cast<uint64_t>(d));
    for (int64_t d : r.strides) hs.word(static_cast<uint64_t>(d));
    hs.word(static_cast<uint64_t>(static_cast<uint8_t>(r.dtype)));
  };

  g.node_inputs.reserve(graph.size());
  g.node_outputs.reserve(graph.size());
  for (const Node& n : graph.nodes()) {
    hs.word(n.op);
    hs.word(n.attrs.size());
    for (const auto& a : n.attrs) hash_attribute(hs, a);
    auto& ins = g.node_inputs.emplace_back();
    ins.reserve(n.inputs.size());
    hs.word(n.inputs.size());
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const auto& r = n.inputs[i];
      bool initialized_here = std::find(n.initializes.begin(), n.initializes.end(), i) != n.initializes.end();
      uint32_t s = slot(r, false, initialized_here);
      ins.push_back(s);
      hash_ref(r, s);
    }
    hs.word(n.written.size());
    for (uint16_t w : n.written) hs.word(w);
    hs.word(n.host_input);
    auto& outs = g.node_outputs.emplace_back();
    hs.word(n.outputs.size());
    for (const auto& r : n.outputs) {
      uint32_t s = slot(r, true, false);
      outs.push_back(s);
      hash_ref(r, s);
    }
  }
  for (size_t i = 0; i < g.buffers.size(); ++i) {
    auto& cb = g.buffers[i];
    cb.live_after = g.bindings[i]->frontend_alive();
    hs.word(cb.bytes);
    hs.word(static_cast<uint64_t>(cb.origin));
    hs.word(cb.live_after);
    if (cb.origin == BufferOrigin::kMaterialized) {  // where it lives decides the collectives the plan needs
      const Placement& p = g.bindings[i]->placement();
      hs.word(static_cast<uint64_t>(p.kind));
      hs.word(static_cast<uint64_t>(p.rows));
      if (p.outer != 1) hs.word(static_cast<uint64_t>(p.outer));  // split along a later dimension
      hs.word(p.devices);
      if (p.ranks != 0) hs.word(static_cast<uint64_t>(p.ranks) << 32 | static_cast<uint32_t>(p.stride));  // a mesh axis
      if (p.inner_rows != 0) {  // its parts split again along the other axis
        hs.word(static_cast<uint64_t>(p.inner_rows));
        hs.word(static_cast<uint64_t>(p.inner_ranks) << 32 | static_cast<uint32_t>(p.inner_stride));
      }
    }
  }
  g.hash = hs.done();
  return g;
}

}  // namespace moreh::runtime
