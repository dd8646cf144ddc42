#include "runtime/cluster/cluster_job.h"

#include <fmt/format.h>

#include <exception>
#include <future>
#include <mutex>
#include <thread>

#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"

namespace moreh::runtime {

namespace {

// Gloo's rendezvous for this process's own rank: the same keys the workers relay through their sessions.
class LocalStore final : public GlooStore {
 public:
  explicit LocalStore(RendezvousStore& store) : store_(store) {}
  void set(const std::string& key, const std::string& value) const override { store_.set(key, value); }
  std::string get(const std::string& key, std::chrono::milliseconds timeout) const override {
    return store_.get(key, timeout);
  }

 private:
  RendezvousStore& store_;
};

}  // namespace

ClusterJob::ClusterJob(const std::vector<Endpoint>& workers, ClusterOptions options, uint32_t local_devices)
    : options_(std::move(options)), local_devices_(local_devices) {
  if (workers.empty()) throw ConfigError("a job needs at least one worker");
  for (size_t w = 0; w < workers.size(); ++w)
    sessions_.push_back(std::make_unique<WorkerSession>(static_cast<int>(w), workers[w], options_.session));
  const uint32_t first = local_devices_ > 0 ? 1 : 0;  // this process is node 0
  std::vector<uint64_t> devices;
  if (first) devices.push_back(local_devices_);
  for (auto& s : sessions_) devices.push_back(s->node().devices);
  std::vector<std::string> payloads;
  for (size_t w = 0; w < workers.size(); ++w) {
    JobOpen open;
    open.worker = static_cast<uint32_t>(w + first);
    open.devices_per_worker = devices;
    open.collective_timeout_ms = static_cast<uint64_t>(options_.collective_timeout.count());
    payloads.push_back(encode(open));
  }
  std::future<std::shared_ptr<GlooContext>> mine;
  if (first) {
    // This process joins the mesh as rank 0, at the address it reaches the first worker from.
    mine = std::async(std::launch::async, [this, host = sessions_[0]->local_host(), n = static_cast<int>(devices.size())] {
      return connect_gloo(0, n, LocalStore(store_), host, options_.collective_timeout);
    });
  }
  try {
    broadcast(MessageType::kJobOpen, payloads, MessageType::kJobReady,
              options_.collective_timeout + options_.session.connect_timeout, &store_);
  } catch (...) {
    if (mine.valid()) {
      try {
        mine.get();  // fails within its bound once the workers are gone
      } catch (...) {
      }
    }
    throw;
  }
  if (mine.valid()) gloo_ = mine.get();
  log().info("moreh: job open on {} worker{}, {} devices", workers.size(), workers.size() == 1 ? "" : "s", this->devices());
}

std::shared_future<std::shared_ptr<GlooContext>> ClusterJob::connect_group(const std::string& name, int rank, int size) {
  if (!local_devices_ || sessions_.empty()) throw ConfigError("this process holds no rank of the job's data plane");
  auto before = last_group_;
  last_group_ = std::async(std::launch::async, [this, before, name, rank, size, host = sessions_[0]->local_host()] {
                  if (before.valid()) before.wait();
                  return connect_gloo(rank, size, PrefixedStore(LocalStore(store_), name), host,
                                      options_.collective_timeout);
                }).share();
  return last_group_;
}

ClusterJob::~ClusterJob() {
  for (auto& s : sessions_) s->close_job(options_.session.connect_timeout);
}

uint64_t ClusterJob::devices() const {
  uint64_t n = local_devices_;
  for (auto& s : sessions_) n += s->node().devices;
  return n;
}

std::vector<Message> ClusterJob::broadcast(MessageType type, const std::vector<std::string>& payloads,
                                           MessageType reply, std::chrono::milliseconds timeout,
                                           RendezvousStore* store) {
  const size_t n = sessions_.size();
  std::vector<std::future<Message>> replies;
  for (size_t w = 0; w < n; ++w)
    replies.push_back(std::async(std::launch::async, [&, w] {
      return sessions_[w]->request(type, payloads[w], reply, timeout, store);
    }));
  // Once one worker has failed, the others get a short grace to answer (their own failure, most often: a
  // collective whose peer is gone); one still silent after it is stopped, and named as not answering.
  const std::string not_answering = fmt::format(
      "did not answer {} within {} ms after another worker's part failed (it may hang; it was cut off)",
      name_of(type), options_.session.connect_timeout.count());
  std::vector<Message> out(n);
  std::vector<std::exception_ptr> errors(n);
  std::vector<bool> done(n, false);
  bool failed = false;
  std::chrono::steady_clock::time_point cut_off{};
  for (size_t left = n; left > 0;) {
    for (size_t w = 0; w < n; ++w) {
      if (done[w] || replies[w].wait_for(std::chrono::milliseconds(0)) != std::future_status::ready) continue;
      done[w] = true;
      --left;
      try {
        out[w] = replies[w].get();
      } catch (...) {
        errors[w] = std::current_exception();
        if (!failed) cut_off = std::chrono::steady_clock::now() + options_.session.connect_timeout;
        failed = true;
      }
    }
    if (failed && std::chrono::steady_clock::now() >= cut_off) {
      for (size_t w = 0; w < n; ++w)
        if (!done[w]) sessions_[w]->interrupt(not_answering);
      cut_off = std::chrono::steady_clock::time_point::max();
    }
    if (left > 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (!failed) return out;
  // A worker that is gone says most about what happened: report it before the others' consequences.
  std::exception_ptr report;
  for (auto& e : errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const ProtocolError&) {
    } catch (const ConnectionError&) {
      report = e;
      break;
    } catch (...) {
    }
    if (!report) report = e;
  }
  std::rethrow_exception(report);
}

ClusterCheck ClusterJob::check(const CheckRequest& request) {
  if (local_devices_ > 0) throw ConfigError("the data plane check runs on workers only (no local devices)");
  const uint64_t n = devices();
  std::vector<std::string> payloads(sessions_.size(), encode(request));
  const auto replies = broadcast(MessageType::kRunCheck, payloads, MessageType::kCheckResult,
                                 options_.collective_timeout * 2 + options_.session.connect_timeout);
  const std::vector<float> expected = check_expected(request, n);
  const uint64_t want = fnv1a(expected.data(), expected.size() * sizeof(float));
  ClusterCheck out;
  out.correct = true;
  for (size_t w = 0; w < replies.size(); ++w) {
    const CheckResult r = decode_check_result(replies[w].payload);
    if (r.devices.size() != sessions_[w]->node().devices)
      throw ProtocolError(fmt::format("{} reported {} devices of {}", sessions_[w]->name(), r.devices.size(),
                                      sessions_[w]->node().devices));
    out.seconds = std::max(out.seconds, r.seconds);
    for (const auto& d : r.devices) {
      out.bytes_sent += d.bytes_sent;
      if (d.hash != want) {
        out.correct = false;
        out.wrong.push_back(fmt::format("device {} on {}", d.rank, sessions_[w]->name()));
      }
    }
  }
  return out;
}

}  // namespace moreh::runtime
