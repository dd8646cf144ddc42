// Output geometry of recorded ops, cached by what decides it (the op, every tensor argument's sizes,
// strides, dtype, aliasing and offset relative to the other views of its storage, the non-floating
// arguments); offsets of results that view an argument are kept relative to it. PyTorch implements many Meta
// kernels in Python (torch/_meta_registrations.py), which costs ~80 us a call; a training loop repeats
// the same ops on the same shapes every step, so after the first step recording needs no Meta call.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace moreh::backend {

// What one returned tensor is.
struct OutSpec {
  enum class Kind : uint8_t { kUndefined, kFresh, kViewOfInput, kWrittenArgument };
  Kind kind = Kind::kUndefined;
  std::vector<int64_t> sizes, strides;
  int64_t offset = 0;  // kViewOfInput / kWrittenArgument: relative to that tensor's storage offset
  int64_t nbytes = 0;
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  int source = -1;  // kViewOfInput: moreh input index; kWrittenArgument: argument index
};

struct ReturnSpec {
  bool is_list = false;
  std::vector<OutSpec> items;
  // A number the op returns (flash attention's sequence lengths): a Meta kernel computes it from what the
  // key holds (sizes, integer arguments), so it is cached with the rest. None for tensors.
  c10::IValue value;
};

struct MetaEntry {
  std::vector<ReturnSpec> returns;
};

// The cache key, built while the fallback walks the arguments.
class MetaKey {
 public:
  void reset(const void* op) {
    words_.clear();
    words_.reserve(64);
    storages_.clear();
    first_offsets_.clear();
    add(reinterpret_cast<uintptr_t>(op));
  }
  void add(uint64_t w) { words_.push_back(w); }
  void add_tensor(const at::Tensor& t, uint64_t location_tag);
  bool operator==(const MetaKey& o) const { return words_ == o.words_; }
  size_t hash() const;

 private:
  std::vector<uint64_t> words_;
  std::vector<const void*> storages_;  // storages seen so far in this call: aliasing is part of the key
  std::vector<int64_t> first_offsets_;  // per storage: the offset of its first tensor in this call
};

struct MetaKeyHash {
  size_t operator()(const MetaKey& k) const { return k.hash(); }
};

class MetaCache {
 public:
  static constexpr size_t kCapacity = 1 << 16;
  const MetaEntry* find(const MetaKey& key) const;
  void insert(const MetaKey& key, MetaEntry entry);
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }

 private:
  std::unordered_map<MetaKey, MetaEntry, MetaKeyHash> map_;
  mutable uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace moreh::backend
