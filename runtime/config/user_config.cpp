#include "runtime/config/user_config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <fmt/format.h>

#include "runtime/base/errors.h"
#include "runtime/config/flavor.h"
#include "runtime/net/endpoint.h"

namespace moreh::runtime {
namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r"), e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

constexpr const char* kMend = " Fix or delete the file, or run moreh-switch-model --set FLAVOR, which replaces it.";

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return (v && *v) ? v : nullptr;
}

}  // namespace

std::string config_dir() {
  if (const char* dir = env("MOREH_CONFIG_DIR")) return dir;
  const char* home = env("HOME");
  return std::string(home ? home : "/tmp") + "/.moreh";
}

std::string user_config_path(const std::string& dir) { return dir + "/config"; }

namespace {

// The file's bytes. Only a regular file is read: a directory or a FIFO in its place is an error, never a
// silent empty config or a read that blocks (the file is opened non-blocking and checked before reading).
std::optional<std::string> read_config_bytes(const std::string& path) {
  constexpr size_t kMaxBytes = 64 * 1024;  // a settings file; anything larger is not one
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    throw ConfigError("moreh config file " + path + " cannot be read: " + std::strerror(errno) + kMend);
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw ConfigError("moreh config file " + path + " cannot be read: " + std::strerror(errno) + kMend);
  if (!S_ISREG(st.st_mode))
    throw ConfigError("moreh config file " + path + " is not a regular file (" +
                      (S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO" : "a special file") +
                      "). Remove it, then run moreh-switch-model.");
  if (static_cast<uint64_t>(st.st_size) > kMaxBytes)
    throw ConfigError("moreh config file " + path + " is " + std::to_string(st.st_size) + " bytes, more than a " +
                      "settings file holds (" + std::to_string(kMaxBytes) + ")" + kMend);
  std::string bytes;
  char chunk[4096];
  for (;;) {
    const ssize_t got = ::read(fd, chunk, sizeof chunk);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw ConfigError("moreh config file " + path + " cannot be read: " + std::strerror(errno) + kMend);
    if (got == 0) break;
    bytes.append(chunk, static_cast<size_t>(got));
    if (bytes.size() > kMaxBytes) throw ConfigError("moreh config file " + path + " grew while it was read" + kMend);
  }
  return bytes;
}

// Whether `s` is well-formed UTF-8 (the text a ConfigError carries must be, or Python cannot show it).
bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t extra = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : 99;
    if (extra == 99 || (extra == 1 && c < 0xC2) || (extra > 0 && i + extra >= s.size())) return false;
    for (size_t k = 1; k <= extra; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    i += extra + 1;
  }
  return true;
}

// A line as an error message can show it: control characters (a NUL would end the message) as \xNN.
std::string printable(const std::string& line) {
  std::string out;
  for (char c : line) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) out += fmt::format("\\x{:02X}", static_cast<unsigned char>(c));
    else out += c;
  }
  return out;
}

}  // namespace

UserConfig read_user_config(const std::string& path) {
  UserConfig config;
  std::optional<std::string> bytes = read_config_bytes(path);
  if (!bytes) return config;
  if (bytes->rfind("\xEF\xBB\xBF", 0) == 0) bytes->erase(0, 3);  // a byte-order mark some editors write
  if (!valid_utf8(*bytes))
    throw ConfigError("moreh config file " + path + " is not UTF-8 text (it holds bytes no text file has)" + kMend);
  std::istringstream in(*bytes);
  std::string line;
  int flavor_line = 0;
  for (int number = 1; std::getline(in, line); ++number) {
    auto fail = [&](const std::string& why) {
      throw ConfigError("moreh config file " + path + " line " + std::to_string(number) + " ('" +
                        printable(trim(line)) + "'): " + why + "." + kMend);
    };
    if (line.find('\0') != std::string::npos) fail("a NUL byte is not text");
    std::string text = trim(line.substr(0, line.find('#')));
    if (text.empty()) continue;
    size_t eq = text.find('=');
    if (eq == std::string::npos) fail("expected `key = value`");
    std::string key = trim(text.substr(0, eq)), value = trim(text.substr(eq + 1));
    std::optional<std::string>* field = key == "flavor" ? &config.flavor
                                       : key == "workers" ? &config.workers
                                       : key == "worker_token_file" ? &config.worker_token_file
                                                                    : nullptr;
    if (!field) fail("unknown key '" + key + "' (known: flavor, workers, worker_token_file)");
    if (*field) fail("'" + key + "' is set twice");
    if (key == "flavor") {
      auto flavor = find_flavor(value);
      if (!flavor) fail("unknown flavor '" + value + "' (valid: " + flavor_names() + ")");
      value = flavor->name;
      flavor_line = number;
    } else if (key == "workers") {
      try {
        parse_endpoints(value, "workers");
      } catch (const Error& e) {
        fail(e.what());
      }
    } else if (value.empty()) {
      fail("an empty path");
    }
    *field = value;
  }
  if (config.flavor) {
    const Flavor flavor = *find_flavor(*config.flavor);
    const size_t listed = config.worker_list().size();
    if (flavor.nodes > 0 && static_cast<size_t>(flavor.nodes) > listed)
      throw ConfigError("moreh config file " + path + " line " + std::to_string(flavor_line) + ": flavor " +
                        flavor.name + " runs on " + std::to_string(flavor.nodes) + " workers, and the file's workers "
                        "line lists " + std::to_string(listed) + "." + kMend);
  }
  return config;
}

std::vector<std::string> UserConfig::worker_list() const {
  std::vector<std::string> out;
  if (!workers) return out;
  for (const Endpoint& e : parse_endpoints(*workers, "workers")) out.push_back(e.host + ":" + std::to_string(e.port));
  return out;
}

void write_user_config(const std::string& path, const UserConfig& config) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  if (ec) throw ConfigError("moreh config directory " + target.parent_path().string() + ": " + ec.message());
  std::ostringstream text;
  text << "# moreh settings (written by moreh-switch-model; docs/FLAVORS.md)\n";
  if (config.flavor) text << "flavor = " << *config.flavor << "\n";
  if (config.workers) text << "workers = " << *config.workers << "\n";
  if (config.worker_token_file) text << "worker_token_file = " << *config.worker_token_file << "\n";
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text.str();
    out.flush();
    if (!out) {
      fs::remove(tmp, ec);
      throw ConfigError("moreh config file " + path + " cannot be written: " + std::strerror(errno));
    }
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw ConfigError("moreh config file " + path + " cannot be written: " + ec.message());
  }
}

}  // namespace moreh::runtime
