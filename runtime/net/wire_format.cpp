#include "runtime/net/wire_format.h"

#include <fmt/format.h>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

constexpr std::array<uint8_t, 4> kMagic = {'M', 'R', 'H', 'W'};

void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}

}  // namespace

std::string name_of(MessageType type) {
  switch (type) {
    case MessageType::kHello: return "hello";
    case MessageType::kChallenge: return "challenge";
    case MessageType::kProof: return "proof";
    case MessageType::kWelcome: return "welcome";
    case MessageType::kRefused: return "refused";
    case MessageType::kHeartbeat: return "heartbeat";
    case MessageType::kError: return "error";
    case MessageType::kJobOpen: return "job_open";
    case MessageType::kJobReady: return "job_ready";
    case MessageType::kStoreSet: return "store_set";
    case MessageType::kStoreGet: return "store_get";
    case MessageType::kStoreValue: return "store_value";
    case MessageType::kRunCheck: return "run_check";
    case MessageType::kCheckResult: return "check_result";
    case MessageType::kJobClose: return "job_close";
    case MessageType::kJobClosed: return "job_closed";
    case MessageType::kPlanUpload: return "plan_upload";
    case MessageType::kPlanStored: return "plan_stored";
    case MessageType::kStep: return "step";
    case MessageType::kStepDone: return "step_done";
    case MessageType::kReadBlock: return "read_block";
    case MessageType::kBlock: return "block";
  }
  return fmt::format("unknown({})", static_cast<unsigned>(type));
}

bool is_known(uint16_t type) {
  return type >= static_cast<uint16_t>(MessageType::kHello) && type <= static_cast<uint16_t>(MessageType::kBlock);
}

std::array<uint8_t, kFrameHeaderBytes> encode_header(MessageType type, uint32_t length) {
  std::array<uint8_t, kFrameHeaderBytes> h{};
  std::copy(kMagic.begin(), kMagic.end(), h.begin());
  put16(h.data() + 4, kProtocolVersion);
  put16(h.data() + 6, static_cast<uint16_t>(type));
  put32(h.data() + 8, length);
  return h;
}

FrameHeader decode_header(const std::array<uint8_t, kFrameHeaderBytes>& h, uint32_t bound) {
  if (!std::equal(kMagic.begin(), kMagic.end(), h.begin()))
    throw ProtocolError("not a moreh control-plane message (bad magic bytes)");
  const uint16_t version = get16(h.data() + 4);
  if (version != kProtocolVersion)
    throw ProtocolError(fmt::format("protocol version {} is not this side's version {} (run the same moreh release "
                                    "on the client and the workers)",
                                    version, kProtocolVersion));
  const uint16_t type = get16(h.data() + 6);
  if (!is_known(type)) throw ProtocolError(fmt::format("unknown message type {}", type));
  const uint32_t length = get32(h.data() + 8);
  if (length > bound)
    throw ProtocolError(fmt::format("{} message of {} bytes is over the bound of {} bytes",
                                    name_of(static_cast<MessageType>(type)), length, bound));
  return FrameHeader{static_cast<MessageType>(type), length};
}

}  // namespace moreh::runtime
