// moreh_tools._native: the runtime's flavor table, flavor choice and config file for moreh-smi and
// moreh-switch-model, without torch (the tools start in milliseconds and never start an engine).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "runtime/config/config.h"
#include "runtime/base/errors.h"
#include "runtime/config/flavor.h"
#include "runtime/config/user_config.h"

namespace py = pybind11;
using namespace moreh::runtime;

PYBIND11_MODULE(_native, m) {
  py::register_exception<ConfigError>(m, "ConfigError", PyExc_ValueError);
  m.def("flavors", [] {
    std::vector<std::pair<std::string, int>> out;
    for (const Flavor& f : flavor_table()) out.emplace_back(f.name, f.num_devices);
    return out;
  });
  m.def("config_dir", [] { return config_dir(); });
  m.def("config_path", [] { return user_config_path(config_dir()); });
  // The persisted choice (None when the file sets none); a corrupt file raises ConfigError naming it.
  m.def("read_flavor", [](const std::string& path) { return read_user_config(path).flavor; });
  m.def("write_flavor", [](const std::string& path, const std::string& name) {
    auto flavor = find_flavor(name);
    if (!flavor) throw ConfigError("'" + name + "' is not a flavor: expected one of " + flavor_names());
    // Only `flavor` is known, so a file that cannot be read holds nothing worth keeping: it is replaced (the
    // error that named it told the user to run moreh-switch-model, which says what it replaced).
    UserConfig config;
    try {
      config = read_user_config(path);
    } catch (const ConfigError&) {
    }
    config.flavor = flavor->name;
    write_user_config(path, config);
    return flavor->name;
  });
  // What a moreh process started from this environment would get.
  m.def("process_config", [] {
    Config c = Config::from_env();
    py::dict d;
    d["flavor"] = c.flavor.name;
    d["flavor_source"] = c.flavor_source;
    d["num_devices"] = c.flavor.num_devices;
    d["device_memory"] = c.host_memory_capacity;
    d["config_dir"] = c.config_dir;
    return d;
  });
}
