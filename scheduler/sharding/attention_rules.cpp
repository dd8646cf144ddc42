// Scaled dot-product attention kernels (CPU flash, efficient, overrideable): rows of the batch are
// independent without dropout.
#include "scheduler/sharding/rule_families.h"

#include <algorithm>

#include "scheduler/sharding/rule_helpers.h"

namespace moreh::scheduler {

using runtime::Attribute;
using runtime::Node;

namespace {

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
  // The batch (dim 0) or the heads (dim 1, tensor parallelism): either way each device's part is independent.
  // By heads, the key and value may have fewer (grouped-query attention): an even part of each keeps each
  // device's query heads with their own key/value heads.
  const auto q = batch_of_arg(n, b, a.query);
  if (!q || (*q != 0 && *q != 1)) return std::nullopt;
  auto d = same_rows(n, b, a.batch_args, {}, a.local_rets, /*groups=*/*q == 1);
  if (!d) return std::nullopt;
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

}  // namespace

void add_attention_rules(RuleTable& t) {
  t.emplace("aten::_scaled_dot_product_flash_attention_for_cpu",
       [](const Node& n, const BatchDims& b) { return attention(n, b, false); });
  t.emplace("aten::_scaled_dot_product_flash_attention_for_cpu_backward",
       [](const Node& n, const BatchDims& b) { return attention(n, b, true); });
  t.emplace("aten::_scaled_dot_product_efficient_attention",
       [](const Node& n, const BatchDims& b) { return fused_attention(n, b, kEfficientForward); });
  t.emplace("aten::_scaled_dot_product_efficient_attention_backward",
       [](const Node& n, const BatchDims& b) { return fused_attention(n, b, kEfficientBackward); });
  t.emplace("aten::_scaled_dot_product_fused_attention_overrideable",
       [](const Node& n, const BatchDims& b) { return fused_attention(n, b, kOverrideableForward); });
  t.emplace("aten::_scaled_dot_product_fused_attention_overrideable_backward",
       [](const Node& n, const BatchDims& b) { return fused_attention(n, b, kOverrideableBackward); });
}

}  // namespace moreh::scheduler
