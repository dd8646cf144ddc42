#include "runtime/device/device.h"

#include <map>
#include <utility>

#include "runtime/kernels/elementwise_reduction.h"
#include "runtime/kernels/elementwise_reference.h"
#include "runtime/comm/collective_kernels.h"
#include "runtime/base/errors.h"

namespace moreh::runtime {

bool Event::query() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

void Event::wait(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  if (!done_cv_.wait_for(lock, timeout, [&] { return done_; }))
    throw TimeoutError("an event did not complete within " + std::to_string(timeout.count()) +
                       " ms (MOREH_SYNC_TIMEOUT)");
}

double Event::elapsed_ms_since(const Event& start) const {
  std::scoped_lock lock(mu_, start.mu_);
  if (!done_ || !start.done_) throw Error("elapsed time needs both events to have completed");
  return std::chrono::duration<double, std::milli>(completed_at_ - start.completed_at_).count();
}

void Event::complete() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    completed_at_ = std::chrono::steady_clock::now();
  }
  done_cv_.notify_all();
}

std::shared_ptr<Event> PhysicalDevice::record_event() {
  auto event = std::make_shared<Event>();
  submit([event] { event->complete(); });
  return event;
}

PhysicalBlock::PhysicalBlock(PhysicalDevice& device, void* data, uint64_t bytes, std::shared_ptr<void> owner)
    : device_(device), data_(data), bytes_(bytes), owner_(std::move(owner)) {}

PhysicalBlock::~PhysicalBlock() {
  provider_view_.reset();
  owner_.reset();
  device_.uncharge(bytes_);
}

uint64_t PhysicalDevice::available() const {
  uint64_t u = used_.load();
  return u >= capacity_ ? 0 : capacity_ - u;
}

void PhysicalDevice::charge(uint64_t bytes) {
  uint64_t before = used_.load();
  do {
    if (before + bytes > capacity_) throw OutOfMemoryError(name(), bytes, available(), capacity_);
  } while (!used_.compare_exchange_weak(before, before + bytes));
  uint64_t now = before + bytes, p = peak_.load();
  while (now > p && !peak_.compare_exchange_weak(p, now)) {
  }
}

std::unique_ptr<PhysicalBlock> PhysicalDevice::adopt(void* data, uint64_t bytes, std::shared_ptr<void> owner) {
  charge(bytes);
  adoptions_.fetch_add(1, std::memory_order_relaxed);
  return std::make_unique<PhysicalBlock>(*this, data, bytes, std::move(owner));
}

void PhysicalDevice::scale_in_stream(DataType type, void* data, uint64_t count, double factor) {
  if (!host_accessible()) throw Error(name() + " cannot scale its memory on the host");
  scale_elements(type, data, count, factor);
}

void PhysicalDevice::copy_2d_in_stream(void* dst, uint64_t dst_pitch, const void* src, uint64_t src_pitch,
                                       uint64_t width, uint64_t height) {
  if (width == 0) return;
  if (dst_pitch == width && src_pitch == width) return copy_in_stream(dst, src, width * height);
  for (uint64_t r = 0; r < height; ++r)
    copy_in_stream(static_cast<char*>(dst) + r * dst_pitch, static_cast<const char*>(src) + r * src_pitch, width);
}

void PhysicalDevice::accumulate_in_stream(DataType type, void* dst, const void* src, uint64_t count) {
  if (!host_accessible()) throw Error(name() + " cannot add to its memory on the host");
  const void* parts[2] = {dst, src};
  reduce_elements(type, ReduceOp::kSum, parts, dst, count);
}

void PhysicalDevice::elementwise_in_stream(const ElementwiseKernel& kernel, const ElementwiseArguments& args) {
  if (!host_accessible()) throw Error(name() + " cannot run a generated kernel on the host");
  evaluate_on_host(kernel, args);
}

void PhysicalDevice::divide_in_stream(DataType type, void* x, uint64_t count, DataType divisor, const void* y) {
  if (count == 0) return;
  ElementwiseArguments args;
  args.count = count;
  args.sizes = {static_cast<int64_t>(count)};
  args.inputs = {x, y};
  args.strides = {{}, {0}};
  args.outputs = {x};
  // One frozen kernel per pair of types, built once: a step divides every gradient (1F1B's deferred loss
  // division), and a kernel's key is what a GPU's kernel cache looks it up by.
  static const std::map<std::pair<DataType, DataType>, ElementwiseKernel> kernels = [] {
    std::map<std::pair<DataType, DataType>, ElementwiseKernel> k;
    for (DataType a : {DataType::kFloat32, DataType::kFloat64, DataType::kBFloat16, DataType::kFloat16})
      for (DataType b : {DataType::kFloat32, DataType::kFloat64, DataType::kBFloat16, DataType::kFloat16}) {
        ElementwiseKernel kernel = divide_by_scalar_kernel(a, b);
        kernel.freeze();
        k.emplace(std::make_pair(a, b), std::move(kernel));
      }
    return k;
  }();
  const auto it = kernels.find({type, divisor});
  if (it == kernels.end())  // not floating: the kernel's builder says why
    elementwise_in_stream(divide_by_scalar_kernel(type, divisor), args);
  else if (host_accessible())  // the kernel's bits in a plain loop (the host evaluator interprets it: slow)
    divide_elements(type, x, count, divisor, y);
  else
    elementwise_in_stream(it->second, args);
}

void PhysicalDevice::combine_scalars_in_stream(DataType type, void* x, const void* y, ScalarOp op) {
  if (!host_accessible()) throw Error(name() + " cannot combine scalars in its memory on the host");
  combine_scalars(type, x, y, op);
}

}  // namespace moreh::runtime
