#include "scheduler/lowering/split_geometry.h"

namespace moreh::scheduler {

using runtime::LocalRef;
using runtime::RowRange;
using runtime::TensorRef;

// The dim of `ref` along which a buffer split into `rows` contiguous rows of `row_elems` elements is
// split, if the view walks the rows in order: one dim spans every row (k indices per row), and
// everything else the view reaches stays inside one stride of that dim.
std::optional<int> row_dim(const TensorRef& ref, uint64_t buffer_bytes, int64_t rows) {
  if (rows <= 0 || ref.itemsize == 0 || buffer_bytes % (static_cast<uint64_t>(rows) * ref.itemsize) != 0)
    return std::nullopt;
  const int64_t row_elems = static_cast<int64_t>(buffer_bytes / ref.itemsize) / rows;
  for (size_t d = 0; d < ref.sizes.size(); ++d) {
    const int64_t size = ref.sizes[d], stride = ref.strides[d];
    if (stride <= 0 || size % rows != 0 || (size / rows) * stride != row_elems) continue;
    int64_t reach = ref.offset;
    bool empty = false;
    for (size_t e = 0; e < ref.sizes.size(); ++e) {
      if (e == d) continue;
      if (ref.sizes[e] == 0) empty = true;
      else if (ref.strides[e] < 0) reach = INT64_MAX;
      else reach += ref.strides[e] * (ref.sizes[e] - 1);
    }
    if (!empty && reach < stride) return static_cast<int>(d);
  }
  return std::nullopt;
}

std::optional<ViewSplit> view_split(const TensorRef& ref, uint64_t buffer_bytes, int64_t rows, int64_t outer) {
  if (outer <= 1) {
    if (auto d = row_dim(ref, buffer_bytes, rows)) return ViewSplit{*d, 1};
    return std::nullopt;
  }
  if (rows <= 0 || ref.itemsize == 0) return std::nullopt;
  const int64_t elems = static_cast<int64_t>(buffer_bytes / ref.itemsize);
  if (elems % (rows * outer) != 0) return std::nullopt;
  const int64_t row_elems = elems / (rows * outer), block = rows * row_elems;
  for (size_t d = 0; d < ref.sizes.size(); ++d) {
    const int64_t size = ref.sizes[d], stride = ref.strides[d];
    // Each index of the dim steps `stride` elements: `per` indices to a row, rows * per to a block, and the dim
    // may run on through `blocks` blocks (a fused [3C, C] weight split by heads: 3 blocks of heads).
    if (stride <= 0 || row_elems % stride != 0) continue;
    const int64_t per = row_elems / stride;
    if (size % (rows * per) != 0) continue;
    const int64_t blocks = size / (rows * per);
    if (outer % blocks != 0) continue;
    int64_t reach = ref.offset % block;  // where the view starts inside its block
    bool empty = false, ok = true;
    for (size_t e = 0; e < ref.sizes.size(); ++e) {
      if (e == d || ref.sizes[e] == 1) continue;
      if (ref.sizes[e] == 0) empty = true;
      else if (ref.strides[e] < 0) ok = false;
      else if (ref.strides[e] % block != 0) reach += ref.strides[e] * (ref.sizes[e] - 1);  // else: block to block
    }
    if (ok && !empty && reach < stride) return ViewSplit{static_cast<int>(d), blocks};
  }
  return std::nullopt;
}

std::optional<int> split_dim(const TensorRef& ref, uint64_t buffer_bytes, int64_t rows, int64_t outer) {
  if (auto v = view_split(ref, buffer_bytes, rows, outer)) return v->dim;
  return std::nullopt;
}

std::optional<SplitLayout> split_layout(const TensorRef& ref, uint64_t buffer_bytes, int dim, int64_t rows,
                                        int64_t blocks) {
  if (dim < 0 || dim >= static_cast<int>(ref.sizes.size()) || rows <= 0 || blocks <= 0 || ref.itemsize == 0)
    return std::nullopt;
  const int64_t size = ref.sizes[dim], stride = ref.strides[dim];
  if (stride <= 0 || size % (rows * blocks) != 0) return std::nullopt;
  const int64_t row_elems = (size / (rows * blocks)) * stride, elems = static_cast<int64_t>(buffer_bytes / ref.itemsize);
  if (elems % (rows * row_elems) != 0) return std::nullopt;
  const SplitLayout layout{rows, elems / (rows * row_elems)};
  const auto v = view_split(ref, buffer_bytes, layout.rows, layout.outer);
  if (!v || v->dim != dim || v->blocks != blocks) return std::nullopt;
  return layout;
}

LocalRef local_part(const TensorRef& ref, uint64_t buffer_bytes, int dim, const SplitLayout& layout,
                    const RowRange& part, bool in_block, int64_t blocks) {
  LocalRef lr{ref.offset, ref.sizes, {}};
  const int64_t per = ref.sizes[dim] / (layout.rows * blocks);
  lr.sizes[dim] = blocks * part.count * per;  // in each block the dim runs through, the device's rows
  if (!in_block) {  // cut from the whole value (one block: a range of the dim)
    lr.offset += part.begin * per * ref.strides[dim];
    return lr;
  }
  if (layout.outer <= 1) return lr;  // the device's rows start its block, as the value's first rows start it
  const int64_t elems = static_cast<int64_t>(buffer_bytes / ref.itemsize);
  const int64_t row_elems = elems / (layout.rows * layout.outer), block = layout.rows * row_elems;
  const int64_t mine = part.count * row_elems;  // the device's block holds its rows of each block
  lr.strides = ref.strides;
  for (size_t e = 0; e < ref.sizes.size(); ++e)
    if (static_cast<int>(e) != dim && ref.strides[e] > 0 && ref.strides[e] % block == 0)
      lr.strides[e] = ref.strides[e] / block * mine;
  lr.offset = ref.offset / block * mine + ref.offset % block;
  return lr;
}

}  // namespace moreh::scheduler
