#include "runtime/cuda/kernel_cache.h"

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string_view>

#include "runtime/cuda/cuda_driver.h"
#include "runtime/base/spdlog_logger.h"

namespace moreh::runtime::cuda {

LaunchShape elementwise_launch_shape(uint64_t count, int sm_count) {
  const uint64_t threads = kElementwiseBlockSize;
  const uint64_t needed = (count + threads - 1) / threads;
  const uint64_t cap = static_cast<uint64_t>(std::max(sm_count, 1)) * kBlocksPerSm;
  return {static_cast<unsigned>(std::max<uint64_t>(1, std::min(needed, cap))), static_cast<unsigned>(threads)};
}

CompileTarget compile_target(int capability, const std::vector<int>& nvrtc_architectures) {
  if (nvrtc_architectures.empty() ||
      std::binary_search(nvrtc_architectures.begin(), nvrtc_architectures.end(), capability)) {
    return {capability, NvrtcOutput::kCubin};
  }
  // The newest architecture not above the device's; its PTX runs on the device (same or newer).
  auto it = std::upper_bound(nvrtc_architectures.begin(), nvrtc_architectures.end(), capability);
  if (it == nvrtc_architectures.begin()) {
    throw Error(fmt::format("NVRTC compiles for compute capability {}.{} and newer, not for this device's {}.{}",
                            nvrtc_architectures.front() / 10, nvrtc_architectures.front() % 10, capability / 10,
                            capability % 10));
  }
  return {*std::prev(it), NvrtcOutput::kPtx};
}

KernelCache& KernelCache::instance() {
  static KernelCache* cache = new KernelCache;  // never destroyed: modules outlive static destruction order
  return *cache;
}

const KernelCache::Device& KernelCache::device(CUdevice dev) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = devices_.find(dev);
    if (it != devices_.end()) return it->second;
  }
  const Driver& d = require_driver();
  int major = 0, minor = 0, sms = 0;
  check(d.DeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute");
  check(d.DeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "cuDeviceGetAttribute");
  check(d.DeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev), "cuDeviceGetAttribute");
  Device info;
  info.capability = major * 10 + minor;
  info.sm_count = sms;
  info.target = compile_target(info.capability, nvrtc_architectures());
  std::lock_guard<std::mutex> lock(mutex_);
  return devices_.emplace(dev, info).first->second;  // std::map: references stay valid
}

std::shared_ptr<const NvrtcResult> KernelCache::binary(const ElementwiseKernel& kernel, const std::string& key,
                                                       uint64_t hash, const CompileTarget& target, bool& compiled) {
  std::promise<std::shared_ptr<const NvrtcResult>> promise;
  std::shared_future<std::shared_ptr<const NvrtcResult>> result;
  std::string name;
  compiled = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto [it, inserted] = binaries_.try_emplace({hash, target.arch});
    if (inserted) {
      it->second.key = key;
      it->second.name = kernel.function_name();
      it->second.result = promise.get_future().share();
      compiled = true;
      ++stats_.misses;
    } else if (it->second.key != key) {
      throw Error(fmt::format("fused kernels {} and {} have the same hash {:016x}", it->second.key, key, hash));
    }
    result = it->second.result;
    name = it->second.name;
  }
  if (compiled) {  // outside the lock: other kernels compile and launch meanwhile; this one's users wait
    try {
      // A kept binary is this kernel's when it was compiled from the same text (the key alone would take
      // binaries an older code generator made).
      const std::string source = kernel.source();
      if (auto kept = read_from_disk(source, hash, target)) {
        promise.set_value(std::move(kept));
        return result.get();
      }
      auto r = std::make_shared<NvrtcResult>(nvrtc_compile(source, name + ".cu", target.arch, target.output));
      write_to_disk(source, hash, target, *r);
      log().debug("compiled fused kernel {} for {}_{} in {:.1f} ms: {}", name,
                  target.output == NvrtcOutput::kCubin ? "sm" : "compute", target.arch, r->milliseconds, key);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.compile_milliseconds += r->milliseconds;
      }
      promise.set_value(std::move(r));
    } catch (...) {
      promise.set_exception(std::current_exception());  // every later user sees the same error
    }
  }
  return result.get();
}

void KernelCache::set_disk_dir(std::string dir) {
  std::lock_guard<std::mutex> lock(mutex_);
  disk_dir_ = std::move(dir);
}

std::string KernelCache::disk_path(uint64_t hash, const CompileTarget& target) const {
  return fmt::format("{}/{:016x}-{}_{}.bin", disk_dir_, hash, target.output == NvrtcOutput::kCubin ? "sm" : "compute",
                     target.arch);
}

// A kept binary: "moreh-kernel 2\n", the length of the source it was compiled from and the source (which
// holds the key), then the binary.
static constexpr std::string_view kDiskMagic = "moreh-kernel 2\n";

std::shared_ptr<const NvrtcResult> KernelCache::read_from_disk(const std::string& source, uint64_t hash,
                                                                const CompileTarget& target) {
  std::string path;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (disk_dir_.empty()) return nullptr;
    path = disk_path(hash, target);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return nullptr;
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string head = fmt::format("{}{}\n{}", kDiskMagic, source.size(), source);
  if (content.size() <= head.size() || content.compare(0, head.size(), head) != 0) {
    log().debug("kept kernel {} is not this kernel's (or is damaged): compiling it again", path);
    return nullptr;
  }
  auto r = std::make_shared<NvrtcResult>();
  r->binary.assign(content.begin() + static_cast<std::ptrdiff_t>(head.size()), content.end());
  r->output = target.output;
  r->arch = target.arch;
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.disk_hits;
  return r;
}

void KernelCache::write_to_disk(const std::string& source, uint64_t hash, const CompileTarget& target,
                                const NvrtcResult& r) {
  std::string path;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (disk_dir_.empty()) return;
    path = disk_path(hash, target);
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  const std::string tmp = fmt::format("{}.{}.tmp", path, static_cast<uint64_t>(::getpid()));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << kDiskMagic << source.size() << '\n' << source;
    out.write(r.binary.data(), static_cast<std::streamsize>(r.binary.size()));
    if (!out) {
      log().debug("could not keep fused kernel in {}", path);
      std::filesystem::remove(tmp, ec);
      return;
    }
  }
  std::filesystem::rename(tmp, path, ec);  // whole or not at all, whoever else writes it
  if (ec) std::filesystem::remove(tmp, ec);
}

void KernelCache::prepare(std::shared_ptr<const ElementwiseKernel> kernel, const CompileTarget& target) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (binaries_.count({kernel->hash(), target.arch})) return;  // compiled, or being compiled
  prepare_queue_.emplace_back(std::move(kernel), target);
  if (prepare_threads_ < kPrepareThreads && prepare_threads_ < prepare_queue_.size() + prepare_running_) {
    ++prepare_threads_;
    std::thread([this] { prepare_worker(); }).detach();
  }
  prepare_changed_.notify_all();
}

void KernelCache::prepare_worker() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (prepare_queue_.empty()) {  // nothing left: the thread ends (a later prepare starts another)
      --prepare_threads_;
      prepare_changed_.notify_all();
      return;
    }
    auto [kernel, target] = std::move(prepare_queue_.front());
    prepare_queue_.pop_front();
    ++prepare_running_;
    lock.unlock();
    try {
      bool compiled = false;
      binary(*kernel, kernel->key(), kernel->hash(), target, compiled);
    } catch (const std::exception& e) {  // kept in the binary's future: the launch that needs it throws it
      log().debug("preparing fused kernel {} failed: {}", kernel->function_name(), e.what());
    }
    lock.lock();
    --prepare_running_;
    prepare_changed_.notify_all();
  }
}

bool KernelCache::wait_prepared(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  // Also until the workers have ended: a cache may be destroyed once this returns.
  return prepare_changed_.wait_for(lock, timeout, [&] { return prepare_queue_.empty() && prepare_threads_ == 0; });
}

CUfunction KernelCache::function(const ElementwiseKernel& kernel) {
  const Driver& d = require_driver();
  CUcontext context = nullptr;
  check(d.CtxGetCurrent(&context), "cuCtxGetCurrent");
  if (!context) throw Error("launching a fused kernel needs a current CUDA context");
  CUdevice dev = 0;
  check(d.CtxGetDevice(&dev), "cuCtxGetDevice");
  const Device& info = device(dev);
  std::string built;  // a plan's kernels are frozen: their key is neither built nor copied per launch
  const std::string& key = kernel.frozen() ? kernel.frozen_key() : (built = kernel.key());
  const uint64_t hash = kernel.hash();
  const auto slot = std::make_tuple(context, hash, info.target.arch);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = functions_.find(slot);
    if (it != functions_.end() && it->second.key == key) {
      ++stats_.hits;
      return it->second.function;
    }
  }
  bool compiled = false;
  std::shared_ptr<const NvrtcResult> bin = binary(kernel, key, hash, info.target, compiled);
  Loaded loaded;
  loaded.key = key;
  check(d.ModuleLoadData(&loaded.module, bin->binary.data()), "cuModuleLoadData (fused elementwise kernel)");
  const CUresult r = d.ModuleGetFunction(&loaded.function, loaded.module, kernel.function_name().c_str());
  if (r != CUDA_SUCCESS) {
    d.ModuleUnload(loaded.module);
    check(r, "cuModuleGetFunction (fused elementwise kernel)");
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (!compiled) ++stats_.hits;
  auto [it, inserted] = functions_.try_emplace(slot, loaded);
  if (!inserted) {
    d.ModuleUnload(loaded.module);  // another thread loaded it meanwhile
  } else {
    ++stats_.loads;
  }
  return it->second.function;
}

void KernelCache::launch(const ElementwiseKernel& kernel, CUstream stream, const ElementwiseArguments& args) {
  KernelParameters params = kernel.parameters(args);
  if (args.count == 0) return;
  CUfunction f = function(kernel);
  const Driver& d = require_driver();
  CUdevice dev = 0;
  check(d.CtxGetDevice(&dev), "cuCtxGetDevice");
  const LaunchShape shape = elementwise_launch_shape(args.count, device(dev).sm_count);
  check(d.LaunchKernel(f, shape.blocks, 1, 1, shape.threads, 1, 1, 0, stream, params.pointers(), nullptr),
        "cuLaunchKernel (fused elementwise kernel)");
}

void KernelCache::release_context(CUcontext context) {
  const Driver* d = driver();
  std::lock_guard<std::mutex> lock(mutex_);
  CUcontext previous = nullptr;
  bool switched = false;
  for (auto it = functions_.begin(); it != functions_.end();) {
    if (std::get<0>(it->first) != context) {
      ++it;
      continue;
    }
    if (d && !switched) {  // a module is unloaded from the current context
      d->CtxGetCurrent(&previous);
      switched = d->CtxSetCurrent(context) == CUDA_SUCCESS;
    }
    if (d) d->ModuleUnload(it->second.module);
    it = functions_.erase(it);
  }
  if (switched) d->CtxSetCurrent(previous);
}

KernelCache::Stats KernelCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace moreh::runtime::cuda
