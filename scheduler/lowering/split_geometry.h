// The geometry of a value split into rows (DESIGN.md §2.5): where a view of it walks the rows (the batch's
// leading rows, or tensor parallelism's rows in blocks: runtime::Placement::outer), how the buffer is laid out
// for a split, and the view a device takes of its part. Planning only: batch_split.h's lowering and the linear
// pairs' seeds use it.
#pragma once
#include <cstdint>
#include <map>
#include <optional>

#include "runtime/graph/step_graph.h"
#include "runtime/plan/program.h"

namespace moreh::scheduler {

// How a value is split: `rows` rows in each of `outer` blocks.
struct SplitLayout {
  int64_t rows = 0;   // the rows the value is split into
  int64_t outer = 1;  // in each of this many blocks (the product of the sizes before the split dimension)
  bool operator==(const SplitLayout&) const = default;
};
using SplitSeeds = std::map<uint32_t, SplitLayout>;  // slot -> how tensor parallelism splits it

// The dim of `ref` along which a buffer split into `rows` contiguous rows is split, if the view walks the
// rows in order.
std::optional<int> row_dim(const runtime::TensorRef& ref, uint64_t buffer_bytes, int64_t rows);

// The same for a buffer of `outer` blocks of `rows` rows each: the dim that walks the rows of a block, every
// other dim staying inside one of its steps or stepping from block to block. The dim may run on through
// several blocks (`blocks`: a fused [3C, C] qkv weight split by heads is 3 blocks of heads, and its
// transpose's dim 1 runs through all three). outer 1: row_dim.
struct ViewSplit {
  int dim = 0;
  int64_t blocks = 1;
};
std::optional<ViewSplit> view_split(const runtime::TensorRef& ref, uint64_t buffer_bytes, int64_t rows, int64_t outer);
std::optional<int> split_dim(const runtime::TensorRef& ref, uint64_t buffer_bytes, int64_t rows, int64_t outer);

// How the buffer is laid out when `ref`'s dim `dim` is split into `rows` rows in each of `blocks` blocks it runs
// through: its rows and blocks, if the view walks them (view_split gives `dim` and `blocks` back).
std::optional<SplitLayout> split_layout(const runtime::TensorRef& ref, uint64_t buffer_bytes, int dim, int64_t rows,
                                        int64_t blocks = 1);

// The view a device takes of `ref` split at `dim` as `layout` says, holding rows `part` (of each of the `blocks`
// blocks the dim runs through): in its own block ([outer, its rows, row]: strides that step from block to
// block step its smaller blocks), or cut from the whole value (`in_block` false, one block only: the
// recorded strides, at its rows' offset).
runtime::LocalRef local_part(const runtime::TensorRef& ref, uint64_t buffer_bytes, int dim, const SplitLayout& layout,
                             const runtime::RowRange& part, bool in_block, int64_t blocks = 1);

}  // namespace moreh::scheduler
