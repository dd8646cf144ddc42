#include "scheduler/lowering/deferred_loss_division.h"

#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <map>
#include <set>

#include "scheduler/sharding/rule_helpers.h"

namespace moreh::scheduler {
namespace {

using runtime::Instruction;
using Kind = Instruction::Kind;

constexpr int kReductionArg = 4;       // nll_loss_backward(grad_output, self, target, weight, reduction, ...)
constexpr int kTotalWeightArg = 6;     // ..., ignore_index, total_weight)
constexpr int64_t kReductionMean = 1;
constexpr int64_t kReductionSum = 2;

std::string base_name(const runtime::Node& node) {
  const std::string& name = runtime::op_name(node.op);
  return name.substr(0, name.find('.'));
}

bool is_nll_loss_backward(const runtime::Node& node) {
  const std::string name = base_name(node);
  return name == "aten::nll_loss_backward" || name == "aten::nll_loss2d_backward";
}

// Ops that add their tensor inputs (where a gradient scaled by the total weight must not meet one that is
// not).
bool adds_inputs(const runtime::Node& node) {
  static const std::set<std::string> kAdditive = {"aten::add", "aten::add_", "aten::sub", "aten::sub_",
                                                  "aten::cat", "aten::stack", "aten::where", "aten::index_add_",
                                                  "aten::scatter_add_", "aten::index_put_"};
  return kAdditive.count(base_name(node)) > 0;
}

bool floating(const runtime::TensorRef& r) {
  const auto t = runtime::data_type_of(r.dtype);
  return t && runtime::is_floating_point(*t);
}

class Deferral {
 public:
  Deferral(const runtime::StepGraph& graph, const runtime::CanonicalGraph& cg) : graph_(graph), cg_(cg) {}

  DeferredDivision run(std::vector<SplitStep>& steps, size_t forward_end) {
    DeferredDivision r;
    std::set<uint32_t> piece_written;  // by a micro-batch's step of the forward pass
    std::vector<uint32_t> reads, writes;
    for (SplitStep& st : steps) {
      step_slots(graph_, cg_, st, reads, writes);
      const bool per_piece = scheduler::per_piece(st);
      const auto any_of = [](const std::vector<uint32_t>& slots, const auto& set) {
        return std::any_of(slots.begin(), slots.end(), [&](uint32_t s) { return set.count(s) > 0; });
      };
      if (per_piece && st.loss_out >= 0) {  // a mean loss: its division waits
        if (weight_ >= 0) return refuse("the step has two mean losses");
        const auto& outs = cg_.node_outputs[st.index];
        weight_ = static_cast<int64_t>(outs.at(st.loss_weight));
        deferred_.insert(outs.at(st.loss_out));
        deferred_.insert(static_cast<uint32_t>(weight_));
        out_.push_back(&st);
        continue;
      }
      const bool reads_deferred = any_of(reads, deferred_);
      const bool folded = st.kind == Kind::kScale || st.kind == Kind::kMultiply;  // into the launches
      if (!per_piece) {
        // What reads the loss, or anything else the forward's micro-batches made, before the backward pass
        // (the script's `loss / accumulate`, a second loss's sum): after every micro-batch too.
        const bool waits = st.node < forward_end && !folded && any_of(reads, piece_written);
        if (reads_deferred || waits) {  // the loss's division and what reads the loss: after every micro-batch
          held_.push_back(&st);
          ++held_count_;
          for (uint32_t s : reads) held_reads_.insert(s);
          for (uint32_t s : writes) held_writes_.insert(s), deferred_.insert(s);
          continue;
        }
        const bool reads_tainted = !folded && any_of(reads, tainted_);
        if (reads_tainted || any_of(writes, held_reads_) || any_of(writes, held_writes_) ||
            any_of(reads, held_writes_))
          flush();
        if (reads_tainted)
          for (uint32_t s : reads)
            if (tainted_.count(s)) divide(s, r);
        for (uint32_t s : writes) tainted_.erase(s);
        out_.push_back(&st);
        continue;
      }
      if (st.node < forward_end)
        for (uint32_t s : writes) piece_written.insert(s);
      if (st.kind != Kind::kLaunch) {  // TP's sum of a piece's rows, in place: a scaled gradient stays scaled
        if (any_of(writes, held_reads_) || any_of(writes, held_writes_) || reads_deferred)
          return refuse("a tensor-parallel sum reads the loss or what waits for every micro-batch");
        out_.push_back(&st);
        continue;
      }
      const runtime::Node& node = graph_.nodes()[st.index];
      if (any_of(writes, held_reads_) || any_of(writes, held_writes_))
        return refuse(fmt::format("{} overwrites what an op waiting for every micro-batch reads",
                                  runtime::op_name(node.op)));
      const auto& in = cg_.node_inputs[st.index];
      if (reads_deferred) {
        // Only a mean loss's gradient may read the deferred values, and only its total weight: it becomes
        // the gradient of the sum.
        const int tw = node.input_of_arg(kTotalWeightArg);
        bool ok = is_nll_loss_backward(node) && int_arg(node, kReductionArg, kReductionMean) == kReductionMean &&
                  tw >= 0 && in[static_cast<size_t>(tw)] == static_cast<uint32_t>(weight_);
        for (size_t x = 0; x < in.size() && ok; ++x)
          ok = static_cast<int>(x) == tw || !deferred_.count(in[x]);
        if (!ok)
          return refuse(fmt::format("{} reads the loss in the backward pass", runtime::op_name(node.op)));
        SplitStep& sum = made_.emplace_back(st);  // `steps` stay as they were until the end (a refusal)
        for (auto& l : sum.launches) l.int_args.push_back({kReductionArg, kReductionSum});
        sum.unused_inputs.push_back(tw);
        out_.push_back(&sum);
        for (uint32_t s : writes) tainted_[s] = st.node;
        ++r.sum_gradients;
        continue;
      }
      if (any_of(reads, tainted_)) {
        if (adds_inputs(node))
          for (size_t x = 0; x < in.size(); ++x)
            if (!tainted_.count(in[x]) && floating(node.inputs[x]))
              return refuse(fmt::format("{} adds the loss's gradient to another value", runtime::op_name(node.op)));
        for (uint32_t s : writes) tainted_[s] = st.node;
      } else {
        for (uint32_t s : writes) tainted_.erase(s);
      }
      out_.push_back(&st);
    }
    flush();
    // Gradients the step leaves behind (the first step's .grad) are divided at its end.
    std::vector<uint32_t> left;
    for (const auto& [s, node] : tainted_)
      if (cg_.buffers[s].live_after) left.push_back(s);
    for (uint32_t s : left) divide(s, r);
    if (r.sum_gradients == 0 && held_count_ == 0) return {};  // nothing waited
    // Each step once, in its new place: moved, not copied (a step holds a launch per piece).
    std::vector<SplitStep> rewritten;
    rewritten.reserve(out_.size());
    for (SplitStep* st : out_) rewritten.push_back(std::move(*st));
    steps = std::move(rewritten);
    r.rewritten = true;
    return r;
  }

 private:
  DeferredDivision refuse(std::string why) {
    DeferredDivision r;
    r.refused = std::move(why);
    return r;
  }

  void flush() {
    out_.insert(out_.end(), held_.begin(), held_.end());
    held_.clear();
    held_reads_.clear();
    held_writes_.clear();
  }

  // The slot's value, scaled by the loss's total weight, divided by it (on the stage of the node that
  // wrote it last).
  void divide(uint32_t s, DeferredDivision& r) {
    SplitStep& d = made_.emplace_back(SplitStep{Kind::kDivide, s, static_cast<uint32_t>(weight_)});
    d.node = tainted_.at(s);
    out_.push_back(&d);
    tainted_.erase(s);
    ++r.divisions;
  }

  const runtime::StepGraph& graph_;
  const runtime::CanonicalGraph& cg_;
  int64_t weight_ = -1;  // the mean loss's total weight (its slot), once met
  std::set<uint32_t> deferred_;            // the loss, its weight, and what the held steps make
  std::map<uint32_t, uint32_t> tainted_;   // slots holding a gradient × the total weight -> last writer node
  // The new sequence as it forms: the input's steps and the ones made here (`made_`, whose addresses stay).
  std::vector<SplitStep*> held_, out_;
  std::deque<SplitStep> made_;
  std::set<uint32_t> held_reads_, held_writes_;
  int held_count_ = 0;
};

}  // namespace

DeferredDivision defer_loss_division(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                     std::vector<SplitStep>& steps, size_t forward_end) {
  return Deferral(graph, canonical).run(steps, forward_end);
}

}  // namespace moreh::scheduler
