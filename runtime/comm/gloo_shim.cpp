// libmoreh_gloo: runtime/comm/gloo_shim.h's C ABI over Debian's Gloo. Built with hidden visibility, so
// only the moreh_gloo_* functions are exported, and loaded with RTLD_DEEPBIND, so this library and
// libgloo bind Gloo's symbols to libgloo even where libtorch_cpu (with its own Gloo) is loaded.
#include "runtime/comm/gloo_shim.h"

#include <dlfcn.h>
#include <gloo/allgatherv.h>
#include <gloo/allreduce.h>
#include <gloo/broadcast.h>
#include <gloo/config.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/attr.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "runtime/base/low_precision_float.h"

namespace moreh_gloo_shim {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using UnboundBuffer = gloo::transport::UnboundBuffer;

// A failure the shim classifies itself.
class Failure : public std::runtime_error {
 public:
  Failure(int status, int peer, const std::string& what) : std::runtime_error(what), status(status), peer(peer) {}
  int status;
  int peer;
};

// Slot prefixes of our own messages, above Gloo's (0x01..0x08); the low bits are sequence numbers.
constexpr uint64_t kMessageSlot = 0x40ull << 56;        // point to point: 2k header, 2k + 1 data
constexpr uint64_t kMeetingSlot = 0x41ull << 56;        // | collective number
constexpr uint64_t kReduceScatterSlot = 0x42ull << 56;  // | collective number << 16 | ring step
constexpr uint64_t kCloseSlot = 0x43ull << 56;          // never sent to: see close_all
constexpr uint64_t kSequenceMask = (1ull << 40) - 1;
constexpr uint32_t kMagic = 0x6d6f7265;  // "more"
// Pending sends wait for their recv without a bound of their own (Gloo closes the context when a wait
// runs out); destroy and failures end them.
constexpr milliseconds kForever = std::chrono::hours(24 * 365);

// Which rank a rendezvous key belongs to: Gloo writes "rank_<r>" and "<r>".
int rank_of_key(const std::string& key) {
  const std::string digits = key.rfind("rank_", 0) == 0 ? key.substr(5) : key;
  if (digits.empty() || digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoi(digits);
}

std::string terminated(const char* text, size_t size) { return std::string(text, strnlen(text, size)); }

milliseconds remaining(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
  return std::max(left, milliseconds(1));
}

// The caller's store as Gloo's, every wait within one deadline.
class CallbackStore final : public gloo::rendezvous::Store {
 public:
  CallbackStore(const moreh_gloo_store& store, Clock::time_point deadline) : store_(store), deadline_(deadline) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    char error[512] = "";
    const int rc = store_.set(store_.user, key.c_str(), data.data(), data.size(), error, sizeof error);
    if (rc != 0)
      throw Failure(rc == MOREH_GLOO_TIMEOUT ? MOREH_GLOO_TIMEOUT : MOREH_GLOO_ERROR, -1,
                    "the store could not set \"" + key + "\": " + terminated(error, sizeof error));
  }

  std::vector<char> get(const std::string& key) override {
    std::vector<char> value;
    char error[512] = "";
    auto put = +[](void* sink, const void* data, size_t size) {
      const char* p = static_cast<const char*>(data);
      static_cast<std::vector<char>*>(sink)->assign(p, p + size);
    };
    const int rc = store_.get(store_.user, key.c_str(), remaining(deadline_).count(), put, &value, error, sizeof error);
    if (rc == MOREH_GLOO_TIMEOUT) {
      const int peer = rank_of_key(key);
      const std::string what =
          peer >= 0 ? "rank " + std::to_string(peer) + " did not publish its address" : "no \"" + key + "\"";
      throw Failure(MOREH_GLOO_TIMEOUT, peer, what + " in the store in time: " + terminated(error, sizeof error));
    }
    if (rc != 0)
      throw Failure(MOREH_GLOO_ERROR, -1,
                    "the store could not get \"" + key + "\": " + terminated(error, sizeof error));
    return value;
  }

  void wait(const std::vector<std::string>& keys) override {
    for (const std::string& key : keys) get(key);
  }
  void wait(const std::vector<std::string>& keys, const milliseconds& /*timeout: ours is the deadline*/) override {
    wait(keys);
  }

 private:
  const moreh_gloo_store& store_;
  Clock::time_point deadline_;
};

// An eager send: the bytes, kept until the peer has received them.
struct PendingSend {
  std::vector<char> bytes;  // header, then data
  std::unique_ptr<UnboundBuffer> header, data;
};

struct MessageHeader {
  uint32_t magic;
  uint32_t type;
  uint64_t count;
};

// What a rank brings to a collective's meeting; every rank must bring the same.
struct Description {
  uint32_t magic = kMagic;
  uint8_t kind = 0, type = 0, op = 0, pad = 0;
  int32_t root = -1;
  uint32_t pad2 = 0;
  uint64_t count = 0;        // elements, or their sum over the ranks
  uint64_t counts_hash = 0;  // reduce_scatter, all_gatherv: the per-rank counts
  bool operator==(const Description&) const = default;
};
static_assert(sizeof(Description) == 32);

enum Kind : uint8_t { kAllReduce = 1, kReduceScatter, kAllGatherv, kBroadcast, kBarrier };

const char* type_name(int type) {
  static const char* const names[] = {"float32", "float64", "bfloat16", "float16", "int64", "int32", "uint8"};
  return type >= 0 && type <= MOREH_GLOO_UINT8 ? names[type] : "?";
}
const char* op_name(int op) {
  static const char* const names[] = {"sum", "avg", "max", "min", "prod"};
  return op >= 0 && op <= MOREH_GLOO_PROD ? names[op] : "?";
}
size_t element_size(int type) {
  switch (type) {
    case MOREH_GLOO_FLOAT64:
    case MOREH_GLOO_INT64: return 8;
    case MOREH_GLOO_FLOAT32:
    case MOREH_GLOO_INT32: return 4;
    case MOREH_GLOO_BFLOAT16:
    case MOREH_GLOO_FLOAT16: return 2;
    case MOREH_GLOO_UINT8: return 1;
  }
  return 0;
}

std::string describe(const Description& d) {
  const std::string type = type_name(d.type), count = std::to_string(d.count);
  switch (d.kind) {
    case kAllReduce: return std::string("all_reduce(") + op_name(d.op) + ", " + type + ", " + count + " elements)";
    case kReduceScatter:
      return std::string("reduce_scatter(") + op_name(d.op) + ", " + type + ", " + count + " elements in all)";
    case kAllGatherv: return "all_gatherv(" + type + ", " + count + " elements in all)";
    case kBroadcast: return "broadcast(" + type + ", " + count + " elements, root " + std::to_string(d.root) + ")";
    case kBarrier: return "barrier";
  }
  return "a collective of kind " + std::to_string(d.kind);
}

// Element access: low-precision floats compute in float.
template <typename T>
struct Plain {
  using Stored = T;
  using Acc = T;
  static Acc load(T v) { return v; }
  static T store(Acc v) { return v; }
};
struct BFloat16 {
  using Stored = uint16_t;
  using Acc = float;
  static float load(uint16_t v) { return moreh::runtime::bfloat16_to_float(v); }
  static uint16_t store(float v) { return moreh::runtime::float_to_bfloat16(v); }
};
struct Float16 {
  using Stored = uint16_t;
  using Acc = float;
  static float load(uint16_t v) { return moreh::runtime::float16_to_float(v); }
  static uint16_t store(float v) { return moreh::runtime::float_to_float16(v); }
};

// As runtime/kernels/elementwise_reduction.h: integer sums and products wrap, max and min propagate NaN.
template <typename A>
A combine(int op, A a, A b) {
  if constexpr (std::is_integral_v<A>) {
    using U = std::make_unsigned_t<A>;
    switch (op) {
      case MOREH_GLOO_PROD: return static_cast<A>(static_cast<U>(a) * static_cast<U>(b));
      case MOREH_GLOO_MAX: return std::max(a, b);
      case MOREH_GLOO_MIN: return std::min(a, b);
      default: return static_cast<A>(static_cast<U>(a) + static_cast<U>(b));
    }
  } else {
    switch (op) {
      case MOREH_GLOO_PROD: return a * b;
      case MOREH_GLOO_MAX: return (a > b || a != a) ? a : b;
      case MOREH_GLOO_MIN: return (a < b || a != a) ? a : b;
      default: return a + b;
    }
  }
}

template <typename S>
gloo::AllreduceOptions::Func reducer_of(int op) {
  return [op](void* out, const void* x, const void* y, size_t n) {
    auto* o = static_cast<typename S::Stored*>(out);
    const auto* a = static_cast<const typename S::Stored*>(x);
    const auto* b = static_cast<const typename S::Stored*>(y);
    for (size_t i = 0; i < n; ++i) o[i] = S::store(combine<typename S::Acc>(op, S::load(a[i]), S::load(b[i])));
  };
}

template <typename S>
void divide_typed(void* data, uint64_t n, int ranks) {
  auto* p = static_cast<typename S::Stored*>(data);
  const auto divisor = static_cast<typename S::Acc>(ranks);
  for (uint64_t i = 0; i < n; ++i) p[i] = S::store(S::load(p[i]) / divisor);
}

template <typename F>
auto with_type(int type, F&& f) {
  switch (type) {
    case MOREH_GLOO_FLOAT64: return f(Plain<double>{});
    case MOREH_GLOO_BFLOAT16: return f(BFloat16{});
    case MOREH_GLOO_FLOAT16: return f(Float16{});
    case MOREH_GLOO_INT64: return f(Plain<int64_t>{});
    case MOREH_GLOO_INT32: return f(Plain<int32_t>{});
    case MOREH_GLOO_UINT8: return f(Plain<uint8_t>{});
    default: return f(Plain<float>{});
  }
}

gloo::AllreduceOptions::Func reducer(int type, int op) {
  return with_type(type, [op](auto s) { return reducer_of<decltype(s)>(op == MOREH_GLOO_AVG ? MOREH_GLOO_SUM : op); });
}

void divide(int type, void* data, uint64_t count, int ranks) {
  with_type(type, [&](auto s) { divide_typed<decltype(s)>(data, count, ranks); });
}

bool is_timeout(const std::string& what) {
  return what.find("Timed out") != std::string::npos || what.find("Connect timeout") != std::string::npos ||
         what.find("Read timeout") != std::string::npos || what.find("Write timeout") != std::string::npos;
}

}  // namespace moreh_gloo_shim

using namespace moreh_gloo_shim;

struct moreh_gloo_context {
  int rank = 0, size = 1;
  milliseconds timeout{0};
  std::shared_ptr<gloo::Context> gloo;
  uint64_t collectives = 0;              // collectives begun: their slots
  std::vector<uint64_t> sent, received;  // per peer: messages begun

  std::mutex failure_mu;
  bool aborted = false, failed = false;
  std::string failure;  // the abort's reason, or the failed call's error

  // Eager sends until received; the reaper waits for them in order.
  std::mutex sends_mu;
  std::condition_variable sends_changed;
  std::deque<std::unique_ptr<PendingSend>> sends;
  PendingSend* waiting = nullptr;
  bool stopping = false;
  std::thread reaper;
};

namespace moreh_gloo_shim {

int report(moreh_gloo_error* error, int status, int peer, const std::string& message) {
  if (error) {
    error->peer = peer;
    const size_t n = std::min(message.size(), sizeof error->message - 1);
    std::memcpy(error->message, message.data(), n);
    error->message[n] = '\0';
  }
  return status;
}

// Closes every connection, failing whatever waits on them (here and on the peers), as Gloo does when a wait
// runs out: a recv on a slot nobody sends to, waited for 1 ms, makes Gloo do exactly that. (Its
// tcp::Context::signalException would say it directly, but Debian's package lacks gloo/common/memory.h,
// which gloo/transport/tcp/context.h includes.) From any thread.
void close_all(moreh_gloo_context* c) {
  char byte = 0;
  for (int p = 0; p < c->size; ++p) {
    if (p == c->rank) continue;
    try {
      auto buffer = c->gloo->createUnboundBuffer(&byte, 1);
      buffer->recv(p, kCloseSlot);
      buffer->waitRecv(nullptr, milliseconds(1));
    } catch (const std::exception& e) {
      if (is_timeout(e.what())) return;  // every pair is closed now
      // That pair had failed already; through the next one.
    } catch (...) {
    }
  }
}

void reap(moreh_gloo_context* c) {
  for (;;) {
    std::unique_ptr<PendingSend> s;
    {
      std::unique_lock<std::mutex> lock(c->sends_mu);
      c->sends_changed.wait(lock, [&] { return c->stopping || !c->sends.empty(); });
      if (c->stopping) return;
      s = std::move(c->sends.front());
      c->sends.pop_front();
      c->waiting = s.get();
    }
    try {
      s->header->waitSend(nullptr, kForever);
      if (s->data) s->data->waitSend(nullptr, kForever);
    } catch (...) {
      // The context failed (or is closing): the calls on it report that.
    }
    {
      std::lock_guard<std::mutex> lock(c->sends_mu);
      c->waiting = nullptr;
    }
    c->sends_changed.notify_all();
  }
}

// Runs one call: refuses it on a failed context, classifies what it throws, and on failure closes the
// connections so the peers stop waiting for this rank.
template <typename F>
int guarded(moreh_gloo_context* c, moreh_gloo_error* error, F&& body) {
  report(error, MOREH_GLOO_OK, -1, "");
  if (!c) return report(error, MOREH_GLOO_INVALID, -1, "no Gloo context");
  {
    std::lock_guard<std::mutex> lock(c->failure_mu);
    if (c->aborted) return report(error, MOREH_GLOO_ABORTED, -1, c->failure);
    if (c->failed)
      return report(error, MOREH_GLOO_ERROR, -1, "an earlier operation on this Gloo context failed: " + c->failure);
  }
  int status = MOREH_GLOO_ERROR, peer = -1;
  std::string message;
  try {
    body();
    return MOREH_GLOO_OK;
  } catch (const Failure& f) {
    status = f.status;
    peer = f.peer;
    message = f.what();
  } catch (const std::exception& e) {
    message = e.what();
    status = is_timeout(message) ? MOREH_GLOO_TIMEOUT : MOREH_GLOO_ERROR;
  } catch (...) {
    message = "an unknown exception";
  }
  if (status == MOREH_GLOO_INVALID) return report(error, status, peer, message);
  {
    std::lock_guard<std::mutex> lock(c->failure_mu);
    if (c->aborted) {
      status = MOREH_GLOO_ABORTED;
      message = c->failure;
    } else {
      c->failed = true;
      c->failure = message;
    }
  }
  close_all(c);
  return report(error, status, peer, message);
}

void need(bool ok, const std::string& what) {
  if (!ok) throw Failure(MOREH_GLOO_INVALID, -1, what);
}

void check_type(int type) {
  need(type >= 0 && type <= MOREH_GLOO_UINT8, "unknown element type " + std::to_string(type));
}
void check_op(int op) { need(op >= 0 && op <= MOREH_GLOO_PROD, "unknown reduction " + std::to_string(op)); }

// Waits for `buffer`'s pending recv (send) from (to) `peer`, naming the peer in a failure.
void wait_for(UnboundBuffer& buffer, bool recv, int peer, Clock::time_point deadline, const std::string& what) {
  const milliseconds left = remaining(deadline);
  try {
    const bool done = recv ? buffer.waitRecv(nullptr, left) : buffer.waitSend(nullptr, left);
    if (!done) throw Failure(MOREH_GLOO_ABORTED, peer, "aborted");
  } catch (const Failure&) {
    throw;
  } catch (const std::exception& e) {
    const std::string text = e.what();
    throw Failure(is_timeout(text) ? MOREH_GLOO_TIMEOUT : MOREH_GLOO_ERROR, peer, what + ": " + text);
  }
}

// Every rank sends its description to every peer and waits for theirs: all have arrived, at the same
// collective, once it returns.
void meet(moreh_gloo_context* c, const Description& mine, uint64_t seq, Clock::time_point deadline) {
  const int n = c->size;
  if (n == 1) return;
  const uint64_t slot = kMeetingSlot | (seq & kSequenceMask);
  std::vector<Description> theirs(n);
  Description own = mine;
  std::vector<std::unique_ptr<UnboundBuffer>> recvs(n), sends(n);
  for (int p = 0; p < n; ++p) {
    if (p == c->rank) continue;
    recvs[p] = c->gloo->createUnboundBuffer(&theirs[p], sizeof(Description));
    recvs[p]->recv(p, slot);
  }
  for (int p = 0; p < n; ++p) {
    if (p == c->rank) continue;
    sends[p] = c->gloo->createUnboundBuffer(&own, sizeof(Description));
    sends[p]->send(p, slot);
  }
  for (int p = 0; p < n; ++p)
    if (p != c->rank) wait_for(*recvs[p], true, p, deadline, "waiting for rank " + std::to_string(p) + " to arrive");
  for (int p = 0; p < n; ++p)
    if (p != c->rank) wait_for(*sends[p], false, p, deadline, "meeting rank " + std::to_string(p));
  for (int p = 0; p < n; ++p)
    if (p != c->rank && !(theirs[p] == mine))
      throw Failure(MOREH_GLOO_MISMATCH, p,
                    "rank " + std::to_string(p) + " issued " + describe(theirs[p]) + " where rank " +
                        std::to_string(c->rank) + " issued " + describe(mine) + " (collective #" +
                        std::to_string(seq) + ")");
}

uint64_t hash_counts(const uint64_t* counts, int n) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the counts' bytes
  for (int r = 0; r < n; ++r)
    for (int b = 0; b < 8; ++b) h = (h ^ ((counts[r] >> (8 * b)) & 0xff)) * 1099511628211ull;
  return h;
}

template <typename T>
void set_all_reduce_buffers(gloo::AllreduceOptions& opts, const void* send, void* recv, uint64_t count) {
  if (send != recv) opts.setInput<T>(const_cast<T*>(static_cast<const T*>(send)), count);
  opts.setOutput<T>(static_cast<T*>(recv), count);
}

}  // namespace moreh_gloo_shim

extern "C" {

int moreh_gloo_abi_version(void) { return MOREH_GLOO_ABI_VERSION; }

int moreh_gloo_version(void) { return GLOO_VERSION; }

const char* moreh_gloo_library_file(void) {
  static const std::string file = [] {
    void (*const fn)(const gloo::AllreduceOptions&) = &gloo::allreduce;
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(fn), &info) != 0 && info.dli_fname) return std::string(info.dli_fname);
    return std::string();
  }();
  return file.c_str();
}

int moreh_gloo_connect(int rank, int size, const char* hostname, int64_t timeout_ms, const moreh_gloo_store* store,
                       moreh_gloo_context** out, moreh_gloo_error* error) {
  report(error, MOREH_GLOO_OK, -1, "");
  if (!out || !store || !store->set || !store->get || !hostname)
    return report(error, MOREH_GLOO_INVALID, -1, "moreh_gloo_connect: a required argument is null");
  *out = nullptr;
  if (size < 1 || rank < 0 || rank >= size || timeout_ms <= 0)
    return report(error, MOREH_GLOO_INVALID, -1,
                  "moreh_gloo_connect: rank " + std::to_string(rank) + " of " + std::to_string(size) + ", timeout " +
                      std::to_string(timeout_ms) + " ms");
  const auto deadline = Clock::now() + milliseconds(timeout_ms);
  auto c = std::make_unique<moreh_gloo_context>();
  c->rank = rank;
  c->size = size;
  c->timeout = milliseconds(timeout_ms);
  c->sent.assign(size, 0);
  c->received.assign(size, 0);
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = hostname;
    std::shared_ptr<gloo::transport::Device> device;
    try {
      device = gloo::transport::tcp::CreateDevice(attr);
    } catch (const std::exception& e) {
      return report(error, MOREH_GLOO_INVALID, -1, std::string("cannot listen on ") + hostname + ": " + e.what());
    }
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, size);
    context->setTimeout(c->timeout);
    CallbackStore callbacks(*store, deadline);
    context->connectFullMesh(callbacks, device);
    c->gloo = context;
  } catch (const Failure& f) {
    return report(error, f.status, f.peer, "rank " + std::to_string(rank) + " could not connect: " + f.what());
  } catch (const std::exception& e) {
    const std::string text = e.what();
    return report(error, is_timeout(text) ? MOREH_GLOO_TIMEOUT : MOREH_GLOO_ERROR, -1,
                  "rank " + std::to_string(rank) + " could not connect: " + text);
  }
  moreh_gloo_context* raw = c.get();
  c->reaper = std::thread([raw] { reap(raw); });
  *out = c.release();
  return MOREH_GLOO_OK;
}

void moreh_gloo_destroy(moreh_gloo_context* c) {
  if (!c) return;
  {
    std::unique_lock<std::mutex> lock(c->sends_mu);
    c->sends_changed.wait_until(lock, Clock::now() + c->timeout, [&] { return c->sends.empty() && !c->waiting; });
    c->stopping = true;
    if (c->waiting) {
      c->waiting->header->abortWaitSend();
      if (c->waiting->data) c->waiting->data->abortWaitSend();
    }
  }
  c->sends_changed.notify_all();
  c->reaper.join();
  c->sends.clear();
  delete c;
}

void moreh_gloo_abort(moreh_gloo_context* c, const char* reason) {
  if (!c) return;
  std::string why = reason && *reason ? reason : "aborted";
  {
    std::lock_guard<std::mutex> lock(c->failure_mu);
    if (c->aborted) return;
    c->aborted = true;
    c->failure = why;
  }
  close_all(c);
}

int moreh_gloo_rank(const moreh_gloo_context* c) { return c ? c->rank : -1; }
int moreh_gloo_size(const moreh_gloo_context* c) { return c ? c->size : 0; }

int moreh_gloo_all_reduce(moreh_gloo_context* c, const void* send, void* recv, uint64_t count, int type, int op,
                          int64_t timeout_ms, moreh_gloo_error* error) {
  return guarded(c, error, [&] {
    check_type(type);
    check_op(op);
    need(count == 0 || (send && recv), "all_reduce: send and recv buffers are required");
    const auto deadline = Clock::now() + milliseconds(timeout_ms);
    const uint64_t seq = c->collectives++;
    Description d;
    d.kind = kAllReduce;
    d.type = static_cast<uint8_t>(type);
    d.op = static_cast<uint8_t>(op);
    d.count = count;
    meet(c, d, seq, deadline);
    if (count == 0) return;
    gloo::AllreduceOptions opts(c->gloo);
    opts.setTag(static_cast<uint32_t>(seq));
    opts.setTimeout(remaining(deadline));
    opts.setReduceFunction(reducer(type, op));
    switch (element_size(type)) {
      case 8: set_all_reduce_buffers<uint64_t>(opts, send, recv, count); break;
      case 4: set_all_reduce_buffers<uint32_t>(opts, send, recv, count); break;
      case 2: set_all_reduce_buffers<uint16_t>(opts, send, recv, count); break;
      default: set_all_reduce_buffers<uint8_t>(opts, send, recv, count); break;
    }
    gloo::allreduce(opts);
    if (op == MOREH_GLOO_AVG) divide(type, recv, count, c->size);
  });
}

// A ring: at step s rank r sends its partial sum of slice r − s − 1 to r + 1 and adds r − 1's partial sum of
// slice r − s − 2 into its own, so after N − 1 steps slice r is complete on rank r. Each rank sends every
// slice but its own once, as ring_bytes_sent counts.
int moreh_gloo_reduce_scatter(moreh_gloo_context* c, const void* send, void* recv, const uint64_t* counts, int type,
                              int op, int64_t timeout_ms, moreh_gloo_error* error) {
  return guarded(c, error, [&] {
    check_type(type);
    check_op(op);
    need(counts != nullptr, "reduce_scatter: counts are required");
    const int n = c->size, r = c->rank;
    const uint64_t es = element_size(type);
    std::vector<uint64_t> offsets(n, 0);
    uint64_t total = 0, largest = 0;
    for (int k = 0; k < n; ++k) {
      offsets[k] = total;
      total += counts[k];
      largest = std::max(largest, counts[k]);
    }
    need(total == 0 || send, "reduce_scatter: a send buffer is required");
    need(counts[r] == 0 || recv, "reduce_scatter: a recv buffer is required");
    const auto deadline = Clock::now() + milliseconds(timeout_ms);
    const uint64_t seq = c->collectives++;
    Description d;
    d.kind = kReduceScatter;
    d.type = static_cast<uint8_t>(type);
    d.op = static_cast<uint8_t>(op);
    d.count = total;
    d.counts_hash = hash_counts(counts, n);
    meet(c, d, seq, deadline);
    if (total == 0) return;
    std::vector<char> acc(static_cast<const char*>(send), static_cast<const char*>(send) + total * es);
    if (n > 1) {
      std::vector<char> incoming(largest * es);
      const auto reduce = reducer(type, op);
      auto acc_buffer = c->gloo->createUnboundBuffer(acc.data(), acc.size());
      auto in_buffer = c->gloo->createUnboundBuffer(incoming.data(), incoming.size());
      const int right = (r + 1) % n, left = (r + n - 1) % n;
      for (int step = 0; step < n - 1; ++step) {
        const int out = (r - step - 1 + 2 * n) % n, in = (r - step - 2 + 2 * n) % n;
        const uint64_t slot = kReduceScatterSlot | ((seq & kSequenceMask) << 16) | static_cast<uint64_t>(step);
        if (counts[out] != 0) acc_buffer->send(right, slot, offsets[out] * es, counts[out] * es);
        if (counts[in] != 0) {
          in_buffer->recv(left, slot, 0, counts[in] * es);
          wait_for(*in_buffer, true, left, deadline, "reduce_scatter: receiving from rank " + std::to_string(left));
          char* mine = acc.data() + offsets[in] * es;
          reduce(mine, mine, incoming.data(), counts[in]);
        }
        if (counts[out] != 0)
          wait_for(*acc_buffer, false, right, deadline, "reduce_scatter: sending to rank " + std::to_string(right));
      }
    }
    if (counts[r] != 0) std::memcpy(recv, acc.data() + offsets[r] * es, counts[r] * es);
    if (op == MOREH_GLOO_AVG) divide(type, recv, counts[r], n);
  });
}

int moreh_gloo_all_gatherv(moreh_gloo_context* c, const void* send, void* recv, const uint64_t* counts, int type,
                           int64_t timeout_ms, moreh_gloo_error* error) {
  return guarded(c, error, [&] {
    check_type(type);
    need(counts != nullptr, "all_gatherv: counts are required");
    const int n = c->size, r = c->rank;
    const uint64_t es = element_size(type);
    std::vector<size_t> bytes(n);
    uint64_t total = 0, offset = 0;
    for (int k = 0; k < n; ++k) {
      bytes[k] = counts[k] * es;
      if (k == r) offset = total;
      total += counts[k];
    }
    need(total == 0 || recv, "all_gatherv: a recv buffer is required");
    need(counts[r] == 0 || send, "all_gatherv: a send buffer is required");
    const auto deadline = Clock::now() + milliseconds(timeout_ms);
    const uint64_t seq = c->collectives++;
    Description d;
    d.kind = kAllGatherv;
    d.type = static_cast<uint8_t>(type);
    d.count = total;
    d.counts_hash = hash_counts(counts, n);
    meet(c, d, seq, deadline);
    if (total == 0) return;
    gloo::AllgathervOptions opts(c->gloo);
    opts.setTag(static_cast<uint32_t>(seq));
    opts.setTimeout(remaining(deadline));
    auto* out = static_cast<uint8_t*>(recv);
    if (bytes[r] != 0 && send != out + offset * es)
      opts.setInput<uint8_t>(const_cast<uint8_t*>(static_cast<const uint8_t*>(send)), bytes[r]);
    opts.setOutput<uint8_t>(out, bytes);
    gloo::allgatherv(opts);
  });
}

int moreh_gloo_broadcast(moreh_gloo_context* c, const void* send, void* recv, uint64_t count, int type, int root,
                         int64_t timeout_ms, moreh_gloo_error* error) {
  return guarded(c, error, [&] {
    check_type(type);
    need(root >= 0 && root < c->size, "broadcast: root " + std::to_string(root) + " is not a rank");
    need(count == 0 || recv, "broadcast: a recv buffer is required");
    need(count == 0 || c->rank != root || send, "broadcast: the root needs a send buffer");
    const auto deadline = Clock::now() + milliseconds(timeout_ms);
    const uint64_t seq = c->collectives++;
    Description d;
    d.kind = kBroadcast;
    d.type = static_cast<uint8_t>(type);
    d.root = root;
    d.count = count;
    meet(c, d, seq, deadline);
    if (count == 0) return;
    const size_t bytes = count * element_size(type);
    gloo::BroadcastOptions opts(c->gloo);
    opts.setTag(static_cast<uint32_t>(seq));
    opts.setTimeout(remaining(deadline));
    opts.setRoot(root);
    if (c->rank == root && send != recv)
      opts.setInput<uint8_t>(const_cast<uint8_t*>(static_cast<const uint8_t*>(send)), bytes);
    opts.setOutput<uint8_t>(static_cast<uint8_t*>(recv), bytes);
    gloo::broadcast(opts);
  });
}

// The meeting is itself a barrier: every rank has heard from every other.
int moreh_gloo_barrier(moreh_gloo_context* c, int64_t timeout_ms, moreh_gloo_error* error) {
  return guarded(c, error, [&] {
    const auto deadline = Clock::now() + milliseconds(timeout_ms);
    Description d;
    d.kind = kBarrier;
    meet(c, d, c->collectives++, deadline);
  });
}

int moreh_gloo_send(moreh_gloo_context* c, int peer, const void* data, uint64_t count, int type, int64_t timeout_ms,
                    moreh_gloo_error* error) {
  (void)timeout_ms;  // eager: posting does not wait
  return guarded(c, error, [&] {
    check_type(type);
    need(peer >= 0 && peer < c->size && peer != c->rank, "send: peer " + std::to_string(peer) + " is not another rank");
    const uint64_t bytes = count * element_size(type);
    need(bytes == 0 || data, "send: a buffer is required");
    const uint64_t k = c->sent[peer]++;
    auto s = std::make_unique<PendingSend>();
    s->bytes.resize(sizeof(MessageHeader) + bytes);
    const MessageHeader header{kMagic, static_cast<uint32_t>(type), count};
    std::memcpy(s->bytes.data(), &header, sizeof header);
    if (bytes != 0) std::memcpy(s->bytes.data() + sizeof header, data, bytes);
    const uint64_t slot = kMessageSlot | ((k & kSequenceMask) << 1);
    s->header = c->gloo->createUnboundBuffer(s->bytes.data(), sizeof header);
    if (bytes != 0) s->data = c->gloo->createUnboundBuffer(s->bytes.data() + sizeof header, bytes);
    s->header->send(peer, slot);
    if (s->data) s->data->send(peer, slot + 1);
    {
      std::lock_guard<std::mutex> lock(c->sends_mu);
      c->sends.push_back(std::move(s));
    }
    c->sends_changed.notify_all();
  });
}

int moreh_gloo_recv(moreh_gloo_context* c, int peer, void* data, uint64_t count, int type, int64_t timeout_ms,
                    moreh_gloo_error* error) {
  return guarded(c, error, [&] {
    check_type(type);
    need(peer >= 0 && peer < c->size && peer != c->rank, "recv: peer " + std::to_string(peer) + " is not another rank");
    const uint64_t bytes = count * element_size(type);
    need(bytes == 0 || data, "recv: a buffer is required");
    const auto deadline = Clock::now() + milliseconds(timeout_ms);
    const uint64_t k = c->received[peer]++;
    const uint64_t slot = kMessageSlot | ((k & kSequenceMask) << 1);
    const std::string which = "message #" + std::to_string(k) + " from rank " + std::to_string(peer);
    MessageHeader header{};
    auto header_buffer = c->gloo->createUnboundBuffer(&header, sizeof header);
    header_buffer->recv(peer, slot);
    wait_for(*header_buffer, true, peer, deadline, "waiting for " + which);
    if (header.magic != kMagic || header.type != static_cast<uint32_t>(type) || header.count != count)
      throw Failure(MOREH_GLOO_MISMATCH, peer,
                    which + " is " + std::to_string(header.count) + " " + type_name(static_cast<int>(header.type)) +
                        " elements but rank " + std::to_string(c->rank) + " expects " + std::to_string(count) + " " +
                        type_name(type));
    if (bytes == 0) return;
    auto data_buffer = c->gloo->createUnboundBuffer(data, bytes);
    data_buffer->recv(peer, slot + 1);
    wait_for(*data_buffer, true, peer, deadline, "receiving " + which);
  });
}

}  // extern "C"
