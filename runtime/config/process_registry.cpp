#include "runtime/config/process_registry.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/base/spdlog_logger.h"

namespace moreh::runtime {
namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      out += fmt::format("\\u{:04x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): with the pid it names
// this process, so a reused pid is not mistaken for it.
uint64_t own_start_time() {
  std::ifstream in("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream fields(stat.substr(paren + 2));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i)
    if (i == 22) return std::stoull(field);
  return 0;
}

std::string own_command() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  for (char& c : raw)
    if (c == '\0') c = ' ';
  return raw;
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

std::string registry_entry_json(int pid, uint64_t start_time, const std::string& command,
                                const RegistrySnapshot& snapshot, const std::vector<double>& utilization,
                                double unix_time) {
  uint64_t used = 0, total = 0;
  double busy = 0;
  std::string devices;
  for (size_t i = 0; i < snapshot.devices.size(); ++i) {
    const auto& d = snapshot.devices[i];
    double u = i < utilization.size() ? utilization[i] : 0.0;
    used += d.memory_used;
    total += d.memory_total;
    busy += u;
    devices += fmt::format("{}{{\"index\": {}, \"name\": {}, \"memory_used\": {}, \"memory_total\": {}, "
                           "\"utilization\": {:.4f}}}",
                           i ? ", " : "", i, json_string(d.name), d.memory_used, d.memory_total, u);
  }
  double mean = snapshot.devices.empty() ? 0.0 : busy / static_cast<double>(snapshot.devices.size());
  return fmt::format("{{\"pid\": {}, \"start_time\": {}, \"command\": {}, \"flavor\": {}, \"updated\": {:.3f}, "
                     "\"memory_used\": {}, \"memory_total\": {}, \"utilization\": {:.4f}, \"devices\": [{}]}}\n",
                     pid, start_time, json_string(command), json_string(snapshot.flavor), unix_time, used, total,
                     mean, devices);
}

ProcessRegistry::ProcessRegistry(std::string run_dir, std::function<RegistrySnapshot()> snapshot,
                                 std::chrono::milliseconds period)
    : run_dir_(std::move(run_dir)),
      snapshot_(std::move(snapshot)),
      period_(period),
      owner_pid_(getpid()),
      start_time_(own_start_time()),
      command_(own_command()),
      last_at_(std::chrono::steady_clock::now()) {
  path_ = run_dir_ + "/" + std::to_string(owner_pid_) + ".json";
  write_once();  // listed as soon as the engine is up, not a period later
  thread_ = std::thread([this] { run(); });
}

ProcessRegistry::~ProcessRegistry() { stop(); }

void ProcessRegistry::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = stopping_ = true;
  }
  if (getpid() != owner_pid_) {  // a forked child: no thread here, and the entry is the parent's
    if (thread_.joinable()) thread_.detach();
    return;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::error_code ignored;
  std::filesystem::remove(path_, ignored);
}

void ProcessRegistry::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (wake_.wait_for(lock, period_, [this] { return stopping_; })) break;
    lock.unlock();
    write_once();
    lock.lock();
  }
}

void ProcessRegistry::write_once() {
  RegistrySnapshot snap = snapshot_();
  auto now = std::chrono::steady_clock::now();
  double wall_ns = std::chrono::duration<double, std::nano>(now - last_at_).count();
  std::vector<double> utilization(snap.devices.size(), 0.0);
  if (last_busy_ns_.size() == snap.devices.size() && wall_ns > 0)
    for (size_t i = 0; i < snap.devices.size(); ++i)
      utilization[i] = std::clamp(static_cast<double>(snap.devices[i].busy_ns - last_busy_ns_[i]) / wall_ns, 0.0, 1.0);
  last_busy_ns_.clear();
  for (const auto& d : snap.devices) last_busy_ns_.push_back(d.busy_ns);
  last_at_ = now;

  std::string text = registry_entry_json(owner_pid_, start_time_, command_, snap, utilization, unix_now());
  std::error_code ec;
  std::filesystem::create_directories(run_dir_, ec);
  std::string tmp = path_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) ec = std::make_error_code(std::errc::io_error);
  }
  if (!ec) std::filesystem::rename(tmp, path_, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    if (!warned_) log().warn("moreh: cannot write the process registry entry {} ({}); moreh-smi will not list "
                                "this process", path_, ec.message());
    warned_ = true;
  }
}

}  // namespace moreh::runtime
