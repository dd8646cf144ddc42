#include "runtime/user_config.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/errors.h"
#include "runtime/flavor.h"

namespace moreh::runtime {
namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r"), e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

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

UserConfig read_user_config(const std::string& path) {
  UserConfig config;
  std::ifstream in(path);
  if (!in) {
    if (!std::filesystem::exists(path)) return config;
    throw ConfigError("moreh config file " + path + " cannot be read: " + std::strerror(errno));
  }
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    auto fail = [&](const std::string& why) {
      throw ConfigError("moreh config file " + path + " line " + std::to_string(number) + " ('" + trim(line) +
                        "'): " + why + ". Fix or delete the file, or run moreh-switch-model.");
    };
    std::string text = trim(line.substr(0, line.find('#')));
    if (text.empty()) continue;
    size_t eq = text.find('=');
    if (eq == std::string::npos) fail("expected `key = value`");
    std::string key = trim(text.substr(0, eq)), value = trim(text.substr(eq + 1));
    if (key != "flavor") fail("unknown key '" + key + "' (known: flavor)");
    auto flavor = find_flavor(value);
    if (!flavor) fail("unknown flavor '" + value + "' (valid: " + flavor_names() + ")");
    config.flavor = flavor->name;
  }
  return config;
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
