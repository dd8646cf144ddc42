#include "runtime/base/data_type.h"

#include <array>
#include <atomic>

namespace moreh::runtime {
namespace {

// code -> DataType + 1 (0: not registered); codes are small non-negative integers.
std::array<std::atomic<uint8_t>, 128>& table() {
  static std::array<std::atomic<uint8_t>, 128> t{};
  return t;
}

}  // namespace

void register_data_type(int8_t code, DataType type) {
  if (code >= 0) table()[code].store(static_cast<uint8_t>(type) + 1);
}

std::optional<DataType> data_type_of(int8_t code) {
  if (code < 0) return std::nullopt;
  uint8_t v = table()[code].load();
  if (v == 0) return std::nullopt;
  return static_cast<DataType>(v - 1);
}

}  // namespace moreh::runtime
