#include "backend/csrc/interrupt_handler.h"

#include <pybind11/pybind11.h>

#include <csignal>

#include "runtime/base/interrupt.h"
#include "runtime/base/logging.h"

namespace moreh::backend {
namespace {

struct sigaction previous {};

void on_sigint(int sig, siginfo_t* info, void* context) {
  runtime::request_interrupt();
  if (previous.sa_flags & SA_SIGINFO) {
    if (previous.sa_sigaction) previous.sa_sigaction(sig, info, context);
  } else if (previous.sa_handler == SIG_DFL) {
    // Nobody handled SIGINT before: end the process as it would have ended.
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  } else if (previous.sa_handler != SIG_IGN && previous.sa_handler) {
    previous.sa_handler(sig);
  }
}

}  // namespace

void install_interrupt_handler() {
  struct sigaction mine {};
  mine.sa_sigaction = on_sigint;
  mine.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&mine.sa_mask);
  struct sigaction old {};
  if (sigaction(SIGINT, &mine, &old) != 0) {
    runtime::log_message(runtime::LogLevel::kWarning,
                         "moreh: cannot install a SIGINT handler; Ctrl-C waits for the running step to end");
    return;
  }
  if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_IGN) {
    sigaction(SIGINT, &old, nullptr);  // ignored (a background job): stays ignored
    return;
  }
  previous = old;
}

void raise_pending_interrupt() {
  if (!Py_IsInitialized()) return;
  pybind11::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() != 0) throw pybind11::error_already_set();
}

}  // namespace moreh::backend
