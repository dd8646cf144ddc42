#include "runtime/cuda/nvrtc.h"

#include <dlfcn.h>
#include <fmt/format.h>
#include <nvrtc.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "runtime/base/spdlog_logger.h"

namespace moreh::runtime::cuda {
namespace {

// X(member, function): the entry points moreh uses, all in NVRTC since CUDA 11.1.
#define MOREH_NVRTC_FUNCTIONS(X)                     \
  X(Version, nvrtcVersion)                           \
  X(GetErrorString, nvrtcGetErrorString)             \
  X(GetNumSupportedArchs, nvrtcGetNumSupportedArchs) \
  X(GetSupportedArchs, nvrtcGetSupportedArchs)       \
  X(CreateProgram, nvrtcCreateProgram)               \
  X(DestroyProgram, nvrtcDestroyProgram)             \
  X(CompileProgram, nvrtcCompileProgram)             \
  X(GetProgramLogSize, nvrtcGetProgramLogSize)       \
  X(GetProgramLog, nvrtcGetProgramLog)               \
  X(GetPTXSize, nvrtcGetPTXSize)                     \
  X(GetPTX, nvrtcGetPTX)                             \
  X(GetCUBINSize, nvrtcGetCUBINSize)                 \
  X(GetCUBIN, nvrtcGetCUBIN)

struct Nvrtc {
#define MOREH_NVRTC_MEMBER(member, function) decltype(&function) member = nullptr;
  MOREH_NVRTC_FUNCTIONS(MOREH_NVRTC_MEMBER)
#undef MOREH_NVRTC_MEMBER
};

#define MOREH_NVRTC_STR2(x) #x
#define MOREH_NVRTC_STR(x) MOREH_NVRTC_STR2(x)

struct Loaded {
  Nvrtc api;
  bool ok = false;
  std::string library;  // where it was loaded from
  std::string reason;   // why not
  int version = 0;
  std::vector<int> architectures;
};

// Where to look, in order (see nvrtc.h).
std::vector<std::string> candidates() {
  const char* configured = std::getenv("MOREH_NVRTC_LIBRARY");
  if (configured && *configured) return {configured};
  std::vector<std::string> c = {"libnvrtc.so.13", "libnvrtc.so", "/usr/local/cuda/lib64/libnvrtc.so.13",
                                "/usr/local/cuda/lib64/libnvrtc.so"};
#ifdef MOREH_NVRTC_BUILD_LIBRARY
  c.push_back(MOREH_NVRTC_BUILD_LIBRARY);
#endif
  return c;
}

Loaded load() {
  Loaded l;
  void* lib = nullptr;
  std::vector<std::string> failures;
  for (const std::string& path : candidates()) {
    lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib) {
      l.library = path;
      break;
    }
    const char* e = dlerror();
    failures.push_back(e ? e : path + ": cannot be loaded");
  }
  if (!lib) {
    const char* configured = std::getenv("MOREH_NVRTC_LIBRARY");
    l.reason = configured && *configured
                   ? fmt::format("MOREH_NVRTC_LIBRARY cannot be loaded ({})", fmt::join(failures, "; "))
                   : fmt::format("NVRTC not found ({}); set MOREH_NVRTC_LIBRARY to libnvrtc.so's path",
                                 fmt::join(failures, "; "));
    return l;
  }
  // The library stays loaded for the process.
#define MOREH_NVRTC_RESOLVE(member, function)                                                            \
  l.api.member = reinterpret_cast<decltype(l.api.member)>(dlsym(lib, MOREH_NVRTC_STR(function)));      \
  if (!l.api.member) {                                                                                 \
    l.reason = fmt::format("{} lacks {} (NVRTC older than 11.1)", l.library, MOREH_NVRTC_STR(function)); \
    return l;                                                                                          \
  }
  MOREH_NVRTC_FUNCTIONS(MOREH_NVRTC_RESOLVE)
#undef MOREH_NVRTC_RESOLVE
  int major = 0, minor = 0;
  l.api.Version(&major, &minor);
  l.version = major * 1000 + minor * 10;
  int n = 0;
  if (l.api.GetNumSupportedArchs(&n) == NVRTC_SUCCESS && n > 0) {
    l.architectures.resize(n);
    if (l.api.GetSupportedArchs(l.architectures.data()) != NVRTC_SUCCESS) l.architectures.clear();
    std::sort(l.architectures.begin(), l.architectures.end());
  }
  l.ok = true;
  log().debug("NVRTC {}.{} loaded from {} (architectures {})", major, minor, l.library, fmt::join(l.architectures, ", "));
  return l;
}

const Loaded& loaded() {
  static const Loaded l = load();
  return l;
}

const Loaded& require() {
  const Loaded& l = loaded();
  if (!l.ok) throw Error("NVRTC is unavailable: " + l.reason);
  return l;
}

std::string program_log(const Nvrtc& api, nvrtcProgram program) {
  size_t size = 0;
  if (api.GetProgramLogSize(program, &size) != NVRTC_SUCCESS || size <= 1) return "";
  std::string log(size, '\0');
  if (api.GetProgramLog(program, log.data()) != NVRTC_SUCCESS) return "";
  while (!log.empty() && (log.back() == '\0' || log.back() == '\n')) log.pop_back();
  return log;
}

}  // namespace

bool nvrtc_available() { return loaded().ok; }

std::string nvrtc_unavailable_reason() { return loaded().ok ? std::string() : loaded().reason; }

std::string nvrtc_library() { return loaded().library; }

int nvrtc_version() { return require().version; }

std::vector<int> nvrtc_architectures() { return require().architectures; }

NvrtcResult nvrtc_compile(std::string_view source, std::string_view name, int arch, NvrtcOutput output,
                          std::span<const std::string> options) {
  const Loaded& l = require();
  const Nvrtc& api = l.api;
  if (!l.architectures.empty() && !std::binary_search(l.architectures.begin(), l.architectures.end(), arch)) {
    throw Error(fmt::format("NVRTC {}.{} cannot compile for compute capability {}.{} (it knows {})", l.version / 1000,
                            l.version % 1000 / 10, arch / 10, arch % 10, fmt::join(l.architectures, ", ")));
  }
  const auto start = std::chrono::steady_clock::now();
  const std::string text(source), program_name(name);
  nvrtcProgram program = nullptr;
  nvrtcResult r = api.CreateProgram(&program, text.c_str(), program_name.c_str(), 0, nullptr, nullptr);
  if (r != NVRTC_SUCCESS) {
    throw NvrtcError(fmt::format("nvrtcCreateProgram({}): {}", program_name, api.GetErrorString(r)), "");
  }
  struct Destroy {
    const Nvrtc& api;
    nvrtcProgram& program;
    ~Destroy() { api.DestroyProgram(&program); }
  } destroy{api, program};

  std::vector<std::string> all = {
      fmt::format("--gpu-architecture={}_{}", output == NvrtcOutput::kCubin ? "sm" : "compute", arch), "-std=c++17"};
  all.insert(all.end(), options.begin(), options.end());
  std::vector<const char*> argv;
  for (const std::string& o : all) argv.push_back(o.c_str());
  r = api.CompileProgram(program, static_cast<int>(argv.size()), argv.data());
  NvrtcResult result;
  result.log = program_log(api, program);
  if (r != NVRTC_SUCCESS) {
    throw NvrtcError(fmt::format("compiling {} for sm_{}: {}\n{}", program_name, arch, api.GetErrorString(r), result.log),
                     result.log);
  }
  size_t size = 0;
  if (output == NvrtcOutput::kCubin) {
    r = api.GetCUBINSize(program, &size);
    if (r == NVRTC_SUCCESS) {
      result.binary.resize(size);
      r = api.GetCUBIN(program, result.binary.data());
    }
  } else {
    r = api.GetPTXSize(program, &size);
    if (r == NVRTC_SUCCESS) {
      result.binary.resize(size);
      r = api.GetPTX(program, result.binary.data());
    }
  }
  if (r != NVRTC_SUCCESS) {
    throw NvrtcError(fmt::format("reading {}'s {}: {}", program_name, output == NvrtcOutput::kCubin ? "cubin" : "PTX",
                                 api.GetErrorString(r)),
                     result.log);
  }
  result.output = output;
  result.arch = arch;
  result.milliseconds = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace moreh::runtime::cuda
