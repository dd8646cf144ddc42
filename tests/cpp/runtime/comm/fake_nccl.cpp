// A stand-in for libnccl.so.2 that moves host memory, so that NcclCommunicator's logic (meetings, uneven
// counts as groups, send/recv pairing, errors, destruction) is tested on machines without GPUs. It exports
// the NCCL entry points runtime/comm/nccl_library.h loads, with NCCL's calling rules where they matter to the
// caller: a collective completes once every rank of its clique has called it (called from one thread per
// rank), ranks must agree on each collective's arguments (ncclInvalidUsage otherwise), calls between
// ncclGroupStart and ncclGroupEnd run at ncclGroupEnd, and ncclCommDestroy is collective among the ranks.
// Every wait is bounded (ncclSystemError after kWait). Control functions (moreh_fake_nccl_*) inject
// failures and count calls.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "runtime/base/low_precision_float.h"
#include "runtime/comm/nccl_library.h"

namespace {

using namespace moreh::runtime;
using namespace std::chrono_literals;
constexpr auto kWait = 10s;

struct Call {
  std::string name;
  const void* send = nullptr;
  void* recv = nullptr;
  size_t count = 0;
  int type = 0, op = 0, root = -1;
  bool agrees(const Call& o) const {
    return name == o.name && count == o.count && type == o.type && op == o.op && root == o.root;
  }
};

struct Round {
  std::vector<std::optional<Call>> calls;
  int arrived = 0, left = 0;
  bool done = false;
  int result = nccl::kSuccess;
};

struct Clique {
  explicit Clique(int n) : n(n) {}
  const int n;
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, Round> rounds;
  std::map<std::pair<int, int>, std::deque<std::pair<Call, std::vector<char>>>> mail;
  int destroying = 0;
};

}  // namespace

struct moreh::runtime::nccl::OpaqueComm {
  std::shared_ptr<Clique> clique;
  int rank = 0;
  uint64_t seq = 0;
  int async_error = nccl::kSuccess;
};

namespace {

struct Control {
  std::mutex mu;
  std::map<std::string, int> counts;
  // (call name, rank) -> (result, asynchronous)
  std::map<std::pair<std::string, int>, std::pair<int, bool>> failures;
  int init_result = nccl::kSuccess;
  int version = 22105;
};
Control& control() {
  static Control c;
  return c;
}
thread_local std::string last_error;
thread_local int group_depth = 0;
thread_local std::vector<std::function<int()>> group_calls;

// Counts the call; returns the failure injected for it on this rank, if any (an asynchronous one is left
// on the communicator instead).
int injected(const std::string& name, nccl::Comm comm) {
  std::lock_guard<std::mutex> lock(control().mu);
  ++control().counts[name];
  if (!comm) return nccl::kSuccess;
  auto it = control().failures.find({name, comm->rank});
  if (it == control().failures.end()) return nccl::kSuccess;
  const auto [result, asynchronous] = it->second;
  control().failures.erase(it);
  last_error = "fake NCCL: injected failure of " + name + " on rank " + std::to_string(comm->rank);
  if (asynchronous) {
    comm->async_error = result;
    return nccl::kSuccess;
  }
  return result;
}

size_t element_size(int type) {
  switch (type) {
    case nccl::kInt8:
    case nccl::kUint8: return 1;
    case nccl::kFloat16:
    case nccl::kBfloat16: return 2;
    case nccl::kInt32:
    case nccl::kFloat32: return 4;
    default: return 8;
  }
}

double load(int type, const void* base, size_t i) {
  switch (type) {
    case nccl::kInt8: return static_cast<const int8_t*>(base)[i];
    case nccl::kUint8: return static_cast<const uint8_t*>(base)[i];
    case nccl::kInt32: return static_cast<const int32_t*>(base)[i];
    case nccl::kInt64: return static_cast<double>(static_cast<const int64_t*>(base)[i]);
    case nccl::kFloat16: return float16_to_float(static_cast<const uint16_t*>(base)[i]);
    case nccl::kBfloat16: return bfloat16_to_float(static_cast<const uint16_t*>(base)[i]);
    case nccl::kFloat32: return static_cast<const float*>(base)[i];
    default: return static_cast<const double*>(base)[i];
  }
}

void store(int type, void* base, size_t i, double v) {
  switch (type) {
    case nccl::kInt8: static_cast<int8_t*>(base)[i] = static_cast<int8_t>(v); break;
    case nccl::kUint8: static_cast<uint8_t*>(base)[i] = static_cast<uint8_t>(v); break;
    case nccl::kInt32: static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v); break;
    case nccl::kInt64: static_cast<int64_t*>(base)[i] = static_cast<int64_t>(v); break;
    case nccl::kFloat16: static_cast<uint16_t*>(base)[i] = float_to_float16(static_cast<float>(v)); break;
    case nccl::kBfloat16: static_cast<uint16_t*>(base)[i] = float_to_bfloat16(static_cast<float>(v)); break;
    case nccl::kFloat32: static_cast<float*>(base)[i] = static_cast<float>(v); break;
    default: static_cast<double*>(base)[i] = v; break;
  }
}

bool integral(int type) { return type == nccl::kInt8 || type == nccl::kUint8 || type == nccl::kInt32 || type == nccl::kInt64; }

// Element i of the reduction over the ranks of values(rank, i).
double reduce(int type, int op, int n, const std::function<double(int)>& value) {
  double acc = value(0);
  for (int r = 1; r < n; ++r) {
    const double v = value(r);
    switch (op) {
      case nccl::kSum:
      case nccl::kAvg: acc += v; break;
      case nccl::kProd: acc *= v; break;
      case nccl::kMax: acc = std::max(acc, v); break;
      case nccl::kMin: acc = std::min(acc, v); break;
    }
  }
  if (op != nccl::kAvg) return acc;
  if (integral(type)) return static_cast<double>(static_cast<int64_t>(acc) / n);
  return type == nccl::kFloat64 ? acc / n : static_cast<double>(static_cast<float>(acc) / static_cast<float>(n));
}

// Runs one collective once every rank has called it; all outputs are computed before any is written, so
// in-place calls read their inputs intact.
void execute(const std::vector<std::optional<Call>>& calls) {
  const int n = static_cast<int>(calls.size());
  const Call& c0 = *calls[0];
  const size_t es = element_size(c0.type);
  std::vector<std::vector<char>> out(n);
  auto at = [&](const void* p, size_t i) { return static_cast<const char*>(p) + i * es; };
  if (c0.name == "ncclAllReduce" || c0.name == "ncclReduceScatter" || c0.name == "ncclReduce") {
    const bool scatter = c0.name == "ncclReduceScatter";
    for (int r = 0; r < n; ++r) {
      if (c0.name == "ncclReduce" && r != c0.root) continue;
      out[r].resize(c0.count * es);
      for (size_t i = 0; i < c0.count; ++i)
        store(c0.type, out[r].data(), i, reduce(c0.type, c0.op, n, [&](int k) {
                return load(c0.type, calls[k]->send, (scatter ? r * c0.count : 0) + i);
              }));
    }
  } else if (c0.name == "ncclAllGather") {
    for (int r = 0; r < n; ++r) {
      out[r].resize(n * c0.count * es);
      for (int k = 0; k < n; ++k) std::memcpy(out[r].data() + k * c0.count * es, at(calls[k]->send, 0), c0.count * es);
    }
  } else if (c0.name == "ncclBroadcast") {
    for (int r = 0; r < n; ++r) out[r].assign(at(calls[c0.root]->send, 0), at(calls[c0.root]->send, c0.count));
  }
  for (int r = 0; r < n; ++r)
    if (!out[r].empty()) std::memcpy(calls[r]->recv, out[r].data(), out[r].size());
}

int collective(nccl::Comm comm, Call call) {
  if (group_depth > 0) {  // run (and counted) at ncclGroupEnd
    group_calls.push_back([comm, call] { return collective(comm, call); });
    return nccl::kSuccess;
  }
  if (const int r = injected(call.name, comm); r != nccl::kSuccess) return r;
  Clique& q = *comm->clique;
  std::unique_lock<std::mutex> lock(q.mu);
  const uint64_t seq = comm->seq++;
  Round& round = q.rounds[seq];
  if (round.calls.empty()) round.calls.resize(q.n);
  round.calls[comm->rank] = call;
  if (++round.arrived == q.n) {
    for (int r = 1; r < q.n; ++r)
      if (!round.calls[r]->agrees(*round.calls[0])) round.result = nccl::kInvalidUsage;
    if (round.result == nccl::kSuccess) execute(round.calls);
    round.done = true;
    q.cv.notify_all();
  } else if (!q.cv.wait_for(lock, kWait, [&] { return round.done; })) {
    last_error = "fake NCCL: " + call.name + " #" + std::to_string(seq) + ": a peer never called it";
    return nccl::kSystemError;
  }
  const int result = round.result;
  if (result != nccl::kSuccess) last_error = "fake NCCL: ranks called " + call.name + " with different arguments";
  if (++round.left == q.n) q.rounds.erase(seq);
  return result;
}

}  // namespace

extern "C" {

// Marks this library as one that moves host memory (nccl::Library::host_memory()).
int moreh_fake_nccl_host_memory() { return 1; }

// The next `call` on `rank` returns `result` (or, with `asynchronous`, succeeds and leaves `result` as the
// communicator's asynchronous error).
void moreh_fake_nccl_fail(const char* call, int rank, int result, int asynchronous) {
  std::lock_guard<std::mutex> lock(control().mu);
  control().failures[{call, rank}] = {result, asynchronous != 0};
}
void moreh_fake_nccl_fail_init(int result) { control().init_result = result; }
void moreh_fake_nccl_set_version(int version) { control().version = version; }
int moreh_fake_nccl_count(const char* call) {
  std::lock_guard<std::mutex> lock(control().mu);
  return control().counts[call];
}
void moreh_fake_nccl_reset() {
  std::lock_guard<std::mutex> lock(control().mu);
  control().counts.clear();
  control().failures.clear();
  control().init_result = nccl::kSuccess;
  control().version = 22105;
}

int ncclGetVersion(int* version) {
  *version = control().version;
  return nccl::kSuccess;
}

const char* ncclGetErrorString(int result) {
  switch (result) {
    case nccl::kSuccess: return "no error";
    case nccl::kSystemError: return "unhandled system error";
    case nccl::kInvalidUsage: return "invalid usage";
    case nccl::kRemoteError: return "remote process exited or there was a network error";
    default: return "fake NCCL error";
  }
}

const char* ncclGetLastError(nccl::Comm) { return last_error.c_str(); }

int ncclCommInitAll(nccl::Comm* comms, int ndev, const int*) {
  if (const int r = injected("ncclCommInitAll", nullptr); r != nccl::kSuccess) return r;
  if (control().init_result != nccl::kSuccess) {
    last_error = "fake NCCL: injected init failure";
    return control().init_result;
  }
  auto clique = std::make_shared<Clique>(ndev);
  for (int r = 0; r < ndev; ++r) comms[r] = new nccl::OpaqueComm{clique, r, 0, nccl::kSuccess};
  return nccl::kSuccess;
}

int ncclCommDestroy(nccl::Comm comm) {
  injected("ncclCommDestroy", comm);
  Clique& q = *comm->clique;
  std::unique_lock<std::mutex> lock(q.mu);
  ++q.destroying;
  q.cv.notify_all();
  // Collective: returns once every rank of the clique is destroying (as NCCL's intra-node barrier).
  const bool together = q.cv.wait_for(lock, kWait, [&] { return q.destroying >= q.n; });
  lock.unlock();
  delete comm;
  if (!together) {
    last_error = "fake NCCL: ncclCommDestroy: the other ranks never destroyed theirs";
    return nccl::kSystemError;
  }
  return nccl::kSuccess;
}

int ncclCommAbort(nccl::Comm comm) {
  injected("ncclCommAbort", comm);
  delete comm;
  return nccl::kSuccess;
}

int ncclCommGetAsyncError(nccl::Comm comm, int* state) {
  *state = comm->async_error;
  return nccl::kSuccess;
}

int ncclAllReduce(const void* send, void* recv, size_t count, int type, int op, nccl::Comm comm, void*) {
  return collective(comm, {"ncclAllReduce", send, recv, count, type, op, -1});
}
int ncclReduceScatter(const void* send, void* recv, size_t count, int type, int op, nccl::Comm comm, void*) {
  return collective(comm, {"ncclReduceScatter", send, recv, count, type, op, -1});
}
int ncclAllGather(const void* send, void* recv, size_t count, int type, nccl::Comm comm, void*) {
  return collective(comm, {"ncclAllGather", send, recv, count, type, 0, -1});
}
int ncclBroadcast(const void* send, void* recv, size_t count, int type, int root, nccl::Comm comm, void*) {
  return collective(comm, {"ncclBroadcast", send, recv, count, type, 0, root});
}
int ncclReduce(const void* send, void* recv, size_t count, int type, int op, int root, nccl::Comm comm, void*) {
  return collective(comm, {"ncclReduce", send, recv, count, type, op, root});
}

int ncclSend(const void* send, size_t count, int type, int peer, nccl::Comm comm, void*) {
  if (const int r = injected("ncclSend", comm); r != nccl::kSuccess) return r;
  Clique& q = *comm->clique;
  std::lock_guard<std::mutex> lock(q.mu);
  const char* p = static_cast<const char*>(send);
  q.mail[{comm->rank, peer}].emplace_back(Call{"ncclSend", send, nullptr, count, type, 0, -1},
                                          std::vector<char>(p, p + count * element_size(type)));
  q.cv.notify_all();
  return nccl::kSuccess;
}

int ncclRecv(void* recv, size_t count, int type, int peer, nccl::Comm comm, void*) {
  if (const int r = injected("ncclRecv", comm); r != nccl::kSuccess) return r;
  Clique& q = *comm->clique;
  std::unique_lock<std::mutex> lock(q.mu);
  auto& box = q.mail[{peer, comm->rank}];
  if (!q.cv.wait_for(lock, kWait, [&] { return !box.empty(); })) {
    last_error = "fake NCCL: ncclRecv: rank " + std::to_string(peer) + " never sent";
    return nccl::kSystemError;
  }
  auto [call, bytes] = std::move(box.front());
  box.pop_front();
  if (call.count != count || call.type != type) {
    last_error = "fake NCCL: ncclRecv: the send has another count or type";
    return nccl::kInvalidUsage;
  }
  std::memcpy(recv, bytes.data(), bytes.size());
  return nccl::kSuccess;
}

int ncclGroupStart() {
  {
    std::lock_guard<std::mutex> lock(control().mu);
    ++control().counts["ncclGroupStart"];
  }
  ++group_depth;
  return nccl::kSuccess;
}

int ncclGroupEnd() {
  if (group_depth == 0) return nccl::kInvalidUsage;
  if (--group_depth > 0) return nccl::kSuccess;
  std::vector<std::function<int()>> calls;
  calls.swap(group_calls);
  int result = nccl::kSuccess;
  for (auto& call : calls)
    if (const int r = call(); r != nccl::kSuccess && result == nccl::kSuccess) result = r;
  return result;
}

}  // extern "C"
