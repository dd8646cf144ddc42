// Keys and values the workers exchange through the script's process while their data plane connects (each
// worker's Gloo addresses): set once, read by every worker, each wait bounded.
#pragma once
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>

namespace moreh::runtime {

class RendezvousStore {
 public:
  // Caps what a job may store: keys, and bytes in all.
  static constexpr size_t kMaxKeys = 4096;
  static constexpr size_t kMaxBytes = 16u << 20;

  // ProtocolError past the caps or for a key set twice with another value.
  void set(const std::string& key, std::string value);
  // TimeoutError naming the key when it is not set within `timeout`.
  std::string get(const std::string& key, std::chrono::milliseconds timeout);

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, std::string> values_;
  size_t bytes_ = 0;
};

}  // namespace moreh::runtime
