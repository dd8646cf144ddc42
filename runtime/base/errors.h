// The runtime's exceptions. The backend turns them into Python RuntimeErrors with the same text.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace moreh::runtime {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A MOREH_* variable or an API argument that cannot be used.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A bounded wait ran out.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// A collective could not complete: ranks issued different collectives, or the communicator broke earlier
// (a peer timed out or failed) and refuses new work instead of hanging.
class CollectiveError : public Error {
 public:
  using Error::Error;
};

// A connection between the script's process and a worker failed: the peer is not there, went away, or does
// not authenticate. The text names the peer.
class ConnectionError : public Error {
 public:
  using Error::Error;
};

// A peer sent a message this side cannot accept (malformed, oversized, another protocol version).
class ProtocolError : public ConnectionError {
 public:
  using ConnectionError::ConnectionError;
};

// The user interrupted the step (Ctrl-C, runtime/base/interrupt.h); it stopped at a kernel boundary.
class InterruptedError : public Error {
 public:
  using Error::Error;
};

// A device could not hold what a step needs. The text follows MoAI's "Error Code 4: OUT_OF_MEMORY".
class OutOfMemoryError : public Error {
 public:
  // `note`: what else the user should know (a line appended to the text), empty for none.
  OutOfMemoryError(std::string device, uint64_t requested, uint64_t available, uint64_t capacity,
                   const std::string& note = {});
  uint64_t requested() const { return requested_; }
  uint64_t available() const { return available_; }

 private:
  uint64_t requested_, available_;
};

}  // namespace moreh::runtime
