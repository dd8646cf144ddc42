// moreh_tools._native: the runtime's flavor table, flavor choice and config file for moreh-smi and
// moreh-switch-model, without torch (the tools start in milliseconds and never start an engine).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "runtime/config/config.h"
#include "runtime/base/errors.h"
#include "runtime/config/flavor.h"
#include "runtime/config/user_config.h"
#include "runtime/cluster/cluster_job.h"
#include "runtime/net/endpoint.h"
#include "runtime/net/token_auth.h"

#include <unistd.h>

namespace py = pybind11;
using namespace moreh::runtime;

namespace {

SessionOptions session_options(const std::string& token_file, double connect_timeout_s) {
  SessionOptions o;
  o.token = read_token_file(token_file);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  o.client = std::string(host) + ":" + std::to_string(::getpid());
  o.connect_timeout = std::chrono::milliseconds(static_cast<int64_t>(connect_timeout_s * 1000));
  return o;
}

py::dict node_dict(const WorkerSession& s) {
  py::dict d;
  d["endpoint"] = s.endpoint().to_string();
  d["hostname"] = s.node().hostname;
  d["device_kind"] = s.node().device_kind;
  d["devices"] = s.node().devices;
  d["capacity"] = s.node().capacity;
  d["busy"] = s.node().busy;
  d["serving"] = s.node().serving;
  return d;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  // The most derived last: pybind11 tries the translators from the last registered.
  static py::exception<Error> runtime_error(m, "MorehError", PyExc_RuntimeError);
  py::register_exception<ConfigError>(m, "ConfigError", PyExc_ValueError);
  py::register_exception<ConnectionError>(m, "WorkerConnectionError", PyExc_ConnectionError);
  py::register_exception<TimeoutError>(m, "WorkerTimeoutError", PyExc_TimeoutError);
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
  // The config file's cluster: its workers (in order) and their token file (None: the default).
  m.def("cluster_config", [](const std::string& path) {
    const UserConfig c = read_user_config(path);
    py::dict d;
    d["workers"] = c.worker_list();
    d["worker_token_file"] = c.worker_token_file ? py::object(py::str(*c.worker_token_file)) : py::object(py::none());
    return d;
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
  // What each worker of `workers` ("host:port,...") says about itself (moreh-smi's nodes).
  m.def("worker_status", [](const std::string& workers, const std::string& token_file, double connect_timeout_s) {
    const auto endpoints = parse_endpoints(workers, "MOREH_WORKERS");
    const SessionOptions o = session_options(token_file, connect_timeout_s);
    py::list out;
    for (size_t w = 0; w < endpoints.size(); ++w) {
      std::unique_ptr<WorkerSession> s;
      {
        py::gil_scoped_release release;
        s = std::make_unique<WorkerSession>(static_cast<int>(w), endpoints[w], o, ConnectionPurpose::kStatus);
      }
      out.append(node_dict(*s));
    }
    return out;
  });
  // Opens a job over every worker and runs the data plane's check: a collective over all their devices.
  m.def("cluster_check", [](const std::string& workers, const std::string& token_file, const std::string& kind,
                            uint64_t elements, uint32_t seed, uint32_t repeats, double collective_timeout_s,
                            double connect_timeout_s) {
    ClusterOptions o;
    o.session = session_options(token_file, connect_timeout_s);
    o.collective_timeout = std::chrono::milliseconds(static_cast<int64_t>(collective_timeout_s * 1000));
    CheckRequest q;
    if (kind == "all_reduce") q.kind = CheckKind::kAllReduce;
    else if (kind == "all_gather") q.kind = CheckKind::kAllGather;
    else if (kind == "broadcast") q.kind = CheckKind::kBroadcast;
    else throw ConfigError("unknown check '" + kind + "': all_reduce, all_gather or broadcast");
    q.elements = elements;
    q.seed = seed;
    q.repeats = repeats;
    const auto endpoints = parse_endpoints(workers, "MOREH_WORKERS");
    ClusterCheck r;
    py::list nodes;
    {
      std::unique_ptr<ClusterJob> job;
      {
        py::gil_scoped_release release;
        job = std::make_unique<ClusterJob>(endpoints, o);
        r = job->check(q);
      }
      for (int w = 0; w < job->workers(); ++w) nodes.append(node_dict(job->worker(w)));
      py::gil_scoped_release release;
      job.reset();
    }
    py::dict d;
    d["correct"] = r.correct;
    d["wrong"] = r.wrong;
    d["bytes_sent"] = r.bytes_sent;
    d["seconds"] = r.seconds;
    d["nodes"] = nodes;
    return d;
  });
  m.def("new_token", [] { return new_token(); });
  m.def("write_token_file", [](const std::string& path, const std::string& token) { write_token_file(path, token); });
}
