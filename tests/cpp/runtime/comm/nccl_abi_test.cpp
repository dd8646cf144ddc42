// runtime/comm/nccl_library.h declares the part of NCCL's ABI the runtime calls (NCCL is loaded with dlopen, so
// the build needs no nccl.h). Where nccl.h is found at build time, this checks those declarations against
// it: the enum values, the sizes, and each entry point's number of parameters. A mismatch fails the build.
#include <gtest/gtest.h>
#include <nccl.h>

#include "runtime/comm/nccl_library.h"

namespace moreh::runtime {
namespace {

template <typename F>
struct Arity;
template <typename R, typename... A>
struct Arity<R (*)(A...)> {
  static constexpr size_t value = sizeof...(A);
};
template <typename F>
constexpr size_t arity = Arity<F>::value;

static_assert(sizeof(ncclResult_t) == sizeof(int) && sizeof(ncclDataType_t) == sizeof(int) &&
              sizeof(ncclRedOp_t) == sizeof(int));
static_assert(sizeof(ncclComm_t) == sizeof(nccl::Comm));
static_assert(static_cast<int>(ncclSuccess) == nccl::kSuccess && static_cast<int>(ncclUnhandledCudaError) == nccl::kUnhandledCudaError &&
              static_cast<int>(ncclSystemError) == nccl::kSystemError && static_cast<int>(ncclInternalError) == nccl::kInternalError &&
              static_cast<int>(ncclInvalidArgument) == nccl::kInvalidArgument &&
              static_cast<int>(ncclInvalidUsage) == nccl::kInvalidUsage && static_cast<int>(ncclRemoteError) == nccl::kRemoteError &&
              static_cast<int>(ncclInProgress) == nccl::kInProgress);
static_assert(static_cast<int>(ncclInt8) == nccl::kInt8 && static_cast<int>(ncclUint8) == nccl::kUint8 &&
              static_cast<int>(ncclInt32) == nccl::kInt32 && static_cast<int>(ncclInt64) == nccl::kInt64 &&
              static_cast<int>(ncclFloat16) == nccl::kFloat16 && static_cast<int>(ncclFloat32) == nccl::kFloat32 &&
              static_cast<int>(ncclFloat64) == nccl::kFloat64 && static_cast<int>(ncclBfloat16) == nccl::kBfloat16);
static_assert(static_cast<int>(ncclSum) == nccl::kSum && static_cast<int>(ncclProd) == nccl::kProd &&
              static_cast<int>(ncclMax) == nccl::kMax && static_cast<int>(ncclMin) == nccl::kMin &&
              static_cast<int>(ncclAvg) == nccl::kAvg);

#define MOREH_SAME_ARITY(member, function) \
  static_assert(arity<decltype(&function)> == arity<decltype(nccl::Api::member)>, #function);
MOREH_SAME_ARITY(GetVersion, ncclGetVersion)
MOREH_SAME_ARITY(GetErrorString, ncclGetErrorString)
MOREH_SAME_ARITY(GetLastError, ncclGetLastError)
MOREH_SAME_ARITY(CommInitAll, ncclCommInitAll)
MOREH_SAME_ARITY(CommDestroy, ncclCommDestroy)
MOREH_SAME_ARITY(CommAbort, ncclCommAbort)
MOREH_SAME_ARITY(CommGetAsyncError, ncclCommGetAsyncError)
MOREH_SAME_ARITY(AllReduce, ncclAllReduce)
MOREH_SAME_ARITY(ReduceScatter, ncclReduceScatter)
MOREH_SAME_ARITY(AllGather, ncclAllGather)
MOREH_SAME_ARITY(Broadcast, ncclBroadcast)
MOREH_SAME_ARITY(Reduce, ncclReduce)
MOREH_SAME_ARITY(Send, ncclSend)
MOREH_SAME_ARITY(Recv, ncclRecv)
MOREH_SAME_ARITY(GroupStart, ncclGroupStart)
MOREH_SAME_ARITY(GroupEnd, ncclGroupEnd)
#undef MOREH_SAME_ARITY

TEST(NcclAbiTest, TheHeaderFoundAtBuildTimeIsNewEnough) {
  EXPECT_GE(NCCL_VERSION_CODE, 21300) << "nccl.h is " << NCCL_MAJOR << "." << NCCL_MINOR << "." << NCCL_PATCH;
  EXPECT_EQ(nccl::version_string(NCCL_VERSION_CODE),
            std::to_string(NCCL_MAJOR) + "." + std::to_string(NCCL_MINOR) + "." + std::to_string(NCCL_PATCH));
}

}  // namespace
}  // namespace moreh::runtime
