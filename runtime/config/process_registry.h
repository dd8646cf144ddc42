// The entry a running moreh process keeps in <config dir>/run/<pid>.json so that moreh-smi can list it
// (docs/FLAVORS.md). A background thread rewrites it atomically at most once per period from a snapshot of
// the devices' counters (atomics: the step path is not touched); stop() or the destructor removes it.
// moreh-smi ignores and removes the entry of a process that died without removing its own.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace moreh::runtime {

struct RegistryDevice {
  std::string name;
  uint64_t memory_used = 0, memory_total = 0;
  uint64_t busy_ns = 0;  // PhysicalDevice::busy_ns(): the thread turns it into utilization over a period
};

struct RegistrySnapshot {
  std::string flavor;
  std::vector<RegistryDevice> devices;
};

// One entry as JSON. `utilization` holds each device's busy fraction (0..1) over the last period.
std::string registry_entry_json(int pid, uint64_t start_time, const std::string& command,
                                const RegistrySnapshot& snapshot, const std::vector<double>& utilization,
                                double unix_time);

class ProcessRegistry {
 public:
  ProcessRegistry(std::string run_dir, std::function<RegistrySnapshot()> snapshot, std::chrono::milliseconds period);
  ~ProcessRegistry();
  ProcessRegistry(const ProcessRegistry&) = delete;
  ProcessRegistry& operator=(const ProcessRegistry&) = delete;

  // Stops the thread and removes the entry; idempotent. In a forked child the entry is the parent's and
  // the thread does not exist: both are left alone.
  void stop();
  const std::string& path() const { return path_; }

 private:
  void run();
  void write_once();

  std::string run_dir_, path_;
  std::function<RegistrySnapshot()> snapshot_;
  std::chrono::milliseconds period_;
  int owner_pid_;
  uint64_t start_time_;
  std::string command_;
  std::vector<uint64_t> last_busy_ns_;
  std::chrono::steady_clock::time_point last_at_;
  bool warned_ = false;

  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false, stopped_ = false;
  std::thread thread_;
};

}  // namespace moreh::runtime
