// torch.autocast("moreh"): which ops run in the lower-precision dtype, which in float32 and which at
// the widest input type. The lists are PyTorch's own (ATen/autocast_mode.h exports them for backends:
// AT_FORALL_LOWER_PRECISION_FP, AT_FORALL_FP32, ...) and the casting is at::autocast::WrapFunction,
// so moreh casts exactly where CUDA does. The casts themselves are ordinary ops on moreh tensors
// (_to_copy) and are recorded into the step graph like any other op.
//
// Additions over CUDA's table, taken from CPU's: cat, stack and index_copy promote (index_copy takes
// only matching dtypes, so without it an autocast region mixing bf16 and fp32 fails where CPU
// autocast succeeds), and cross_entropy_loss runs in float32 (CUDA leaves it to its decomposition,
// which asks log_softmax for the input's own dtype and so takes the log-softmax in bf16).
#include <ATen/autocast_mode.h>
#include <torch/library.h>
#include <torch/version.h>

namespace moreh::backend {
namespace {

// The lists name their argument types unqualified (they are written for namespace at).
#if TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR < 13
using at::DimnameList;  // torch 2.11's lists still name norm's named-dimension overload
#endif
using at::IntArrayRef;
using at::Scalar;
using at::ScalarType;
using at::Tensor;

// Like CUDA: binary_cross_entropy on lower-precision probabilities is unsafe (log near 0 and 1), and
// the fix is the logits form, which autocasts to float32.
Tensor binary_cross_entropy_refused(const Tensor&, const Tensor&, const std::optional<Tensor>&, int64_t) {
  TORCH_CHECK(false,
              "moreh: binary_cross_entropy (nn.BCELoss) is not allowed under autocast: on half-precision "
              "probabilities it loses the values near 0 and 1. Use binary_cross_entropy_with_logits "
              "(nn.BCEWithLogitsLoss) on the logits instead; it runs in float32 under autocast.");
}

}  // namespace

// Every op not listed below passes through the autocast layer untouched (factories, random ops,
// pointwise ops, the optimizer's foreach ops, GradScaler's _amp_* ops).
TORCH_LIBRARY_IMPL(_, AutocastPrivateUse1, m) { m.fallback(torch::CppFunction::makeFallthrough()); }

TORCH_LIBRARY_IMPL(aten, AutocastPrivateUse1, m) {
#define MOREH_AUTOCAST_LOWER(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, lower_precision_fp)
#define MOREH_AUTOCAST_FP32(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, fp32)
#define MOREH_AUTOCAST_FP32_OPT_DTYPE(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, fp32_set_opt_dtype)
#define MOREH_AUTOCAST_PROMOTE(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, promote)

  // Matrix products, convolutions, attention: the lower-precision dtype (torch.get_autocast_dtype).
  AT_FORALL_LOWER_PRECISION_FP(MOREH_AUTOCAST_LOWER)
  // Transcendentals, norms, losses, upsampling: float32.
  AT_FORALL_FP32(MOREH_AUTOCAST_FP32)
  MOREH_AUTOCAST_FP32(cross_entropy_loss)
  // Reductions and softmax with an optional dtype argument: run with dtype=float32 unless one is given.
  AT_FORALL_FP32_SET_OPT_DTYPE(MOREH_AUTOCAST_FP32_OPT_DTYPE)
  // norm without a dtype argument: redispatched to its overload with dtype=float32.
  AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE(KERNEL_DIFFERENT_REDISPATCH_SIGNATURE_PRIVATEUSEONE)
  // Ops that need matching input dtypes: all inputs go to the widest floating type among them.
  AT_FORALL_PROMOTE(MOREH_AUTOCAST_PROMOTE)
  MOREH_AUTOCAST_PROMOTE(cat)
  MOREH_AUTOCAST_PROMOTE(stack)
  MOREH_AUTOCAST_PROMOTE(index_copy)

#undef MOREH_AUTOCAST_LOWER
#undef MOREH_AUTOCAST_FP32
#undef MOREH_AUTOCAST_FP32_OPT_DTYPE
#undef MOREH_AUTOCAST_PROMOTE

  m.impl(TORCH_SELECTIVE_NAME("aten::binary_cross_entropy"), TORCH_FN(binary_cross_entropy_refused));
}

}  // namespace moreh::backend
