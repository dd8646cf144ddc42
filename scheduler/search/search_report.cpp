#include "scheduler/search/search_report.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace moreh::scheduler {

namespace {

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (c == '\n') out += "\\n";
    else if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", static_cast<int>(c));
    else out += c;
  }
  return out + "\"";
}

}  // namespace

std::string candidates_json(const SearchResult& r, const SearchContext& ctx) {
  std::string out = "{\n";
  out += fmt::format("  \"flavor\": {},\n  \"devices\": {},\n  \"profile\": {},\n  \"graph_hash\": \"{:016x}\",\n",
                     quoted(ctx.flavor), ctx.devices, quoted(ctx.profile), ctx.graph_hash);
  out += fmt::format("  \"reason\": {},\n  \"capacity_bytes\": {},\n  \"margin_bytes\": {},\n", quoted(ctx.reason),
                     ctx.capacity, ctx.margin);
  out += fmt::format("  \"tokens_per_step\": {},\n  \"compile_ms\": {:.3f},\n  \"cost_ms\": {:.3f},\n",
                     r.tokens_per_step, r.compile_ms, r.cost_ms);
  out += fmt::format("  \"selected\": {},\n  \"candidates\": [\n", r.selected);
  for (size_t i = 0; i < r.candidates.size(); ++i) {
    const CandidateResult& c = r.candidates[i];
    const runtime::ParallelSizes s = runtime::parallel_layout(c.config, ctx.devices);
    out += fmt::format(
        "    {{\"index\": {}, \"config\": {}, \"dp\": {}, \"pp\": {}, \"tp\": {}, \"selected\": {}, \"feasible\": {}, "
        "\"dropped\": {}, \"dominated_by\": {}, \"dominance\": {}, \"peak_bytes\": [{}], \"step_ms\": {:.4f}, \"tokens_per_s\": {:.1f}, "
        "\"idle_fraction\": {:.4f}, \"communication_ms\": {:.4f}, \"lower_ms\": {:.3f}, \"bound_ms\": {:.4f}}}{}\n",
        i, quoted(runtime::format_parallel_config(c.config)), s.dp, s.pp, s.tp,
        static_cast<int>(i) == r.selected ? "true" : "false", c.dropped.empty() ? "true" : "false",
        c.dropped.empty() ? "null" : quoted(c.dropped),
        c.dominated_by >= 0 ? std::to_string(c.dominated_by) : std::string("null"),
        c.dominance == CandidateResult::Dominance::kSlower   ? "\"slower\""
        : c.dominance == CandidateResult::Dominance::kLarger ? "\"larger\""
        : c.dominance == CandidateResult::Dominance::kOverAnyway ? "\"over_anyway\""
                                                                  : "null",
        fmt::join(c.peak_bytes, ", "), c.step_ms, c.tokens_per_s,
        c.idle_fraction, c.communication_ms, c.lower_ms, c.bound_ms, i + 1 < r.candidates.size() ? "," : "");
  }
  out += "  ]\n}\n";
  return out;
}

std::vector<std::string> candidate_table(const SearchResult& r, int devices) {
  std::vector<std::string> out;
  out.push_back(fmt::format("{:>3} {:>2} {:>2} {:>2} {:>3} {:>2} {:>4} {:>4} {:>12} {:>10} {:>10} {:>12}  {}", "#", "dp",
                            "pp", "tp", "mb", "rc", "zero", "low", "peak MiB", "bound ms", "step ms", "tokens/s", "fate"));
  for (size_t i = 0; i < r.candidates.size(); ++i) {
    const CandidateResult& c = r.candidates[i];
    const runtime::ParallelSizes s = runtime::parallel_layout(c.config, devices);
    const std::string fate = static_cast<int>(i) == r.selected ? "selected" : c.dropped.empty() ? "feasible" : c.dropped;
    out.push_back(fmt::format("{:>3} {:>2} {:>2} {:>2} {:>3} {:>2} {:>4} {:>4} {:>12.1f} {:>10.3f} {:>10.3f} {:>12.0f}  {}",
                              i, s.dp, s.pp, s.tp, c.config.num_micro_batches, c.config.recomputation,
                              c.config.distribute_param ? 1 : 0, c.config.distribute_low_prec_param ? 1 : 0,
                              static_cast<double>(c.max_peak()) / (1024.0 * 1024.0), c.bound_ms, c.step_ms,
                              c.tokens_per_s, fate));
  }
  return out;
}

}  // namespace moreh::scheduler
