// Ctrl-C during a step: the runtime stops the running steps at their next kernel, and Python hears of it as
// a KeyboardInterrupt (runtime/base/interrupt.h).
#pragma once

namespace moreh::backend {

// Installs a SIGINT handler that asks the runtime to stop, then hands the signal to the handler it replaced
// (Python's, which raises KeyboardInterrupt once the interpreter runs again). A SIGINT that was ignored
// stays ignored. A script that installs its own handler later (signal.signal) replaces this one: its steps
// then run to their end before Python sees the signal.
void install_interrupt_handler();

// After the runtime reported an interrupted step: runs Python's pending signal handlers and, when they raise
// (KeyboardInterrupt), throws that Python exception; returns when they raise nothing.
void raise_pending_interrupt();

}  // namespace moreh::backend
