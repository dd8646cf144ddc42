#include "runtime/comm/gloo_library.h"

#include <dlfcn.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace gloo {
namespace {

constexpr const char* kShimName = "libmoreh_gloo.so";

#define MOREH_GLOO_FUNCTIONS(X)                \
  X(abi_version, moreh_gloo_abi_version)       \
  X(version, moreh_gloo_version)               \
  X(library_file, moreh_gloo_library_file)     \
  X(connect, moreh_gloo_connect)               \
  X(destroy, moreh_gloo_destroy)               \
  X(abort, moreh_gloo_abort)                   \
  X(rank, moreh_gloo_rank)                     \
  X(size, moreh_gloo_size)                     \
  X(all_reduce, moreh_gloo_all_reduce)         \
  X(reduce_scatter, moreh_gloo_reduce_scatter) \
  X(all_gatherv, moreh_gloo_all_gatherv)       \
  X(broadcast, moreh_gloo_broadcast)           \
  X(barrier, moreh_gloo_barrier)               \
  X(send, moreh_gloo_send)                     \
  X(recv, moreh_gloo_recv)

// An address inside moreh_runtime: dladdr names the file it was linked into (_C.so, a test executable).
void anchor() {}

std::string directory_of_this_code() {
  Dl_info info{};
  std::string file;
  if (dladdr(reinterpret_cast<void*>(&anchor), &info) != 0 && info.dli_fname) file = info.dli_fname;
  // The main executable may be named without a directory (argv[0]).
  if (file.find('/') == std::string::npos) {
    char exe[4096];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return {};
    file.assign(exe, static_cast<size_t>(n));
  }
  return std::filesystem::path(file).parent_path().string();
}

}  // namespace

std::vector<std::string> shim_paths(const char* env) {
  if (env && *env) return {env};
  std::vector<std::string> paths;
  if (const std::string dir = directory_of_this_code(); !dir.empty()) paths.push_back(dir + "/" + kShimName);
#ifdef MOREH_GLOO_SHIM_DEFAULT
  if (std::find(paths.begin(), paths.end(), MOREH_GLOO_SHIM_DEFAULT) == paths.end())
    paths.push_back(MOREH_GLOO_SHIM_DEFAULT);
#endif
  return paths;
}

std::string version_string(int code) { return fmt::format("{}.{}.{}", code / 10000, code / 100 % 100, code % 100); }

std::shared_ptr<const Library> Library::load() { return load_first(shim_paths(std::getenv("MOREH_GLOO_LIBRARY"))); }

std::shared_ptr<const Library> Library::load_first(const std::vector<std::string>& paths) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const Library>> loaded;
  std::lock_guard<std::mutex> lock(mu);
  std::vector<std::string> tried;
  for (const std::string& path : paths) {
    if (auto it = loaded.find(path); it != loaded.end()) return it->second;
    // RTLD_DEEPBIND: the shim and libgloo bind Gloo's symbols among themselves, never to libtorch_cpu's
    // Gloo. The library stays loaded for the process: contexts may outlive any one user.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!handle) {
      const char* e = dlerror();
      tried.push_back(fmt::format("{} ({})", path, e ? e : "dlopen failed"));
      continue;
    }
    std::shared_ptr<Library> lib(new Library());
    lib->path_ = path;
    std::string missing;
#define MOREH_GLOO_RESOLVE(member, function)                                                        \
  lib->api_.member = reinterpret_cast<decltype(lib->api_.member)>(dlsym(handle, #function)); \
  if (!lib->api_.member && missing.empty()) missing = #function;
    MOREH_GLOO_FUNCTIONS(MOREH_GLOO_RESOLVE)
#undef MOREH_GLOO_RESOLVE
    if (!missing.empty()) {
      tried.push_back(fmt::format("{} (it lacks {}: not moreh's Gloo shim, or another version)", path, missing));
      continue;
    }
    if (const int abi = lib->api_.abi_version(); abi != MOREH_GLOO_ABI_VERSION) {
      tried.push_back(fmt::format("{} (its ABI is version {}, this moreh needs {}: rebuild)", path, abi,
                                  MOREH_GLOO_ABI_VERSION));
      continue;
    }
    lib->version_ = lib->api_.version();
    loaded.emplace(path, lib);
    return lib;
  }
  std::string list;
  for (const std::string& t : tried) list += "\n  " + t;
  if (list.empty()) list = "\n  (no path: set MOREH_GLOO_LIBRARY)";
  throw ConfigError(fmt::format("Gloo's shim ({}, collectives between workers) could not be loaded; tried "
                                "(MOREH_GLOO_LIBRARY names it):{}",
                                kShimName, list));
}

}  // namespace gloo

namespace {

int type_code(DataType type) {
  switch (type) {
    case DataType::kFloat32: return MOREH_GLOO_FLOAT32;
    case DataType::kFloat64: return MOREH_GLOO_FLOAT64;
    case DataType::kBFloat16: return MOREH_GLOO_BFLOAT16;
    case DataType::kFloat16: return MOREH_GLOO_FLOAT16;
    case DataType::kInt64: return MOREH_GLOO_INT64;
    case DataType::kInt32: return MOREH_GLOO_INT32;
    case DataType::kBool: return MOREH_GLOO_UINT8;
  }
  return MOREH_GLOO_UINT8;
}

int op_code(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return MOREH_GLOO_SUM;
    case ReduceOp::kAvg: return MOREH_GLOO_AVG;
    case ReduceOp::kMax: return MOREH_GLOO_MAX;
    case ReduceOp::kMin: return MOREH_GLOO_MIN;
    case ReduceOp::kProd: return MOREH_GLOO_PROD;
  }
  return MOREH_GLOO_SUM;
}

int64_t ms(std::chrono::milliseconds t) { return std::max<int64_t>(t.count(), 1); }

GlooResult result_of(int status, const moreh_gloo_error& error) {
  GlooResult r;
  r.status = status;
  if (status != MOREH_GLOO_OK) {
    r.peer = error.peer;
    r.message = std::string(error.message, strnlen(error.message, sizeof error.message));
  }
  return r;
}

void copy_message(const std::string& text, char* error, size_t size) {
  if (!error || size == 0) return;
  const size_t n = std::min(text.size(), size - 1);
  std::memcpy(error, text.data(), n);
  error[n] = '\0';
}

// The C callbacks the shim calls: exceptions stay on this side, as a status and a message.
template <typename F>
int callback_status(char* error, size_t error_size, F&& f) {
  try {
    f();
    return 0;
  } catch (const TimeoutError& e) {
    copy_message(e.what(), error, error_size);
    return MOREH_GLOO_TIMEOUT;
  } catch (const std::exception& e) {
    copy_message(e.what(), error, error_size);
    return MOREH_GLOO_ERROR;
  } catch (...) {
    copy_message("an unknown exception", error, error_size);
    return MOREH_GLOO_ERROR;
  }
}

int store_set(void* user, const char* key, const void* data, size_t size, char* error, size_t error_size) {
  return callback_status(error, error_size, [&] {
    static_cast<const GlooStore*>(user)->set(key, std::string(static_cast<const char*>(data), size));
  });
}

int store_get(void* user, const char* key, int64_t timeout_ms, void (*put)(void*, const void*, size_t), void* sink,
              char* error, size_t error_size) {
  return callback_status(error, error_size, [&] {
    const std::string value = static_cast<const GlooStore*>(user)->get(key, std::chrono::milliseconds(timeout_ms));
    put(sink, value.data(), value.size());
  });
}

}  // namespace

GlooContext::GlooContext(std::shared_ptr<const gloo::Library> library, moreh_gloo_context* handle)
    : library_(std::move(library)), handle_(handle) {
  rank_ = library_->api().rank(handle_);
  size_ = library_->api().size(handle_);
}

GlooContext::~GlooContext() { library_->api().destroy(handle_); }

void GlooContext::abort(const std::string& reason) { library_->api().abort(handle_, reason.c_str()); }

GlooResult GlooContext::all_reduce(const void* send, void* recv, uint64_t count, DataType type, ReduceOp op,
                                   std::chrono::milliseconds timeout) {
  moreh_gloo_error e{};
  const int s = library_->api().all_reduce(handle_, send, recv, count, type_code(type), op_code(op), ms(timeout), &e);
  return result_of(s, e);
}

GlooResult GlooContext::reduce_scatter(const void* send, void* recv, const std::vector<uint64_t>& counts, DataType type,
                                       ReduceOp op, std::chrono::milliseconds timeout) {
  if (static_cast<int>(counts.size()) != size_)
    return {MOREH_GLOO_INVALID, -1, "reduce_scatter needs one count per rank"};
  moreh_gloo_error e{};
  const int s = library_->api().reduce_scatter(handle_, send, recv, counts.data(), type_code(type), op_code(op),
                                               ms(timeout), &e);
  return result_of(s, e);
}

GlooResult GlooContext::all_gather(const void* send, void* recv, const std::vector<uint64_t>& counts, DataType type,
                                   std::chrono::milliseconds timeout) {
  if (static_cast<int>(counts.size()) != size_) return {MOREH_GLOO_INVALID, -1, "all_gather needs one count per rank"};
  moreh_gloo_error e{};
  const int s = library_->api().all_gatherv(handle_, send, recv, counts.data(), type_code(type), ms(timeout), &e);
  return result_of(s, e);
}

GlooResult GlooContext::broadcast(const void* send, void* recv, uint64_t count, DataType type, int root,
                                  std::chrono::milliseconds timeout) {
  moreh_gloo_error e{};
  const int s = library_->api().broadcast(handle_, send, recv, count, type_code(type), root, ms(timeout), &e);
  return result_of(s, e);
}

GlooResult GlooContext::barrier(std::chrono::milliseconds timeout) {
  moreh_gloo_error e{};
  const int s = library_->api().barrier(handle_, ms(timeout), &e);
  return result_of(s, e);
}

GlooResult GlooContext::send(int peer, const void* data, uint64_t count, DataType type,
                             std::chrono::milliseconds timeout) {
  moreh_gloo_error e{};
  const int s = library_->api().send(handle_, peer, data, count, type_code(type), ms(timeout), &e);
  return result_of(s, e);
}

GlooResult GlooContext::recv(int peer, void* data, uint64_t count, DataType type, std::chrono::milliseconds timeout) {
  moreh_gloo_error e{};
  const int s = library_->api().recv(handle_, peer, data, count, type_code(type), ms(timeout), &e);
  return result_of(s, e);
}

std::shared_ptr<GlooContext> connect_gloo(int rank, int size, const GlooStore& store, std::string hostname,
                                          std::chrono::milliseconds timeout) {
  std::shared_ptr<const gloo::Library> library = gloo::Library::load();
  moreh_gloo_store callbacks{const_cast<GlooStore*>(&store), &store_set, &store_get};
  moreh_gloo_context* handle = nullptr;
  moreh_gloo_error e{};
  const int s = library->api().connect(rank, size, hostname.c_str(), ms(timeout), &callbacks, &handle, &e);
  if (s == MOREH_GLOO_OK) return std::make_shared<GlooContext>(std::move(library), handle);
  const std::string what = fmt::format("Gloo rank {} of {} on {} could not connect to its peers (bound {} ms): {}",
                                       rank, size, hostname, timeout.count(), result_of(s, e).message);
  if (s == MOREH_GLOO_INVALID) throw ConfigError(what);
  if (s == MOREH_GLOO_TIMEOUT) throw TimeoutError(what);
  throw CollectiveError(what);
}

}  // namespace moreh::runtime
