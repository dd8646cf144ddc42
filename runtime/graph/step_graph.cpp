#include "runtime/graph/step_graph.h"

#include <algorithm>
#include <map>

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

ListElements list_elements(const Node& node) {
  ListElements out;
  std::map<int, size_t> in_count, out_count;
  for (uint8_t a : node.input_args) ++in_count[a];
  for (uint8_t r : node.output_rets) ++out_count[r];
  for (const auto& [arg, count] : in_count) out.length = std::max(out.length, count);
  if (out.length <= 1 || node.input_args.size() != node.inputs.size() || node.output_rets.size() != node.outputs.size()) {
    out.length = 0;
    return out;
  }
  std::map<int, int> seen;
  for (uint8_t a : node.input_args) out.inputs.push_back(in_count[a] == out.length ? seen[a]++ : -1);
  seen.clear();
  for (uint8_t r : node.output_rets) out.outputs.push_back(out_count[r] == out.length ? seen[1000 + r]++ : -1);
  return out;
}

}  // namespace moreh::runtime
