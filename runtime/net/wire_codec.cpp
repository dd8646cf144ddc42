#include "runtime/net/wire_codec.h"

#include <fmt/format.h>

#include <cstring>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

template <typename T>
void put(std::string& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
}

template <typename T>
T get(std::string_view b) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(b[i])) << (8 * i);
  return static_cast<T>(v);
}

}  // namespace

WireWriter& WireWriter::u8(uint8_t v) {
  out_.push_back(static_cast<char>(v));
  return *this;
}
WireWriter& WireWriter::u32(uint32_t v) {
  put(out_, v);
  return *this;
}
WireWriter& WireWriter::u64(uint64_t v) {
  put(out_, v);
  return *this;
}
WireWriter& WireWriter::f64(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return u64(bits);
}
WireWriter& WireWriter::bytes(std::string_view v) {
  u32(static_cast<uint32_t>(v.size()));
  out_.append(v);
  return *this;
}
WireWriter& WireWriter::u64s(const std::vector<uint64_t>& v) {
  u32(static_cast<uint32_t>(v.size()));
  for (uint64_t x : v) u64(x);
  return *this;
}

WireWriter& WireWriter::varint(uint64_t v) {
  for (; v >= 0x80; v >>= 7) out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
  out_.push_back(static_cast<char>(v));
  return *this;
}
WireWriter& WireWriter::ascending(const std::vector<uint64_t>& v) {
  u32(static_cast<uint32_t>(v.size()));
  uint64_t last = 0;
  for (uint64_t x : v) {
    if (x < last) throw Error("WireWriter::ascending: the numbers are not in ascending order");
    varint(x - last);
    last = x;
  }
  return *this;
}

std::string_view WireReader::take(size_t n) {
  if (n > in_.size() - at_)
    throw ProtocolError(fmt::format("payload ends after {} bytes where {} more were expected", in_.size(), n));
  std::string_view s = in_.substr(at_, n);
  at_ += n;
  return s;
}
uint8_t WireReader::u8() { return static_cast<uint8_t>(take(1)[0]); }
uint32_t WireReader::u32() { return get<uint32_t>(take(4)); }
uint64_t WireReader::u64() { return get<uint64_t>(take(8)); }
double WireReader::f64() {
  const uint64_t bits = u64();
  double v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}
std::string WireReader::bytes(uint32_t bound) {
  const uint32_t n = u32();
  if (n > bound) throw ProtocolError(fmt::format("a field of {} bytes is over its bound of {}", n, bound));
  return std::string(take(n));
}
std::vector<uint64_t> WireReader::u64s(uint32_t max_count) {
  const uint32_t n = u32();
  if (n > max_count) throw ProtocolError(fmt::format("a list of {} numbers is over its bound of {}", n, max_count));
  std::vector<uint64_t> v;
  v.reserve(std::min<size_t>(n, (in_.size() - at_) / 8));
  for (uint32_t i = 0; i < n; ++i) v.push_back(u64());
  return v;
}
void WireReader::finish() const {
  if (at_ != in_.size()) throw ProtocolError(fmt::format("{} unexpected bytes after the payload", in_.size() - at_));
}

uint64_t WireReader::varint() {
  uint64_t v = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    const uint8_t b = u8();
    if (shift == 63 && b > 1) break;
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  throw ProtocolError("a varint longer than 64 bits");
}
std::vector<uint64_t> WireReader::ascending(uint32_t max_count) {
  const uint32_t n = u32();
  if (n > max_count) throw ProtocolError(fmt::format("a list of {} numbers is over its bound of {}", n, max_count));
  std::vector<uint64_t> v;
  v.reserve(std::min<size_t>(n, in_.size() - at_));
  uint64_t last = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const uint64_t gap = varint();
    if (last + gap < last) throw ProtocolError("ascending numbers past 64 bits");
    v.push_back(last += gap);
  }
  return v;
}

}  // namespace moreh::runtime
