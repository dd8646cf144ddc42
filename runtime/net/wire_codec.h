// Payloads of control-plane messages: little-endian integers, doubles and length-prefixed byte strings,
// read back with every length checked against what is left (a malformed payload is a ProtocolError).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moreh::runtime {

class WireWriter {
 public:
  WireWriter& u8(uint8_t v);
  WireWriter& u32(uint32_t v);
  WireWriter& u64(uint64_t v);
  WireWriter& f64(double v);
  WireWriter& bytes(std::string_view v);  // a u32 length, then the bytes
  WireWriter& u64s(const std::vector<uint64_t>& v);
  WireWriter& varint(uint64_t v);  // LEB128: 7 bits a byte, small numbers in one
  // Ascending numbers as their count and the gaps between them, each a varint (ids freed together are near).
  WireWriter& ascending(const std::vector<uint64_t>& v);
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class WireReader {
 public:
  explicit WireReader(std::string_view in) : in_(in) {}
  uint8_t u8();
  uint32_t u32();
  uint64_t u64();
  double f64();
  // At most `bound` bytes (ProtocolError past it, or past the payload's end).
  std::string bytes(uint32_t bound = UINT32_MAX);
  std::vector<uint64_t> u64s(uint32_t max_count);
  uint64_t varint();  // ProtocolError past 10 bytes
  std::vector<uint64_t> ascending(uint32_t max_count);
  // ProtocolError when bytes are left over (a payload longer than its message).
  void finish() const;

 private:
  std::string_view take(size_t n);
  std::string_view in_;
  size_t at_ = 0;
};

}  // namespace moreh::runtime
