#include "runtime/graph/step_graph.h"

#include <deque>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

namespace moreh::runtime {
namespace {

struct OpTable {
  std::shared_mutex mu;
  std::deque<std::string> names{"<none>"};  // deque: stable references
  std::unordered_map<std::string, OpId> ids;
};

OpTable& table() {
  static auto* t = new OpTable();  // lives for the process: nodes may outlive static destruction
  return *t;
}

}  // namespace

OpId intern_op(std::string_view name) {
  auto& t = table();
  std::string key(name);
  {
    std::shared_lock<std::shared_mutex> lock(t.mu);
    if (auto it = t.ids.find(key); it != t.ids.end()) return it->second;
  }
  std::unique_lock<std::shared_mutex> lock(t.mu);
  if (auto it = t.ids.find(key); it != t.ids.end()) return it->second;
  OpId id = static_cast<OpId>(t.names.size());
  t.names.push_back(key);
  t.ids.emplace(std::move(key), id);
  return id;
}

const std::string& op_name(OpId id) {
  auto& t = table();
  std::shared_lock<std::shared_mutex> lock(t.mu);
  return id < t.names.size() ? t.names[id] : t.names[0];
}

}  // namespace moreh::runtime
