#include "runtime/kernels/elementwise_reference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "runtime/comm/collective_kernels.h"
#include "runtime/kernels/elementwise_reduction.h"
#include "runtime/host/host_arithmetic.h"
#include "runtime/base/low_precision_float.h"

namespace moreh::runtime {
namespace {

uint16_t bf(float v) { return float_to_bfloat16(v); }
float unbf(uint16_t v) { return bfloat16_to_float(v); }

TEST(ElementwiseReferenceTest, BFloat16RoundsAfterEveryOp) {
  // (x * y) + z with each op rounded to bfloat16, as torch's eager ops do.
  ElementwiseKernel k;
  const ElementwiseValue x = k.input(DataType::kBFloat16), y = k.input(DataType::kBFloat16),
                         z = k.input(DataType::kBFloat16);
  k.output(k.binary(ElementwiseOp::kAdd, k.binary(ElementwiseOp::kMul, x, y), z));
  std::vector<uint16_t> a = {bf(1.0f + 1.0f / 64), bf(3.0f)}, b = {bf(1.0f + 1.0f / 64), bf(-0.5f)},
                        c = {bf(-1.0f), bf(1.0f)}, out(2);
  ElementwiseArguments args;
  args.count = 2;
  args.inputs = {a.data(), b.data(), c.data()};
  args.outputs = {out.data()};
  evaluate_on_host(k, args);
  const float product = unbf(bf(unbf(a[0]) * unbf(b[0])));  // 1 + 2/64 + 1/4096 rounds to 1 + 2/64
  EXPECT_EQ(product, 1.0f + 2.0f / 64);
  EXPECT_EQ(unbf(out[0]), unbf(bf(product - 1.0f)));
  EXPECT_EQ(unbf(out[1]), -0.5f);
}

TEST(ElementwiseReferenceTest, BroadcastAndTransposedInputs) {
  // out[i][j] = m[j][i] (a transposed view) + row[j] + s[0] (a one-element tensor broadcast everywhere)
  ElementwiseKernel k(2);
  const ElementwiseValue m = k.input(DataType::kFloat32, InputLayout::with_strides(0));
  const ElementwiseValue row = k.input(DataType::kFloat32, InputLayout::with_strides(0b01));
  const ElementwiseValue s = k.input(DataType::kFloat32, InputLayout::with_strides(0b11));
  k.output(k.binary(ElementwiseOp::kAdd, k.binary(ElementwiseOp::kAdd, m, row), s));
  std::vector<float> mt = {0, 1, 2, 3, 4, 5};  // 3 x 2, viewed as 2 x 3 through strides {1, 2}
  std::vector<float> r = {10, 20, 30}, one = {100}, out(6);
  ElementwiseArguments args;
  args.count = 6;
  args.sizes = {2, 3};
  args.inputs = {mt.data(), r.data(), one.data()};
  args.strides = {{1, 2}, {0, 1}, {0, 0}};
  args.outputs = {out.data()};
  evaluate_on_host(k, args);
  EXPECT_EQ(out, (std::vector<float>{110, 122, 134, 111, 123, 135}));
}

TEST(ElementwiseReferenceTest, IntegersWrapAndCastsSaturate) {
  ElementwiseKernel k;
  const ElementwiseValue i = k.input(DataType::kInt32);
  const ElementwiseValue f = k.input(DataType::kFloat32);
  const ElementwiseValue l = k.input(DataType::kInt64);
  k.output(k.binary(ElementwiseOp::kAdd, i, k.integer_constant(DataType::kInt32, 1)));
  k.output(k.cast(f, DataType::kInt32));
  k.output(k.cast(l, DataType::kInt32));
  k.output(k.unary(ElementwiseOp::kAbs, i));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<int32_t> in = {std::numeric_limits<int32_t>::max(), -5, std::numeric_limits<int32_t>::min(), 0};
  std::vector<float> fl = {3e9f, -2.7f, nan, -3e9f};
  std::vector<int64_t> lo = {(int64_t{1} << 32) + 7, -1, int64_t{1} << 31, 5};
  std::vector<int32_t> sum(4), conv(4), narrowed(4), absolute(4);
  ElementwiseArguments args;
  args.count = 4;
  args.inputs = {in.data(), fl.data(), lo.data()};
  args.outputs = {sum.data(), conv.data(), narrowed.data(), absolute.data()};
  evaluate_on_host(k, args);
  EXPECT_EQ(sum, (std::vector<int32_t>{std::numeric_limits<int32_t>::min(), -4, std::numeric_limits<int32_t>::min() + 1, 1}));
  EXPECT_EQ(conv, (std::vector<int32_t>{std::numeric_limits<int32_t>::max(), -2, 0, std::numeric_limits<int32_t>::min()}));
  EXPECT_EQ(narrowed, (std::vector<int32_t>{7, -1, std::numeric_limits<int32_t>::min(), 5}));
  EXPECT_EQ(absolute, (std::vector<int32_t>{std::numeric_limits<int32_t>::max(), 5, std::numeric_limits<int32_t>::min(), 0}));
}

TEST(ElementwiseReferenceTest, ComparisonsWhereAndNaN) {
  // out = where(x > y, x, maximum(x, y) * 2), and the mask.
  ElementwiseKernel k;
  const ElementwiseValue x = k.input(DataType::kFloat64), y = k.input(DataType::kFloat64);
  const ElementwiseValue gt = k.binary(ElementwiseOp::kGt, x, y);
  const ElementwiseValue twice = k.binary(ElementwiseOp::kMul, k.binary(ElementwiseOp::kMaximum, x, y), k.constant(DataType::kFloat64, 2));
  k.output(k.where(gt, x, twice));
  k.output(gt);
  k.output(k.binary(ElementwiseOp::kMinimum, x, y));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> a = {3, 1, nan, 2}, b = {1, 3, 1, nan}, out(4), least(4);
  std::vector<uint8_t> mask(4);
  ElementwiseArguments args;
  args.count = 4;
  args.inputs = {a.data(), b.data()};
  args.outputs = {out.data(), mask.data(), least.data()};
  evaluate_on_host(k, args);
  EXPECT_EQ(out[0], 3);
  EXPECT_EQ(out[1], 6);
  EXPECT_TRUE(std::isnan(out[2]));
  EXPECT_TRUE(std::isnan(out[3]));
  EXPECT_EQ(mask, (std::vector<uint8_t>{1, 0, 0, 0}));
  EXPECT_EQ(least[0], 1);
  EXPECT_TRUE(std::isnan(least[2]) && std::isnan(least[3]));
}

TEST(ElementwiseReferenceTest, ActivationsMatchTheirFormulas) {
  const std::vector<double> xs = {-3.0, -0.5, 0.0, 0.25, 1.0, 4.0};
  auto run = [&](ElementwiseOp op) {
    ElementwiseKernel k;
    k.output(k.unary(op, k.input(DataType::kFloat64)));
    std::vector<double> out(xs.size());
    ElementwiseArguments args;
    args.count = xs.size();
    args.inputs = {xs.data()};
    args.outputs = {out.data()};
    evaluate_on_host(k, args);
    return out;
  };
  const auto gelu = run(ElementwiseOp::kGeluErf), gelu_tanh = run(ElementwiseOp::kGeluTanh), silu = run(ElementwiseOp::kSilu),
             sigmoid = run(ElementwiseOp::kSigmoid), relu = run(ElementwiseOp::kRelu), rsqrt = run(ElementwiseOp::kRsqrt),
             erf = run(ElementwiseOp::kErf);
  for (size_t i = 0; i < xs.size(); ++i) {
    const double x = xs[i];
    EXPECT_NEAR(gelu[i], 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))), 1e-12);
    EXPECT_NEAR(gelu_tanh[i], 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))), 1e-12);
    EXPECT_NEAR(gelu_tanh[i], gelu[i], 2e-3);
    EXPECT_NEAR(silu[i], x / (1 + std::exp(-x)), 1e-12);
    EXPECT_NEAR(sigmoid[i], 1 / (1 + std::exp(-x)), 1e-12);
    EXPECT_EQ(relu[i], x < 0 ? 0 : x);
    EXPECT_NEAR(erf[i], std::erf(x), 1e-15);
    if (x > 0) {
      EXPECT_NEAR(rsqrt[i], 1 / std::sqrt(x), 1e-12);
    }
  }
}

TEST(ElementwiseReferenceTest, PowWithScalarAndConstantExponents) {
  ElementwiseKernel k;
  const ElementwiseValue x = k.input(DataType::kFloat32);
  k.output(k.pow(x, k.scalar(DataType::kFloat64)));
  k.output(k.pow(x, k.constant(DataType::kFloat32, -2)));
  std::vector<float> in = {2, 9, 0.5f}, scalar_out(3), square_out(3);
  ElementwiseArguments args;
  args.count = 3;
  args.inputs = {in.data()};
  args.scalars = {0.5};
  args.outputs = {scalar_out.data(), square_out.data()};
  evaluate_on_host(k, args);
  EXPECT_EQ(scalar_out, (std::vector<float>{std::pow(2.0f, 0.5f), 3, std::pow(0.5f, 0.5f)}));
  EXPECT_EQ(square_out, (std::vector<float>{0.25f, 1 / 81.0f, 4}));
}

TEST(ElementwiseReferenceTest, ScalarsConvertToTheirType) {
  ElementwiseKernel k;
  const ElementwiseValue x = k.input(DataType::kBFloat16);
  k.output(k.binary(ElementwiseOp::kAdd, x, k.scalar(DataType::kBFloat16)));
  const ElementwiseValue n = k.input(DataType::kInt32);
  k.output(k.binary(ElementwiseOp::kMul, n, k.scalar(DataType::kInt32)));
  std::vector<uint16_t> a = {bf(0)}, out(1);
  std::vector<int32_t> b = {3}, prod(1);
  ElementwiseArguments args;
  args.count = 1;
  args.inputs = {a.data(), b.data()};
  args.scalars = {1.0 + 1.0 / 512, int64_t{-4}};  // bfloat16 holds 1 (the scalar rounds first)
  args.outputs = {out.data(), prod.data()};
  evaluate_on_host(k, args);
  EXPECT_EQ(unbf(out[0]), 1.0f);
  EXPECT_EQ(prod[0], -12);
}

template <typename T>
std::vector<T> pattern(size_t n, int seed) {
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) {
    const double x = std::sin(static_cast<double>(i * 7 + seed * 13)) * 1000;
    if constexpr (std::is_same_v<T, uint16_t>) {
      v[i] = seed % 2 ? float_to_bfloat16(static_cast<float>(x)) : float_to_float16(static_cast<float>(x));
    } else {
      v[i] = static_cast<T>(x);
    }
  }
  return v;
}

// The sum kernel gives reduce_elements' bits, for every type and input count.
template <typename T>
void check_sum(DataType type, int seed_parity) {
  constexpr size_t n = 37;
  for (int k = 1; k <= kMaxSumKernelInputs; ++k) {
    std::vector<std::vector<T>> ins;
    std::vector<const void*> ptrs;
    for (int i = 0; i < k; ++i) ins.push_back(pattern<T>(n, 2 * i + seed_parity));
    for (auto& v : ins) ptrs.push_back(v.data());
    std::vector<T> expected(n), got(n);
    reduce_elements(type, ReduceOp::kSum, ptrs, expected.data(), n);
    ElementwiseArguments args;
    args.count = n;
    args.inputs = ptrs;
    args.outputs = {got.data()};
    evaluate_on_host(sum_kernel(type, k), args);
    EXPECT_EQ(std::memcmp(expected.data(), got.data(), n * sizeof(T)), 0) << name_of(type) << " k=" << k;
  }
}

TEST(CollectiveKernelsTest, SumMatchesReduceElements) {
  check_sum<float>(DataType::kFloat32, 0);
  check_sum<double>(DataType::kFloat64, 0);
  check_sum<uint16_t>(DataType::kBFloat16, 1);
  check_sum<uint16_t>(DataType::kFloat16, 0);
  check_sum<int64_t>(DataType::kInt64, 0);
  check_sum<int32_t>(DataType::kInt32, 0);
  EXPECT_THROW(sum_kernel(DataType::kFloat32, 0), std::invalid_argument);
  EXPECT_THROW(sum_kernel(DataType::kFloat32, kMaxSumKernelInputs + 1), std::invalid_argument);
  EXPECT_THROW(sum_kernel(DataType::kBool, 2), std::invalid_argument);
}

template <typename T>
void check_scale(DataType type, int seed, double factor) {
  constexpr size_t n = 29;
  std::vector<T> expected = pattern<T>(n, seed), got = expected;
  if constexpr (std::is_floating_point_v<T>) got[3] = expected[3] = std::numeric_limits<T>::quiet_NaN();
  scale_elements(type, expected.data(), n, factor);
  ElementwiseArguments args;
  args.count = n;
  args.inputs = {got.data()};
  args.outputs = {got.data()};  // in place
  args.scalars = {factor};
  evaluate_on_host(scale_in_place_kernel(type), args);
  EXPECT_EQ(std::memcmp(expected.data(), got.data(), n * sizeof(T)), 0) << name_of(type) << " by " << factor;
}

TEST(CollectiveKernelsTest, ScaleMatchesScaleElements) {
  for (double factor : {0.25, 1.0 / 3, 0.0, -7.1}) {
    check_scale<float>(DataType::kFloat32, 0, factor);
    check_scale<double>(DataType::kFloat64, 0, factor);
    check_scale<uint16_t>(DataType::kBFloat16, 1, factor);
    check_scale<uint16_t>(DataType::kFloat16, 0, factor);
  }
  std::vector<int64_t> v = {10, -7, 3};
  ElementwiseArguments args;
  args.count = 3;
  args.inputs = {v.data()};
  args.outputs = {v.data()};
  args.scalars = {0.5};
  evaluate_on_host(scale_in_place_kernel(DataType::kInt64), args);
  EXPECT_EQ(v, (std::vector<int64_t>{5, -3, 1}));  // truncating toward zero
}

}  // namespace
}  // namespace moreh::runtime
