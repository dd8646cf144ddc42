// The kernel cache and fused kernels on a GPU, checked against the host reference. The GPU tests skip
// without a CUDA driver and device (cuda::driver() is nullptr) or without NVRTC.
#include "runtime/cuda/kernel_cache.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "runtime/comm/collective_kernels.h"
#include "runtime/cuda/cuda_driver.h"
#include "runtime/kernels/elementwise_reduction.h"
#include "runtime/kernels/elementwise_reference.h"
#include "runtime/host/host_arithmetic.h"
#include "runtime/base/low_precision_float.h"
#include "runtime/cuda/nvrtc.h"

namespace moreh::runtime::cuda {
namespace {

TEST(KernelCacheTest, LaunchShapeCapsBlocksBySmCount) {
  EXPECT_EQ(elementwise_launch_shape(1, 132).blocks, 1u);
  EXPECT_EQ(elementwise_launch_shape(1, 132).threads, 256u);
  EXPECT_EQ(elementwise_launch_shape(256 * 10 + 1, 132).blocks, 11u);
  EXPECT_EQ(elementwise_launch_shape(uint64_t{1} << 40, 132).blocks, 132u * kBlocksPerSm);
  EXPECT_EQ(elementwise_launch_shape(0, 0).blocks, 1u);
}

TEST(KernelCacheTest, PrepareCompilesInTheBackgroundOncePerStructureAndTarget) {
  if (!nvrtc_available()) GTEST_SKIP() << "NVRTC cannot be loaded: " << nvrtc_unavailable_reason();
  std::vector<std::shared_ptr<const ElementwiseKernel>> kernels;
  for (ElementwiseOp op : {ElementwiseOp::kExp, ElementwiseOp::kTanh, ElementwiseOp::kSigmoid}) {
    auto k = std::make_shared<ElementwiseKernel>();
    k->output(k->unary(op, k->input(DataType::kFloat32)));
    k->freeze();
    kernels.push_back(k);
  }
  KernelCache cache;  // no driver or GPU needed: NVRTC compiles PTX for a named architecture
  const CompileTarget sm90{90, NvrtcOutput::kPtx};
  for (const auto& k : kernels) cache.prepare(k, sm90);
  cache.prepare(kernels[0], sm90);  // queued twice: still one compile
  ASSERT_TRUE(cache.wait_prepared(std::chrono::seconds(120)));
  EXPECT_EQ(cache.stats().misses, 3u);
  EXPECT_GT(cache.stats().compile_milliseconds, 0.0);
  cache.prepare(kernels[1], sm90);  // compiled already: nothing to do
  ASSERT_TRUE(cache.wait_prepared(std::chrono::seconds(120)));
  EXPECT_EQ(cache.stats().misses, 3u);
  cache.prepare(kernels[1], CompileTarget{80, NvrtcOutput::kPtx});  // another architecture compiles again
  ASSERT_TRUE(cache.wait_prepared(std::chrono::seconds(120)));
  EXPECT_EQ(cache.stats().misses, 4u);
}

// What a fresh cache (another process's) does for `kernel` with binaries kept in `dir`.
KernelCache::Stats prepare_in_fresh_cache(const std::string& dir, std::shared_ptr<const ElementwiseKernel> kernel,
                                          const CompileTarget& target) {
  KernelCache cache;
  cache.set_disk_dir(dir);
  cache.prepare(std::move(kernel), target);
  EXPECT_TRUE(cache.wait_prepared(std::chrono::seconds(120)));
  return cache.stats();
}

TEST(KernelCacheTest, BinariesKeptOnDiskSaveTheNextProcessItsCompiles) {
  if (!nvrtc_available()) GTEST_SKIP() << "NVRTC cannot be loaded: " << nvrtc_unavailable_reason();
  const std::string dir = ::testing::TempDir() + "moreh-kernels-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  auto k = std::make_shared<ElementwiseKernel>();
  k->output(k->unary(ElementwiseOp::kErf, k->input(DataType::kBFloat16)));
  k->freeze();
  const CompileTarget sm90{90, NvrtcOutput::kPtx};
  const KernelCache::Stats first = prepare_in_fresh_cache(dir, k, sm90);
  EXPECT_EQ(first.disk_hits, 0u);
  EXPECT_GT(first.compile_milliseconds, 0.0);
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files += e.path().extension() == ".bin";
  EXPECT_EQ(files, 1u);
  const KernelCache::Stats second = prepare_in_fresh_cache(dir, k, sm90);  // reads the binary instead of compiling
  EXPECT_EQ(second.disk_hits, 1u);
  EXPECT_EQ(second.compile_milliseconds, 0.0);
  // A binary an older moreh generated differently for the same key (the file holds the source it was
  // compiled from) is compiled over.
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(e.path(), std::ios::binary);
    std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    const size_t at = content.find("moreh_body");
    ASSERT_NE(at, std::string::npos);
    ASSERT_NE(content.find("// key: " + k->key()), std::string::npos);
    content[at + 6] = 'B';  // the same length and key, another text
    std::ofstream(e.path(), std::ios::binary | std::ios::trunc) << content;
  }
  const KernelCache::Stats older = prepare_in_fresh_cache(dir, k, sm90);
  EXPECT_EQ(older.disk_hits, 0u);
  EXPECT_GT(older.compile_milliseconds, 0.0);
  EXPECT_EQ(prepare_in_fresh_cache(dir, k, sm90).disk_hits, 1u);  // what it wrote instead is this kernel's
  // A file that is not this kernel's (a damaged one, or a hash shared by another structure) is compiled over.
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::ofstream(e.path(), std::ios::binary | std::ios::trunc) << "moreh-kernel 2\n3\nabcgarbage";
  }
  const KernelCache::Stats third = prepare_in_fresh_cache(dir, k, sm90);
  EXPECT_EQ(third.disk_hits, 0u);
  EXPECT_GT(third.compile_milliseconds, 0.0);
  std::filesystem::remove_all(dir);
}

TEST(KernelCacheTest, CompileTargetFallsBackToPtxForNewerDevices) {
  const std::vector<int> archs = {75, 80, 86, 89, 90};
  EXPECT_EQ(compile_target(90, archs).arch, 90);
  EXPECT_EQ(compile_target(90, archs).output, NvrtcOutput::kCubin);
  EXPECT_EQ(compile_target(120, archs).arch, 90);  // a device newer than NVRTC: PTX the driver compiles
  EXPECT_EQ(compile_target(120, archs).output, NvrtcOutput::kPtx);
  EXPECT_EQ(compile_target(87, archs).arch, 86);
  EXPECT_EQ(compile_target(87, archs).output, NvrtcOutput::kPtx);
  EXPECT_THROW(compile_target(70, archs), Error);
}

// Host values of any type, as doubles.
double load_as(DataType t, const void* p, uint64_t i) {
  switch (t) {
    case DataType::kFloat32: return static_cast<const float*>(p)[i];
    case DataType::kFloat64: return static_cast<const double*>(p)[i];
    case DataType::kBFloat16: return bfloat16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DataType::kFloat16: return float16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DataType::kInt64: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
    case DataType::kInt32: return static_cast<const int32_t*>(p)[i];
    case DataType::kBool: return static_cast<const uint8_t*>(p)[i];
  }
  return 0;
}

void store_as(DataType t, void* p, uint64_t i, double v) {
  switch (t) {
    case DataType::kFloat32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DataType::kFloat64: static_cast<double*>(p)[i] = v; break;
    case DataType::kBFloat16: static_cast<uint16_t*>(p)[i] = float_to_bfloat16(static_cast<float>(v)); break;
    case DataType::kFloat16: static_cast<uint16_t*>(p)[i] = float_to_float16(static_cast<float>(v)); break;
    case DataType::kInt64: static_cast<int64_t*>(p)[i] = static_cast<int64_t>(v); break;
    case DataType::kInt32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    case DataType::kBool: static_cast<uint8_t*>(p)[i] = v != 0; break;
  }
}

// Relative tolerance of a GPU result against the host's: CUDA's math library differs from the host's by
// a few ulps, which a rounding to float16/bfloat16 can turn into one ulp of those.
double tolerance(DataType t) {
  switch (t) {
    case DataType::kFloat32: return 1e-5;
    case DataType::kFloat64: return 1e-13;
    case DataType::kBFloat16: return 1.0 / 128;
    case DataType::kFloat16: return 1.0 / 1024;
    default: return 0;
  }
}

class FusedKernelGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!driver()) GTEST_SKIP() << "no CUDA driver: " << driver_unavailable_reason();
    if (!nvrtc_available()) GTEST_SKIP() << "NVRTC cannot be loaded: " << nvrtc_unavailable_reason();
    d_ = &require_driver();
    int n = 0;
    check(d_->DeviceGetCount(&n), "cuDeviceGetCount");
    if (n == 0) GTEST_SKIP() << "no CUDA device";
    check(d_->DeviceGet(&device_, 0), "cuDeviceGet");
    check(d_->DevicePrimaryCtxRetain(&context_, device_), "cuDevicePrimaryCtxRetain");
    retained_ = true;
    check(d_->CtxSetCurrent(context_), "cuCtxSetCurrent");
    check(d_->StreamCreate(&stream_, 0), "cuStreamCreate");
  }

  void TearDown() override {
    if (!retained_) return;
    if (stream_) d_->StreamSynchronize(stream_);
    for (CUdeviceptr p : allocations_) d_->MemFree(p);
    if (stream_) d_->StreamDestroy(stream_);
    cache_.release_context(context_);
    d_->DevicePrimaryCtxRelease(device_);
  }

  CUdeviceptr allocate(size_t bytes) {
    CUdeviceptr p = 0;
    check(d_->MemAlloc(&p, std::max<size_t>(bytes, 1)), "cuMemAlloc");
    allocations_.push_back(p);
    return p;
  }
  CUdeviceptr upload(const std::vector<unsigned char>& host) {
    CUdeviceptr p = allocate(host.size());
    check(d_->MemcpyHtoDAsync(p, host.data(), host.size(), stream_), "cuMemcpyHtoDAsync");
    return p;
  }
  void download(std::vector<unsigned char>& host, CUdeviceptr p) {
    check(d_->MemcpyDtoHAsync(host.data(), p, host.size(), stream_), "cuMemcpyDtoHAsync");
    check(d_->StreamSynchronize(stream_), "cuStreamSynchronize");
  }

  // Inputs of `elements` pseudo-random values each (in [-range, range], or [0.1, range] when `positive`);
  // runs `k` on the host and the GPU and compares every output, within `slack` times tolerance() (chains
  // of rounded transcendental ops can compound a one-ulp difference).
  void check_against_host(const ElementwiseKernel& k, ElementwiseArguments args, std::vector<uint64_t> elements,
                          double range, bool positive = false, double slack = 1) {
    std::vector<std::vector<unsigned char>> inputs(k.inputs().size());
    uint64_t state = 12345;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const DataType t = k.inputs()[i].type;
      inputs[i].resize(elements[i] * size_of(t));
      for (uint64_t e = 0; e < elements[i]; ++e) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        const double u = static_cast<double>(state >> 11) / 9007199254740992.0;  // [0, 1)
        double v = positive ? 0.1 + u * range : (2 * u - 1) * range;
        if (t == DataType::kInt64 || t == DataType::kInt32) v = std::round(v);
        store_as(t, inputs[i].data(), e, v);
      }
    }
    std::vector<std::vector<unsigned char>> host_out(k.outputs().size()), gpu_out(k.outputs().size());
    for (size_t o = 0; o < host_out.size(); ++o) {
      host_out[o].resize(args.count * size_of(k.type_of(k.outputs()[o])));
      gpu_out[o].resize(host_out[o].size());
    }
    ElementwiseArguments host = args, gpu = args;
    for (size_t i = 0; i < inputs.size(); ++i) host.inputs.push_back(inputs[i].data());
    for (auto& o : host_out) host.outputs.push_back(o.data());
    evaluate_on_host(k, host);
    for (auto& in : inputs) gpu.inputs.push_back(reinterpret_cast<const void*>(upload(in)));
    std::vector<CUdeviceptr> outs;
    for (auto& o : gpu_out) {
      outs.push_back(allocate(o.size()));
      gpu.outputs.push_back(reinterpret_cast<void*>(outs.back()));
    }
    cache_.launch(k, stream_, gpu);
    for (size_t o = 0; o < outs.size(); ++o) download(gpu_out[o], outs[o]);
    for (size_t o = 0; o < host_out.size(); ++o) {
      const DataType t = k.type_of(k.outputs()[o]);
      int reported = 0;
      for (uint64_t e = 0; e < args.count && reported < 5; ++e) {
        const double h = load_as(t, host_out[o].data(), e), g = load_as(t, gpu_out[o].data(), e);
        if (std::isnan(h) && std::isnan(g)) continue;
        if (std::fabs(g - h) > slack * tolerance(t) * std::max(1.0, std::fabs(h))) {
          ADD_FAILURE() << "output " << o << " (" << name_of(t) << ") element " << e << ": GPU " << g << ", host " << h
                        << "\n" << k.key();
          ++reported;
        }
      }
    }
  }

  // Runs `k` on the GPU over `inputs` (host bytes) with every device pointer `shift` bytes past its
  // allocation's start (cuMemAlloc's are 256-byte aligned), the first output written over input 0 when
  // `in_place`; returns the outputs' bytes.
  std::vector<std::vector<unsigned char>> run_shifted(const ElementwiseKernel& k, ElementwiseArguments args,
                                                      const std::vector<std::vector<unsigned char>>& inputs,
                                                      size_t shift, bool in_place = false) {
    std::vector<CUdeviceptr> ins;
    for (const auto& in : inputs) {
      ins.push_back(allocate(in.size() + shift) + shift);
      check(d_->MemcpyHtoDAsync(ins.back(), in.data(), in.size(), stream_), "cuMemcpyHtoDAsync");
      args.inputs.push_back(reinterpret_cast<const void*>(ins.back()));
    }
    std::vector<std::vector<unsigned char>> out(k.outputs().size());
    std::vector<CUdeviceptr> outs;
    for (size_t o = 0; o < out.size(); ++o) {
      out[o].resize(args.count * size_of(k.type_of(k.outputs()[o])));
      outs.push_back(in_place && o == 0 ? ins[0] : allocate(out[o].size() + shift) + shift);
      args.outputs.push_back(reinterpret_cast<void*>(outs.back()));
    }
    cache_.launch(k, stream_, args);
    for (size_t o = 0; o < outs.size(); ++o) download(out[o], outs[o]);
    return out;
  }

  const Driver* d_ = nullptr;
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  CUstream stream_ = nullptr;
  bool retained_ = false;
  std::vector<CUdeviceptr> allocations_;
  KernelCache cache_;
};

TEST_F(FusedKernelGpuTest, Float32BiasSiluWithBroadcastRow) {
  ElementwiseKernel k(2);
  const ElementwiseValue x = k.input(DataType::kFloat32);
  const ElementwiseValue bias = k.input(DataType::kFloat32, InputLayout::with_strides(0b01));
  const ElementwiseValue y = k.binary(ElementwiseOp::kAdd, k.binary(ElementwiseOp::kMul, x, k.scalar(DataType::kFloat32)), bias);
  k.output(k.unary(ElementwiseOp::kSilu, y));
  k.output(k.binary(ElementwiseOp::kGt, y, k.constant(DataType::kFloat32, 0)));
  ElementwiseArguments args;
  args.count = 64 * 300;
  args.sizes = {64, 300};
  args.strides = {{}, {0, 1}};
  args.scalars = {0.75};
  check_against_host(k, args, {64 * 300, 300}, 4.0);
}

TEST_F(FusedKernelGpuTest, BFloat16GeluSigmoidWhere) {
  ElementwiseKernel k;
  const ElementwiseValue x = k.input(DataType::kBFloat16), y = k.input(DataType::kBFloat16);
  // Two rounded transcendental results multiplied and rounded: up to three bfloat16 ulps apart.
  k.output(k.binary(ElementwiseOp::kMul, k.unary(ElementwiseOp::kGeluTanh, x), k.unary(ElementwiseOp::kSigmoid, y)));
  k.output(k.where(k.binary(ElementwiseOp::kGt, x, y), x, k.unary(ElementwiseOp::kNeg, y)));  // exact
  k.output(k.unary(ElementwiseOp::kGeluErf, k.cast(x, DataType::kFloat32)));                   // float math
  ElementwiseArguments args;
  args.count = 100003;  // not a multiple of the block
  check_against_host(k, args, {100003, 100003}, 5.0, /*positive=*/false, /*slack=*/4);
}

// The vector path (16-byte groups, contiguous kernels) and the scalar path (any pointer not aligned for the
// groups) give the same bits, at counts around the group size and with the tail of a large launch; a group
// written over its own input reads it first.
TEST_F(FusedKernelGpuTest, VectorAndScalarPathsGiveTheSameBits) {
  ElementwiseKernel k(1);
  const ElementwiseValue x = k.input(DataType::kBFloat16), y = k.input(DataType::kFloat32);
  const ElementwiseValue w = k.input(DataType::kFloat32, InputLayout::with_strides(0b1));  // a 0-dim tensor
  const ElementwiseValue xf = k.cast(x, DataType::kFloat32);
  k.output(k.cast(k.binary(ElementwiseOp::kAdd, k.unary(ElementwiseOp::kGeluTanh, xf), k.binary(ElementwiseOp::kMul, y, w)),
                  DataType::kBFloat16));
  k.output(k.binary(ElementwiseOp::kMul, xf, y));
  k.output(k.binary(ElementwiseOp::kGt, xf, y));
  k.freeze();
  ASSERT_NE(k.source().find("moreh_body_vector"), std::string::npos);
  for (uint64_t count : {1ull, 7ull, 8ull, 9ull, 31ull, 1000003ull}) {
    SCOPED_TRACE(count);
    std::vector<std::vector<unsigned char>> inputs = {std::vector<unsigned char>(count * 2),
                                                      std::vector<unsigned char>(count * 4),
                                                      std::vector<unsigned char>(4)};
    for (uint64_t e = 0; e < count; ++e) {
      store_as(DataType::kBFloat16, inputs[0].data(), e, std::sin(0.37 * static_cast<double>(e)) * 4);
      store_as(DataType::kFloat32, inputs[1].data(), e, std::cos(0.11 * static_cast<double>(e)) * 3);
    }
    store_as(DataType::kFloat32, inputs[2].data(), 0, 0.625);
    ElementwiseArguments args;
    args.count = count;
    args.sizes = {static_cast<int64_t>(count)};
    args.strides = {{}, {}, {0}};
    const auto aligned = run_shifted(k, args, inputs, 0);
    EXPECT_TRUE(run_shifted(k, args, inputs, 4) == aligned);   // pointers off their 16 bytes: the scalar path
    EXPECT_TRUE(run_shifted(k, args, inputs, 48) == aligned);  // aligned again, another base
    // Against the host: each output's value where the GPU's math library agrees to the tolerance.
    ElementwiseArguments host = args;
    std::vector<std::vector<unsigned char>> want(3);
    for (const auto& in : inputs) host.inputs.push_back(in.data());
    for (size_t o = 0; o < want.size(); ++o) {
      want[o].resize(aligned[o].size());
      host.outputs.push_back(want[o].data());
    }
    evaluate_on_host(k, host);
    EXPECT_TRUE(aligned[1] == want[1]);  // exact ops
    EXPECT_TRUE(aligned[2] == want[2]);
    for (uint64_t e = 0; e < count; e += 1 + count / 1000) {
      const double h = load_as(DataType::kBFloat16, want[0].data(), e), g = load_as(DataType::kBFloat16, aligned[0].data(), e);
      ASSERT_LE(std::fabs(g - h), 2 * tolerance(DataType::kBFloat16) * std::max(1.0, std::fabs(h))) << e;
    }
  }
  // In place: x = x * 2 + 1 over a bf16 buffer, vector groups and tail.
  ElementwiseKernel twice;
  const ElementwiseValue a = twice.input(DataType::kBFloat16);
  twice.output(twice.binary(ElementwiseOp::kAdd, twice.binary(ElementwiseOp::kMul, a, twice.constant(DataType::kBFloat16, 2)),
                            twice.constant(DataType::kBFloat16, 1)));
  std::vector<std::vector<unsigned char>> in = {std::vector<unsigned char>(2 * 1029)};
  for (uint64_t e = 0; e < 1029; ++e) store_as(DataType::kBFloat16, in[0].data(), e, static_cast<double>(e % 50) / 4);
  ElementwiseArguments args;
  args.count = 1029;
  for (size_t shift : {0, 4}) {
    const auto out = run_shifted(twice, args, in, shift, /*in_place=*/true);
    for (uint64_t e = 0; e < 1029; ++e)
      ASSERT_EQ(load_as(DataType::kBFloat16, out[0].data(), e), static_cast<double>(e % 50) / 2 + 1) << e << " " << shift;
  }
}

TEST_F(FusedKernelGpuTest, BFloat16BroadcastOverMiddleAndLastDimensions) {
  // out[a][b][c] = x[a][b][c] * gamma[a][0][c] + beta[0][b][0], rank 3
  ElementwiseKernel k(3);
  const ElementwiseValue x = k.input(DataType::kBFloat16);
  const ElementwiseValue gamma = k.input(DataType::kBFloat16, InputLayout::with_strides(0b010));
  const ElementwiseValue beta = k.input(DataType::kBFloat16, InputLayout::with_strides(0b101));
  k.output(k.binary(ElementwiseOp::kAdd, k.binary(ElementwiseOp::kMul, x, gamma), beta));
  ElementwiseArguments args;
  args.sizes = {8, 5, 33};
  args.count = 8 * 5 * 33;
  args.strides = {{}, {33, 0, 1}, {0, 1, 0}};
  check_against_host(k, args, {8 * 5 * 33, 8 * 33, 5}, 3.0);
}

TEST_F(FusedKernelGpuTest, Float16TransposedExpAndPow) {
  // A [4, 6, 10] output from a [10, 4, 6] input viewed as permute(1, 2, 0).
  ElementwiseKernel k(3);
  const ElementwiseValue x = k.input(DataType::kFloat16, InputLayout::with_strides(0));
  k.output(k.unary(ElementwiseOp::kExp, x));
  k.output(k.pow(x, k.constant(DataType::kFloat32, 3)));
  k.output(k.pow(k.unary(ElementwiseOp::kAbs, x), k.scalar(DataType::kFloat32)));
  ElementwiseArguments args;
  args.sizes = {4, 6, 10};
  args.count = 240;
  args.strides = {{6, 1, 24}};
  args.scalars = {1.7};
  check_against_host(k, args, {240}, 2.0);
}

TEST_F(FusedKernelGpuTest, IntegersAndBool) {
  ElementwiseKernel k;
  const ElementwiseValue a = k.input(DataType::kInt64), b = k.input(DataType::kInt64);
  const ElementwiseValue lt = k.binary(ElementwiseOp::kLt, a, b);
  k.output(k.where(lt, k.binary(ElementwiseOp::kMul, a, k.integer_constant(DataType::kInt64, 3)), k.unary(ElementwiseOp::kNeg, b)),
           DataType::kInt32);
  k.output(lt);
  k.output(k.cast(k.binary(ElementwiseOp::kMaximum, a, b), DataType::kFloat16));
  ElementwiseArguments args;
  args.count = 5000;
  check_against_host(k, args, {5000, 5000}, 3e4);
}

TEST_F(FusedKernelGpuTest, Float64LogPowRsqrt) {
  ElementwiseKernel k;
  const ElementwiseValue x = k.input(DataType::kFloat64);
  k.output(k.unary(ElementwiseOp::kLog, x));
  k.output(k.pow(x, k.constant(DataType::kFloat64, 1.7)));
  k.output(k.unary(ElementwiseOp::kRsqrt, x));
  k.output(k.unary(ElementwiseOp::kTanh, k.unary(ElementwiseOp::kSqrt, x)));
  ElementwiseArguments args;
  args.count = 4096;
  check_against_host(k, args, {4096}, 100.0, /*positive=*/true);
}

TEST_F(FusedKernelGpuTest, CollectiveKernelsGiveTheHostsBits) {
  constexpr uint64_t n = 70001;
  // bfloat16 sum of 8 buffers, accumulated into the first (in place).
  std::vector<std::vector<uint16_t>> parts(8, std::vector<uint16_t>(n));
  for (size_t p = 0; p < parts.size(); ++p) {
    for (uint64_t i = 0; i < n; ++i) parts[p][i] = float_to_bfloat16(std::sin(static_cast<float>(i * (p + 1))) * 300);
  }
  std::vector<const void*> host_in;
  for (auto& v : parts) host_in.push_back(v.data());
  std::vector<uint16_t> expected(n);
  reduce_elements(DataType::kBFloat16, ReduceOp::kSum, host_in, expected.data(), n);
  ElementwiseArguments args;
  args.count = n;
  std::vector<CUdeviceptr> dev;
  for (auto& v : parts) {
    std::vector<unsigned char> bytes(n * 2);
    std::memcpy(bytes.data(), v.data(), bytes.size());
    dev.push_back(upload(bytes));
    args.inputs.push_back(reinterpret_cast<const void*>(dev.back()));
  }
  args.outputs = {reinterpret_cast<void*>(dev[0])};
  cache_.launch(sum_kernel(DataType::kBFloat16, 8), stream_, args);

  // ... then scaled by 1/8 in place, as an average.
  ElementwiseArguments scale;
  scale.count = n;
  scale.inputs = {reinterpret_cast<const void*>(dev[0])};
  scale.outputs = {reinterpret_cast<void*>(dev[0])};
  scale.scalars = {0.125};
  cache_.launch(scale_in_place_kernel(DataType::kBFloat16), stream_, scale);
  scale_elements(DataType::kBFloat16, expected.data(), n, 0.125);

  std::vector<unsigned char> got(n * 2);
  download(got, dev[0]);
  EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size()), 0);
}

TEST_F(FusedKernelGpuTest, CompilesOncePerStructureAndLoadsOncePerContext) {
  auto build = [] {
    ElementwiseKernel k;
    k.output(k.unary(ElementwiseOp::kRelu, k.input(DataType::kFloat32)));
    return k;
  };
  for (uint64_t count : {100u, 100000u, 7u}) {
    ElementwiseArguments args;
    args.count = count;
    check_against_host(build(), args, {count}, 1.0);
  }
  KernelCache::Stats s = cache_.stats();
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.loads, 1u);
  EXPECT_EQ(s.hits, 2u);
  EXPECT_GT(s.compile_milliseconds, 0);
  ElementwiseKernel other;
  other.output(other.unary(ElementwiseOp::kAbs, other.input(DataType::kFloat32)));
  cache_.function(other);
  EXPECT_EQ(cache_.stats().misses, 2u);
  cache_.function(other);
  EXPECT_EQ(cache_.stats().misses, 2u);
  EXPECT_EQ(cache_.stats().hits, 3u);
}

TEST_F(FusedKernelGpuTest, OffsetsPastInt32UseWideIndices) {
  size_t free_bytes = 0, total = 0;
  check(d_->MemGetInfo(&free_bytes, &total), "cuMemGetInfo");
  const uint64_t big = uint64_t{1} << 31;
  if (free_bytes < 2 * big) GTEST_SKIP() << "needs 4 GiB of free device memory";
  // Input rows 2^31 bytes apart: out[r][c] = in[r * 2^31 + c].
  ElementwiseKernel k(2);
  k.output(k.input(DataType::kBool, InputLayout::with_strides(0)), DataType::kInt32);
  CUdeviceptr in = allocate(big + 8);
  check(d_->MemsetD8Async(in, 0, big + 8, stream_), "cuMemsetD8Async");
  const unsigned char row0[8] = {1, 0, 1, 0, 0, 0, 0, 1}, row1[8] = {0, 1, 1, 0, 1, 0, 0, 0};
  check(d_->MemcpyHtoDAsync(in, row0, 8, stream_), "cuMemcpyHtoDAsync");
  check(d_->MemcpyHtoDAsync(in + big, row1, 8, stream_), "cuMemcpyHtoDAsync");
  CUdeviceptr out = allocate(16 * sizeof(int32_t));
  ElementwiseArguments args;
  args.count = 16;
  args.sizes = {2, 8};
  args.inputs = {reinterpret_cast<const void*>(in)};
  args.strides = {{static_cast<int64_t>(big), 1}};
  args.outputs = {reinterpret_cast<void*>(out)};
  ASSERT_FALSE(k.narrow_indexing(args));
  cache_.launch(k, stream_, args);
  std::vector<unsigned char> got(16 * sizeof(int32_t));
  download(got, out);
  std::vector<int32_t> values(16);
  std::memcpy(values.data(), got.data(), got.size());
  EXPECT_EQ(values, (std::vector<int32_t>{1, 0, 1, 0, 0, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 0}));
}

}  // namespace
}  // namespace moreh::runtime::cuda
