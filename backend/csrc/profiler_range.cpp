#include "backend/csrc/profiler_range.h"

#include <ATen/record_function.h>
#include <c10/util/ThreadLocalDebugInfo.h>

#include <optional>

namespace moreh::backend {

namespace {

// On the device's thread for one program: the submitting thread's profiler state, then the range in it; the
// destructor closes the range and gives the thread its own state back.
class DeviceRunRange {
 public:
  DeviceRunRange(const at::RecordFunctionTLS& callbacks, std::shared_ptr<c10::ThreadLocalDebugInfo> profiler)
      : saved_(at::get_record_function_tls_()), guard_(std::move(profiler)) {
    at::set_record_function_tls_(callbacks);
    if (auto step = at::getStepCallbacksUnlessEmpty(at::RecordScope::USER_SCOPE)) {
      range_.emplace(std::move(*step));
      range_->before("moreh::device_run");
    }
  }
  ~DeviceRunRange() {
    range_.reset();  // ends the range while the profiler's state is still this thread's
    at::set_record_function_tls_(saved_);
  }
  DeviceRunRange(const DeviceRunRange&) = delete;
  DeviceRunRange& operator=(const DeviceRunRange&) = delete;

 private:
  at::RecordFunctionTLS saved_;
  c10::DebugInfoGuard guard_;
  std::optional<at::RecordFunction> range_;
};

}  // namespace

runtime::Executor::ProgramScope profiler_program_scope() {
  return [](uint64_t) -> runtime::Executor::ProgramOpener {
    if (!at::hasCallbacks()) return nullptr;  // no profiler: nothing captured, nothing opened
    auto callbacks = std::make_shared<const at::RecordFunctionTLS>(at::get_record_function_tls_());
    std::shared_ptr<c10::ThreadLocalDebugInfo> profiler = c10::ThreadLocalDebugInfo::current();
    return [callbacks, profiler](int) -> std::shared_ptr<void> {
      return std::make_shared<DeviceRunRange>(*callbacks, profiler);
    };
  };
}

}  // namespace moreh::backend
