// Gloo (collectives between worker processes over TCP), loaded with dlopen from libmoreh_gloo.so, the shim
// that alone links Debian's libgloo (runtime/comm/gloo_shim.h): libtorch_cpu exports another Gloo, so the
// shim is opened with RTLD_DEEPBIND and only C functions cross. Found at MOREH_GLOO_LIBRARY if set, else
// beside the code of moreh_runtime (torch_moreh/, beside _C.so), else in the build tree. Also the rank's
// connected context (GlooContext) and the store its rendezvous goes through (GlooStore).
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/base/data_type.h"
#include "runtime/comm/gloo_shim.h"
#include "runtime/kernels/elementwise_reduction.h"

namespace moreh::runtime {

namespace gloo {

// The shim's entry points.
struct Api {
  decltype(&moreh_gloo_abi_version) abi_version;
  decltype(&moreh_gloo_version) version;
  decltype(&moreh_gloo_library_file) library_file;
  decltype(&moreh_gloo_connect) connect;
  decltype(&moreh_gloo_destroy) destroy;
  decltype(&moreh_gloo_abort) abort;
  decltype(&moreh_gloo_rank) rank;
  decltype(&moreh_gloo_size) size;
  decltype(&moreh_gloo_all_reduce) all_reduce;
  decltype(&moreh_gloo_reduce_scatter) reduce_scatter;
  decltype(&moreh_gloo_all_gatherv) all_gatherv;
  decltype(&moreh_gloo_broadcast) broadcast;
  decltype(&moreh_gloo_barrier) barrier;
  decltype(&moreh_gloo_send) send;
  decltype(&moreh_gloo_recv) recv;
};

// Where the shim is looked for, in order: `env` (MOREH_GLOO_LIBRARY's value) alone when set and non-empty;
// else libmoreh_gloo.so in the directory of the file holding moreh_runtime's code, then the build tree's.
std::vector<std::string> shim_paths(const char* env);

// "0.5.0" for GLOO_VERSION 500.
std::string version_string(int code);

class Library {
 public:
  // The shim from shim_paths(getenv("MOREH_GLOO_LIBRARY")), read again on every call; each path is opened
  // once per process. Throws ConfigError naming every path tried and why each failed.
  static std::shared_ptr<const Library> load();
  static std::shared_ptr<const Library> load_first(const std::vector<std::string>& paths);

  const Api& api() const { return api_; }
  const std::string& path() const { return path_; }
  int version() const { return version_; }
  // The file the shim's Gloo symbols resolve to (Debian's libgloo).
  std::string gloo_file() const { return api_.library_file(); }

 private:
  Library() = default;
  Api api_{};
  std::string path_;
  int version_ = 0;
};

}  // namespace gloo

// The key-value store the ranks of a Gloo context rendezvous through (the control plane's relay; an
// in-process map in tests). Called from the connecting thread only. One context's keys ("rank_<r>", "<r>")
// must not meet another's: a store per context, or one that prefixes keys.
class GlooStore {
 public:
  virtual ~GlooStore() = default;
  virtual void set(const std::string& key, const std::string& value) const = 0;
  // The value of `key`, waiting at most `timeout` for it to be set; TimeoutError after that.
  virtual std::string get(const std::string& key, std::chrono::milliseconds timeout) const = 0;
};

// Another context's keys in the same store: "<prefix>/<key>" (a group of devices across workers connects a
// context of its own through the job's one store).
class PrefixedStore final : public GlooStore {
 public:
  PrefixedStore(const GlooStore& inner, std::string prefix) : inner_(inner), prefix_(std::move(prefix)) {}
  void set(const std::string& key, const std::string& value) const override { inner_.set(prefix_ + "/" + key, value); }
  std::string get(const std::string& key, std::chrono::milliseconds timeout) const override {
    return inner_.get(prefix_ + "/" + key, timeout);
  }

 private:
  const GlooStore& inner_;
  std::string prefix_;
};

// What one Gloo call came to: status is a moreh_gloo_status; peer the rank it waited for (-1: unknown).
struct GlooResult {
  int status = MOREH_GLOO_OK;
  int peer = -1;
  std::string message;
  bool ok() const { return status == MOREH_GLOO_OK; }
};

// One rank's connections to the others (a shim context). Calls run one at a time (one stream issues
// them), except abort(). After a failed call every later one fails: Gloo cannot realign the ranks.
class GlooContext {
 public:
  GlooContext(std::shared_ptr<const gloo::Library> library, moreh_gloo_context* handle);
  ~GlooContext();  // gives pending sends until the connect bound to be received, then closes
  GlooContext(const GlooContext&) = delete;
  GlooContext& operator=(const GlooContext&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const gloo::Library& library() const { return *library_; }
  // Fails the call in progress and every later one (MOREH_GLOO_ABORTED), and closes the connections so the
  // peers fail too. From any thread.
  void abort(const std::string& reason);

  GlooResult all_reduce(const void* send, void* recv, uint64_t count, DataType type, ReduceOp op,
                        std::chrono::milliseconds timeout);
  GlooResult reduce_scatter(const void* send, void* recv, const std::vector<uint64_t>& counts, DataType type,
                            ReduceOp op, std::chrono::milliseconds timeout);
  GlooResult all_gather(const void* send, void* recv, const std::vector<uint64_t>& counts, DataType type,
                        std::chrono::milliseconds timeout);
  GlooResult broadcast(const void* send, void* recv, uint64_t count, DataType type, int root,
                       std::chrono::milliseconds timeout);
  GlooResult barrier(std::chrono::milliseconds timeout);
  // Eager: returns once posted. recv waits for the peer's matching send.
  GlooResult send(int peer, const void* data, uint64_t count, DataType type, std::chrono::milliseconds timeout);
  GlooResult recv(int peer, void* data, uint64_t count, DataType type, std::chrono::milliseconds timeout);

 private:
  std::shared_ptr<const gloo::Library> library_;
  moreh_gloo_context* handle_;
  int rank_, size_;
};

// Rank `rank` of `size`: listens on `hostname` (this machine's address the peers reach, "127.0.0.1" on
// one machine), rendezvouses through `store` and connects to every peer, all within `timeout`. Throws
// ConfigError (no shim, bad arguments, an address that cannot be bound), TimeoutError (a peer did not
// come), CollectiveError (the connections failed).
std::shared_ptr<GlooContext> connect_gloo(int rank, int size, const GlooStore& store, std::string hostname,
                                          std::chrono::milliseconds timeout);

}  // namespace moreh::runtime
