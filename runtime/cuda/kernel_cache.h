// Compiled fused elementwise kernels: compiled with NVRTC once per (kernel structure, compute capability),
// loaded once per CUDA context, launched with cuLaunchKernel. Thread-safe. Built with CUDA and NVRTC.
#pragma once
#include <cuda.h>

#include <cstdint>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "runtime/kernels/elementwise_kernel.h"
#include "runtime/cuda/nvrtc.h"

namespace moreh::runtime::cuda {

// A grid for a grid-stride elementwise kernel: kElementwiseBlockSize threads per block, enough blocks for
// every element but at most kBlocksPerSm per SM (each thread then loops).
struct LaunchShape {
  unsigned blocks = 0;
  unsigned threads = 0;
};
inline constexpr unsigned kBlocksPerSm = 8;  // 2048 resident threads per SM at 256 threads per block
LaunchShape elementwise_launch_shape(uint64_t count, int sm_count);

// What NVRTC is asked for on a device of compute capability `capability` (90 for 9.0), given the
// architectures NVRTC knows (ascending): a cubin when it knows the device's, else PTX for the newest one
// below it (the driver compiles that PTX for the device). Throws Error when NVRTC knows none that old.
struct CompileTarget {
  int arch = 0;
  NvrtcOutput output = NvrtcOutput::kCubin;
};
CompileTarget compile_target(int capability, const std::vector<int>& nvrtc_architectures);

class KernelCache {
 public:
  struct Stats {
    uint64_t hits = 0;                // function() calls that compiled nothing
    uint64_t misses = 0;              // compiles (one per kernel structure and architecture)
    uint64_t loads = 0;               // cuModuleLoadData calls (one per compile target and context)
    double compile_milliseconds = 0;  // NVRTC's time over every compile
    uint64_t disk_hits = 0;           // compiles saved by a binary an earlier process wrote (set_disk_dir)
  };

  KernelCache() = default;
  KernelCache(const KernelCache&) = delete;
  KernelCache& operator=(const KernelCache&) = delete;
  // Modules stay loaded until their context goes (call release_context before destroying one).
  ~KernelCache() = default;

  // The process's cache.
  static KernelCache& instance();

  // Where compiled binaries are kept across processes ("" : nowhere, the default): a compile first looks
  // for <dir>/<hash>-<target>.bin holding the kernel's full key, and writes it after compiling (atomically;
  // a directory that cannot be written only costs the saving).
  void set_disk_dir(std::string dir);

  // `kernel`'s function in the calling thread's current CUDA context: compiled (NVRTC) when no kernel of
  // its structure was compiled for the context's device's architecture, loaded when not yet in this
  // context. Throws Error (no current context, NVRTC unavailable, a driver error) or NvrtcError.
  CUfunction function(const ElementwiseKernel& kernel);

  // Starts compiling `kernel` for `target` on a background thread (at most kPrepareThreads at once) when no
  // kernel of its structure was compiled or is being compiled for it: a plan's kernels compile side by side
  // before its first step launches them, and function() then waits for (or reuses) that compile. Needs NVRTC,
  // not a GPU. A failed compile is reported by the function() call that needs it.
  static constexpr unsigned kPrepareThreads = 4;
  void prepare(std::shared_ptr<const ElementwiseKernel> kernel, const CompileTarget& target);
  // Waits until no prepared compile is pending or running and the workers have ended; false past `timeout`.
  bool wait_prepared(std::chrono::milliseconds timeout);
  // The target kernels compile for on device `dev` (its capability against NVRTC's architectures).
  CompileTarget target_of(CUdevice dev) { return device(dev).target; }

  // Launches `kernel` over `args` on `stream` (asynchronous) in the current context; nothing when
  // args.count is 0. Throws std::invalid_argument when `args` do not fit the kernel.
  void launch(const ElementwiseKernel& kernel, CUstream stream, const ElementwiseArguments& args);

  // Unloads the modules loaded in `context` and forgets them (before the context is destroyed).
  void release_context(CUcontext context);

  Stats stats() const;

 private:
  struct Binary {
    std::string key;  // the kernel's full key: a hash collision is an error, not a wrong kernel
    std::string name;
    std::shared_future<std::shared_ptr<const NvrtcResult>> result;
  };
  struct Loaded {
    std::string key;
    CUmodule module = nullptr;
    CUfunction function = nullptr;
  };
  struct Device {
    int capability = 0;
    int sm_count = 0;
    CompileTarget target;
  };

  const Device& device(CUdevice dev);
  // The binary for (key, target), compiling it in this thread when nobody has.
  std::shared_ptr<const NvrtcResult> binary(const ElementwiseKernel& kernel, const std::string& key, uint64_t hash,
                                            const CompileTarget& target, bool& compiled);

  void prepare_worker();
  // The binary an earlier process compiled from `source` for target, if one is kept (same hash, same text).
  std::shared_ptr<const NvrtcResult> read_from_disk(const std::string& source, uint64_t hash, const CompileTarget& target);
  void write_to_disk(const std::string& source, uint64_t hash, const CompileTarget& target, const NvrtcResult& r);
  std::string disk_path(uint64_t hash, const CompileTarget& target) const;

  mutable std::mutex mutex_;
  std::condition_variable prepare_changed_;
  std::deque<std::pair<std::shared_ptr<const ElementwiseKernel>, CompileTarget>> prepare_queue_;
  unsigned prepare_threads_ = 0;  // workers alive (detached: the cache is never destroyed)
  unsigned prepare_running_ = 0;  // compiles a worker is doing now
  std::map<std::pair<uint64_t, int>, Binary> binaries_;                  // (hash, arch)
  std::map<std::tuple<CUcontext, uint64_t, int>, Loaded> functions_;     // (context, hash, arch)
  std::map<CUdevice, Device> devices_;
  std::string disk_dir_;
  Stats stats_;
};

}  // namespace moreh::runtime::cuda
