// NCCL, loaded with dlopen when a flavor puts its logical devices on distinct GPUs (one build runs with and
// without it, as with the driver and NVRTC). The library named by MOREH_NCCL_LIBRARY (default
// libnccl.so.2: under torch with CUDA, the one torch already loaded). Only the calls the runtime makes are
// declared here, with the ABI values of NCCL's public header (checked against nccl.h where it is found at
// build time: tests/cpp/runtime/comm/nccl_abi_test.cpp). Needs NCCL 2.13 or newer (ncclAvg, bfloat16,
// ncclGetLastError).
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "runtime/base/data_type.h"
#include "runtime/kernels/elementwise_reduction.h"

namespace moreh::runtime::nccl {

struct OpaqueComm;
using Comm = OpaqueComm*;  // ncclComm_t

// ncclResult_t
enum Result : int {
  kSuccess = 0,
  kUnhandledCudaError = 1,
  kSystemError = 2,
  kInternalError = 3,
  kInvalidArgument = 4,
  kInvalidUsage = 5,
  kRemoteError = 6,
  kInProgress = 7,
};

// ncclDataType_t (the subset the runtime moves)
enum TypeCode : int {
  kInt8 = 0,
  kUint8 = 1,
  kInt32 = 2,
  kInt64 = 4,
  kFloat16 = 6,
  kFloat32 = 7,
  kFloat64 = 8,
  kBfloat16 = 9,
};

// ncclRedOp_t (the built-in ones)
enum RedOp : int { kSum = 0, kProd = 1, kMax = 2, kMin = 3, kAvg = 4 };

// NCCL's type for a runtime DataType: kBool moves as bytes (kUint8); reducing it is refused by the caller.
TypeCode type_code(DataType type);
RedOp red_op(ReduceOp op);

// The entry points, as NCCL exports them (streams are cudaStream_t, i.e. the driver's CUstream).
struct Api {
  int (*GetVersion)(int* version);
  const char* (*GetErrorString)(int result);
  const char* (*GetLastError)(Comm comm);
  int (*CommInitAll)(Comm* comms, int ndev, const int* devices);
  int (*CommDestroy)(Comm comm);
  int (*CommAbort)(Comm comm);
  int (*CommGetAsyncError)(Comm comm, int* state);
  int (*AllReduce)(const void* send, void* recv, size_t count, int type, int op, Comm comm, void* stream);
  int (*ReduceScatter)(const void* send, void* recv, size_t recv_count, int type, int op, Comm comm, void* stream);
  int (*AllGather)(const void* send, void* recv, size_t send_count, int type, Comm comm, void* stream);
  int (*Broadcast)(const void* send, void* recv, size_t count, int type, int root, Comm comm, void* stream);
  int (*Reduce)(const void* send, void* recv, size_t count, int type, int op, int root, Comm comm, void* stream);
  int (*Send)(const void* send, size_t count, int type, int peer, Comm comm, void* stream);
  int (*Recv)(void* recv, size_t count, int type, int peer, Comm comm, void* stream);
  int (*GroupStart)();
  int (*GroupEnd)();
};

// NCCL's version code (major * 10000 + minor * 100 + patch since 2.9) as "2.21.5".
std::string version_string(int code);

class Library {
 public:
  // Loads `name` (a path, or a soname looked up as dlopen does), once per name for the process; throws
  // ConfigError naming the library and what dlopen or the version check said.
  static std::shared_ptr<const Library> load(const std::string& name);

  const Api& api() const { return api_; }
  const std::string& name() const { return name_; }
  int version() const { return version_; }
  // Whether this is a stand-in that moves host memory (the tests' fake NCCL, which exports
  // moreh_fake_nccl_host_memory): only such a library serves host devices.
  bool host_memory() const { return host_memory_; }
  // "ncclInvalidUsage (invalid usage): <NCCL's last error>", for error messages; `comm` may be null.
  std::string describe(int result, Comm comm) const;

 private:
  Library() = default;
  Api api_{};
  std::string name_;
  int version_ = 0;
  bool host_memory_ = false;
};

}  // namespace moreh::runtime::nccl
