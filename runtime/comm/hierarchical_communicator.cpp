#include "runtime/comm/hierarchical_communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <numeric>

#include "runtime/base/errors.h"

namespace moreh::runtime {

HierarchicalCommunicator::HierarchicalCommunicator(std::vector<PhysicalDevice*> devices, std::vector<int> group_of_rank,
                                                   const Factory& local, const Factory& cross)
    : Communicator(std::move(devices)), group_of_rank_(std::move(group_of_rank)) {
  layout();
  std::vector<PhysicalDevice*> leaders;
  for (int g = 0; g < groups(); ++g) {
    leaders.push_back(&device(first_of_group_[g]));
    std::vector<PhysicalDevice*> members;
    for (int r = first_of_group_[g]; r < first_of_group_[g] + size_of_group_[g]; ++r) members.push_back(&device(r));
    locals_.push_back(members.size() > 1 ? local(std::move(members)) : nullptr);
  }
  cross_ = cross(std::move(leaders));
}

HierarchicalCommunicator::HierarchicalCommunicator(std::vector<PhysicalDevice*> devices, std::vector<int> group_of_rank,
                                                   std::vector<std::unique_ptr<Communicator>> locals,
                                                   std::unique_ptr<Communicator> cross)
    : Communicator(std::move(devices)), group_of_rank_(std::move(group_of_rank)), locals_(std::move(locals)),
      cross_(std::move(cross)) {
  layout();
}

void HierarchicalCommunicator::layout() {
  if (static_cast<int>(group_of_rank_.size()) != size())
    throw ConfigError(fmt::format("{} group numbers for {} ranks", group_of_rank_.size(), size()));
  for (int r = 0; r < size(); ++r) {
    const int g = group_of_rank_[r];
    const bool next = r == 0 ? g == 0 : g == group_of_rank_[r - 1] + 1;
    if (!next && (r == 0 || g != group_of_rank_[r - 1]))
      throw ConfigError(fmt::format("groups [{}]: each group must be a run of neighbouring ranks, numbered from 0 in "
                                    "rank order",
                                    fmt::join(group_of_rank_, ", ")));
    if (next) {
      first_of_group_.push_back(r);
      size_of_group_.push_back(0);
    }
    ++size_of_group_.back();
  }
}

std::vector<int> HierarchicalCommunicator::nodes_of(const std::vector<int>& ranks) const {
  std::vector<int> nodes;
  for (int r : ranks) {
    if (r < 0 || r >= size()) throw ConfigError(fmt::format("rank {} of a {}-rank communicator", r, size()));
    if (std::find(nodes.begin(), nodes.end(), group_of_rank_[r]) == nodes.end()) nodes.push_back(group_of_rank_[r]);
  }
  return nodes;
}

std::unique_ptr<Communicator> HierarchicalCommunicator::make_group(const std::vector<int>& ranks) const {
  std::vector<bool> seen(size(), false);
  for (int r : ranks) {
    if (r < 0 || r >= size() || seen[r])
      throw ConfigError(fmt::format("a group of ranks [{}] of a {}-rank communicator", fmt::join(ranks, ", "), size()));
    seen[r] = true;
  }
  if (ranks.size() < 2) return nullptr;
  // The nodes in the order the ranks meet them; each node's ranks must be neighbours in `ranks`.
  std::vector<int> nodes, group_of_rank;
  for (size_t i = 0; i < ranks.size(); ++i) {
    const int g = group_of_rank_[ranks[i]];
    if (nodes.empty() || nodes.back() != g) {
      if (std::find(nodes.begin(), nodes.end(), g) != nodes.end()) return nullptr;
      nodes.push_back(g);
    }
    group_of_rank.push_back(static_cast<int>(nodes.size()) - 1);
  }
  // Each node's part of the group.
  std::vector<std::vector<int>> local_ranks(nodes.size());
  for (size_t i = 0; i < ranks.size(); ++i)
    local_ranks[group_of_rank[i]].push_back(ranks[i] - first_of_group_[group_of_rank_[ranks[i]]]);
  if (nodes.size() == 1) return locals_[nodes[0]] ? locals_[nodes[0]]->make_group(local_ranks[0]) : nullptr;
  if (!group_cross_) return nullptr;
  std::vector<std::unique_ptr<Communicator>> locals;
  std::vector<PhysicalDevice*> devices, leaders;
  for (int r : ranks) devices.push_back(&device(r));
  for (size_t n = 0; n < nodes.size(); ++n) {
    leaders.push_back(&device(first_of_group_[nodes[n]] + local_ranks[n][0]));
    if (local_ranks[n].size() == 1) {
      locals.push_back(nullptr);
      continue;
    }
    auto local = locals_[nodes[n]] ? locals_[nodes[n]]->make_group(local_ranks[n]) : nullptr;
    if (!local) return nullptr;
    locals.push_back(std::move(local));
  }
  auto cross = group_cross_(ranks, nodes, std::move(leaders));
  if (!cross) return nullptr;
  return std::unique_ptr<Communicator>(
      new HierarchicalCommunicator(std::move(devices), std::move(group_of_rank), std::move(locals), std::move(cross)));
}

void HierarchicalCommunicator::drop_pending() {
  const std::string reason = broken_reason();
  for (auto& l : locals_)
    if (l) l->interrupt(reason);
  cross_->interrupt(reason);
}

bool HierarchicalCommunicator::restart_ranks() {
  bool all = cross_->recover();
  for (auto& l : locals_)
    if (l) all = l->recover() && all;
  return all;
}

void HierarchicalCommunicator::enqueue_part(int rank, CollectivePart part) {
  device(rank).submit([this, rank, part = std::move(part)] { run_part(rank, part); });
}

void HierarchicalCommunicator::run_part(int rank, const CollectivePart& part) {
  throw_if_broken();
  try {
    compose(rank, part);
  } catch (const ConfigError&) {
    throw;  // bad arguments: every rank refuses them before any step
  } catch (const Error& e) {
    // A step failed here (a peer timed out, out of memory, ...): the ranks waiting in the other halves of
    // this collective stop waiting too.
    const std::string reason = fmt::format("{} on rank {} ({}): {}", part.describe(), rank, device(rank).name(), e.what());
    for (auto& l : locals_)
      if (l) l->interrupt(reason);
    cross_->interrupt(reason);
    mark_broken(reason);
    throw;
  }
  count_sent(rank, ring_bytes_sent(part, rank, size()));
  count_completed(rank);
}

void HierarchicalCommunicator::run_group(int rank, const std::vector<CollectivePart>& parts) {
  const bool plain = std::all_of(parts.begin(), parts.end(), [](const CollectivePart& p) {
    return p.kind == CollectiveKind::kAllReduce && p.op != ReduceOp::kAvg;
  });
  if (!plain || parts.size() < 2) return Communicator::run_group(rank, parts);
  throw_if_broken();
  const int g = group_of_rank_[rank], lr = rank - first_of_group_[g];
  Communicator* const local = locals_[g].get();
  PhysicalDevice& dev = device(rank);
  try {
    std::vector<CollectivePart> cross;
    for (const auto& part : parts) {
      if (local) {
        local->run_in_stream(lr, part);
      } else if (part.count && part.send != part.recv) {
        dev.copy_in_stream(part.recv, part.send, part.count * size_of(part.type));
      }
      cross.push_back(CollectivePart::all_reduce(part.recv, part.recv, part.count, part.type, part.op));
    }
    if (lr == 0) cross_->run_group_in_stream(g, cross);
    if (local)
      for (const auto& part : parts) {
        if (part.count == 0) continue;
        CollectivePart b;
        b.kind = CollectiveKind::kBroadcast;
        b.type = part.type;
        b.send = part.recv;
        b.recv = part.recv;
        b.count = part.count;
        b.peer = 0;
        local->run_in_stream(lr, b);
      }
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    const std::string reason =
        fmt::format("a group of {} all_reduces on rank {} ({}): {}", parts.size(), rank, dev.name(), e.what());
    for (auto& l : locals_)
      if (l) l->interrupt(reason);
    cross_->interrupt(reason);
    mark_broken(reason);
    throw;
  }
  for (const auto& part : parts) {
    count_sent(rank, ring_bytes_sent(part, rank, size()));
    count_completed(rank);
  }
}

void HierarchicalCommunicator::compose(int rank, const CollectivePart& part) {
  const int g = group_of_rank_[rank], lr = rank - first_of_group_[g];
  Communicator* const local = locals_[g].get();
  const bool leader = lr == 0;
  PhysicalDevice& dev = device(rank);
  const uint64_t es = size_of(part.type);
  const bool avg = part.op == ReduceOp::kAvg &&
                   (part.kind == CollectiveKind::kAllReduce || part.kind == CollectiveKind::kReduceScatter);
  if (avg && !is_floating_point(part.type))
    throw ConfigError(fmt::format("{}: averaging {} across GPUs is not supported (sum, then divide)", part.describe(),
                                  name_of(part.type)));

  auto sub = [&](CollectiveKind kind) {
    CollectivePart p;
    p.kind = kind;
    p.type = part.type;
    p.op = avg ? ReduceOp::kSum : part.op;
    return p;
  };
  auto copy = [&](void* dst, const void* src, uint64_t bytes) {
    if (bytes != 0 && dst != src) dev.copy_in_stream(dst, src, bytes);
  };
  auto run_cross = [&](const CollectivePart& p) {
    if (leader) cross_->run_in_stream(g, p);
  };
  // The leader's `count` elements at `buffer` to the rest of the group, in place.
  auto from_leader = [&](void* buffer, uint64_t count) {
    if (!local || count == 0) return;
    CollectivePart p = sub(CollectiveKind::kBroadcast);
    p.send = buffer;
    p.recv = buffer;
    p.count = count;
    p.peer = 0;
    local->run_in_stream(lr, p);
  };
  // The sums over the group of `send`, in `recv` on every member.
  auto group_reduce = [&](const void* send, void* recv, uint64_t count) {
    if (!local) return copy(recv, send, count * es);
    CollectivePart p = sub(CollectiveKind::kAllReduce);
    p.send = send;
    p.recv = recv;
    p.count = count;
    local->run_in_stream(lr, p);
  };
  // Per group: the elements of its ranks' slices.
  auto group_counts = [&] {
    std::vector<uint64_t> counts(groups(), 0);
    for (int r = 0; r < size(); ++r) counts[group_of_rank_[r]] += part.counts[r];
    return counts;
  };

  switch (part.kind) {
    case CollectiveKind::kAllReduce: {
      if (part.count == 0) return;
      group_reduce(part.send, part.recv, part.count);
      CollectivePart p = sub(CollectiveKind::kAllReduce);
      p.send = part.recv;
      p.recv = part.recv;
      p.count = part.count;
      run_cross(p);
      from_leader(part.recv, part.count);
      if (avg) dev.scale_in_stream(part.type, part.recv, part.count, 1.0 / size());
      return;
    }
    case CollectiveKind::kReduceScatter: {
      const std::vector<uint64_t> offsets = offsets_of(part.counts), gcounts = group_counts(),
                                  goffsets = offsets_of(gcounts);
      const uint64_t total = offsets.back() + part.counts.back();
      if (total == 0) return;
      // Every slice summed over the group, then each group's block over the groups (the leaders).
      const std::unique_ptr<PhysicalBlock> scratch = dev.allocate(total * es);
      group_reduce(part.send, scratch->data(), total);
      CollectivePart p = sub(CollectiveKind::kReduceScatter);
      p.send = scratch->data();
      p.recv = element_at(scratch->data(), goffsets[g], es);
      p.counts = gcounts;
      run_cross(p);
      from_leader(element_at(scratch->data(), goffsets[g], es), gcounts[g]);
      copy(part.recv, element_at(scratch->data(), offsets[rank], es), part.counts[rank] * es);
      if (avg && part.counts[rank] != 0) dev.scale_in_stream(part.type, part.recv, part.counts[rank], 1.0 / size());
      return;  // the scratch block is freed in stream order: later work on this stream reuses it safely
    }
    case CollectiveKind::kAllGather: {
      const std::vector<uint64_t> offsets = offsets_of(part.counts), gcounts = group_counts();
      const uint64_t total = offsets.back() + part.counts.back();
      if (total == 0) return;
      const int first = first_of_group_[g];
      void* block = element_at(part.recv, offsets[first], es);
      if (local) {
        CollectivePart p = sub(CollectiveKind::kAllGather);
        p.send = part.send;
        p.recv = block;
        p.counts.assign(part.counts.begin() + first, part.counts.begin() + first + size_of_group_[g]);
        local->run_in_stream(lr, p);
      } else {
        copy(element_at(part.recv, offsets[rank], es), part.send, part.counts[rank] * es);
      }
      CollectivePart p = sub(CollectiveKind::kAllGather);
      p.send = block;
      p.recv = part.recv;
      p.counts = gcounts;
      run_cross(p);
      from_leader(part.recv, total);
      return;
    }
    case CollectiveKind::kBroadcast: {
      if (part.count == 0) return;
      const int rg = group_of_rank_[part.peer];
      if (g == rg) {
        if (local) {
          CollectivePart p = sub(CollectiveKind::kBroadcast);
          p.send = part.send;
          p.recv = part.recv;
          p.count = part.count;
          p.peer = part.peer - first_of_group_[rg];
          local->run_in_stream(lr, p);
        } else {
          copy(part.recv, part.send, part.count * es);
        }
      }
      CollectivePart p = sub(CollectiveKind::kBroadcast);
      p.send = part.recv;
      p.recv = part.recv;
      p.count = part.count;
      p.peer = rg;
      run_cross(p);
      if (g != rg) from_leader(part.recv, part.count);
      return;
    }
    case CollectiveKind::kBarrier:
      if (local) local->run_in_stream(lr, sub(CollectiveKind::kBarrier));
      run_cross(sub(CollectiveKind::kBarrier));
      if (local) local->run_in_stream(lr, sub(CollectiveKind::kBarrier));
      return;
    case CollectiveKind::kSend:
    case CollectiveKind::kRecv: {
      const int peer_group = group_of_rank_[part.peer];
      if (peer_group != g) {
        // Between groups: the leaders' own messages go over the cross communicator (a pipeline over workers of
        // one device each); a member's would need its leader's stream, which runs its own program.
        if (leader && first_of_group_[peer_group] == part.peer) {
          CollectivePart p = part;
          p.peer = peer_group;
          cross_->run_in_stream(g, p);
          return;
        }
        throw ConfigError(fmt::format("{} on rank {}: send and recv between ranks of different groups go over the "
                                      "groups' first ranks, or over a group of the two where groups across them "
                                      "can be formed (between workers)", part.describe(), rank));
      }
      CollectivePart p = part;
      p.peer = part.peer - first_of_group_[g];
      local->run_in_stream(lr, p);
      return;
    }
  }
}

bool HierarchicalCommunicator::messages_need_a_group(int a, int b) const {
  if (!group_cross_ || a < 0 || b < 0 || a >= size() || b >= size()) return false;
  const int ga = group_of_rank_[a], gb = group_of_rank_[b];
  return ga != gb && !(first_of_group_[ga] == a && first_of_group_[gb] == b);
}

}  // namespace moreh::runtime
