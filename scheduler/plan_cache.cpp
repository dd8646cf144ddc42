#include "scheduler/plan_cache.h"

namespace moreh::scheduler {

std::shared_ptr<const PlannedStep> PlanCache::find(uint64_t hash) {
  auto it = index_.find(hash);
  if (it == index_.end()) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  order_.splice(order_.begin(), order_, it->second);
  return it->second->second;
}

void PlanCache::insert(uint64_t hash, std::shared_ptr<const PlannedStep> plan) {
  if (auto it = index_.find(hash); it != index_.end()) {
    it->second->second = std::move(plan);
    order_.splice(order_.begin(), order_, it->second);
    return;
  }
  order_.emplace_front(hash, std::move(plan));
  index_[hash] = order_.begin();
  while (index_.size() > capacity_) {
    index_.erase(order_.back().first);
    order_.pop_back();
  }
}

}  // namespace moreh::scheduler
