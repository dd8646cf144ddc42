#include "scheduler/analysis/linear_pairs.h"

#include <algorithm>
#include <optional>
#include <set>

#include "scheduler/sharding/sharding_rules.h"

namespace moreh::scheduler {

using runtime::Node;
using runtime::TensorRef;

namespace {

struct Linear {
  uint32_t x = 0, weight = 0;  // slots
  uint32_t source = 0;         // x before autocast's casts: layers over casts of one value read the same input
  int64_t bias = -1;
  int64_t in = 0, out = 0;
  int x_input = 0, weight_input = 0;
};

// A whole 2-D weight read as [in, out]: its transpose ([out, in] in memory) or itself.
bool whole_weight(const TensorRef& r, uint64_t bytes) {
  if (r.sizes.size() != 2 || r.offset != 0 || static_cast<uint64_t>(r.sizes[0] * r.sizes[1]) * r.itemsize != bytes)
    return false;
  const bool transposed = r.strides[0] == 1 && r.strides[1] == r.sizes[0];
  const bool direct = r.strides[0] == r.sizes[1] && r.strides[1] == 1;
  return transposed || direct;
}

std::optional<Linear> linear(const Node& n, const std::vector<uint32_t>& slots, const runtime::CanonicalGraph& cg) {
  static const runtime::OpId kAddmm = runtime::intern_op("aten::addmm"), kMm = runtime::intern_op("aten::mm");
  const bool addmm = n.op == kAddmm && n.inputs.size() == 3, mm = n.op == kMm && n.inputs.size() == 2;
  if (!(addmm || mm) || n.outputs.size() != 1 || !n.written.empty()) return std::nullopt;
  const int x = addmm ? 1 : 0, w = x + 1;
  const TensorRef& wr = n.inputs[w];
  if (!whole_weight(wr, cg.buffers[slots[w]].bytes) || n.inputs[x].sizes.size() != 2 || slots[w] == slots[x])
    return std::nullopt;
  Linear l{slots[x], slots[w], slots[x], -1, wr.sizes[0], wr.sizes[1], x, w};
  if (addmm) {
    const TensorRef& b = n.inputs[0];
    if (b.sizes.size() != 1 || b.sizes[0] != l.out || b.strides[0] != 1 || b.offset != 0 ||
        static_cast<uint64_t>(l.out) * b.itemsize != cg.buffers[slots[0]].bytes)
      return std::nullopt;
    l.bias = slots[0];
  }
  return l;
}

// copy_(dst, src) over all of dst, src of the same shape: dst becomes src, in dst's type (autocast's casts,
// the key/value cache's copies are recorded so).
bool copies_whole(const Node& n) {
  static const runtime::OpId kCopy = runtime::intern_op("aten::copy_");
  return n.op == kCopy && n.inputs.size() == 2 && n.written.size() == 1 && n.written[0] == 0 &&
         n.inputs[0].sizes == n.inputs[1].sizes && n.inputs[0].offset == 0;
}

int64_t numel(const TensorRef& r) {
  int64_t n = 1;
  for (int64_t s : r.sizes) n *= s;
  return n;
}

}  // namespace

std::vector<LinearPair> find_linear_pairs(const runtime::StepGraph& graph, const runtime::CanonicalGraph& cg) {
  const auto& nodes = graph.nodes();
  std::vector<std::optional<Linear>> linears(nodes.size());
  std::vector<int64_t> made_by(cg.buffers.size(), -1);  // the linear layer whose output a slot is
  std::vector<int64_t> producer(cg.buffers.size(), -1);  // the node that makes a slot
  // What a slot is a copy of: autocast casts a layer's input for each layer (weights it casts once and keeps),
  // so Llama's gate and up projections, or its q, k and v, read different bf16 copies of one value.
  std::vector<uint32_t> copy_of(cg.buffers.size());
  std::vector<int64_t> cast_from(cg.buffers.size(), -1);  // the value a slot is a copy of, laid out alike
  for (uint32_t s = 0; s < copy_of.size(); ++s) copy_of[s] = s;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    if (copies_whole(n)) {
      copy_of[cg.node_inputs[i][0]] = copy_of[cg.node_inputs[i][1]];
      if (n.inputs[0].strides == n.inputs[1].strides) cast_from[cg.node_inputs[i][0]] = cg.node_inputs[i][1];
    }
    linears[i] = linear(n, cg.node_inputs[i], cg);
    if (linears[i]) {
      linears[i]->source = copy_of[linears[i]->x];
      made_by[cg.node_outputs[i][0]] = static_cast<int64_t>(i);
    }
    for (uint32_t o : cg.node_outputs[i]) producer[o] = static_cast<int64_t>(i);
  }
  // Whether slot t is y itself, or made from y alone by one node (Hugging Face's key/value cache appends k and v
  // to an empty tensor with cat): the empty inputs aside, that node reads y only.
  auto from = [&](uint32_t t, uint32_t y) {
    if (t == y) return true;
    if (producer[t] < 0) return false;
    const size_t p = static_cast<size_t>(producer[t]);
    bool reads = false;
    for (size_t k = 0; k < nodes[p].inputs.size(); ++k) {
      if (numel(nodes[p].inputs[k]) == 0) continue;
      if (cg.node_inputs[p][k] != y) return false;
      reads = true;
    }
    return reads && nodes[p].written.empty();
  };
  // The output projection of attention node `at`: the first node after it that reads its output, a linear layer
  // with `features` input features reading it as its input.
  auto output_projection = [&](size_t at, int64_t features) -> std::optional<size_t> {
    const uint32_t out = cg.node_outputs[at][0];
    for (size_t j = at + 1; j < nodes.size(); ++j) {
      bool reads = false;
      for (uint32_t t : cg.node_inputs[j]) reads = reads || t == out;
      if (!reads) continue;
      if (!linears[j] || linears[j]->x != out || linears[j]->in != features) return std::nullopt;
      return j;
    }
    return std::nullopt;
  };
  // Attention: a linear layer making q, k and v (one [tokens, 3C] output, or C), attention over them, and the
  // output projection reading attention's output. Split by heads where the attention rule takes its inputs
  // split on the heads dim (dim 1 of [B, H, T, hd]): the projection weights by their output features in each
  // of the q, k, v blocks, the output projection's by its input features.
  auto attention_pair = [&](size_t i, const Linear& qkv, const std::set<uint32_t>& used) -> std::optional<LinearPair> {
    const uint32_t y = cg.node_outputs[i][0];
    // Attention: the first node after the projection that takes three 4-D inputs made from its output.
    std::optional<size_t> at;
    for (size_t j = i + 1; j < nodes.size() && !at; ++j) {
      if (linears[j]) {
        bool reads = false;
        for (uint32_t t : cg.node_inputs[j]) reads = reads || t == y;
        if (reads) return std::nullopt;
        continue;
      }
      int made = 0;
      for (size_t k = 0; k < nodes[j].inputs.size(); ++k)
        made += nodes[j].inputs[k].sizes.size() == 4 && from(cg.node_inputs[j][k], y);
      if (made >= 3) at = j;
    }
    if (!at) return std::nullopt;
    const Node& a = nodes[*at];
    BatchDims dims(a.inputs.size());
    int64_t heads = 0, views = 0;
    for (size_t k = 0; k < a.inputs.size(); ++k)
      if (from(cg.node_inputs[*at][k], y) && a.inputs[k].sizes.size() == 4) {
        if (heads && a.inputs[k].sizes[1] != heads) return std::nullopt;
        heads = a.inputs[k].sizes[1];
        dims[k] = 1;
        ++views;
      }
    if (views != 3 || heads <= 1 || qkv.out % 3 != 0 || (qkv.out / 3) % heads != 0 || !shard_rule(a, dims))
      return std::nullopt;
    const std::optional<size_t> proj = output_projection(*at, qkv.out / 3);
    if (!proj) return std::nullopt;
    LinearPair pair;
    pair.first_nodes = {static_cast<uint32_t>(i)};
    pair.second_node = static_cast<uint32_t>(*proj);
    pair.hidden = heads;
    bool free = true;
    auto seed = [&](uint32_t slot, const TensorRef& view, int dim, int64_t blocks) {
      auto layout = split_layout(view, cg.buffers[slot].bytes, dim, heads, blocks);
      if (!layout || used.count(slot)) free = false;
      else pair.seeds[slot] = *layout;
    };
    seed(qkv.weight, nodes[i].inputs[qkv.weight_input], 1, 3);  // [C, 3C]: heads of each of q, k, v
    if (qkv.bias >= 0) seed(static_cast<uint32_t>(qkv.bias), nodes[i].inputs[0], 0, 3);
    const Linear& p = *linears[*proj];
    seed(p.weight, nodes[*proj].inputs[p.weight_input], 0, 1);  // [C, out]: its rows, head by head
    if (!free) return std::nullopt;
    return pair;
  };
  // Attention over separate projections (Llama): q, k and v each made by a linear layer over the same input,
  // then by per-head ops of their own (rotary embedding's elementwise ops, a cat along the head dim, a key/value
  // cache's cat onto an empty tensor) into attention, whose output the output projection reads. k and v may
  // have fewer heads than q (grouped-query attention): each device takes an even part of each, so its query
  // heads meet their own key/value heads when the key/value heads split evenly.
  std::vector<int64_t> root(cg.buffers.size(), -1);  // the linear layer a value is made from by per-head ops
  for (size_t j = 0; j < nodes.size(); ++j) {
    if (linears[j]) {
      root[cg.node_outputs[j][0]] = static_cast<int64_t>(j);
      continue;
    }
    const Node& n = nodes[j];
    if (copies_whole(n)) {  // autocast's casts back and forth around the rotary embedding and the cache
      root[cg.node_inputs[j][0]] = n.inputs[0].sizes.size() == 4 ? root[cg.node_inputs[j][1]] : -1;
      continue;
    }
    static const runtime::OpId kCat = runtime::intern_op("aten::cat");
    if (!n.written.empty() || n.outputs.size() != 1 || n.outputs[0].sizes.size() != 4) continue;
    if (!(runtime::op_facts(n.op).pointwise || n.op == kCat)) continue;
    int64_t r = -1;
    bool ok = true;
    for (size_t k = 0; k < n.inputs.size() && ok; ++k) {
      const int64_t rk = root[cg.node_inputs[j][k]];
      if (rk < 0) continue;  // a constant (cos, sin), a scalar or an empty tensor
      ok = r < 0 || r == rk;
      r = rk;
    }
    if (ok && r >= 0) root[cg.node_outputs[j][0]] = r;
  }
  auto split_attention = [&](size_t i, const std::set<uint32_t>& used) -> std::optional<LinearPair> {
    const Linear& q = *linears[i];
    std::optional<size_t> at;
    std::vector<int> views;  // the attention node's inputs made from q, k and v, in that order
    for (size_t j = i + 1; j < nodes.size() && !at; ++j) {
      if (linears[j]) continue;
      std::vector<int> mine;
      for (size_t k = 0; k < nodes[j].inputs.size(); ++k) {
        const int64_t r = root[cg.node_inputs[j][k]];
        if (r >= 0 && nodes[j].inputs[k].sizes.size() == 4 && linears[r]->source == q.source) mine.push_back(static_cast<int>(k));
      }
      const bool per_head = !cg.node_outputs[j].empty() && root[cg.node_outputs[j][0]] >= 0;  // not attention
      if (mine.size() >= 3 && !per_head && root[cg.node_inputs[j][mine[0]]] == static_cast<int64_t>(i)) {
        at = j;
        views.assign(mine.begin(), mine.begin() + 3);
      }
    }
    if (!at) return std::nullopt;
    const Node& a = nodes[*at];
    std::vector<size_t> layers;
    std::vector<int64_t> heads;
    BatchDims dims(a.inputs.size());
    for (int k : views) {
      const size_t l = static_cast<size_t>(root[cg.node_inputs[*at][k]]);
      if (std::find(layers.begin(), layers.end(), l) != layers.end()) return std::nullopt;  // three layers
      layers.push_back(l);
      heads.push_back(a.inputs[k].sizes[1]);
      dims[k] = 1;
    }
    const int64_t kv = std::min(heads[1], heads[2]);
    if (heads[1] != heads[2] || kv <= 1 || heads[0] % kv != 0 || !shard_rule(a, dims)) return std::nullopt;
    for (size_t m = 0; m < 3; ++m)
      if (linears[layers[m]]->out % heads[m] != 0) return std::nullopt;
    const std::optional<size_t> proj = output_projection(*at, q.out);
    if (!proj) return std::nullopt;
    LinearPair pair;
    for (size_t l : layers) pair.first_nodes.push_back(static_cast<uint32_t>(l));
    pair.second_node = static_cast<uint32_t>(*proj);
    pair.hidden = kv;  // the fewest heads: every part must take a whole number of each
    bool free = true;
    auto seed = [&](uint32_t slot, const TensorRef& view, int dim, int64_t rows) {
      auto layout = split_layout(view, cg.buffers[slot].bytes, dim, rows, 1);
      if (!layout || used.count(slot)) free = false;
      else pair.seeds[slot] = *layout;
    };
    for (size_t m = 0; m < 3; ++m) {
      const Linear& l = *linears[layers[m]];
      seed(l.weight, nodes[layers[m]].inputs[l.weight_input], 1, heads[m]);  // [C, heads x hd]: its heads
      if (l.bias >= 0) seed(static_cast<uint32_t>(l.bias), nodes[layers[m]].inputs[0], 0, heads[m]);
    }
    const Linear& p = *linears[*proj];
    seed(p.weight, nodes[*proj].inputs[p.weight_input], 0, heads[0]);  // [H x hd, C]: its rows, head by head
    if (!free) return std::nullopt;
    return pair;
  };

  std::vector<LinearPair> pairs;
  std::set<uint32_t> taken;  // weights and biases already in a pair
  // A weight the layers read as autocast's copy (the parameter cast once per step): the parameter is split
  // alike, so that the cast makes each device's part only and the parameter rests in its parts.
  auto seed_sources = [&](LinearPair& pair) {
    std::vector<std::pair<uint32_t, SplitLayout>> sources;
    for (const auto& [slot, layout] : pair.seeds)
      if (const int64_t from = cast_from[slot]; from >= 0 && !taken.count(static_cast<uint32_t>(from)))
        sources.emplace_back(static_cast<uint32_t>(from), layout);
    pair.seeds.insert(sources.begin(), sources.end());
  };
  std::set<size_t> firsts;   // layers already a pair's first
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (!linears[i] || firsts.count(i)) continue;
    const Linear& first = *linears[i];
    const int64_t elems = numel(nodes[i].outputs[0]);
    std::set<uint32_t> region{cg.node_outputs[i][0]};  // what the pair has made so far
    std::vector<size_t> first_nodes{i};
    std::optional<size_t> second;
    for (size_t j = i + 1; j < nodes.size() && !second; ++j) {
      const auto& in = cg.node_inputs[j];
      bool reads = false;
      for (uint32_t t : in) reads = reads || region.count(t);
      if (!reads) continue;
      const Node& n = nodes[j];
      if (linears[j]) {
        if (region.count(linears[j]->x) && linears[j]->in == first.out && numel(n.inputs[linears[j]->x_input]) == elems)
          second = j;
        break;
      }
      const bool elementwise = runtime::op_facts(n.op).pointwise || runtime::op_facts(n.op).seeded;
      if (!elementwise || !n.written.empty() || n.outputs.empty() || numel(n.outputs[0]) != elems) break;
      bool ok = true;
      for (size_t k = 0; k < in.size() && ok; ++k) {
        if (region.count(in[k]) || numel(n.inputs[k]) == 1) continue;
        const int64_t sibling = made_by[in[k]];  // another first layer over the same input
        ok = sibling >= 0 && linears[sibling]->source == first.source && linears[sibling]->out == first.out;
        if (ok) {
          first_nodes.push_back(static_cast<size_t>(sibling));
          region.insert(in[k]);
        }
      }
      if (!ok) break;
      for (uint32_t o : cg.node_outputs[j]) region.insert(o);
    }
    if (!second) {
      auto pair = attention_pair(i, first, taken);
      if (!pair) pair = split_attention(i, taken);
      if (pair) {
        seed_sources(*pair);
        for (const auto& [slot, layout] : pair->seeds) taken.insert(slot);
        for (uint32_t f : pair->first_nodes) firsts.insert(f);
        firsts.insert(pair->second_node);
        pairs.push_back(std::move(*pair));
      }
      continue;
    }
    LinearPair pair;
    pair.second_node = static_cast<uint32_t>(*second);
    pair.hidden = first.out;
    bool free = true;
    auto seed = [&](uint32_t slot, const TensorRef& view, int dim) {
      auto layout = split_layout(view, cg.buffers[slot].bytes, dim, pair.hidden);
      if (!layout || taken.count(slot)) free = false;
      else pair.seeds[slot] = *layout;
    };
    for (size_t f : first_nodes) {
      const Linear& l = *linears[f];
      seed(l.weight, nodes[f].inputs[l.weight_input], 1);  // [in, hidden]: its columns
      if (l.bias >= 0) seed(static_cast<uint32_t>(l.bias), nodes[f].inputs[0], 0);
      pair.first_nodes.push_back(static_cast<uint32_t>(f));
    }
    const Linear& s = *linears[*second];
    seed(s.weight, nodes[*second].inputs[s.weight_input], 0);  // [hidden, out]: its rows
    if (!free) continue;
    seed_sources(pair);
    for (const auto& [slot, layout] : pair.seeds) taken.insert(slot);
    for (size_t f : first_nodes) firsts.insert(f);
    firsts.insert(*second);  // the second layer starts no pair of its own
    pairs.push_back(std::move(pair));
  }
  return pairs;
}

}  // namespace moreh::scheduler
