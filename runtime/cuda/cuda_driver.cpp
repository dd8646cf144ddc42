#include "runtime/cuda/cuda_driver.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <mutex>

#include "runtime/base/errors.h"

namespace moreh::runtime::cuda {
namespace {

#define MOREH_CUDA_STR2(x) #x
#define MOREH_CUDA_STR(x) MOREH_CUDA_STR2(x)

struct Loaded {
  Driver driver;
  bool ok = false;
  std::string reason;
};

Loaded load() {
  Loaded l;
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* e = dlerror();
    l.reason = e ? e : "libcuda.so.1 could not be loaded";
    return l;
  }
  // The library stays loaded for the process: modules and contexts outlive any one user.
#define MOREH_CUDA_RESOLVE(member, function)                                                       \
  l.driver.member = reinterpret_cast<decltype(l.driver.member)>(dlsym(lib, MOREH_CUDA_STR(function))); \
  if (!l.driver.member) {                                                                          \
    l.reason = fmt::format("libcuda.so.1 lacks {} (driver older than the CUDA headers moreh was built with)", \
                           MOREH_CUDA_STR(function));                                              \
    return l;                                                                                      \
  }
  MOREH_CUDA_DRIVER_FUNCTIONS(MOREH_CUDA_RESOLVE)
#undef MOREH_CUDA_RESOLVE
  const CUresult r = l.driver.Init(0);
  if (r != CUDA_SUCCESS) {
    const char* name = nullptr;
    l.driver.GetErrorName(r, &name);
    l.reason = fmt::format("cuInit: {}", name ? name : std::to_string(static_cast<int>(r)));
    return l;
  }
  l.ok = true;
  return l;
}

const Loaded& loaded() {
  static const Loaded l = load();
  return l;
}

}  // namespace

const Driver* driver() { return loaded().ok ? &loaded().driver : nullptr; }

std::string driver_unavailable_reason() { return loaded().ok ? std::string() : loaded().reason; }

const Driver& require_driver() {
  if (const Driver* d = driver()) return *d;
  throw Error("the CUDA driver is unavailable: " + driver_unavailable_reason());
}

std::string describe(CUresult result) {
  const Loaded& l = loaded();
  const char* name = nullptr;
  const char* text = nullptr;
  if (l.driver.GetErrorName) l.driver.GetErrorName(result, &name);
  if (l.driver.GetErrorString) l.driver.GetErrorString(result, &text);
  if (!name) return fmt::format("CUDA error {}", static_cast<int>(result));
  return text ? fmt::format("{}: {}", name, text) : std::string(name);
}

void check(CUresult result, const char* what) {
  if (result != CUDA_SUCCESS) throw Error(fmt::format("{}: {}", what, describe(result)));
}

}  // namespace moreh::runtime::cuda
