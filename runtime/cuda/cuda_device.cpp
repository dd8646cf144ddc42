#include "runtime/cuda/cuda_device.h"

#include <fmt/format.h>

#include <array>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "runtime/comm/collective_kernels.h"
#include "runtime/cuda/cuda_driver.h"
#include "runtime/cuda/cuda_pinned_memory.h"
#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"
#ifdef MOREH_WITH_NVRTC
#include "runtime/cuda/kernel_cache.h"
#endif

namespace moreh::runtime {

using cuda::check;
using cuda::require_driver;
using cuda::ScopedContext;
using Clock = std::chrono::steady_clock;

namespace {

CUdeviceptr device_pointer(const void* p) { return reinterpret_cast<CUdeviceptr>(p); }

// cuMemAlloc/cuMemFree in the GPU's context, whatever thread asks (a block may go on any thread, also
// after its device is gone: the allocator keeps the context).
class CudaRawAllocator final : public RawDeviceAllocator {
 public:
  explicit CudaRawAllocator(std::shared_ptr<cuda::PrimaryContext> context) : context_(std::move(context)) {}

  void* allocate(uint64_t bytes) override {
    ScopedContext scope(context_->get());
    CUdeviceptr p = 0;
    const CUresult r = require_driver().MemAlloc(&p, bytes);
    if (r == CUDA_ERROR_OUT_OF_MEMORY) return nullptr;
    check(r, "cuMemAlloc");
    return reinterpret_cast<void*>(p);
  }

  void free(void* p) noexcept override {
    try {
      ScopedContext scope(context_->get());
      const CUresult r = require_driver().MemFree(device_pointer(p));
      if (r != CUDA_SUCCESS) log().warn("GPU {}: cuMemFree: {}", context_->ordinal(), cuda::describe(r));
    } catch (const std::exception& e) {
      log().warn("GPU {}: could not free device memory: {}", context_->ordinal(), e.what());
    }
  }

 private:
  std::shared_ptr<cuda::PrimaryContext> context_;
};

// Polls `query` (cuStreamQuery, cuEventQuery) until it stops answering CUDA_ERROR_NOT_READY: spinning
// briefly (a step that is about to end), then sleeping longer and longer up to a millisecond.
template <typename Query>
void wait_until_done(Query query, Clock::time_point deadline, const std::string& device,
                     std::chrono::milliseconds timeout, const char* what) {
  auto pause = std::chrono::microseconds(0);
  for (;;) {
    const CUresult r = query();
    if (r == CUDA_SUCCESS) return;
    if (r != CUDA_ERROR_NOT_READY) throw Error(fmt::format("{}: {}: {}", device, what, cuda::describe(r)));
    if (Clock::now() >= deadline)
      throw TimeoutError(fmt::format("{}: {} did not finish within {} ms (MOREH_SYNC_TIMEOUT)", device, what,
                                     timeout.count()));
    if (pause.count() == 0) {
      std::this_thread::yield();
      pause = std::chrono::microseconds(1);
    } else {
      std::this_thread::sleep_for(pause);
      pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(1));
    }
  }
}

void CUDA_CB complete_event(void* holder) {
  auto* event = static_cast<std::shared_ptr<Event>*>(holder);
  (*event)->complete();
  delete event;
}

}  // namespace

// Intervals during which the stream has work from this device outstanding: an item opens one when it
// starts to enqueue, and a host function the GPU runs after the item's work closes it.
struct CudaDevice::Activity {
  std::mutex mu;
  int outstanding = 0;
  Clock::time_point since;
  uint64_t ns = 0;

  void begin() {
    std::lock_guard<std::mutex> lock(mu);
    if (outstanding++ == 0) since = Clock::now();
  }
  void end() {
    std::lock_guard<std::mutex> lock(mu);
    if (--outstanding == 0)
      ns += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - since).count();
  }
  uint64_t total() {
    std::lock_guard<std::mutex> lock(mu);
    if (outstanding == 0) return ns;
    return ns + std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - since).count();
  }
  static void CUDA_CB end_on_gpu(void* holder) {
    auto* activity = static_cast<std::shared_ptr<Activity>*>(holder);
    (*activity)->end();
    delete activity;
  }
};

CudaDevice::CudaDevice(int index, int ordinal, uint64_t capacity, std::chrono::milliseconds wait_timeout)
    : PhysicalDevice(index, capacity),
      wait_timeout_(wait_timeout),
      context_(cuda::PrimaryContext::retain(ordinal)),
      activity_(std::make_shared<Activity>()) {
  const cuda::Driver& d = require_driver();
  std::array<char, 256> gpu{};
  check(d.DeviceGetName(gpu.data(), static_cast<int>(gpu.size()) - 1, context_->device()), "cuDeviceGetName");
  gpu_name_ = gpu.data();
  name_ = fmt::format("cuda:{} (GPU {}, {})", index, ordinal, gpu_name_);
  {
    ScopedContext scope(context_->get());
    check(d.StreamCreate(&stream_, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  }
  try {
    // The reserve limit keeps this device's cache within its share when logical devices share the GPU.
    pool_ = std::make_unique<DeviceMemoryPool>(std::make_shared<CudaRawAllocator>(context_), capacity);
    pinned_ = CudaPinnedMemory::shared(ordinal);
    const CUcontext ctx = context_->get();
    queue_ = std::make_unique<WorkQueue>(name_, std::chrono::milliseconds(0),
                                         [ctx] { check(require_driver().CtxSetCurrent(ctx), "cuCtxSetCurrent"); });
  } catch (...) {
    ScopedContext scope(context_->get());
    d.StreamDestroy(stream_);
    throw;
  }
}

CudaDevice::~CudaDevice() {
  queue_.reset();  // runs what is still queued
  try {
    wait_for_stream(Clock::now() + wait_timeout_, wait_timeout_);
  } catch (const std::exception& e) {
    log().warn("{}: closing with GPU work unfinished: {}", name_, e.what());
  }
  try {
    ScopedContext scope(context_->get());
    require_driver().StreamDestroy(stream_);
  } catch (const std::exception& e) {
    log().warn("{}: could not destroy its stream: {}", name_, e.what());
  }
  pool_.reset();  // cached blocks go back; blocks in use keep the context through the raw allocator
}

std::unique_ptr<PhysicalBlock> CudaDevice::allocate(uint64_t bytes) {
  charge(bytes);
  std::shared_ptr<void> memory;
  try {
    memory = pool_->allocate(bytes);
  } catch (...) {
    uncharge(bytes);
    throw;
  }
  if (!memory) {
    uncharge(bytes);
    throw OutOfMemoryError(name_ + " (the GPU has no free memory left)", bytes, available(), capacity());
  }
  allocations_.fetch_add(1, std::memory_order_relaxed);
  void* data = memory.get();
  return std::make_unique<PhysicalBlock>(*this, data, bytes, std::move(memory));
}

void CudaDevice::submit(std::function<void()> work) {
  queue_->submit([this, work = std::move(work)] {
    ScopedContext scope(context_->get());  // the worker has it current; a waiting thread may not
    activity_->begin();
    struct CloseAfterTheGpu {
      CudaDevice& device;
      ~CloseAfterTheGpu() {
        auto* holder = new std::shared_ptr<Activity>(device.activity_);
        if (require_driver().LaunchHostFunc(device.stream_, &Activity::end_on_gpu, holder) != CUDA_SUCCESS) {
          delete holder;
          device.activity_->end();  // the stream is broken; synchronize() reports it
        }
      }
    } close{*this};
    work();
  });
}

bool CudaDevice::busy() const {
  if (queue_->busy()) return true;
  ScopedContext scope(context_->get());
  return require_driver().StreamQuery(stream_) == CUDA_ERROR_NOT_READY;
}

uint64_t CudaDevice::busy_ns() const { return activity_->total(); }

void CudaDevice::wait_for_stream(Clock::time_point deadline, std::chrono::milliseconds timeout) const {
  ScopedContext scope(context_->get());
  const cuda::Driver& d = require_driver();
  wait_until_done([&] { return d.StreamQuery(stream_); }, deadline, name_, timeout, "GPU work");
}

void CudaDevice::synchronize(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::exception_ptr failure;
  try {
    queue_->synchronize(timeout);
  } catch (const TimeoutError&) {
    throw;
  } catch (...) {
    failure = std::current_exception();  // the work's error comes first, once the stream is idle
  }
  try {
    wait_for_stream(deadline, timeout);
  } catch (...) {
    if (!failure) failure = std::current_exception();
  }
  if (failure) std::rethrow_exception(failure);
}

std::shared_ptr<Event> CudaDevice::record_event() {
  auto event = std::make_shared<Event>();
  submit([this, event] {
    auto* holder = new std::shared_ptr<Event>(event);
    const CUresult r = require_driver().LaunchHostFunc(stream_, &complete_event, holder);
    if (r != CUDA_SUCCESS) {
      delete holder;
      event->complete();  // nobody waits forever; synchronize() reports the failure
      check(r, "cuLaunchHostFunc");
    }
  });
  return event;
}

void CudaDevice::copy_in_stream(void* dst, const void* src, uint64_t bytes) {
  if (bytes == 0) return;
  ScopedContext scope(context_->get());
  check(require_driver().MemcpyAsync(device_pointer(dst), device_pointer(src), bytes, stream_), "cuMemcpyAsync");
}

void CudaDevice::zero_in_stream(void* dst, uint64_t bytes) {
  if (bytes == 0) return;
  ScopedContext scope(context_->get());
  check(require_driver().MemsetD8Async(device_pointer(dst), 0, bytes, stream_), "cuMemsetD8Async");
}

void CudaDevice::copy_now(void* dst, const void* src, uint64_t bytes) {
  if (bytes == 0) return;
  const auto deadline = Clock::now() + wait_timeout_;
  ScopedContext scope(context_->get());
  const cuda::Driver& d = require_driver();
  check(d.MemcpyAsync(device_pointer(dst), device_pointer(src), bytes, stream_), "cuMemcpyAsync");
  CUevent done = nullptr;
  check(d.EventCreate(&done, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  struct Destroy {
    const cuda::Driver& d;
    CUevent e;
    ~Destroy() { d.EventDestroy(e); }
  } destroy{d, done};
  check(d.EventRecord(done, stream_), "cuEventRecord");
  wait_until_done([&] { return d.EventQuery(done); }, deadline, name_, wait_timeout_, "a copy");
}

void CudaDevice::read(void* host_dst, const void* src, uint64_t bytes) { copy_now(host_dst, src, bytes); }

void CudaDevice::write(void* dst, const void* host_src, uint64_t bytes) { copy_now(dst, host_src, bytes); }

namespace {

bool floating(DataType type) {
  return type == DataType::kFloat32 || type == DataType::kFloat64 || type == DataType::kBFloat16 ||
         type == DataType::kFloat16;
}

}  // namespace

void CudaDevice::scale_in_stream(DataType type, void* data, uint64_t count, double factor) {
  if (!floating(type)) throw std::invalid_argument("host arithmetic on " + std::string(name_of(type)));
  if (count == 0) return;
#ifdef MOREH_WITH_NVRTC
  ScopedContext scope(context_->get());
  if (factor == 0) {  // zeros, even over NaN, without a kernel (as scale_elements does)
    check(require_driver().MemsetD8Async(device_pointer(data), 0, count * size_of(type), stream_), "cuMemsetD8Async");
    return;
  }
  ElementwiseArguments args;
  args.count = count;
  args.inputs = {data};
  args.scalars = {factor};
  args.outputs = {data};
  cuda::KernelCache::instance().launch(scale_in_place_kernel(type), stream_, args);
#else
  (void)data;
  (void)factor;
  throw Error(name_ + ": scaling device memory needs a generated kernel, and this build has no NVRTC");
#endif
}

void CudaDevice::accumulate_in_stream(DataType type, void* dst, const void* src, uint64_t count) {
  if (count == 0) return;
#ifdef MOREH_WITH_NVRTC
  ScopedContext scope(context_->get());
  ElementwiseArguments args;
  args.count = count;
  args.inputs = {dst, src};
  args.outputs = {dst};
  cuda::KernelCache::instance().launch(sum_kernel(type, 2), stream_, args);  // dst = dst + src
#else
  (void)type;
  (void)dst;
  (void)src;
  throw Error(name_ + ": adding to device memory needs a generated kernel, and this build has no NVRTC");
#endif
}

void CudaDevice::combine_scalars_in_stream(DataType type, void* x, const void* y, ScalarOp op) {
  if (!floating(type)) throw std::invalid_argument("host arithmetic on " + std::string(name_of(type)));
#ifdef MOREH_WITH_NVRTC
  ScopedContext scope(context_->get());
  ElementwiseArguments args;
  args.count = 1;
  args.inputs = {x, y};
  args.outputs = {x};
  cuda::KernelCache::instance().launch(combine_scalars_kernel(type, op), stream_, args);
#else
  (void)x;
  (void)y;
  (void)op;
  throw Error(name_ + ": combining scalars in device memory needs a generated kernel, and this build has no NVRTC");
#endif
}

void CudaDevice::elementwise_in_stream(const ElementwiseKernel& kernel, const ElementwiseArguments& args) {
#ifdef MOREH_WITH_NVRTC
  ScopedContext scope(context_->get());
  cuda::KernelCache::instance().launch(kernel, stream_, args);
#else
  (void)kernel;
  (void)args;
  throw Error(name_ + ": fused elementwise kernels need NVRTC, and this build has none");
#endif
}

void CudaDevice::prepare_elementwise(std::shared_ptr<const ElementwiseKernel> kernel) {
#ifdef MOREH_WITH_NVRTC
  if (!cuda::nvrtc_available()) return;  // the launch reports it
  CUdevice dev = 0;
  check(require_driver().DeviceGet(&dev, ordinal()), "cuDeviceGet");
  auto& cache = cuda::KernelCache::instance();
  cache.prepare(std::move(kernel), cache.target_of(dev));
#else
  (void)kernel;
#endif
}

}  // namespace moreh::runtime
