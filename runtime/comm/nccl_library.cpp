#include "runtime/comm/nccl_library.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <map>
#include <mutex>

#include "runtime/base/errors.h"

namespace moreh::runtime::nccl {
namespace {

constexpr int kMinimumVersion = 21300;  // 2.13: ncclGetLastError; ncclAvg and bfloat16 came in 2.10

#define MOREH_NCCL_STR2(x) #x
#define MOREH_NCCL_STR(x) MOREH_NCCL_STR2(x)

// The entry points and NCCL's names for them.
#define MOREH_NCCL_FUNCTIONS(X)          \
  X(GetVersion, ncclGetVersion)          \
  X(GetErrorString, ncclGetErrorString)  \
  X(GetLastError, ncclGetLastError)      \
  X(CommInitAll, ncclCommInitAll)        \
  X(CommDestroy, ncclCommDestroy)        \
  X(CommAbort, ncclCommAbort)            \
  X(CommGetAsyncError, ncclCommGetAsyncError) \
  X(AllReduce, ncclAllReduce)            \
  X(ReduceScatter, ncclReduceScatter)    \
  X(AllGather, ncclAllGather)            \
  X(Broadcast, ncclBroadcast)            \
  X(Reduce, ncclReduce)                  \
  X(Send, ncclSend)                      \
  X(Recv, ncclRecv)                      \
  X(GroupStart, ncclGroupStart)          \
  X(GroupEnd, ncclGroupEnd)

const char* result_name(int result) {
  switch (result) {
    case kSuccess: return "ncclSuccess";
    case kUnhandledCudaError: return "ncclUnhandledCudaError";
    case kSystemError: return "ncclSystemError";
    case kInternalError: return "ncclInternalError";
    case kInvalidArgument: return "ncclInvalidArgument";
    case kInvalidUsage: return "ncclInvalidUsage";
    case kRemoteError: return "ncclRemoteError";
    case kInProgress: return "ncclInProgress";
  }
  return "ncclResult";
}

}  // namespace

TypeCode type_code(DataType type) {
  switch (type) {
    case DataType::kFloat32: return kFloat32;
    case DataType::kFloat64: return kFloat64;
    case DataType::kBFloat16: return kBfloat16;
    case DataType::kFloat16: return kFloat16;
    case DataType::kInt64: return kInt64;
    case DataType::kInt32: return kInt32;
    case DataType::kBool: return kUint8;
  }
  return kUint8;
}

RedOp red_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return kSum;
    case ReduceOp::kAvg: return kAvg;
    case ReduceOp::kMax: return kMax;
    case ReduceOp::kMin: return kMin;
    case ReduceOp::kProd: return kProd;
  }
  return kSum;
}

std::string version_string(int code) {
  if (code >= 20900) return fmt::format("{}.{}.{}", code / 10000, code / 100 % 100, code % 100);
  return fmt::format("{}.{}.{}", code / 1000, code / 100 % 10, code % 100);  // the older encoding
}

std::shared_ptr<const Library> Library::load(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const Library>> loaded;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = loaded.find(name); it != loaded.end()) return it->second;

  auto fail = [&](const std::string& why) -> std::shared_ptr<const Library> {
    throw ConfigError(fmt::format("NCCL could not be loaded from {} (MOREH_NCCL_LIBRARY): {}", name, why));
  };
  // The library stays loaded for the process: communicators and their threads outlive any one user.
  void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* e = dlerror();
    return fail(e ? e : "dlopen failed");
  }
  std::shared_ptr<Library> lib(new Library());
  lib->name_ = name;
#define MOREH_NCCL_RESOLVE(member, function)                                                  \
  lib->api_.member = reinterpret_cast<decltype(lib->api_.member)>(dlsym(handle, MOREH_NCCL_STR(function))); \
  if (!lib->api_.member) return fail(fmt::format("it lacks {} (NCCL {} or newer is needed)", MOREH_NCCL_STR(function), \
                                                 version_string(kMinimumVersion)));
  MOREH_NCCL_FUNCTIONS(MOREH_NCCL_RESOLVE)
#undef MOREH_NCCL_RESOLVE
  if (const int r = lib->api_.GetVersion(&lib->version_); r != kSuccess)
    return fail(fmt::format("ncclGetVersion: {}", lib->describe(r, nullptr)));
  if (lib->version_ < kMinimumVersion)
    return fail(fmt::format("it is NCCL {}, and moreh needs {} or newer", version_string(lib->version_),
                            version_string(kMinimumVersion)));
  lib->host_memory_ = dlsym(handle, "moreh_fake_nccl_host_memory") != nullptr;
  loaded.emplace(name, lib);
  return lib;
}

std::string Library::describe(int result, Comm comm) const {
  std::string text = result_name(result);
  if (api_.GetErrorString)
    if (const char* s = api_.GetErrorString(result); s && *s) text += fmt::format(" ({})", s);
  if (api_.GetLastError && result != kSuccess)
    if (const char* s = api_.GetLastError(comm); s && *s) text += fmt::format(": {}", s);
  return text;
}

}  // namespace moreh::runtime::nccl
