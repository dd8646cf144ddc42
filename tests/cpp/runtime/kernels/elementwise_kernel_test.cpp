#include "runtime/kernels/elementwise_kernel.h"

#include <gtest/gtest.h>

#include <cstring>
#include <regex>
#include <set>
#include <stdexcept>
#include <vector>

#include "runtime/kernels/elementwise_test_kernels.h"

namespace moreh::runtime {
namespace {

using testing::every_op_kernels;
using testing::kAllTypes;

// y = gelu(x * s + b) in bfloat16, b broadcast over rows of a rank-2 output when `broadcast`.
ElementwiseKernel bias_gelu(bool broadcast, int rank = 2) {
  ElementwiseKernel k(rank);
  const ElementwiseValue x = k.input(DataType::kBFloat16);
  const ElementwiseValue b =
      k.input(DataType::kBFloat16, broadcast ? InputLayout::with_strides(0b01) : InputLayout::contiguous());
  const ElementwiseValue s = k.scalar(DataType::kBFloat16);
  const ElementwiseValue y = k.binary(ElementwiseOp::kAdd, k.binary(ElementwiseOp::kMul, x, s), b);
  k.output(k.unary(ElementwiseOp::kGeluErf, y));
  return k;
}

TEST(ElementwiseKernelTest, NameComesFromTheKeysHash) {
  const ElementwiseKernel k = bias_gelu(true);
  EXPECT_TRUE(std::regex_match(k.function_name(), std::regex("moreh_ew_[0-9a-f]{16}"))) << k.function_name();
  EXPECT_EQ(k.key(), bias_gelu(true).key());
  EXPECT_EQ(k.hash(), bias_gelu(true).hash());
  const std::string src = k.source();
  EXPECT_NE(src.find("extern \"C\" __global__ void __launch_bounds__(256) " + k.function_name() + "("), std::string::npos)
      << src;
  EXPECT_NE(src.find("// key: " + k.key()), std::string::npos);
  EXPECT_EQ(src.find("#include"), std::string::npos) << "the source must need no header";
}

TEST(ElementwiseKernelTest, AFrozenKernelKeepsItsKeyAndTakesNothingMore) {
  ElementwiseKernel k = bias_gelu(true);
  const std::string key = k.key();
  const uint64_t hash = k.hash();
  k.freeze();
  EXPECT_TRUE(k.frozen());
  EXPECT_EQ(k.key(), key);
  EXPECT_EQ(k.hash(), hash);
  EXPECT_EQ(k.frozen_key(), key);
  const size_t nodes = k.nodes().size(), inputs = k.inputs().size();
  EXPECT_THROW(k.input(DataType::kFloat32), std::logic_error);
  EXPECT_THROW(k.scalar(DataType::kFloat32), std::logic_error);
  EXPECT_THROW(k.unary(ElementwiseOp::kExp, 0), std::logic_error);
  EXPECT_THROW(k.output(0), std::logic_error);
  EXPECT_EQ(k.nodes().size(), nodes);
  EXPECT_EQ(k.inputs().size(), inputs);
  EXPECT_EQ(k.key(), key);
}

TEST(ElementwiseKernelTest, LayoutsAndRankChangeTheKey) {
  const std::string contiguous = bias_gelu(false).key(), broadcast = bias_gelu(true).key();
  EXPECT_NE(contiguous, broadcast);
  EXPECT_NE(broadcast, bias_gelu(true, 3).key());         // rank matters once an input is strided
  EXPECT_EQ(contiguous, bias_gelu(false, 5).key());       // ... and not before
  ElementwiseKernel cols(2);
  cols.output(cols.input(DataType::kFloat32, InputLayout::with_strides(0b10)));
  ElementwiseKernel rows(2);
  rows.output(rows.input(DataType::kFloat32, InputLayout::with_strides(0b01)));
  ElementwiseKernel transposed(2);
  transposed.output(transposed.input(DataType::kFloat32, InputLayout::with_strides(0)));
  const std::set<std::string> keys = {cols.key(), rows.key(), transposed.key()};
  EXPECT_EQ(keys.size(), 3u);
  // Only the strided kernels split the index into coordinates.
  EXPECT_EQ(bias_gelu(false).source().find("sizes"), std::string::npos);
  EXPECT_NE(bias_gelu(true).source().find("moreh_dims sizes"), std::string::npos);
}

TEST(ElementwiseKernelTest, SizesAndStridesDoNotChangeTheKey) {
  // [2, 3] + [3] and [500, 70] + [70]: the same layout, so one kernel serves both.
  const std::vector<int64_t> small = {2, 3}, small_bias = {0, 1}, big = {500, 70}, big_bias = {0, 1};
  const InputLayout a = InputLayout::of(small, small_bias), b = InputLayout::of(big, big_bias);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, InputLayout::with_strides(0b01));
  auto build = [](InputLayout layout) {
    ElementwiseKernel k(2);
    k.output(k.binary(ElementwiseOp::kAdd, k.input(DataType::kFloat32), k.input(DataType::kFloat32, layout)));
    return k;
  };
  EXPECT_EQ(build(a).key(), build(b).key());
}

TEST(ElementwiseKernelTest, LayoutOfStrides) {
  auto of = [](std::vector<int64_t> sizes, std::vector<int64_t> strides) { return InputLayout::of(sizes, strides); };
  EXPECT_EQ(of({4, 5}, {5, 1}), InputLayout::contiguous());
  EXPECT_EQ(of({4, 1, 5}, {5, 99, 1}), InputLayout::contiguous());  // a size-1 dimension's stride is free
  EXPECT_EQ(of({}, {}), InputLayout::contiguous());
  EXPECT_EQ(of({4, 5}, {1, 4}), InputLayout::with_strides(0));      // transposed
  EXPECT_EQ(of({4, 5}, {0, 1}), InputLayout::with_strides(0b01));
  EXPECT_EQ(of({4, 5}, {1, 0}), InputLayout::with_strides(0b10));
  EXPECT_EQ(of({4, 5}, {0, 0}), InputLayout::with_strides(0b11));
  EXPECT_EQ(of({4, 0}, {0, 0}), InputLayout::contiguous());         // empty: nothing is read
  EXPECT_THROW(of({4, 5}, {1}), std::invalid_argument);
}

TEST(ElementwiseKernelTest, EveryOpAndTypeGenerates) {
  std::set<std::string> keys;
  size_t count = 0;
  for (DataType t : kAllTypes) {
    const auto kernels = every_op_kernels(t);
    EXPECT_GE(kernels.size(), 20u) << name_of(t);
    for (const auto& [name, k] : kernels) {
      const std::string src = k.source();
      EXPECT_NE(src.find(k.function_name()), std::string::npos) << name;
      EXPECT_EQ(src.find('?' + std::string(";")), std::string::npos) << name << "\n" << src;
      keys.insert(k.key());
      ++count;
    }
  }
  EXPECT_GT(count, 200u);
  // Distinct structures, distinct keys (casts to a type's own type are copies: one key each).
  EXPECT_EQ(keys.size(), count - std::size(kAllTypes));
}

TEST(ElementwiseKernelTest, OpsTakeOnlyTheirTypes) {
  ElementwiseKernel k;
  const ElementwiseValue f = k.input(DataType::kFloat32), h = k.input(DataType::kBFloat16),
                         i = k.input(DataType::kInt32), b = k.input(DataType::kBool);
  EXPECT_THROW(k.binary(ElementwiseOp::kAdd, f, h), std::invalid_argument);  // no implicit promotion
  EXPECT_THROW(k.unary(ElementwiseOp::kExp, i), std::invalid_argument);
  EXPECT_THROW(k.binary(ElementwiseOp::kDiv, i, i), std::invalid_argument);
  EXPECT_THROW(k.binary(ElementwiseOp::kAdd, b, b), std::invalid_argument);
  EXPECT_THROW(k.unary(ElementwiseOp::kNeg, b), std::invalid_argument);
  EXPECT_THROW(k.where(f, f, f), std::invalid_argument);
  EXPECT_THROW(k.where(b, f, h), std::invalid_argument);
  EXPECT_THROW(k.pow(f, f), std::invalid_argument);  // the exponent is a scalar or a constant
  EXPECT_THROW(k.pow(i, k.scalar(DataType::kFloat32)), std::invalid_argument);
  EXPECT_THROW(k.unary(ElementwiseOp::kAdd, f), std::invalid_argument);
  EXPECT_THROW(k.unary(ElementwiseOp::kExp, 99), std::invalid_argument);
  EXPECT_THROW(k.input(DataType::kFloat32, InputLayout::with_strides(0)), std::invalid_argument);  // rank 0
  EXPECT_THROW(ElementwiseKernel(kElementwiseMaxRank + 1), std::invalid_argument);
  ElementwiseKernel r2(2);
  EXPECT_THROW(r2.input(DataType::kFloat32, InputLayout::with_strides(0b100)), std::invalid_argument);
  EXPECT_EQ(k.type_of(k.binary(ElementwiseOp::kLt, i, i)), DataType::kBool);
  EXPECT_EQ(k.type_of(k.binary(ElementwiseOp::kMaximum, b, b)), DataType::kBool);
  EXPECT_EQ(k.cast(h, DataType::kBFloat16), h);
}

TEST(ElementwiseKernelTest, ConstantsAreRoundedToTheirType) {
  ElementwiseKernel k;
  const ElementwiseValue a = k.constant(DataType::kBFloat16, 1.0 + 1.0 / 512);  // below half an ulp of 1
  const ElementwiseValue b = k.constant(DataType::kFloat32, 0.1);
  const ElementwiseValue c = k.constant(DataType::kInt32, -7.9);
  const ElementwiseValue d = k.integer_constant(DataType::kInt32, int64_t{1} << 33 | 5);
  EXPECT_EQ(k.nodes()[a].real, 1.0);
  EXPECT_EQ(k.nodes()[b].real, static_cast<double>(0.1f));
  EXPECT_EQ(k.nodes()[c].integer, -7);
  EXPECT_EQ(k.nodes()[d].integer, 5);
  EXPECT_THROW(k.constant(DataType::kInt64, 1e300), std::invalid_argument);
}

TEST(ElementwiseKernelTest, ParametersFollowTheGeneratedSignature) {
  const ElementwiseKernel k = bias_gelu(true);
  std::vector<uint16_t> x(6), b(3), y(6);
  ElementwiseArguments args;
  args.count = 6;
  args.sizes = {2, 3};
  args.inputs = {x.data(), b.data()};
  args.strides = {{}, {0, 1}};
  args.scalars = {2.5};
  args.outputs = {y.data()};
  KernelParameters p = k.parameters(args);
  // in0, in1, s0, out0, n, narrow, sizes, st1
  ASSERT_EQ(p.count(), 8u);
  EXPECT_EQ(p.size_of(0), sizeof(void*));
  EXPECT_EQ(*static_cast<const void* const*>(p.data_of(1)), b.data());
  EXPECT_EQ(p.size_of(2), sizeof(float));
  EXPECT_EQ(*static_cast<const float*>(p.data_of(2)), 2.5f);
  EXPECT_EQ(*static_cast<const unsigned long long*>(p.data_of(4)), 6u);
  EXPECT_EQ(*static_cast<const int*>(p.data_of(5)), 1);
  EXPECT_EQ(p.size_of(6), 2 * sizeof(long long));
  EXPECT_EQ(static_cast<const long long*>(p.data_of(7))[1], 1);
  void** pointers = p.pointers();
  EXPECT_EQ(pointers[2], p.data_of(2));
  KernelParameters moved = std::move(p);
  EXPECT_EQ(moved.pointers()[7], moved.data_of(7));

  // The generated signature lists the same parameters in the same order.
  const std::string src = k.source();
  EXPECT_NE(src.find(k.function_name() +
                     "(const unsigned short* __restrict__ in0, const unsigned short* __restrict__ in1, float s0, "
                     "unsigned short* __restrict__ out0, unsigned long long n, int narrow, moreh_dims sizes, "
                     "moreh_dims st1)"),
            std::string::npos)
      << src;
}

// Kernels whose inputs are all contiguous (or single values) also read and write whole groups of elements,
// 16 bytes of the narrowest type at a time, where every such pointer is aligned for it; strided ones do not.
TEST(ElementwiseKernelTest, ContiguousKernelsReadAndWriteWholeVectors) {
  const std::string bf16 = bias_gelu(false).source();
  EXPECT_NE(bf16.find("const I groups = n / 8;"), std::string::npos) << bf16;
  EXPECT_NE(bf16.find("reinterpret_cast<const moreh_vector<unsigned short, 8, 16>*>(in1)[g]"), std::string::npos);
  EXPECT_NE(bf16.find("const float v0 = moreh_bf16_to_f32(r0.v[e]);"), std::string::npos) << bf16;
  EXPECT_NE(bf16.find("reinterpret_cast<moreh_vector<unsigned short, 8, 16>*>(out0)[g] = w0;"), std::string::npos);
  EXPECT_NE(bf16.find("if ((unsigned long long)in0 % 16ull == 0 && (unsigned long long)in1 % 16ull == 0 && "
                      "(unsigned long long)out0 % 16ull == 0) {"),
            std::string::npos)
      << bf16;
  EXPECT_NE(bf16.find("moreh_body<I>(in0, in1, s0, out0, groups * 8, n);"), std::string::npos);  // the tail
  EXPECT_EQ(bias_gelu(true).source().find("moreh_body_vector"), std::string::npos);  // a broadcast row: strided

  // The narrowest type sets the width; wider types take several 16-byte accesses per group. A single value
  // (a 0-dim tensor, all dimensions broadcast) is read as it is; an input no output needs is not read.
  ElementwiseKernel mixed(1);
  const ElementwiseValue x = mixed.input(DataType::kFloat32);
  const ElementwiseValue one = mixed.input(DataType::kFloat32, InputLayout::with_strides(0b1));
  mixed.input(DataType::kBool);
  mixed.output(mixed.binary(ElementwiseOp::kMul, x, one), DataType::kFloat64);
  const std::string src = mixed.source();
  EXPECT_NE(src.find("const I groups = n / 4;"), std::string::npos) << src;
  EXPECT_NE(src.find("moreh_vector<double, 4, 16> w0;"), std::string::npos) << src;
  EXPECT_NE(src.find("in1[0]"), std::string::npos);
  EXPECT_EQ(src.find("r2"), std::string::npos);
  EXPECT_NE(src.find("if ((unsigned long long)in0 % 16ull == 0 && (unsigned long long)out0 % 16ull == 0) {"),
            std::string::npos)
      << src;
  ElementwiseKernel bools;
  bools.output(bools.unary(ElementwiseOp::kNeg, bools.input(DataType::kInt64)));
  EXPECT_NE(bools.source().find("const I groups = n / 2;"), std::string::npos);
  ElementwiseKernel flags;
  flags.output(flags.binary(ElementwiseOp::kLt, flags.input(DataType::kFloat32), flags.input(DataType::kFloat32)));
  EXPECT_NE(flags.source().find("moreh_vector<unsigned char, 8, 8> w0;"), std::string::npos) << flags.source();
}

TEST(ElementwiseKernelTest, WideIndexingWhenOffsetsPassInt32) {
  ElementwiseKernel k(2);
  k.output(k.input(DataType::kFloat32, InputLayout::with_strides(0)));
  char dummy;
  ElementwiseArguments args;
  args.inputs = {&dummy};
  args.outputs = {&dummy};
  args.sizes = {2, 1000};
  args.count = 2000;
  args.strides = {{1000, 1}};
  EXPECT_TRUE(k.narrow_indexing(args));
  args.strides = {{int64_t{1} << 31, 1}};  // the second row starts past int32
  EXPECT_FALSE(k.narrow_indexing(args));
  args.strides = {{(int64_t{1} << 31) - 1000, 1}};  // the last element is at 2^31 - 1
  EXPECT_TRUE(k.narrow_indexing(args));
  args.sizes = {1 << 16, 1 << 16};
  args.count = uint64_t{1} << 32;
  args.strides = {{0, 0}};
  EXPECT_FALSE(k.narrow_indexing(args));  // more elements than int32 counts
  EXPECT_EQ(*static_cast<const int*>(k.parameters(args).data_of(3)), 0);
}

TEST(ElementwiseKernelTest, ArgumentsAreChecked) {
  const ElementwiseKernel k = bias_gelu(true);
  char d;
  auto args = [&] {
    ElementwiseArguments a;
    a.count = 6;
    a.sizes = {2, 3};
    a.inputs = {&d, &d};
    a.strides = {{}, {0, 1}};
    a.scalars = {1.0};
    a.outputs = {&d};
    return a;
  };
  EXPECT_NO_THROW(k.check(args()));
  auto expect_invalid = [&](auto change) {
    ElementwiseArguments a = args();
    change(a);
    EXPECT_THROW(k.check(a), std::invalid_argument);
  };
  expect_invalid([](ElementwiseArguments& a) { a.inputs.pop_back(); });
  expect_invalid([](ElementwiseArguments& a) { a.scalars.clear(); });
  expect_invalid([](ElementwiseArguments& a) { a.outputs.push_back(nullptr); });
  expect_invalid([](ElementwiseArguments& a) { a.count = 7; });
  expect_invalid([](ElementwiseArguments& a) { a.sizes = {6}; });
  expect_invalid([](ElementwiseArguments& a) { a.strides[1] = {3, 1}; });  // dimension 0 broadcasts
  expect_invalid([](ElementwiseArguments& a) { a.strides[1] = {0, -1}; });
  expect_invalid([](ElementwiseArguments& a) { a.strides[0] = {3, 1}; });  // contiguous inputs take none
  expect_invalid([](ElementwiseArguments& a) { a.inputs[0] = nullptr; });
  ElementwiseKernel ints;
  ints.output(ints.scalar(DataType::kInt64));
  ElementwiseArguments a;
  a.count = 1;
  a.outputs = {&d};
  a.scalars = {1e30};
  EXPECT_THROW(ints.check(a), std::invalid_argument);
}

}  // namespace
}  // namespace moreh::runtime
