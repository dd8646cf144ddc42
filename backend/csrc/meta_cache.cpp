#include "backend/csrc/meta_cache.h"

namespace moreh::backend {

void MetaKey::add_tensor(const at::Tensor& t, uint64_t location_tag) {
  if (!t.defined()) {
    add(0xdeadull);
    return;
  }
  add(location_tag);
  add(static_cast<uint64_t>(t.scalar_type()));
  add(static_cast<uint64_t>(t.dim()));
  for (int64_t s : t.sizes()) add(static_cast<uint64_t>(s));
  for (int64_t s : t.strides()) add(static_cast<uint64_t>(s));
  add(static_cast<uint64_t>(t.storage().nbytes()));
  const void* impl = t.storage().unsafeGetStorageImpl();
  uint64_t alias = storages_.size();
  for (size_t i = 0; i < storages_.size(); ++i)
    if (storages_[i] == impl) {
      alias = i;
      break;
    }
  if (alias == storages_.size()) {
    storages_.push_back(impl);
    first_offsets_.push_back(t.storage_offset());
  }
  add(alias);
  // Offsets relative to the storage's first tensor in this call: how views overlap decides results (and
  // errors), where they start in the storage does not; a sliding window hits the cache every step.
  add(static_cast<uint64_t>(t.storage_offset() - first_offsets_[alias]));
}

size_t MetaKey::hash() const {
  uint64_t h = 1469598103934665603ull;
  for (uint64_t w : words_) {
    h ^= w + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  }
  return static_cast<size_t>(h);
}

const MetaEntry* MetaCache::find(const MetaKey& key) const {
  auto it = map_.find(key);
  if (it == map_.end()) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  return &it->second;
}

void MetaCache::insert(const MetaKey& key, MetaEntry entry) {
  if (map_.size() >= kCapacity) map_.clear();  // a script whose shapes never repeat: start over
  map_.emplace(key, std::move(entry));
}

}  // namespace moreh::backend
