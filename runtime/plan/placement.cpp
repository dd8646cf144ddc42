#include "runtime/plan/placement.h"

namespace moreh::runtime {

RowRange split_rows(int64_t rows, int devices, int device) {
  const int64_t base = rows / devices, extra = rows % devices;
  const int64_t begin = device * base + (device < extra ? device : extra);
  return {begin, base + (device < extra ? 1 : 0)};
}

}  // namespace moreh::runtime
