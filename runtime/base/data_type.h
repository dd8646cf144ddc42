// Element types of device memory that the runtime itself reads (collectives reduce them, fused elementwise
// kernels compute on them). Kept apart from torch's ScalarType because runtime/ never sees torch; the
// backend maps one onto the other.
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>

namespace moreh::runtime {

// kBool (one byte, 0 or 1) is computed on by fused kernels (masks, comparisons) but never reduced.
enum class DataType : uint8_t { kFloat32, kFloat64, kBFloat16, kFloat16, kInt64, kInt32, kBool };

constexpr uint64_t size_of(DataType t) {
  switch (t) {
    case DataType::kFloat64:
    case DataType::kInt64: return 8;
    case DataType::kFloat32:
    case DataType::kInt32: return 4;
    case DataType::kBFloat16:
    case DataType::kFloat16: return 2;
    case DataType::kBool: return 1;
  }
  return 0;
}

constexpr bool is_floating_point(DataType t) {
  return t == DataType::kFloat32 || t == DataType::kFloat64 || t == DataType::kBFloat16 || t == DataType::kFloat16;
}

// The types collectives can sum, average, ... (all but kBool).
constexpr bool is_reducible(DataType t) { return t != DataType::kBool; }

// torch's spelling ("float32", "bfloat16", ...), for error messages.
constexpr std::string_view name_of(DataType t) {
  switch (t) {
    case DataType::kFloat32: return "float32";
    case DataType::kFloat64: return "float64";
    case DataType::kBFloat16: return "bfloat16";
    case DataType::kFloat16: return "float16";
    case DataType::kInt64: return "int64";
    case DataType::kInt32: return "int32";
    case DataType::kBool: return "bool";
  }
  return "?";
}

// The backend's dtype codes (TensorRef::dtype) that the runtime can compute on, registered by the backend
// when it loads (the runtime never sees torch's ScalarType).
void register_data_type(int8_t code, DataType type);
std::optional<DataType> data_type_of(int8_t code);

}  // namespace moreh::runtime
