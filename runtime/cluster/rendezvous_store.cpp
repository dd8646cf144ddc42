#include "runtime/cluster/rendezvous_store.h"

#include <fmt/format.h>

#include "runtime/base/errors.h"

namespace moreh::runtime {

void RendezvousStore::set(const std::string& key, std::string value) {
  std::lock_guard lock(mu_);
  auto it = values_.find(key);
  if (it != values_.end()) {
    if (it->second != value) throw ProtocolError(fmt::format("rendezvous key '{}' set twice with different values", key));
    return;
  }
  if (values_.size() >= kMaxKeys || bytes_ + key.size() + value.size() > kMaxBytes)
    throw ProtocolError(fmt::format("the rendezvous store is full ({} keys, {} bytes)", values_.size(), bytes_));
  bytes_ += key.size() + value.size();
  values_.emplace(key, std::move(value));
  changed_.notify_all();
}

std::string RendezvousStore::get(const std::string& key, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  if (!changed_.wait_for(lock, timeout, [&] { return values_.count(key) > 0; }))
    throw TimeoutError(fmt::format("rendezvous: key '{}' was not set within {} ms (a worker did not reach the data "
                                   "plane's rendezvous)",
                                   key, timeout.count()));
  return values_.at(key);
}

}  // namespace moreh::runtime
