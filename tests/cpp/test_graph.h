// Helpers shared by the C++ tests: hand-built nodes and tensor references over runtime buffers.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/memory/buffer.h"
#include "runtime/graph/step_graph.h"
#include "runtime/memory/virtual_memory.h"
#include "runtime/plan/program.h"

namespace moreh::testing {

using runtime::Attribute;
using runtime::Buffer;
using runtime::Dims;
using runtime::Node;
using runtime::TensorRef;

// A contiguous float32 view over the whole buffer (one dimension).
inline TensorRef ref(std::shared_ptr<Buffer> b) {
  TensorRef r;
  int64_t n = static_cast<int64_t>(b->bytes() / 4);
  r.buffer = std::move(b);
  r.sizes = {n};
  r.strides = {1};
  r.dtype = 6;  // float32 in the backend's codes; opaque here
  r.itemsize = 4;
  return r;
}

inline Node node(std::string_view op, std::vector<TensorRef> inputs, std::vector<TensorRef> outputs,
                 std::initializer_list<uint16_t> written = {}, std::vector<Attribute> attrs = {}) {
  Node n;
  n.op = runtime::intern_op(op);
  n.attrs = std::move(attrs);
  n.inputs = std::move(inputs);
  n.outputs = std::move(outputs);
  for (uint16_t w : written) n.written.push_back(w);
  // Schema positions as if the op took its tensors first, then its attributes, and returned its outputs.
  for (size_t i = 0; i < n.inputs.size(); ++i) n.input_args.push_back(static_cast<uint8_t>(i));
  for (size_t j = 0; j < n.attrs.size(); ++j) n.attr_args.push_back(static_cast<uint8_t>(n.inputs.size() + j));
  for (size_t k = 0; k < n.outputs.size(); ++k) n.output_rets.push_back(static_cast<uint8_t>(k));
  return n;
}

// A contiguous float32 view of `sizes` over the buffer.
inline TensorRef shaped(std::shared_ptr<Buffer> b, Dims sizes) {
  TensorRef r = ref(std::move(b));
  r.sizes = sizes;
  r.strides.assign(sizes.size(), 1);
  for (size_t i = sizes.size(); i-- > 1;) r.strides[i - 1] = r.strides[i] * sizes[i];
  return r;
}

// The transpose of a 2-D view (its two dims and strides swapped).
inline TensorRef transposed(TensorRef r) {
  std::swap(r.sizes[0], r.sizes[1]);
  std::swap(r.strides[0], r.strides[1]);
  return r;
}

// x.to("moreh"): a host copy into the buffer, viewed with `sizes`.
inline Node upload(const std::shared_ptr<Buffer>& dst, Dims sizes) {
  Node n = node("aten::copy_", {shaped(dst, sizes)}, {}, {0});
  n.host_input = true;
  return n;
}

// Whether two launches' views are the same (offsets, sizes and strides).
inline bool same_views(const std::vector<runtime::LocalRef>& a, const std::vector<runtime::LocalRef>& b) {
  if (a.size() != b.size()) return false;
  for (size_t k = 0; k < a.size(); ++k)
    if (a[k].offset != b[k].offset || a[k].sizes != b[k].sizes || a[k].strides != b[k].strides) return false;
  return true;
}

}  // namespace moreh::testing
