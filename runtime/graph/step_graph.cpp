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
  std::unordered_map<OpId, OpFacts> facts;
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

void set_op_facts(OpId id, OpFacts facts) {
  auto& t = table();
  std::unique_lock<std::shared_mutex> lock(t.mu);
  t.facts[id] = facts;
}

OpFacts op_facts(OpId id) {
  auto& t = table();
  std::shared_lock<std::shared_mutex> lock(t.mu);
  auto it = t.facts.find(id);
  return it == t.facts.end() ? OpFacts{} : it->second;
}

const Attribute* Node::attr_of_arg(int arg) const {
  for (size_t j = 0; j < attr_args.size() && j < attrs.size(); ++j)
    if (attr_args[j] == arg) return &attrs[j];
  return nullptr;
}

int Node::input_of_arg(int arg) const {
  for (size_t i = 0; i < input_args.size(); ++i)
    if (input_args[i] == arg) return static_cast<int>(i);
  return -1;
}

int Node::output_of_ret(int ret) const {
  for (size_t k = 0; k < output_rets.size(); ++k)
    if (output_rets[k] == ret) return static_cast<int>(k);
  return -1;
}

}  // namespace moreh::runtime
