#include "runtime/worker/payload_shares.h"

#include <algorithm>

#include <fmt/format.h>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

template <typename F>
void for_each_launch(const Plan& plan, const std::vector<int>& devices, F&& f) {
  for (const DeviceProgram& p : plan.programs) {
    if (std::find(devices.begin(), devices.end(), p.device) == devices.end()) continue;
    for (const Instruction& in : p.code) {
      if (in.kind == Instruction::Kind::kLaunch) {
        if (in.index >= plan.num_nodes) throw Error(fmt::format("a launch of node {} in a plan of {}", in.index, plan.num_nodes));
        if (in.aux > p.launches.size()) throw Error(fmt::format("a launch of node {} names launch {} of {}", in.index, in.aux, p.launches.size()));
        f(in.index, in.aux ? &p.launches[in.aux - 1] : nullptr);
      } else if (in.kind == Instruction::Kind::kFused) {
        if (in.index >= p.fused.size()) throw Error(fmt::format("fused kernel {} of {}", in.index, p.fused.size()));
        for (uint32_t n : p.fused[in.index].nodes) {
          if (n >= plan.num_nodes) throw Error(fmt::format("a fused kernel stands for node {} in a plan of {}", n, plan.num_nodes));
          f(n, nullptr);
        }
      }
    }
  }
}

}  // namespace

std::vector<bool> launched_nodes(const Plan& plan, const std::vector<int>& devices) {
  std::vector<bool> out(plan.num_nodes, false);
  for_each_launch(plan, devices, [&](uint32_t n, const LocalLaunch*) { out[n] = true; });
  return out;
}

std::vector<PayloadShare> payload_shares(const Plan& plan, const std::vector<int>& devices,
                                         const std::vector<bool>& host_input) {
  if (host_input.size() != plan.num_nodes)
    throw Error(fmt::format("payload_shares: {} nodes for a plan of {}", host_input.size(), plan.num_nodes));
  std::vector<PayloadShare> out(plan.num_nodes, PayloadShare{PayloadShare::Kind::kWithheld, {}});
  std::vector<bool> whole(plan.num_nodes, false);
  for_each_launch(plan, devices, [&](uint32_t n, const LocalLaunch* l) {
    PayloadShare& s = out[n];
    if (whole[n]) return;
    if (!host_input[n] || !l || l->batch_rows <= 0 || l->rows.count <= 0 ||
        l->rows.begin + l->rows.count > l->batch_rows ||
        (s.kind == PayloadShare::Kind::kRows && s.rows.whole != l->batch_rows)) {
      whole[n] = true;
      s = PayloadShare{};
      return;
    }
    const int64_t end = l->rows.begin + l->rows.count;
    if (s.kind == PayloadShare::Kind::kRows) {
      const int64_t begin = std::min(s.rows.begin, l->rows.begin);
      s.rows.count = std::max(s.rows.begin + s.rows.count, end) - begin;
      s.rows.begin = begin;
    } else {
      s = PayloadShare{PayloadShare::Kind::kRows, RowWindow{l->rows.begin, l->rows.count, l->batch_rows}};
    }
  });
  return out;
}

}  // namespace moreh::runtime
