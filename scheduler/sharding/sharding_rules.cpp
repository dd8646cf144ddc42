#include "scheduler/sharding/sharding_rules.h"

#include <algorithm>
#include <functional>
#include <string>
#include <unordered_map>

namespace moreh::scheduler {

using runtime::Attribute;
using runtime::Node;
using Rule = std::function<std::optional<ShardDecision>(const Node&, const BatchDims&)>;

namespace {

int64_t int_arg(const Node& n, int arg, int64_t fallback) {
  const Attribute* a = n.attr_of_arg(arg);
  if (a && std::holds_alternative<int64_t>(*a)) return std::get<int64_t>(*a);
  if (a && std::holds_alternative<bool>(*a)) return std::get<bool>(*a);
  return fallback;
}

double step_value_arg(const Node& n, int arg) {
  const Attribute* a = n.attr_of_arg(arg);
  if (a && std::holds_alternative<runtime::StepValue>(*a)) return std::get<runtime::StepValue>(*a).value;
  return 0;
}

// A dim list argument (None or [] means every dim), normalized against `rank`.
std::vector<int> dims_arg(const Node& n, int arg, int rank) {
  std::vector<int> dims;
  const Attribute* a = n.attr_of_arg(arg);
  if (a && std::holds_alternative<std::vector<int64_t>>(*a)) {
    for (int64_t d : std::get<std::vector<int64_t>>(*a)) dims.push_back(static_cast<int>(d < 0 ? d + rank : d));
  } else if (a && std::holds_alternative<int64_t>(*a)) {
    int64_t d = std::get<int64_t>(*a);
    dims.push_back(static_cast<int>(d < 0 ? d + rank : d));
  }
  if (dims.empty())
    for (int d = 0; d < rank; ++d) dims.push_back(d);
  return dims;
}

int rank_of(const runtime::TensorRef& r) { return static_cast<int>(r.sizes.size()); }

int normalize(int64_t dim, int rank) { return static_cast<int>(dim < 0 ? dim + rank : dim); }

// The input (by schema argument) and the dim where its batch lies, if it is split.
std::optional<int> batch_of_arg(const Node& n, const BatchDims& b, int arg) {
  int i = n.input_of_arg(arg);
  return i < 0 ? std::nullopt : b[i];
}

ShardDecision whole_inputs(const Node& n) {
  ShardDecision d;
  d.inputs.assign(n.inputs.size(), InputUse{});
  return d;
}

OutputSpec shard(int dim, bool scale = false) { return {OutputSpec::Kind::kShard, dim, scale}; }
OutputSpec partial(bool scale = false) { return {OutputSpec::Kind::kPartial, 0, scale}; }

// Every output of a pointwise op has the broadcast shape; the batch sits where the split input's does,
// counted from the right. Inputs of lower rank or size 1 there (broadcast) are taken whole.
std::optional<ShardDecision> pointwise(const Node& n, const BatchDims& b) {
  int lead = -1;
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    if (!b[i]) continue;
    auto numel = [&](size_t k) {
      int64_t e = 1;
      for (int64_t s : n.inputs[k].sizes) e *= s;
      return e;
    };
    if (lead < 0 || numel(i) > numel(static_cast<size_t>(lead))) lead = static_cast<int>(i);
  }
  if (lead < 0) return std::nullopt;
  const auto& shape = !n.outputs.empty() ? n.outputs[0].sizes : n.inputs[n.written.empty() ? lead : n.written[0]].sizes;
  const int rank = static_cast<int>(shape.size());
  const int k = *b[lead] + rank - rank_of(n.inputs[lead]);
  if (k < 0 || k >= rank) return std::nullopt;
  ShardDecision d = whole_inputs(n);
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    int a = k - (rank - rank_of(n.inputs[i]));
    if (a >= 0 && n.inputs[i].sizes[a] == shape[k] && shape[k] != 1) d.inputs[i] = {true, a};
    else if (b[i]) return std::nullopt;  // a split input that is not aligned with the output's batch
  }
  for (const auto& o : n.outputs) {
    if (rank_of(o) != rank) return std::nullopt;
    d.outputs.push_back(shard(k));
  }
  return d;
}

// mm / addmm / bmm / baddbmm: row operand split -> rows of the result; a split contraction (mm only) ->
// a partial sum.
std::optional<ShardDecision> matmul(const Node& n, const BatchDims& b, int self_arg, int other_arg, int bias_arg,
                                    bool batched) {
  auto a = batch_of_arg(n, b, self_arg), m = batch_of_arg(n, b, other_arg);
  const int ai = n.input_of_arg(self_arg), mi = n.input_of_arg(other_arg);
  if (ai < 0 || mi < 0) return std::nullopt;
  ShardDecision d = whole_inputs(n);
  if (batched) {  // bmm: the batch of matrices is split on both operands (a replicated one is cut)
    if ((a && *a != 0) || (m && *m != 0) || (!a && !m)) return std::nullopt;
    if (n.inputs[mi].sizes[0] != n.inputs[ai].sizes[0]) return std::nullopt;
    d.inputs[ai] = {true, 0};
    d.inputs[mi] = {true, 0};
    int bi = bias_arg >= 0 ? n.input_of_arg(bias_arg) : -1;
    if (bi >= 0) {
      const auto& s = n.inputs[bi].sizes;
      if (s.size() == 3 && s[0] == n.inputs[ai].sizes[0]) d.inputs[bi] = {true, 0};
      else if (b[bi]) return std::nullopt;
    }
    d.outputs.push_back(shard(0));
    return d;
  }
  if (a == 0 && !m) {
    d.inputs[ai] = {true, 0};
    int bi = bias_arg >= 0 ? n.input_of_arg(bias_arg) : -1;
    if (bi >= 0) {
      const auto& s = n.inputs[bi].sizes;
      if (s.size() == 2 && s[0] == n.inputs[ai].sizes[0] && s[0] != 1) d.inputs[bi] = {true, 0};
      else if (b[bi]) return std::nullopt;
    }
    d.outputs.push_back(shard(0));
    return d;
  }
  // A split contraction: the side that is not split is cut to the same rows.
  if (bias_arg < 0 && ((a == 1 && (!m || m == 0)) || (!a && m == 0))) {
    if (n.inputs[ai].sizes.size() != 2 || n.inputs[ai].sizes[1] != n.inputs[mi].sizes[0]) return std::nullopt;
    d.inputs[ai] = {true, 1};
    d.inputs[mi] = {true, 0};
    d.outputs.push_back(partial());
    return d;
  }
  return std::nullopt;
}

// sum / mean over dims: the batch reduced -> a partial sum (a mean scaled by the device's share); kept ->
// the batch moves left past the reduced dims unless keepdim.
std::optional<ShardDecision> reduction(const Node& n, const BatchDims& b, bool mean, int dim_arg, int keepdim_arg) {
  if (!b[0] || n.outputs.size() != 1) return std::nullopt;
  const int rank = rank_of(n.inputs[0]);
  const int bd = *b[0];
  std::vector<int> dims = dim_arg >= 0 ? dims_arg(n, dim_arg, rank) : dims_arg(n, -1, rank);
  const bool keepdim = keepdim_arg >= 0 && int_arg(n, keepdim_arg, 0) != 0;
  ShardDecision d = whole_inputs(n);
  d.inputs[0] = {true, bd};
  if (std::find(dims.begin(), dims.end(), bd) != dims.end()) {
    d.outputs.push_back(partial(mean));
  } else {
    int out = bd;
    if (!keepdim)
      for (int r : dims)
        if (r < bd) --out;
    d.outputs.push_back(shard(out));
  }
  return d;
}

// all / any / amax / amin / logsumexp over dims other than the batch's: the rows stay split. (Over the
// batch they would need a max- or and-reduction across devices: no rule, they run replicated.)
std::optional<ShardDecision> reduce_other_dims(const Node& n, const BatchDims& b, int dim_arg, int keepdim_arg) {
  if (!b[0] || n.outputs.size() != 1) return std::nullopt;
  const int rank = rank_of(n.inputs[0]);
  std::vector<int> dims = dims_arg(n, dim_arg, rank);
  if (std::find(dims.begin(), dims.end(), *b[0]) != dims.end()) return std::nullopt;
  return reduction(n, b, false, dim_arg, keepdim_arg);
}

// Ops where every listed input has the batch on the same dim as the first, and every output keeps it.
std::optional<ShardDecision> same_rows(const Node& n, const BatchDims& b, std::vector<int> batch_args,
                                       std::vector<int> partial_rets = {}, std::vector<int> local_rets = {}) {
  std::optional<int> dim;
  for (int arg : batch_args) {
    auto x = batch_of_arg(n, b, arg);
    if (x) {
      if (dim && *dim != *x) return std::nullopt;
      dim = x;
    }
  }
  if (!dim) return std::nullopt;
  ShardDecision d = whole_inputs(n);
  int rows_extent = -1;
  for (int arg : batch_args) {
    int i = n.input_of_arg(arg);
    if (i < 0) continue;
    if (*dim >= rank_of(n.inputs[i])) return std::nullopt;
    int64_t s = n.inputs[i].sizes[*dim];
    if (rows_extent < 0) rows_extent = static_cast<int>(s);
    else if (s != rows_extent) return std::nullopt;
    d.inputs[i] = {true, *dim};
  }
  for (size_t k = 0; k < n.outputs.size(); ++k) {
    int ret = n.output_rets.size() > k ? n.output_rets[k] : static_cast<int>(k);
    if (std::find(partial_rets.begin(), partial_rets.end(), ret) != partial_rets.end()) d.outputs.push_back(partial());
    else if (std::find(local_rets.begin(), local_rets.end(), ret) != local_rets.end())
      d.outputs.push_back({OutputSpec::Kind::kLocal, 0, false});
    else if (*dim < rank_of(n.outputs[k])) d.outputs.push_back(shard(*dim));
    else return std::nullopt;
  }
  return d;
}

// softmax-like ops over `dim`: fine unless they normalize across the batch.
std::optional<ShardDecision> along_dim(const Node& n, const BatchDims& b, std::vector<int> batch_args, int dim_arg) {
  auto first = batch_of_arg(n, b, batch_args[0]);
  int i = n.input_of_arg(batch_args[0]);
  if (!first || i < 0) return std::nullopt;
  if (normalize(int_arg(n, dim_arg, -1), rank_of(n.inputs[i])) == *first) return std::nullopt;
  return same_rows(n, b, std::move(batch_args));
}

std::optional<ShardDecision> layer_norm(const Node& n, const BatchDims& b) {
  auto x = batch_of_arg(n, b, 0);
  const Attribute* ns = n.attr_of_arg(1);
  if (!x || !ns || !std::holds_alternative<std::vector<int64_t>>(*ns)) return std::nullopt;
  const int normalized = static_cast<int>(std::get<std::vector<int64_t>>(*ns).size());
  if (*x >= rank_of(n.inputs[n.input_of_arg(0)]) - normalized) return std::nullopt;
  return same_rows(n, b, {0});
}

std::optional<ShardDecision> layer_norm_backward(const Node& n, const BatchDims& b) {
  auto x = batch_of_arg(n, b, 1);
  if (!x) return std::nullopt;
  const Attribute* ns = n.attr_of_arg(2);
  if (!ns || !std::holds_alternative<std::vector<int64_t>>(*ns)) return std::nullopt;
  const int normalized = static_cast<int>(std::get<std::vector<int64_t>>(*ns).size());
  if (*x >= rank_of(n.inputs[n.input_of_arg(1)]) - normalized) return std::nullopt;
  return same_rows(n, b, {0, 1, 3, 4}, {1, 2});
}

// nll_loss_forward(self, target, weight, reduction, ignore_index) -> (output, total_weight)
std::optional<ShardDecision> nll_loss(const Node& n, const BatchDims& b) {
  if (batch_of_arg(n, b, 0) != 0 || rank_of(n.inputs[n.input_of_arg(0)]) < 2) return std::nullopt;
  const int64_t reduction = int_arg(n, 3, 1);
  const int self = n.input_of_arg(0), target = n.input_of_arg(1);
  if (self < 0 || target < 0 || (b[target] && b[target] != 0)) return std::nullopt;
  if (n.inputs[target].sizes.empty() || n.inputs[target].sizes[0] != n.inputs[self].sizes[0]) return std::nullopt;
  ShardDecision d = whole_inputs(n);
  d.inputs[self] = {true, 0};
  d.inputs[target] = {true, 0};
  for (size_t k = 0; k < n.outputs.size(); ++k) {
    // output: per row (none) or a sum over the rows; total_weight: a sum over the rows
    if (n.output_rets[k] == 0 && reduction == 0) d.outputs.push_back(shard(0));
    else d.outputs.push_back(partial());
  }
  d.loss_mean = reduction == 1;
  if (d.loss_mean && (n.output_of_ret(0) < 0 || n.output_of_ret(1) < 0)) return std::nullopt;
  return d;
}

// nll_loss_backward(grad_output, self, target, weight, reduction, ignore_index, total_weight)
std::optional<ShardDecision> nll_loss_backward(const Node& n, const BatchDims& b) {
  if (batch_of_arg(n, b, 1) != 0) return std::nullopt;
  const int64_t reduction = int_arg(n, 4, 1);
  return reduction == 0 ? same_rows(n, b, {0, 1, 2}) : same_rows(n, b, {1, 2});
}

// mse_loss(self, target, reduction); mse_loss_backward(grad_output, self, target, reduction)
std::optional<ShardDecision> mse_loss(const Node& n, const BatchDims& b, bool backward) {
  const int self = backward ? 1 : 0;
  const int64_t reduction = int_arg(n, backward ? 3 : 2, 1);
  if (!batch_of_arg(n, b, self)) return std::nullopt;
  if (reduction == 0) return pointwise(n, b);
  const int x = n.input_of_arg(self), y = n.input_of_arg(self + 1);
  const auto bd = batch_of_arg(n, b, self);
  if (x < 0 || y < 0 || n.inputs[x].sizes != n.inputs[y].sizes || (b[y] && b[y] != bd)) return std::nullopt;
  ShardDecision d = whole_inputs(n);
  d.inputs[x] = {true, *bd};
  d.inputs[y] = {true, *bd};
  // The loss: a sum over the rows (a mean: each device's share of it). Its gradient divides by the global
  // count where the local kernel divided by the local one.
  if (backward) d.outputs.push_back(shard(*bd, reduction == 1));
  else d.outputs.push_back(partial(reduction == 1));
  return d;
}

// embedding(weight, indices, padding_idx, scale_grad_by_freq, sparse)
std::optional<ShardDecision> embedding(const Node& n, const BatchDims& b) {
  auto idx = batch_of_arg(n, b, 1);
  if (!idx || b[n.input_of_arg(0)]) return std::nullopt;
  ShardDecision d = whole_inputs(n);
  d.inputs[n.input_of_arg(1)] = {true, *idx};
  d.outputs.push_back(shard(*idx));
  return d;
}

// embedding_dense_backward(grad_output, indices, num_weights, padding_idx, scale_grad_by_freq)
std::optional<ShardDecision> embedding_backward(const Node& n, const BatchDims& b) {
  if (int_arg(n, 4, 0) != 0) return std::nullopt;  // frequencies are counted over the whole batch
  auto idx = batch_of_arg(n, b, 1);
  auto g = batch_of_arg(n, b, 0);
  if (!idx || g != idx) return std::nullopt;
  ShardDecision d = whole_inputs(n);
  d.inputs[n.input_of_arg(0)] = {true, *idx};
  d.inputs[n.input_of_arg(1)] = {true, *idx};
  d.outputs.push_back(partial());
  return d;
}

// index_select(self, dim, index)
std::optional<ShardDecision> index_select(const Node& n, const BatchDims& b) {
  const int si = n.input_of_arg(0), ii = n.input_of_arg(2);
  const int dim = normalize(int_arg(n, 1, 0), rank_of(n.inputs[si]));
  ShardDecision d = whole_inputs(n);
  if (b[ii] && !b[si]) {
    if (*b[ii] != 0) return std::nullopt;
    d.inputs[ii] = {true, 0};
    d.outputs.push_back(shard(dim));
    return d;
  }
  if (b[si] && !b[ii] && *b[si] != dim) {
    d.inputs[si] = {true, *b[si]};
    d.outputs.push_back(shard(*b[si]));
    return d;
  }
  return std::nullopt;
}

// cat(tensors, dim): along another dim than the batch's.
std::optional<ShardDecision> cat(const Node& n, const BatchDims& b) {
  std::optional<int> dim;
  int64_t extent = 0;
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    if (!b[i]) continue;
    if (dim && *dim != *b[i]) return std::nullopt;
    dim = b[i];
    extent = n.inputs[i].sizes[*dim];
  }
  if (!dim || n.outputs.size() != 1) return std::nullopt;
  if (normalize(int_arg(n, 1, 0), rank_of(n.outputs[0])) == *dim) return std::nullopt;
  ShardDecision d = whole_inputs(n);
  for (size_t i = 0; i < n.inputs.size(); ++i) {  // the others are cut to the same rows
    if (n.inputs[i].sizes.size() == 1 && n.inputs[i].sizes[0] == 0) continue;  // cat skips legacy empty tensors
    if (rank_of(n.inputs[i]) <= *dim || n.inputs[i].sizes[*dim] != extent) return std::nullopt;
    d.inputs[i] = {true, *dim};
  }
  d.outputs.push_back(shard(*dim));
  return d;
}

// convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups) and
// convolution_backward(grad_output, input, weight, bias_sizes, ..., output_mask) -> (grad_input,
// grad_weight, grad_bias): images are independent along the batch.
std::optional<ShardDecision> convolution(const Node& n, const BatchDims& b, bool backward) {
  if (backward) {
    if (batch_of_arg(n, b, 1) != 0) return std::nullopt;
    return same_rows(n, b, {0, 1}, {1, 2});
  }
  if (batch_of_arg(n, b, 0) != 0) return std::nullopt;
  return same_rows(n, b, {0});
}

// Flash attention on the CPU: (query, key, value, dropout_p, is_causal, attn_mask, scale) and its backward
// (grad_out, query, key, value, out, logsumexp, dropout_p, is_causal, attn_mask, scale). Batch on dim 0;
// a mask with the batch's extent there is split too, a broadcast one is whole.
std::optional<ShardDecision> attention(const Node& n, const BatchDims& b, bool backward) {
  const int dropout_arg = backward ? 6 : 3, mask_arg = backward ? 8 : 5;
  if (step_value_arg(n, dropout_arg) != 0) return std::nullopt;  // one mask for the whole batch: replicated
  std::vector<int> args = backward ? std::vector<int>{0, 1, 2, 3, 4, 5} : std::vector<int>{0, 1, 2};
  const int q = n.input_of_arg(backward ? 1 : 0);
  const int mi = n.input_of_arg(mask_arg);
  if (mi >= 0 && n.inputs[mi].sizes.size() == 4 && n.inputs[mi].sizes[0] == n.inputs[q].sizes[0] &&
      n.inputs[q].sizes[0] != 1)
    args.push_back(mask_arg);
  else if (mi >= 0 && b[mi]) return std::nullopt;
  auto d = same_rows(n, b, args);
  if (!d || batch_of_arg(n, b, backward ? 1 : 0) != 0) return std::nullopt;
  return d;
}

// The fused attention kernels SDPA takes on CUDA devices, forward and backward. Rows of the batch are
// independent without dropout (whose RNG offsets span the whole batch) and without a bias (kept replicated
// for simplicity). Their RNG-state outputs are per-device values that the backward uses as they are.
struct FusedAttentionArgs {
  int dropout, bias;                  // argument positions (bias -1: the op takes none)
  std::vector<int> batch_args;        // arguments with the batch on dim 0 (the query first in a forward)
  std::vector<int> local_rets;        // per-device results: the RNG state
  std::vector<int> per_device_args;   // the backward's RNG-state arguments
  int query;                          // the query's argument
};

std::optional<ShardDecision> fused_attention(const Node& n, const BatchDims& b, const FusedAttentionArgs& a) {
  if (step_value_arg(n, a.dropout) != 0 || (a.bias >= 0 && n.input_of_arg(a.bias) >= 0)) return std::nullopt;
  auto d = same_rows(n, b, a.batch_args, {}, a.local_rets);
  if (!d || batch_of_arg(n, b, a.query) != 0) return std::nullopt;
  for (int arg : a.per_device_args)
    if (int i = n.input_of_arg(arg); i >= 0) d->inputs[i] = {false, -1};
  return d;
}

// Memory-efficient attention (what SDPA takes on CUDA devices; attention_choice.h):
//   forward  (q, k, v, attn_bias?, compute_log_sumexp, dropout_p, is_causal) -> (out, logsumexp,
//            philox_seed, philox_offset)
//   backward (grad_out, q, k, v, attn_bias?, out, logsumexp, philox_seed, philox_offset, dropout_p,
//            grad_input_mask, is_causal) -> (dq, dk, dv[, dbias])
const FusedAttentionArgs kEfficientForward{5, 3, {0, 1, 2}, {2, 3}, {}, 0};
const FusedAttentionArgs kEfficientBackward{9, 4, {0, 1, 2, 3, 5, 6}, {}, {7, 8}, 1};
// Flash attention through the overrideable route (backend/csrc/attention_choice.h), on every device kind:
//   forward  (q, k, v, attn_bias?, dropout_p, is_causal, return_debug_mask, scale) -> (out, logsumexp,
//            cum_seq_q, cum_seq_k, max_q, max_k, philox_seed, philox_offset, debug_attn_mask)
//   backward (grad_out, q, k, v, attn_bias, grad_input_mask, out, logsumexp, cum_seq_q, cum_seq_k, max_q,
//            max_k, dropout_p, is_causal, philox_seed, philox_offset, scale) -> (dq, dk, dv, dbias)
const FusedAttentionArgs kOverrideableForward{4, 3, {0, 1, 2}, {6, 7}, {}, 0};
const FusedAttentionArgs kOverrideableBackward{12, 4, {0, 1, 2, 3, 6, 7}, {}, {14, 15}, 1};

// native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps) in training:
// per-device statistics, as DistributedDataParallel without SyncBatchNorm (docs/DATA_PARALLEL.md).
std::optional<ShardDecision> batch_norm(const Node& n, const BatchDims& b) {
  if (batch_of_arg(n, b, 0) != 0 || int_arg(n, 5, 0) == 0) return std::nullopt;
  auto d = same_rows(n, b, {0}, {}, {1, 2});
  if (!d) return std::nullopt;
  for (int arg : {3, 4}) {
    int i = n.input_of_arg(arg);
    if (i >= 0 && std::find(n.written.begin(), n.written.end(), i) != n.written.end()) d->written_local.push_back(i);
  }
  return d;
}

// native_batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd,
// train, eps, output_mask)
std::optional<ShardDecision> batch_norm_backward(const Node& n, const BatchDims& b) {
  if (batch_of_arg(n, b, 1) != 0 || int_arg(n, 7, 0) == 0) return std::nullopt;
  auto d = same_rows(n, b, {0, 1}, {1, 2});
  if (!d) return std::nullopt;
  for (int arg : {5, 6}) {
    int i = n.input_of_arg(arg);
    if (i >= 0) d->inputs[i] = {false, -1};  // -1: the per-device value as it is
  }
  return d;
}

const std::unordered_map<std::string, Rule>& rules() {
  static const auto* table = new std::unordered_map<std::string, Rule>{
      {"aten::mm", [](const Node& n, const BatchDims& b) { return matmul(n, b, 0, 1, -1, false); }},
      {"aten::mm.out", [](const Node& n, const BatchDims& b) { return matmul(n, b, 0, 1, -1, false); }},
      {"aten::addmm", [](const Node& n, const BatchDims& b) { return matmul(n, b, 1, 2, 0, false); }},
      {"aten::bmm", [](const Node& n, const BatchDims& b) { return matmul(n, b, 0, 1, -1, true); }},
      {"aten::baddbmm", [](const Node& n, const BatchDims& b) { return matmul(n, b, 1, 2, 0, true); }},
      {"aten::sum.dim_IntList", [](const Node& n, const BatchDims& b) { return reduction(n, b, false, 1, 2); }},
      {"aten::sum", [](const Node& n, const BatchDims& b) { return reduction(n, b, false, -1, -1); }},
      {"aten::mean.dim", [](const Node& n, const BatchDims& b) { return reduction(n, b, true, 1, 2); }},
      {"aten::mean", [](const Node& n, const BatchDims& b) { return reduction(n, b, true, -1, -1); }},
      {"aten::_log_softmax", [](const Node& n, const BatchDims& b) { return along_dim(n, b, {0}, 1); }},
      {"aten::_softmax", [](const Node& n, const BatchDims& b) { return along_dim(n, b, {0}, 1); }},
      {"aten::_log_softmax_backward_data", [](const Node& n, const BatchDims& b) { return along_dim(n, b, {0, 1}, 2); }},
      {"aten::_softmax_backward_data", [](const Node& n, const BatchDims& b) { return along_dim(n, b, {0, 1}, 2); }},
      {"aten::native_layer_norm", layer_norm},
      {"aten::native_layer_norm_backward", layer_norm_backward},
      {"aten::nll_loss_forward", nll_loss},
      {"aten::nll_loss_backward", nll_loss_backward},
      {"aten::nll_loss2d_forward", nll_loss},
      {"aten::nll_loss2d_backward", nll_loss_backward},
      {"aten::mse_loss", [](const Node& n, const BatchDims& b) { return mse_loss(n, b, false); }},
      {"aten::mse_loss_backward", [](const Node& n, const BatchDims& b) { return mse_loss(n, b, true); }},
      {"aten::embedding", embedding},
      {"aten::embedding_dense_backward", embedding_backward},
      {"aten::index_select", index_select},
      {"aten::cat", cat},
      {"aten::_scaled_dot_product_flash_attention_for_cpu",
       [](const Node& n, const BatchDims& b) { return attention(n, b, false); }},
      {"aten::_scaled_dot_product_flash_attention_for_cpu_backward",
       [](const Node& n, const BatchDims& b) { return attention(n, b, true); }},
      {"aten::_scaled_dot_product_efficient_attention",
       [](const Node& n, const BatchDims& b) { return fused_attention(n, b, kEfficientForward); }},
      {"aten::_scaled_dot_product_efficient_attention_backward",
       [](const Node& n, const BatchDims& b) { return fused_attention(n, b, kEfficientBackward); }},
      {"aten::_scaled_dot_product_fused_attention_overrideable",
       [](const Node& n, const BatchDims& b) { return fused_attention(n, b, kOverrideableForward); }},
      {"aten::_scaled_dot_product_fused_attention_overrideable_backward",
       [](const Node& n, const BatchDims& b) { return fused_attention(n, b, kOverrideableBackward); }},
      {"aten::native_dropout", [](const Node& n, const BatchDims& b) { return pointwise(n, b); }},
      {"aten::native_dropout_backward", pointwise},
      {"aten::copy_", pointwise},
      {"aten::clone", pointwise},
      {"aten::_to_copy", pointwise},
      {"aten::gelu_backward", pointwise},
      {"aten::threshold_backward", pointwise},
      {"aten::silu_backward", pointwise},
      {"aten::tanh_backward", pointwise},
      {"aten::sigmoid_backward", pointwise},
      {"aten::native_batch_norm", batch_norm},
      {"aten::all.dim", [](const Node& n, const BatchDims& b) { return reduce_other_dims(n, b, 1, 2); }},
      {"aten::any.dim", [](const Node& n, const BatchDims& b) { return reduce_other_dims(n, b, 1, 2); }},
      {"aten::amax", [](const Node& n, const BatchDims& b) { return reduce_other_dims(n, b, 1, 2); }},
      {"aten::amin", [](const Node& n, const BatchDims& b) { return reduce_other_dims(n, b, 1, 2); }},
      {"aten::logsumexp", [](const Node& n, const BatchDims& b) { return reduce_other_dims(n, b, 1, 2); }},
      {"aten::where.self", pointwise},
      {"aten::where.self_out", pointwise},
      {"aten::masked_fill.Scalar", pointwise},
      {"aten::masked_fill.Tensor", pointwise},
      {"aten::masked_fill_.Scalar", pointwise},
      {"aten::masked_fill_.Tensor", pointwise},
      {"aten::max_pool2d_with_indices", [](const Node& n, const BatchDims& b) { return same_rows(n, b, {0}); }},
      {"aten::max_pool2d_with_indices_backward",
       [](const Node& n, const BatchDims& b) { return same_rows(n, b, {0, 1, 7}); }},
      {"aten::avg_pool2d", [](const Node& n, const BatchDims& b) { return same_rows(n, b, {0}); }},
      {"aten::avg_pool2d_backward", [](const Node& n, const BatchDims& b) { return same_rows(n, b, {0, 1}); }},
      {"aten::_adaptive_avg_pool2d", [](const Node& n, const BatchDims& b) { return same_rows(n, b, {0}); }},
      {"aten::_adaptive_avg_pool2d_backward", [](const Node& n, const BatchDims& b) { return same_rows(n, b, {0, 1}); }},
      {"aten::convolution", [](const Node& n, const BatchDims& b) { return convolution(n, b, false); }},
      {"aten::convolution_backward", [](const Node& n, const BatchDims& b) { return convolution(n, b, true); }},
      {"aten::native_batch_norm_backward", batch_norm_backward},
  };
  return *table;
}

}  // namespace

std::optional<ShardDecision> shard_rule(const Node& node, const BatchDims& batch_dims) {
  const auto& table = rules();
  const std::string& name = runtime::op_name(node.op);
  // The table's rules handle their ops' randomness (dropout draws the whole batch's mask, attention splits
  // only without dropout). Other random ops would draw the same numbers on every device.
  auto it = table.find(name);
  if (it != table.end()) return it->second(node, batch_dims);
  if (runtime::op_facts(node.op).seeded) return std::nullopt;
  if (runtime::op_facts(node.op).pointwise) return pointwise(node, batch_dims);
  return std::nullopt;
}

bool has_rule(runtime::OpId op) { return runtime::op_facts(op).pointwise || rules().count(runtime::op_name(op)) > 0; }

}  // namespace moreh::scheduler
