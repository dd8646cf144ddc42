#include "backend/csrc/pinned_host_allocator.h"

#include <c10/util/Exception.h>

#include <cstring>

#include "backend/csrc/moreh_storage.h"
#include "runtime/base/errors.h"
#include "runtime/base/fork_guard.h"

namespace moreh::backend {
namespace {

struct PinnedContext {
  std::shared_ptr<runtime::PinnedHostMemory> memory;
  void* base;
};

void free_pinned(void* ctx) {
  // A forked child's copy of a pinned block is plain memory of its own; the registry's lock may have
  // been held by a parent thread at fork time, so the child leaves it alone (it is about to exit).
  if (runtime::in_forked_child()) return;
  auto* c = static_cast<PinnedContext*>(ctx);
  c->memory->free(c->base);
  delete c;
}

class PinnedHostAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
    auto memory = engine().device(0).pinned_host_memory();  // engine() refuses in a forked child
    void* p = nullptr;
    try {
      p = memory->allocate(nbytes);
    } catch (const runtime::Error& e) {
      TORCH_CHECK_WITH(OutOfMemoryError, false, e.what());
    }
    return {p, new PinnedContext{std::move(memory), p}, &free_pinned, c10::Device(c10::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
};

}  // namespace

c10::Allocator* pinned_host_allocator() {
  static PinnedHostAllocator allocator;
  return &allocator;
}

bool is_pinned_host_ptr(const void* p) {
  return p != nullptr && engine().device(0).pinned_host_memory()->contains(p);
}

}  // namespace moreh::backend
