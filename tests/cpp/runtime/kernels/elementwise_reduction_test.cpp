#include "runtime/kernels/elementwise_reduction.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "runtime/base/low_precision_float.h"

namespace moreh::runtime {
namespace {

TEST(LowPrecisionFloatTest, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bfloat16(1.0f), 0x3f80);
  EXPECT_EQ(bfloat16_to_float(0x3f80), 1.0f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
  EXPECT_EQ(float_to_bfloat16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(float_to_bfloat16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isnan(bfloat16_to_float(float_to_bfloat16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(float_to_float16(1.5f), 0x3e00);
  EXPECT_EQ(float16_to_float(0x3e00), 1.5f);
  EXPECT_EQ(float16_to_float(float_to_float16(65504.0f)), 65504.0f);
}

TEST(ElementwiseReductionTest, LowPrecisionSumsAccumulateInFloat) {
  // 256 + 1 + 1 in bfloat16 steps would stay 256 (257 rounds to 256); in float it is 258, which bfloat16 holds.
  std::vector<uint16_t> a{float_to_bfloat16(256.0f)}, b{float_to_bfloat16(1.0f)}, c{float_to_bfloat16(1.0f)}, out(1);
  const void* inputs[] = {a.data(), b.data(), c.data()};
  reduce_elements(DataType::kBFloat16, ReduceOp::kSum, inputs, out.data(), 1);
  EXPECT_EQ(bfloat16_to_float(out[0]), 258.0f);
}

TEST(ElementwiseReductionTest, MaxAndMinPropagateNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> a{1.0f, nan, 3.0f}, b{nan, 2.0f, -1.0f}, out(3);
  const void* inputs[] = {a.data(), b.data()};
  for (ReduceOp op : {ReduceOp::kMax, ReduceOp::kMin}) {
    reduce_elements(DataType::kFloat32, op, inputs, out.data(), 3);
    EXPECT_TRUE(std::isnan(out[0])) << name_of(op);
    EXPECT_TRUE(std::isnan(out[1])) << name_of(op);
    EXPECT_EQ(out[2], op == ReduceOp::kMax ? 3.0f : -1.0f);
  }
}

TEST(ElementwiseReductionTest, InPlaceAcrossBlocksAndIntegerAverageTruncates) {
  std::vector<int32_t> a(3000), b(3000);
  for (int i = 0; i < 3000; ++i) {
    a[i] = i;
    b[i] = -2 * i - 1;
  }
  const void* inputs[] = {a.data(), b.data()};
  reduce_elements(DataType::kInt32, ReduceOp::kAvg, inputs, a.data(), 3000);
  for (int i = 0; i < 3000; ++i) ASSERT_EQ(a[i], (-i - 1) / 2) << i;
}

TEST(ElementwiseReductionTest, BoolIsNotReducible) {
  EXPECT_FALSE(is_reducible(DataType::kBool));
  EXPECT_EQ(size_of(DataType::kBool), 1u);
  std::vector<uint8_t> a{1}, out(1);
  const void* inputs[] = {a.data()};
  EXPECT_THROW(reduce_elements(DataType::kBool, ReduceOp::kSum, inputs, out.data(), 1), std::invalid_argument);
}

}  // namespace
}  // namespace moreh::runtime
