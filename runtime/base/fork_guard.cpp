#include "runtime/base/fork_guard.h"

#include <pthread.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <string>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

std::atomic<bool> g_forked_child{false};

void mark_child() { g_forked_child.store(true, std::memory_order_relaxed); }

}  // namespace

void install_fork_guard() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (int rc = pthread_atfork(nullptr, nullptr, &mark_child); rc != 0)
      throw Error(std::string("moreh: cannot register the fork handler: ") + std::strerror(rc));
  });
}

bool in_forked_child() { return g_forked_child.load(std::memory_order_relaxed); }

const char* forked_child_message() {
  return "moreh cannot be used in a forked child process: the moreh runtime was started in the parent and "
         "its threads do not survive fork(). Use the 'spawn' start method (e.g. DataLoader(..., "
         "multiprocessing_context='spawn') or torch.multiprocessing.set_start_method('spawn')), or keep "
         "moreh tensors out of the Dataset and move batches to moreh in the main process";
}

}  // namespace moreh::runtime
