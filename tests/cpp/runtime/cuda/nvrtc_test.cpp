// NVRTC compiling the generated kernels: needs libnvrtc, not a GPU.
#include "runtime/cuda/nvrtc.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>

#include "runtime/comm/collective_kernels.h"
#include "runtime/kernels/elementwise_test_kernels.h"

namespace moreh::runtime::cuda {
namespace {

using testing::every_op_kernels;
using testing::kAllTypes;

#define MOREH_SKIP_WITHOUT_NVRTC() \
  if (!nvrtc_available()) GTEST_SKIP() << "NVRTC cannot be loaded: " << nvrtc_unavailable_reason()

constexpr int kSm90 = 90;

bool contains(const std::vector<char>& binary, const std::string& text) {
  return std::search(binary.begin(), binary.end(), text.begin(), text.end()) != binary.end();
}

bool is_elf(const std::vector<char>& binary) {
  return binary.size() > 4 && std::string(binary.begin(), binary.begin() + 4) == "\x7f" "ELF";
}

TEST(NvrtcTest, LoadsAndKnowsSm90) {
  MOREH_SKIP_WITHOUT_NVRTC();
  EXPECT_FALSE(nvrtc_library().empty());
  EXPECT_GE(nvrtc_version(), 11010) << nvrtc_library();
  const std::vector<int> archs = nvrtc_architectures();
  EXPECT_TRUE(std::is_sorted(archs.begin(), archs.end()));
  EXPECT_TRUE(std::binary_search(archs.begin(), archs.end(), kSm90)) << nvrtc_library();
}

// Every op on every type it takes, to PTX and to a cubin for sm_90. The kernels of one type go in one
// program (each in its own namespace; extern "C" names stay distinct) so the test takes seconds, not minutes.
TEST(NvrtcTest, CompilesEveryOpAndTypeForSm90) {
  MOREH_SKIP_WITHOUT_NVRTC();
  for (DataType t : kAllTypes) {
    const auto kernels = every_op_kernels(t);
    std::string program;
    std::set<std::string> names;  // a cast to the type itself is the copy kernel: once
    for (size_t i = 0; i < kernels.size(); ++i) {
      if (!names.insert(kernels[i].kernel.function_name()).second) continue;
      program += "namespace k" + std::to_string(i) + " {\n" + kernels[i].kernel.source() + "}\n";
    }
    const std::string name = "every_op_" + std::string(name_of(t)) + ".cu";
    for (NvrtcOutput output : {NvrtcOutput::kPtx, NvrtcOutput::kCubin}) {
      NvrtcResult r;
      try {
        r = nvrtc_compile(program, name, kSm90, output);
      } catch (const NvrtcError& e) {
        FAIL() << e.what();
      }
      EXPECT_EQ(r.log, "") << name << ": the generated code should compile without warnings";
      EXPECT_EQ(r.arch, kSm90);
      if (output == NvrtcOutput::kCubin) {
        EXPECT_TRUE(is_elf(r.binary)) << name;
      } else {
        EXPECT_TRUE(contains(r.binary, ".target sm_90")) << name;
      }
      for (const auto& [what, k] : kernels) {
        const std::string entry = output == NvrtcOutput::kPtx ? ".entry " + k.function_name() : k.function_name();
        EXPECT_TRUE(contains(r.binary, entry)) << what << " (" << k.function_name() << ") is missing from " << name;
      }
    }
  }
}

TEST(NvrtcTest, CompilesOneKernelAsGenerated) {
  MOREH_SKIP_WITHOUT_NVRTC();
  const ElementwiseKernel k = sum_kernel(DataType::kBFloat16, 8);
  const NvrtcResult r = nvrtc_compile(k.source(), k.function_name() + ".cu", kSm90, NvrtcOutput::kCubin);
  EXPECT_TRUE(is_elf(r.binary));
  EXPECT_TRUE(contains(r.binary, k.function_name()));
  EXPECT_EQ(r.output, NvrtcOutput::kCubin);
  EXPECT_GT(r.milliseconds, 0);
  const NvrtcResult ptx = nvrtc_compile(k.source(), k.function_name() + ".cu", 75, NvrtcOutput::kPtx);
  EXPECT_EQ(ptx.binary.back(), '\0');
  EXPECT_TRUE(contains(ptx.binary, ".target sm_75"));
}

TEST(NvrtcTest, ErrorsCarryTheLog) {
  MOREH_SKIP_WITHOUT_NVRTC();
  try {
    nvrtc_compile("extern \"C\" __global__ void broken() { undeclared_thing = 1; }", "broken.cu", kSm90,
                  NvrtcOutput::kCubin);
    FAIL() << "compiled";
  } catch (const NvrtcError& e) {
    EXPECT_NE(e.log().find("undeclared_thing"), std::string::npos) << e.log();
    EXPECT_NE(std::string(e.what()).find("broken.cu"), std::string::npos) << e.what();
  }
  EXPECT_THROW(nvrtc_compile("", "empty.cu", 11, NvrtcOutput::kCubin), Error);  // no such architecture
}

}  // namespace
}  // namespace moreh::runtime::cuda
