#include "runtime/plan/point_to_point.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>
#include <utility>
#include <vector>

namespace moreh::runtime {
namespace {

struct Message {
  uint32_t slot = 0, tag = 0;
  uint64_t bytes = 0;
  size_t pc = 0;  // where in its program
};

using Pair = std::pair<int, int>;  // (sender, receiver)

std::string describe(const char* verb, int device, const Message& m, const char* dir, int peer) {
  return fmt::format("device {} {} slot {} ({} bytes, tag {}, instruction {}) {} device {}", device, verb, m.slot,
                     m.bytes, m.tag, m.pc, dir, peer);
}

}  // namespace

std::optional<std::string> point_to_point_mismatch(const Plan& plan,
                                                   const std::function<uint64_t(uint32_t slot)>& slot_bytes) {
  std::map<Pair, std::vector<Message>> sends, recvs;
  for (const DeviceProgram& p : plan.programs) {
    for (size_t pc = 0; pc < p.code.size(); ++pc) {
      const Instruction& ins = p.code[pc];
      if (ins.kind != Instruction::Kind::kSend && ins.kind != Instruction::Kind::kRecv) continue;
      const int peer = static_cast<int>(ins.aux);
      if (peer == p.device)
        return fmt::format("device {} {} itself (instruction {})", p.device,
                           ins.kind == Instruction::Kind::kSend ? "sends to" : "receives from", pc);
      const Message m{ins.index, ins.tag, ins.range ? p.ranges.at(ins.range - 1).bytes : slot_bytes(ins.index), pc};
      if (ins.kind == Instruction::Kind::kSend) sends[{p.device, peer}].push_back(m);
      else recvs[{peer, p.device}].push_back(m);
    }
  }
  std::map<Pair, bool> pairs;
  for (const auto& [k, v] : sends) pairs[k] = true;
  for (const auto& [k, v] : recvs) pairs[k] = true;
  for (const auto& [pair, unused] : pairs) {
    const auto& [a, b] = pair;
    const std::vector<Message>& s = sends[pair];
    const std::vector<Message>& r = recvs[pair];
    for (size_t k = 0; k < std::max(s.size(), r.size()); ++k) {
      if (k >= r.size())
        return fmt::format("{}, which receives only {} message(s) from device {}", describe("sends", a, s[k], "to", b),
                           r.size(), a);
      if (k >= s.size())
        return fmt::format("{}, which sends only {} message(s) to device {}",
                           describe("receives", b, r[k], "from", a), s.size(), b);
      if (s[k].tag != r[k].tag || s[k].bytes != r[k].bytes)
        return fmt::format("message {} from device {} to device {} does not meet: {}, but {}", k, a, b,
                           describe("sends", a, s[k], "to", b), describe("receives", b, r[k], "from", a));
    }
  }
  return std::nullopt;
}

std::vector<std::vector<int>> message_groups(const Plan& plan, const std::function<bool(int a, int b)>& own_group) {
  std::set<std::pair<int, int>> pairs;
  for (const DeviceProgram& p : plan.programs)
    for (const Instruction& ins : p.code)
      if ((ins.kind == Instruction::Kind::kSend || ins.kind == Instruction::Kind::kRecv) && ins.group == 0) {
        const int peer = static_cast<int>(ins.aux);
        if (own_group(p.device, peer)) pairs.emplace(std::min(p.device, peer), std::max(p.device, peer));
      }
  std::vector<std::vector<int>> out;
  for (const auto& [a, b] : pairs) out.push_back({a, b});
  return out;
}

}  // namespace moreh::runtime
