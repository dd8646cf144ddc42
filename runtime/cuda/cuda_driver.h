// The CUDA Driver API, loaded at run time: libcuda.so.1 is dlopen'ed on first use, so one build runs on
// machines with and without an NVIDIA driver (the CUDA headers are needed to build, not to run). Entry
// points are the driver's own functions (their cuda.h versions, e.g. cuMemAlloc_v2), kept as members
// without the "cu" prefix: driver().MemAlloc(&ptr, bytes).
#pragma once
#include <cuda.h>

#include <string>

namespace moreh::runtime::cuda {

// X(member, function): every entry point moreh uses. `function` is cuda.h's name, which its macros map
// to the versioned symbol the library exports.
#define MOREH_CUDA_DRIVER_FUNCTIONS(X)                      \
  X(Init, cuInit)                                           \
  X(DriverGetVersion, cuDriverGetVersion)                   \
  X(GetErrorName, cuGetErrorName)                           \
  X(GetErrorString, cuGetErrorString)                       \
  X(DeviceGetCount, cuDeviceGetCount)                       \
  X(DeviceGet, cuDeviceGet)                                 \
  X(DeviceGetName, cuDeviceGetName)                         \
  X(DeviceTotalMem, cuDeviceTotalMem)                       \
  X(DeviceGetAttribute, cuDeviceGetAttribute)               \
  X(DeviceCanAccessPeer, cuDeviceCanAccessPeer)             \
  X(DevicePrimaryCtxRetain, cuDevicePrimaryCtxRetain)       \
  X(DevicePrimaryCtxRelease, cuDevicePrimaryCtxRelease)     \
  X(CtxSetCurrent, cuCtxSetCurrent)                         \
  X(CtxGetCurrent, cuCtxGetCurrent)                         \
  X(CtxGetDevice, cuCtxGetDevice)                           \
  X(CtxEnablePeerAccess, cuCtxEnablePeerAccess)             \
  X(MemGetInfo, cuMemGetInfo)                               \
  X(MemAlloc, cuMemAlloc)                                   \
  X(MemFree, cuMemFree)                                     \
  X(MemHostAlloc, cuMemHostAlloc)                           \
  X(MemFreeHost, cuMemFreeHost)                             \
  X(MemcpyAsync, cuMemcpyAsync)                             \
  X(MemcpyHtoDAsync, cuMemcpyHtoDAsync)                     \
  X(MemcpyDtoHAsync, cuMemcpyDtoHAsync)                     \
  X(MemcpyDtoDAsync, cuMemcpyDtoDAsync)                     \
  X(MemcpyPeerAsync, cuMemcpyPeerAsync)                     \
  X(MemsetD8Async, cuMemsetD8Async)                         \
  X(StreamCreate, cuStreamCreate)                           \
  X(StreamDestroy, cuStreamDestroy)                         \
  X(StreamSynchronize, cuStreamSynchronize)                 \
  X(StreamQuery, cuStreamQuery)                             \
  X(StreamWaitEvent, cuStreamWaitEvent)                     \
  X(EventCreate, cuEventCreate)                             \
  X(EventDestroy, cuEventDestroy)                           \
  X(EventRecord, cuEventRecord)                             \
  X(EventQuery, cuEventQuery)                               \
  X(EventSynchronize, cuEventSynchronize)                   \
  X(EventElapsedTime, cuEventElapsedTime)                   \
  X(LaunchHostFunc, cuLaunchHostFunc)                       \
  X(ModuleLoadData, cuModuleLoadData)                       \
  X(ModuleUnload, cuModuleUnload)                           \
  X(ModuleGetFunction, cuModuleGetFunction)                 \
  X(LaunchKernel, cuLaunchKernel)                           \
  X(StreamBeginCapture, cuStreamBeginCapture)               \
  X(StreamEndCapture, cuStreamEndCapture)                   \
  X(GraphInstantiate, cuGraphInstantiate)                   \
  X(GraphLaunch, cuGraphLaunch)                             \
  X(GraphExecDestroy, cuGraphExecDestroy)                   \
  X(GraphDestroy, cuGraphDestroy)

struct Driver {
#define MOREH_CUDA_MEMBER(member, function) decltype(&function) member = nullptr;
  MOREH_CUDA_DRIVER_FUNCTIONS(MOREH_CUDA_MEMBER)
#undef MOREH_CUDA_MEMBER
};

// The loaded driver, or nullptr when libcuda.so.1 is missing, lacks an entry point, or cuInit fails (no
// GPU, no driver). Loads and initializes once; thread-safe.
const Driver* driver();
// Why driver() is nullptr ("libcuda.so.1: cannot open shared object file", "cuInit: CUDA_ERROR_NO_DEVICE").
std::string driver_unavailable_reason();
// driver() or throws Error with the reason.
const Driver& require_driver();

// "CUDA_ERROR_OUT_OF_MEMORY: out of memory".
std::string describe(CUresult result);
// Throws Error("<what>: <describe(result)>") unless result is CUDA_SUCCESS.
void check(CUresult result, const char* what);

}  // namespace moreh::runtime::cuda
