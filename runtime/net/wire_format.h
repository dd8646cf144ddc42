// The control plane's frames: a 12-byte header (magic, protocol version, message type, payload length)
// before a payload whose size is bounded before anything is allocated for it.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace moreh::runtime {

constexpr uint16_t kProtocolVersion = 3;  // 2: a step withholds payloads; 3: a step sends what changed
constexpr size_t kFrameHeaderBytes = 12;
// Messages before authentication (hello, challenge, proof, refusal) are small: a stranger cannot make a
// worker allocate more than this.
constexpr uint32_t kHandshakePayloadBound = 4096;

enum class MessageType : uint16_t {
  // Handshake: hello (client) -> challenge (worker) -> proof (client) -> welcome or refused (worker).
  kHello = 1,
  kChallenge = 2,
  kProof = 3,
  kWelcome = 4,
  kRefused = 5,
  // Any time after the handshake: either side checks the other is there; the worker echoes it.
  kHeartbeat = 6,
  kError = 7,  // a request failed (text); the job goes on unless the text says it ended
  // Jobs (client -> worker, each answered by the worker).
  kJobOpen = 8,     // join the job's devices: index among the workers, devices before this worker's, ...
  kJobReady = 9,    // the worker's devices and data plane are ready
  kStoreSet = 10,   // worker -> client, during kJobOpen: the data plane's rendezvous (Gloo's store)
  kStoreGet = 11,   // worker -> client: a key another worker sets; answered by kStoreValue
  kStoreValue = 12,
  kRunCheck = 13,     // run a collective over every device of the job and report what each device holds
  kCheckResult = 14,
  kJobClose = 15,
  kJobClosed = 16,
  // Steps (client -> worker, each answered): a plan once per graph hash, then each step's graph and bindings.
  kPlanUpload = 17,
  kPlanStored = 18,
  kStep = 19,
  kStepDone = 20,
  // A host read: the bytes of one device's block of a buffer (its part of a value split or summed).
  kReadBlock = 21,
  kBlock = 22,
};

// "hello", "job_open", ...; "unknown(77)" for a number that is no type.
std::string name_of(MessageType type);
bool is_known(uint16_t type);

struct FrameHeader {
  MessageType type = MessageType::kHeartbeat;
  uint32_t length = 0;
};

std::array<uint8_t, kFrameHeaderBytes> encode_header(MessageType type, uint32_t length);
// Checks the magic, the version, the type and `length <= bound`; throws ProtocolError saying which failed.
FrameHeader decode_header(const std::array<uint8_t, kFrameHeaderBytes>& bytes, uint32_t bound);

struct Message {
  MessageType type = MessageType::kHeartbeat;
  std::string payload;
};

}  // namespace moreh::runtime
