#include "runtime/cuda/cuda_discovery.h"

#include <gtest/gtest.h>

#ifdef MOREH_WITH_CUDA
#include "runtime/cuda/cuda_driver.h"
#endif

namespace moreh::runtime::cuda {
namespace {

// Runs on every machine without a GPU (and in builds without CUDA); tests/cpp/runtime/cuda/cuda_device_test.cpp
// covers machines with one.
TEST(CudaDiscoveryTest, WithoutADriverTheListIsEmptyAndSaysWhy) {
#ifdef MOREH_WITH_CUDA
  if (driver()) GTEST_SKIP() << "a CUDA driver is present";
#endif
  const GpuDiscovery found = discover_gpus();
  EXPECT_TRUE(found.gpus.empty());
  EXPECT_FALSE(found.unavailable_reason.empty());
#ifdef MOREH_WITH_CUDA
  EXPECT_EQ(found.unavailable_reason, driver_unavailable_reason());
#endif
}

}  // namespace
}  // namespace moreh::runtime::cuda
