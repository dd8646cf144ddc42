#include "backend/csrc/device_hooks.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "backend/csrc/moreh_storage.h"
#include "backend/csrc/pinned_host_allocator.h"
#include "runtime/device/device.h"

namespace moreh::backend {
namespace {

const c10::Device kDevice(kMoreh, 0);

// A CPU (mt19937) generator that says it belongs to moreh, so torch.Generator("moreh") and the
// device module's RNG functions work on it.
class MorehGeneratorImpl final : public at::CPUGeneratorImpl {
 public:
  explicit MorehGeneratorImpl(uint64_t seed = c10::default_rng_seed_val) : at::CPUGeneratorImpl(seed) {
    device_ = kDevice;
    key_set_ = c10::DispatchKeySet(c10::DispatchKey::PrivateUse1);
  }

 private:
  MorehGeneratorImpl* clone_impl() const override {
    auto* g = new MorehGeneratorImpl(current_seed());
    g->set_state(*get_state());
    return g;
  }
};

class MorehGuardImpl final : public c10::impl::DeviceGuardImplInterface {
  using EventHandle = std::shared_ptr<runtime::Event>;
  static std::chrono::milliseconds timeout() {
    return std::chrono::milliseconds(static_cast<int64_t>(std::min(engine().config().sync_timeout_s, 1e8) * 1000));
  }

 public:
  c10::DeviceType type() const override { return kMoreh; }
  c10::Device exchangeDevice(c10::Device d) const override {
    check(d);
    return kDevice;
  }
  c10::Device getDevice() const override { return kDevice; }
  void setDevice(c10::Device d) const override { check(d); }
  void uncheckedSetDevice(c10::Device) const noexcept override {}
  c10::Stream getStream(c10::Device) const noexcept override { return c10::Stream(c10::Stream::DEFAULT, kDevice); }
  c10::Stream getNewStream(c10::Device, int) const override { return c10::Stream(c10::Stream::DEFAULT, kDevice); }
  c10::Stream exchangeStream(c10::Stream) const noexcept override { return c10::Stream(c10::Stream::DEFAULT, kDevice); }
  c10::DeviceIndex deviceCount() const noexcept override { return 1; }
  void synchronizeDevice(const c10::DeviceIndex) const override { synchronize_device(); }
  void synchronizeStream(const c10::Stream&) const override { synchronize_device(); }
  bool queryStream(const c10::Stream&) const override { return engine().pending_ops() == 0 && !engine().device(0).busy(); }

  // torch.Event on moreh: an event after every op recorded so far (the pending step is flushed first).
  void record(void** event, const c10::Stream& stream, const c10::DeviceIndex, const c10::EventFlag) const override {
    flush_step();
    auto recorded = engine().device(0).record_event();
    if (*event) *static_cast<EventHandle*>(*event) = std::move(recorded);
    else *event = new EventHandle(std::move(recorded));
  }
  void block(void*, const c10::Stream&) const override {}  // one in-order stream: nothing to wait for
  bool queryEvent(void* event) const override { return !event || (*static_cast<EventHandle*>(event))->query(); }
  void destroyEvent(void* event, const c10::DeviceIndex) const noexcept override {
    delete static_cast<EventHandle*>(event);
  }
  void synchronizeEvent(void* event) const override {
    if (event) (*static_cast<EventHandle*>(event))->wait(timeout());
  }
  double elapsedTime(void* start, void* end, const c10::DeviceIndex) const override {
    TORCH_CHECK(start && end, "moreh: both events must be recorded before asking for the elapsed time");
    synchronizeEvent(start);
    synchronizeEvent(end);
    return (*static_cast<EventHandle*>(end))->elapsed_ms_since(**static_cast<EventHandle*>(start));
  }

 private:
  static void check(c10::Device d) {
    TORCH_CHECK(d.type() == kMoreh && (!d.has_index() || d.index() == 0), "moreh has one (virtual) device: ",
                "moreh:0; got ", d);
  }
};

class MorehHooks final : public at::PrivateUse1HooksInterface {
 public:
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return true; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
  void init() const override { (void)engine(); }
  c10::DeviceIndex deviceCount() const override { return 1; }
  void setCurrentDevice(c10::DeviceIndex d) const override {
    TORCH_CHECK(d == 0, "moreh has one (virtual) device: moreh:0; got moreh:", static_cast<int>(d));
  }
  c10::DeviceIndex getCurrentDevice() const override { return 0; }
  c10::DeviceIndex exchangeDevice(c10::DeviceIndex d) const override {
    setCurrentDevice(d);
    return 0;
  }
  c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex d) const override { return exchangeDevice(d); }
  const at::Generator& getDefaultGenerator(c10::DeviceIndex) const override { return default_generator(); }
  at::Generator getNewGenerator(c10::DeviceIndex) const override { return at::make_generator<MorehGeneratorImpl>(); }
  at::Device getDeviceFromPtr(void*) const override { return kDevice; }
  bool isPinnedPtr(const void* p) const override { return is_pinned_host_ptr(p); }
  c10::Allocator* getPinnedMemoryAllocator() const override { return pinned_host_allocator(); }
  // UntypedStorage.resize_ on a moreh storage.
  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t nbytes) const override {
    resize_storage_bytes(storage, nbytes);
  }
};

C10_REGISTER_GUARD_IMPL(PrivateUse1, MorehGuardImpl);

struct RegisterHooks {
  RegisterHooks() { at::RegisterPrivateUse1HooksInterface(new MorehHooks()); }
} g_register_hooks;

}  // namespace

const at::Generator& default_generator() {
  static at::Generator gen = at::make_generator<MorehGeneratorImpl>();
  return gen;
}

uint64_t next_seed(const c10::IValue& generator) {
  at::Generator gen = default_generator();
  if (generator.isGenerator()) {
    at::Generator g = generator.toGenerator();
    if (g.defined() && g.device().type() == kMoreh) gen = g;
  }
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get<at::CPUGeneratorImpl>()->random64();
}

}  // namespace moreh::backend
