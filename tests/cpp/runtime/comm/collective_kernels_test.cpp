// The collective kernels' IR evaluated on the host (runtime/kernels/elementwise_reference.h) against the host
// arithmetic they stand in for: reduce_elements, combine_scalars. Needs no GPU.
#include "runtime/comm/collective_kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "runtime/host/host_arithmetic.h"
#include "runtime/kernels/elementwise_reference.h"
#include "runtime/base/low_precision_float.h"
#include "runtime/comm/collective_test_values.h"

namespace moreh::runtime {
namespace {

using namespace test_values;


TEST(CollectiveKernelsTest, ReduceKernelMatchesReduceElementsBitForBit) {
  const DataType types[] = {DataType::kFloat32, DataType::kFloat64, DataType::kBFloat16,
                            DataType::kFloat16, DataType::kInt64,   DataType::kInt32};
  const ReduceOp ops[] = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin, ReduceOp::kProd};
  constexpr uint64_t kCount = 61;
  for (DataType t : types)
    for (ReduceOp op : ops)
      for (int k : {1, 2, 3, 5, kMaxReduceKernelInputs}) {
        const uint64_t es = size_of(t);
        std::vector<std::vector<std::byte>> in(k, std::vector<std::byte>(kCount * es));
        std::vector<const void*> ptrs;
        for (int r = 0; r < k; ++r) {
          for (uint64_t i = 0; i < kCount; ++i) {
            // Fractions and negatives (rounding, truncating averages), a NaN for floats on one rank.
            double v = (static_cast<double>((r * 13 + i * 7) % 23) - 11) / (op == ReduceOp::kProd ? 4.0 : 3.0);
            if (t == DataType::kInt64 || t == DataType::kInt32) v = std::trunc(v * 3);
            if (i == 5 && r == k / 2 && t != DataType::kInt64 && t != DataType::kInt32)
              v = std::numeric_limits<double>::quiet_NaN();
            store(t, in[r].data(), i, v);
          }
          ptrs.push_back(in[r].data());
        }
        std::vector<std::byte> want(kCount * es), got(kCount * es);
        reduce_elements(t, op, ptrs, want.data(), kCount);
        ElementwiseArguments args;
        args.count = kCount;
        args.inputs = ptrs;
        args.outputs = {got.data()};
        evaluate_on_host(reduce_kernel(t, op, k), args);
        for (uint64_t i = 0; i < kCount; ++i) {
          const bool nan_both = t != DataType::kInt64 && t != DataType::kInt32 && i == 5;  // NaN payloads may differ
          if (nan_both) continue;
          ASSERT_EQ(std::memcmp(want.data() + i * es, got.data() + i * es, es), 0)
              << name_of(t) << " " << name_of(op) << " k=" << k << " element " << i;
        }
      }
  EXPECT_THROW(reduce_kernel(DataType::kFloat32, ReduceOp::kSum, 0), std::invalid_argument);
  EXPECT_THROW(reduce_kernel(DataType::kFloat32, ReduceOp::kSum, kMaxReduceKernelInputs + 1), std::invalid_argument);
  EXPECT_THROW(reduce_kernel(DataType::kBool, ReduceOp::kSum, 2), std::invalid_argument);
}

TEST(CollectiveKernelsTest, CombineScalarsKernelMatchesCombineScalars) {
  const DataType types[] = {DataType::kFloat32, DataType::kFloat64, DataType::kBFloat16, DataType::kFloat16};
  const double values[] = {0.0, 1.0, -2.5, 3.0, 1.0 / 3.0, 7.125, 1e-3, 300.0,
                           std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()};
  for (DataType t : types)
    for (ScalarOp op : {ScalarOp::kMultiply, ScalarOp::kDivide})
      for (double a : values)
        for (double b : values) {
          uint64_t x_want = 0, x_got = 0, y = 0;
          store(t, &x_want, 0, a);
          store(t, &x_got, 0, a);
          store(t, &y, 0, b);
          combine_scalars(t, &x_want, &y, op);
          ElementwiseArguments args;
          args.count = 1;
          args.inputs = {&x_got, &y};
          args.outputs = {&x_got};
          evaluate_on_host(combine_scalars_kernel(t, op), args);
          const uint64_t bits_w = x_want, bits_g = x_got;
          // NaN results: any NaN will do.
          auto is_nan = [&](uint64_t bits) {
            switch (t) {
              case DataType::kFloat32: { float f; std::memcpy(&f, &bits, 4); return std::isnan(f); }
              case DataType::kFloat64: { double d; std::memcpy(&d, &bits, 8); return std::isnan(d); }
              case DataType::kBFloat16: return std::isnan(bfloat16_to_float(static_cast<uint16_t>(bits)));
              default: return std::isnan(float16_to_float(static_cast<uint16_t>(bits)));
            }
          };
          if (is_nan(bits_w) && is_nan(bits_g)) continue;
          EXPECT_EQ(bits_w, bits_g) << name_of(t) << (op == ScalarOp::kMultiply ? " * " : " / ") << a << ", " << b;
        }
  EXPECT_THROW(combine_scalars_kernel(DataType::kInt64, ScalarOp::kMultiply), std::invalid_argument);
}

TEST(CollectiveKernelsTest, DivideByScalarDividesEveryElementAsTheTypesKernelWould) {
  // float32 by float32 divides in float (what a mean loss's gradient kernel does); bfloat16 by float32
  // through double, rounded once.
  std::vector<float> x = {1.0f, -3.0f, 0.1f, 1e-30f, 7.0f};
  const float w = 3.0f;
  std::vector<float> want;
  for (float v : x) want.push_back(v / w);
  ElementwiseArguments args;
  args.count = x.size();
  args.sizes = {static_cast<int64_t>(x.size())};
  args.inputs = {x.data(), &w};
  args.strides = {{}, {0}};
  args.outputs = {x.data()};
  evaluate_on_host(divide_by_scalar_kernel(DataType::kFloat32, DataType::kFloat32), args);
  EXPECT_EQ(x, want);

  std::vector<uint16_t> b(3);
  for (int i = 0; i < 3; ++i) store(DataType::kBFloat16, b.data(), i, 2.0 * (i + 1));
  args.count = 3;
  args.sizes = {3};
  args.inputs = {b.data(), &w};
  args.outputs = {b.data()};
  evaluate_on_host(divide_by_scalar_kernel(DataType::kBFloat16, DataType::kFloat32), args);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(b[i], float_to_bfloat16(static_cast<float>(2.0 * (i + 1) / 3.0))) << i;
  EXPECT_THROW(divide_by_scalar_kernel(DataType::kInt64, DataType::kFloat32), std::invalid_argument);
}

// Host devices divide in a plain loop (host_arithmetic.h) with the kernel's bits, for every pair of types.
TEST(CollectiveKernelsTest, DivideElementsMatchesTheDivideByScalarKernel) {
  const std::vector<DataType> types = {DataType::kFloat32, DataType::kFloat64, DataType::kBFloat16, DataType::kFloat16};
  const std::vector<double> values = {1.0, -3.0, 0.1, 1e-30, 7.0, 65504.0, 1e30, -0.0, 123.456, 2.0 / 3,
                                      std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()};
  for (DataType type : types)
    for (DataType divisor : types)
      for (double by : {3.0, 0.7, -1e-3}) {
        const size_t n = values.size(), width = size_of(type);
        std::vector<unsigned char> want(n * width), got(n * width), y(size_of(divisor));
        for (size_t i = 0; i < n; ++i) store(type, want.data(), i, values[i]);
        got = want;
        store(divisor, y.data(), 0, by);
        ElementwiseArguments args;
        args.count = n;
        args.sizes = {static_cast<int64_t>(n)};
        args.inputs = {want.data(), y.data()};
        args.strides = {{}, {0}};
        args.outputs = {want.data()};
        evaluate_on_host(divide_by_scalar_kernel(type, divisor), args);
        divide_elements(type, got.data(), n, divisor, y.data());
        EXPECT_EQ(want, got) << name_of(type) << " / " << name_of(divisor) << " " << by;
      }
  std::vector<int64_t> ints = {4, 8};
  const float two = 2.0f;
  EXPECT_THROW(divide_elements(DataType::kInt64, ints.data(), 2, DataType::kFloat32, &two), std::invalid_argument);
}

}  // namespace
}  // namespace moreh::runtime
