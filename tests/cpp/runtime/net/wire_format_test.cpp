// Frames and payloads of the control plane: round trips, and every way a header or payload is refused.
#include "runtime/net/wire_format.h"

#include <gtest/gtest.h>

#include "runtime/base/errors.h"
#include "runtime/net/endpoint.h"
#include "runtime/net/wire_codec.h"

namespace moreh::runtime {
namespace {

TEST(WireFormatTest, HeaderRoundTrips) {
  const auto h = encode_header(MessageType::kRunCheck, 1234);
  const FrameHeader d = decode_header(h, 4096);
  EXPECT_EQ(d.type, MessageType::kRunCheck);
  EXPECT_EQ(d.length, 1234u);
}

TEST(WireFormatTest, RefusesBadMagicOtherVersionUnknownTypeAndOversize) {
  auto h = encode_header(MessageType::kHello, 10);
  auto bad = h;
  bad[0] = 'X';
  EXPECT_THROW(decode_header(bad, 4096), ProtocolError);
  bad = h;
  bad[4] = static_cast<uint8_t>(kProtocolVersion + 1);
  try {
    decode_header(bad, 4096);
    FAIL();
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("protocol version " + std::to_string(kProtocolVersion + 1)), std::string::npos)
        << e.what();
  }
  bad = h;
  bad[6] = 200;
  EXPECT_THROW(decode_header(bad, 4096), ProtocolError);
  try {
    decode_header(encode_header(MessageType::kHello, 5000), 4096);
    FAIL();
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("over the bound of 4096"), std::string::npos) << e.what();
  }
}

TEST(WireFormatTest, PayloadsRoundTripAndShortOrLongOnesAreRefused) {
  const std::string p = WireWriter().u8(7).u32(70000).u64(1ull << 40).f64(2.5).bytes("abc").u64s({1, 2, 3}).take();
  WireReader r(p);
  EXPECT_EQ(r.u8(), 7);
  EXPECT_EQ(r.u32(), 70000u);
  EXPECT_EQ(r.u64(), 1ull << 40);
  EXPECT_EQ(r.f64(), 2.5);
  EXPECT_EQ(r.bytes(), "abc");
  EXPECT_EQ(r.u64s(10), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_NO_THROW(r.finish());

  WireReader shorter(std::string_view(p).substr(0, p.size() - 1));
  shorter.u8(), shorter.u32(), shorter.u64(), shorter.f64(), shorter.bytes();
  EXPECT_THROW(shorter.u64s(10), ProtocolError);
  WireReader longer(p + "x");
  longer.u8(), longer.u32(), longer.u64(), longer.f64(), longer.bytes(), longer.u64s(10);
  EXPECT_THROW(longer.finish(), ProtocolError);
  // A length field past its bound, or past the payload, is refused before anything is allocated.
  const std::string huge = WireWriter().u32(0xffffffffu).take();
  EXPECT_THROW(WireReader(huge).bytes(), ProtocolError);
  EXPECT_THROW(WireReader(WireWriter().bytes("abcdef").take()).bytes(3), ProtocolError);
  EXPECT_THROW(WireReader(WireWriter().u32(1000000).take()).u64s(100), ProtocolError);
}

TEST(WireFormatTest, VarintsAndAscendingListsRoundTripSmallAndRefuseOverlongOnes) {
  const std::vector<uint64_t> values{0, 1, 127, 128, 300, 1ull << 35, UINT64_MAX};
  WireWriter w;
  for (uint64_t v : values) w.varint(v);
  w.ascending({5, 6, 7, 1000, 1000, 1ull << 40});
  const std::string p = w.take();
  WireReader r(p);
  for (uint64_t v : values) EXPECT_EQ(r.varint(), v);
  EXPECT_EQ(r.ascending(10), (std::vector<uint64_t>{5, 6, 7, 1000, 1000, 1ull << 40}));
  EXPECT_NO_THROW(r.finish());
  EXPECT_EQ(WireWriter().varint(127).take().size(), 1u);
  EXPECT_EQ(WireWriter().varint(UINT64_MAX).take().size(), 10u);
  // Each gap of ids freed together is one byte: 4 for the count, 1 for each id below.
  EXPECT_EQ(WireWriter().ascending({100, 101, 102, 110}).take().size(), 4u + 4u);
  EXPECT_THROW(WireWriter().ascending({3, 2}), Error);
  // Past 64 bits, a varint that never ends, a list past its bound or past 64 bits: refused.
  EXPECT_THROW(WireReader(std::string(10, '\xff') + '\x01').varint(), ProtocolError);
  EXPECT_THROW(WireReader(std::string(9, '\xff') + '\x02').varint(), ProtocolError);
  EXPECT_THROW(WireReader(std::string(3, '\xff')).varint(), ProtocolError);
  EXPECT_THROW(WireReader(WireWriter().ascending({1, 2, 3}).take()).ascending(2), ProtocolError);
  EXPECT_THROW(WireReader(WireWriter().u32(2).varint(UINT64_MAX).varint(1).take()).ascending(2), ProtocolError);
}

TEST(EndpointTest, ParsesListsAndRefusesMalformedEntries) {
  EXPECT_EQ(parse_endpoint("127.0.0.1:7000", "X"), (Endpoint{"127.0.0.1", 7000}));
  EXPECT_EQ(parse_endpoint("[::1]:80", "X"), (Endpoint{"::1", 80}));
  EXPECT_EQ(parse_endpoint("[::1]:80", "X").to_string(), "[::1]:80");
  const auto list = parse_endpoints("node1:7000, node2:7000", "MOREH_WORKERS");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[1].host, "node2");
  for (const char* bad : {"", "host", "host:", ":80", "host:0", "host:65536", "host:12x", "a b:1", "::1:80"})
    EXPECT_THROW(parse_endpoint(bad, "X"), ConfigError) << bad;
  EXPECT_THROW(parse_endpoints("a:1,,b:2", "MOREH_WORKERS"), ConfigError);
  EXPECT_THROW(parse_endpoints("a:1,a:1", "MOREH_WORKERS"), ConfigError);
  try {
    parse_endpoints("a:1,b", "MOREH_WORKERS");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("MOREH_WORKERS: 'b'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moreh::runtime
