#include "scheduler/lowering/recomputation.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>

#include "scheduler/analysis/backward_seeds.h"
#include "scheduler/lowering/batch_split.h"

namespace moreh::scheduler {

namespace {

class Planner {
 public:
  Planner(const runtime::StepGraph& graph, const runtime::CanonicalGraph& cg, size_t tail,
          const std::vector<int64_t>& rows)
      : tail_(std::max<size_t>(tail, 1)), rows_(rows), graph_(graph), cg_(cg), n_(graph.size()), slots_(cg.buffers.size()), producer_(slots_, -1),
        writes_(slots_), reads_(slots_), keep_(slots_, false), seeds_(backward_seeds(graph, cg)) {
    for (size_t i = 0; i < n_; ++i) {
      const runtime::Node& node = graph_.nodes()[i];
      const auto& in = cg_.node_inputs[i];
      for (size_t k = 0; k < in.size(); ++k) {
        reads_[in[k]].push_back(static_cast<uint32_t>(i));
        if (std::find(node.written.begin(), node.written.end(), k) != node.written.end())
          writes_[in[k]].push_back(static_cast<uint32_t>(i));
      }
      for (uint32_t s : cg_.node_outputs[i]) writes_[s].push_back(static_cast<uint32_t>(i));
    }
    // A slot made in the step is made by its first writer (a fresh output, or an input the node gives its
    // first value: copy_ into torch.empty); the nodes that write one slot run again together, in order.
    group_.resize(n_);
    for (size_t i = 0; i < n_; ++i) group_[i] = i;
    for (size_t s = 0; s < slots_; ++s) {
      if (writes_[s].empty() || cg_.buffers[s].origin == runtime::BufferOrigin::kMaterialized) continue;
      producer_[s] = writes_[s].front();
      for (uint32_t w : writes_[s]) join(w, writes_[s].front());
    }
    members_.resize(n_);
    for (size_t i = 0; i < n_; ++i) members_[root(i)].push_back(static_cast<uint32_t>(i));
    // Under micro-batches, what each micro-batch makes of its own: values made from the step's data (its host
    // copies) that keep the rows of every batch size. The rest (a loss or batch statistics summed over the
    // micro-batches, a mask made once for all of them) is not made again.
    row_wise_.assign(slots_, true);
    if (!rows_.empty()) {
      std::vector<bool> depends(slots_, false);
      for (size_t i = 0; i < n_; ++i) {
        const runtime::Node& node = graph_.nodes()[i];
        const auto& in = cg_.node_inputs[i];
        bool d = node.host_input;
        for (uint32_t t : in) d = d || depends[t];
        // Every write must be a micro-batch's own: made from the data, by rows (not torch.full(...) over all
        // of them, then a micro-batch's rows copied in).
        auto mark = [&](uint32_t t, const runtime::TensorRef& ref) {
          depends[t] = depends[t] || d;
          row_wise_[t] = row_wise_[t] && d && std::all_of(rows_.begin(), rows_.end(), [&](int64_t r) {
            return row_dim(ref, cg_.buffers[t].bytes, r).has_value();
          });
        };
        for (uint16_t w : node.written) mark(in[w], node.inputs[w]);
        for (size_t k = 0; k < node.outputs.size(); ++k) mark(cg_.node_outputs[i][k], node.outputs[k]);
      }
    }
    written_by_.resize(n_);
    for (size_t s = 0; s < slots_; ++s)
      if (producer_[s] >= 0) written_by_[root(static_cast<size_t>(producer_[s]))].push_back(static_cast<uint32_t>(s));
  }

  Recomputation run() {
    Recomputation r;
    r.dropped.assign(slots_, false);
    if (seeds_.empty()) {
      r.none = "the step has no backward pass";
      return identity(std::move(r));
    }
    for (size_t j = 0; j < seeds_.size(); ++j) find_checkpoints(j == 0 ? 0 : seeds_[j - 1], seeds_[j]);
    for (size_t s = 0; s < slots_; ++s) r.checkpoints += cut_[s];
    // Scheduling may find a node whose inputs changed before it would run again: it is kept, and the
    // schedule made anew (each round keeps one more node, so this ends).
    for (;;) {
      decide(r.dropped);
      bool any = false;
      for (uint32_t s = 0; s < slots_ && !any; ++s) any = r.dropped[s] && saved(s);
      if (!any) {
        r.none = r.checkpoints == 0 ? "the forward pass never narrows to one value to keep as a checkpoint"
                                    : "every activation the backward pass reads is a checkpoint or follows the last one";
        return identity(std::move(r));
      }
      r.order.clear();
      r.recomputed_nodes = 0;
      if (schedule(r)) break;
    }
    for (size_t s = 0; s < slots_; ++s)
      if (r.dropped[s] && saved(s)) r.dropped_bytes += cg_.buffers[s].bytes;
    fill_made_at(r);
    std::map<std::string, size_t> ops;
    std::vector<bool> seen(n_, false);
    for (uint32_t p : r.order) {
      if (seen[p]) ++ops[runtime::op_name(graph_.nodes()[p].op)];
      seen[p] = true;
    }
    for (const auto& [name, count] : ops) r.ops.push_back(fmt::format("{} ×{}", name, count));
    return r;
  }

 private:
  Recomputation identity(Recomputation r) const {
    r.order.resize(n_);
    for (size_t i = 0; i < n_; ++i) r.order[i] = static_cast<uint32_t>(i);
    std::fill(r.dropped.begin(), r.dropped.end(), false);
    fill_made_at(r);
    return r;
  }

  void fill_made_at(Recomputation& r) const {
    r.made_at.assign(r.order.size(), {});
    for (size_t q = 0; q < r.order.size(); ++q) {
      const uint32_t p = r.order[q];
      const auto& in = cg_.node_inputs[p];
      for (size_t k = 0; k < in.size(); ++k)
        if (producer_[in[k]] == static_cast<int64_t>(p) && writes(graph_.nodes()[p], k)) r.made_at[q].push_back(in[k]);
      r.made_at[q].insert(r.made_at[q].end(), cg_.node_outputs[p].begin(), cg_.node_outputs[p].end());
    }
  }

  // The seed of the backward pass after node p (n_: none, p is no forward node).
  size_t seed_after(size_t p) const {
    auto it = std::upper_bound(seeds_.begin(), seeds_.end(), p);
    return it == seeds_.end() ? n_ : *it;
  }

  // The last read of slot s before position `before` (or -1).
  int64_t last_read_before(uint32_t s, size_t before) const {
    auto it = std::lower_bound(reads_[s].begin(), reads_[s].end(), static_cast<uint32_t>(before));
    return it == reads_[s].begin() ? -1 : static_cast<int64_t>(*(it - 1));
  }

  // Read by the backward pass of the forward pass that made it.
  bool saved(uint32_t s) const {
    if (producer_[s] < 0) return false;
    const size_t seed = seed_after(static_cast<size_t>(producer_[s]));
    return seed < n_ && !reads_[s].empty() && reads_[s].back() >= seed;
  }

  size_t root(size_t i) const {
    while (group_[i] != i) i = group_[i];
    return i;
  }
  void join(size_t a, size_t b) { group_[root(a)] = root(b); }

  bool writes(const runtime::Node& node, size_t input) const {
    return std::find(node.written.begin(), node.written.end(), input) != node.written.end();
  }

  // A group (rooted at g) that gives the same bits when it runs again: its nodes are of one forward pass,
  // none copies host data, every slot they write they make in the step (no value from before the step),
  // nothing else writes those slots and the script does not hold them.
  bool pure(size_t g) const {
    const size_t seed = seed_after(members_[g].front());
    if (seed == n_) return false;
    for (uint32_t p : members_[g]) {
      const runtime::Node& node = graph_.nodes()[p];
      if (node.host_input || seed_after(p) != seed) return false;
      const auto& in = cg_.node_inputs[p];
      for (size_t k = 0; k < in.size(); ++k)
        if (writes(node, k) && producer_[in[k]] < 0) return false;  // a value from before the step
    }
    // Under micro-batches, only what each micro-batch makes of its own.
    for (uint32_t s : written_by_[g])
      if (cg_.buffers[s].live_after || !row_wise_[s]) return false;
    return !written_by_[g].empty();
  }

  // The forward pass [begin, seed): at each point, the activations made before it and read at or after it
  // (leaving out those that live through more than half of the pass); where that is one slot, the slot is a
  // checkpoint. What is made after the last checkpoint is kept.
  void find_checkpoints(size_t begin, size_t seed) {
    cut_.resize(slots_, false);
    const size_t len = seed - begin;
    std::vector<int64_t> count(len + 2, 0);
    std::vector<uint64_t> sum(len + 2, 0);
    for (uint32_t s = 0; s < slots_; ++s) {
      const int64_t made = producer_[s];
      if (made < static_cast<int64_t>(begin) || made >= static_cast<int64_t>(seed)) continue;
      const size_t p = static_cast<size_t>(made);
      const int64_t last = last_read_before(s, seed);
      if (last <= made) continue;
      if (2 * static_cast<size_t>(last - made) > len) {  // lives through most of the pass
        keep_[s] = true;
        continue;
      }
      count[p + 1 - begin] += 1;
      count[static_cast<size_t>(last) + 1 - begin] -= 1;
      sum[p + 1 - begin] += s;
      sum[static_cast<size_t>(last) + 1 - begin] -= s;
    }
    int64_t c = 0;
    uint64_t id = 0;
    std::vector<int64_t> makers;  // of the checkpoints, in order
    for (size_t k = 0; k <= len; ++k) {
      c += count[k];
      id += sum[k];
      if (c != 1) continue;
      const uint32_t s = static_cast<uint32_t>(id);
      cut_[s] = true;
      keep_[s] = true;
      if (makers.empty() || makers.back() != producer_[s]) makers.push_back(producer_[s]);
    }
    std::sort(makers.begin(), makers.end());
    makers.erase(std::unique(makers.begin(), makers.end()), makers.end());
    // The backward pass starts where the forward pass ends: keep what it makes after its last `tail_`
    // checkpoints (everything, when it has fewer).
    const int64_t from = makers.size() >= tail_ ? makers[makers.size() - tail_] : static_cast<int64_t>(begin) - 1;
    for (size_t s = 0; s < slots_; ++s)
      if (producer_[s] > from && producer_[s] < static_cast<int64_t>(seed)) keep_[s] = true;
  }

  // A group runs again when it can and none of what it writes is kept.
  void decide(std::vector<bool>& dropped) const {
    std::fill(dropped.begin(), dropped.end(), false);
    for (size_t g = 0; g < n_; ++g) {
      if (root(g) != g || !pure(g)) continue;
      // A group nothing of which the backward pass reads is dropped too: a dropped group that reads it makes
      // it again, instead of holding it from the forward pass.
      bool any_kept = false;
      for (uint32_t s : written_by_[g]) any_kept = any_kept || keep_[s];
      if (any_kept) continue;
      for (uint32_t s : written_by_[g]) dropped[s] = true;
    }
  }

  bool schedule(Recomputation& r) {
    made_.assign(slots_, false);
    for (size_t b = 0; b < n_; ++b) {
      for (uint32_t s : cg_.node_inputs[b])
        if (r.dropped[s] && !made_[s] && b >= seed_after(static_cast<size_t>(producer_[s])))
          if (!remake(root(static_cast<size_t>(producer_[s])), b, r)) return false;
      r.order.push_back(static_cast<uint32_t>(b));
    }
    return true;
  }

  // Runs group g again before node b, after the dropped values it reads; false (and g kept) when a value
  // it reads would not be what it was when the group first ran.
  bool remake(size_t g, size_t b, Recomputation& r) {
    auto keep_group = [&] {
      for (uint32_t s : written_by_[g]) keep_[s] = true;
      return false;
    };
    for (uint32_t p : members_[g])
      for (uint32_t t : cg_.node_inputs[p]) {
        if (producer_[t] >= 0 && root(static_cast<size_t>(producer_[t])) == g) continue;  // the group's own
        if (r.dropped[t]) {  // made again whole: every write to it must come before p read it
          if (writes_[t].back() > p) return keep_group();
          if (!made_[t] && !remake(root(static_cast<size_t>(producer_[t])), b, r)) return false;
          continue;
        }
        for (uint32_t w : writes_[t])
          if (w > p && w < b) return keep_group();
      }
    for (uint32_t p : members_[g]) r.order.push_back(p);
    r.recomputed_nodes += members_[g].size();
    for (uint32_t s : written_by_[g]) made_[s] = true;
    return true;
  }

  const size_t tail_;
  const std::vector<int64_t> rows_;
  std::vector<bool> row_wise_;  // per slot: a micro-batch can make its own again (all, without micro-batches)
  const runtime::StepGraph& graph_;
  const runtime::CanonicalGraph& cg_;
  const size_t n_, slots_;
  std::vector<int64_t> producer_;              // the node that makes the slot in the step (-1: none)
  std::vector<size_t> group_;                  // union-find over the nodes that write one slot
  std::vector<std::vector<uint32_t>> members_; // per group root: its nodes, in order
  std::vector<std::vector<uint32_t>> written_by_;  // per group root: the slots it makes
  std::vector<std::vector<uint32_t>> writes_;  // per slot, the nodes that write it, in order
  std::vector<std::vector<uint32_t>> reads_;   // per slot, the nodes that read it, in order
  std::vector<bool> keep_, cut_, made_;
  std::vector<size_t> seeds_;
};

std::string mib(uint64_t bytes) { return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20)); }

}  // namespace

Recomputation plan_recomputation(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                 size_t tail, const std::vector<int64_t>& rows) {
  return Planner(graph, canonical, tail, rows).run();
}

std::string describe(const Recomputation& r) {
  if (!r.none.empty()) return fmt::format("recomputation: nothing to recompute ({})", r.none);
  return fmt::format("recomputation: {} op(s) run again in the backward pass ({}), {} of activations dropped after "
                     "the forward pass, {} checkpoint(s) kept",
                     r.recomputed_nodes, fmt::join(r.ops, ", "), mib(r.dropped_bytes), r.checkpoints);
}

}  // namespace moreh::scheduler
