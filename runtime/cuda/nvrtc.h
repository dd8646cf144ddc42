// NVRTC, CUDA's run-time compiler, loaded on first use with dlopen (like the driver, runtime/cuda/cuda_driver.h):
// one build runs with and without it. Searched in order: $MOREH_NVRTC_LIBRARY (only there when set), then
// libnvrtc.so.13 and libnvrtc.so on the loader's path, then /usr/local/cuda/lib64, then the libnvrtc that
// CMake found beside the nvrtc.h moreh was built with (e.g. pip's nvidia-cuda-nvrtc). Compiling needs no
// GPU. Built when nvrtc.h is found (MOREH_WITH_NVRTC).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/base/errors.h"

namespace moreh::runtime::cuda {

enum class NvrtcOutput : uint8_t {
  kCubin,  // machine code for exactly sm_<arch> (a device of that compute capability)
  kPtx,    // PTX for compute_<arch>, which the driver compiles for any device of that capability or newer
};

// A compile that failed (the source did not compile, or NVRTC refused the options): what() names the
// program and NVRTC's result and ends with the log; log() is the log alone.
class NvrtcError : public Error {
 public:
  NvrtcError(const std::string& what, std::string log) : Error(what), log_(std::move(log)) {}
  const std::string& log() const { return log_; }

 private:
  std::string log_;
};

struct NvrtcResult {
  std::vector<char> binary;  // the cubin, or the PTX text with its terminating NUL
  std::string log;           // warnings (empty when none)
  NvrtcOutput output = NvrtcOutput::kCubin;
  int arch = 0;              // 90 for sm_90 / compute_90
  double milliseconds = 0;   // the compile's wall time
};

// Whether NVRTC could be loaded (loads it on the first call; thread-safe).
bool nvrtc_available();
// Why not: every place tried and what dlopen said.
std::string nvrtc_unavailable_reason();
// Where the loaded library came from (a path or a soname).
std::string nvrtc_library();
// NVRTC's version as major * 1000 + minor * 10 (13050 for 13.5), like CUDA's version numbers.
int nvrtc_version();
// The compute capabilities it compiles for (75, 80, 86, ..., 90, ...), ascending.
std::vector<int> nvrtc_architectures();

// Compiles CUDA C `source` (program name `name`, shown in logs) for compute capability `arch` (90: sm_90).
// `options` are added to moreh's (-std=c++17 and the architecture). Throws Error when NVRTC is unavailable
// or does not know `arch`, NvrtcError when the compile fails.
NvrtcResult nvrtc_compile(std::string_view source, std::string_view name, int arch, NvrtcOutput output,
                          std::span<const std::string> options = {});

}  // namespace moreh::runtime::cuda
