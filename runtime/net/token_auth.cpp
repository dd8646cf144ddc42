#include "runtime/net/token_auth.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

std::string trimmed(std::string s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

std::string proof(std::string_view token, std::string_view role, std::string_view a, std::string_view b) {
  std::string data(role);
  data.push_back('\0');
  data.append(a);
  data.append(b);
  return hmac_sha256(token, data);
}

}  // namespace

std::string read_token_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    throw ConfigError(fmt::format("token file {} cannot be opened: {}", path, std::strerror(errno)));
  struct stat st {};
  std::string text;
  try {
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
      throw ConfigError(fmt::format("token file {} is not a regular file", path));
    if (st.st_uid != ::geteuid())
      throw ConfigError(fmt::format("token file {} belongs to uid {}, not to this user (uid {})", path, st.st_uid,
                                    ::geteuid()));
    if (st.st_mode & (S_IRWXG | S_IRWXO))
      throw ConfigError(fmt::format("token file {} is open to other users (mode {:o}); make it private with "
                                    "`chmod 600 {}`",
                                    path, st.st_mode & 0777, path));
    if (static_cast<uint64_t>(st.st_size) > kTokenFileBound)
      throw ConfigError(fmt::format("token file {} holds {} bytes; a token is at most {}", path, st.st_size,
                                    kTokenFileBound));
    text.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < text.size()) {
      const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
      if (n <= 0) throw ConfigError(fmt::format("token file {} could not be read", path));
      got += static_cast<size_t>(n);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  text = trimmed(std::move(text));
  if (text.empty()) throw ConfigError(fmt::format("token file {} is empty", path));
  return text;
}

std::string new_token() {
  const std::string raw = random_nonce();
  std::string hex;
  for (unsigned char c : raw) hex += fmt::format("{:02x}", c);
  return hex;
}

void write_token_file(const std::string& path, const std::string& token) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) throw ConfigError(fmt::format("token file {} cannot be written: {}", path, std::strerror(errno)));
  ::fchmod(fd, 0600);
  const std::string line = token + "\n";
  const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  if (!ok) throw ConfigError(fmt::format("token file {} could not be written", path));
}

std::string random_nonce() {
  std::string n(kNonceBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(n.data()), static_cast<int>(n.size())) != 1)
    throw ConfigError("the system's random number generator failed");
  return n;
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
            data.size(), out, &len))
    throw ConfigError("HMAC-SHA256 failed");
  return std::string(reinterpret_cast<const char*>(out), len);
}

bool same_proof(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string worker_proof(std::string_view token, std::string_view client_nonce, std::string_view worker_nonce) {
  return proof(token, "moreh-worker", client_nonce, worker_nonce);
}
std::string client_proof(std::string_view token, std::string_view client_nonce, std::string_view worker_nonce) {
  return proof(token, "moreh-client", worker_nonce, client_nonce);
}

}  // namespace moreh::runtime
