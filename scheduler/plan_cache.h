// Graph hash -> compiled plan, least recently used first out.
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <unordered_map>

#include "scheduler/plan_report.h"

namespace moreh::scheduler {

class PlanCache {
 public:
  explicit PlanCache(size_t capacity) : capacity_(capacity ? capacity : 1) {}
  std::shared_ptr<const PlannedStep> find(uint64_t hash);
  void insert(uint64_t hash, std::shared_ptr<const PlannedStep> plan);
  size_t size() const { return index_.size(); }
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }

 private:
  using Entry = std::pair<uint64_t, std::shared_ptr<const PlannedStep>>;
  size_t capacity_;
  std::list<Entry> order_;  // front = most recent
  std::unordered_map<uint64_t, std::list<Entry>::iterator> index_;
  uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace moreh::scheduler
