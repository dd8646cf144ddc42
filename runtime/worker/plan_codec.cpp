#include "runtime/worker/plan_codec.h"

#include <fmt/format.h>

#include <algorithm>

#include "runtime/base/errors.h"
#include "runtime/net/wire_codec.h"

namespace moreh::runtime {
namespace {

// Bounds on what a plan may hold, far above any real one: a malformed count fails here, not in an allocation.
constexpr uint32_t kMaxItems = 1u << 24;
constexpr uint32_t kMaxDims = 64;

void put_i64(WireWriter& w, int64_t v) { w.u64(static_cast<uint64_t>(v)); }
int64_t get_i64(WireReader& r) { return static_cast<int64_t>(r.u64()); }

uint32_t count(WireReader& r, const char* what, uint32_t bound = kMaxItems) {
  const uint32_t n = r.u32();
  if (n > bound) throw ProtocolError(fmt::format("plan: {} {} (at most {})", n, what, bound));
  return n;
}

void put_dims(WireWriter& w, const Dims& d) {
  w.u32(static_cast<uint32_t>(d.size()));
  for (int64_t x : d) put_i64(w, x);
}
// Filled in place: moving a small_vector out of a function trips GCC 12's -Wstringop-overread.
void get_dims(WireReader& r, Dims& d) {
  const uint32_t n = count(r, "dimensions", kMaxDims);
  for (uint32_t i = 0; i < n; ++i) d.push_back(get_i64(r));
}

void put_placement(WireWriter& w, const Placement& p) {
  w.u8(static_cast<uint8_t>(p.kind)).u8(static_cast<uint8_t>(p.type)).u64(p.devices);
  put_i64(w, p.rows);
  put_i64(w, p.outer);
  put_i64(w, p.inner_rows);
  w.u32(static_cast<uint32_t>(p.stride)).u32(static_cast<uint32_t>(p.ranks));
  w.u32(static_cast<uint32_t>(p.inner_stride)).u32(static_cast<uint32_t>(p.inner_ranks));
}
Placement get_placement(WireReader& r) {
  Placement p;
  const uint8_t kind = r.u8(), type = r.u8();
  if (kind > static_cast<uint8_t>(PlacementKind::kLocal)) throw ProtocolError(fmt::format("plan: placement kind {}", kind));
  if (type > static_cast<uint8_t>(DataType::kBool)) throw ProtocolError(fmt::format("plan: element type {}", type));
  p.kind = static_cast<PlacementKind>(kind);
  p.type = static_cast<DataType>(type);
  p.devices = r.u64();
  p.rows = get_i64(r);
  p.outer = get_i64(r);
  p.inner_rows = get_i64(r);
  p.stride = static_cast<int32_t>(r.u32());
  p.ranks = static_cast<int32_t>(r.u32());
  p.inner_stride = static_cast<int32_t>(r.u32());
  p.inner_ranks = static_cast<int32_t>(r.u32());
  return p;
}

void put_slot(WireWriter& w, const SlotInfo& s) {
  w.u8(s.type ? 1 + static_cast<uint8_t>(*s.type) : 0).u64(s.row_bytes).u64(s.outer).u64(s.rows);
}
SlotInfo get_slot(WireReader& r) {
  SlotInfo s;
  const uint8_t type = r.u8();
  if (type > 1 + static_cast<uint8_t>(DataType::kBool)) throw ProtocolError(fmt::format("plan: slot type {}", type));
  if (type) s.type = static_cast<DataType>(type - 1);
  s.row_bytes = r.u64();
  s.outer = r.u64();
  s.rows = r.u64();
  return s;
}

void put_ref(WireWriter& w, const LocalRef& ref) {
  put_i64(w, ref.offset);
  put_dims(w, ref.sizes);
  put_dims(w, ref.strides);
}
void get_ref(WireReader& r, LocalRef& ref) {
  ref.offset = get_i64(r);
  get_dims(r, ref.sizes);
  get_dims(r, ref.strides);
}

void put_launch(WireWriter& w, const LocalLaunch& l) {
  w.u32(static_cast<uint32_t>(l.inputs.size()));
  for (const auto& ref : l.inputs) put_ref(w, ref);
  w.u32(static_cast<uint32_t>(l.outputs.size()));
  for (const auto& ref : l.outputs) put_ref(w, ref);
  put_i64(w, l.rows.begin);
  put_i64(w, l.rows.count);
  put_i64(w, l.batch_rows);
  put_i64(w, l.input0_dim);
  w.u32(static_cast<uint32_t>(l.joins.size()));
  for (auto j : l.joins) w.u8(static_cast<uint8_t>(j));
  w.u32(static_cast<uint32_t>(l.into.size()));
  for (int64_t x : l.into) put_i64(w, x);
  w.u32(static_cast<uint32_t>(l.factors.size()));
  for (double f : l.factors) w.f64(f);
  put_i64(w, l.weighted);
  put_i64(w, l.weight);
  w.u32(static_cast<uint32_t>(l.int_args.size()));
  for (const auto& [arg, value] : l.int_args) {
    put_i64(w, arg);
    put_i64(w, value);
  }
  w.u32(static_cast<uint32_t>(l.elements.size()));
  for (uint32_t e : l.elements) w.u32(e);
}
LocalLaunch get_launch(WireReader& r) {
  LocalLaunch l;
  for (uint32_t i = 0, n = count(r, "launch inputs"); i < n; ++i) get_ref(r, l.inputs.emplace_back());
  for (uint32_t i = 0, n = count(r, "launch outputs"); i < n; ++i) get_ref(r, l.outputs.emplace_back());
  l.rows.begin = get_i64(r);
  l.rows.count = get_i64(r);
  l.batch_rows = get_i64(r);
  l.input0_dim = static_cast<int>(get_i64(r));
  for (uint32_t i = 0, n = count(r, "joins"); i < n; ++i) {
    const uint8_t j = r.u8();
    if (j > static_cast<uint8_t>(LocalLaunch::Join::kAccumulate)) throw ProtocolError(fmt::format("plan: join {}", j));
    l.joins.push_back(static_cast<LocalLaunch::Join>(j));
  }
  for (uint32_t i = 0, n = count(r, "offsets"); i < n; ++i) l.into.push_back(get_i64(r));
  for (uint32_t i = 0, n = count(r, "factors"); i < n; ++i) l.factors.push_back(r.f64());
  l.weighted = static_cast<int>(get_i64(r));
  l.weight = static_cast<int>(get_i64(r));
  for (uint32_t i = 0, n = count(r, "integer arguments"); i < n; ++i) {
    const int arg = static_cast<int>(get_i64(r));
    l.int_args.emplace_back(arg, get_i64(r));
  }
  for (uint32_t i = 0, n = count(r, "list elements"); i < n; ++i) l.elements.push_back(r.u32());
  return l;
}

void put_program(WireWriter& w, const DeviceProgram& p) {
  if (!p.fused.empty())
    throw ConfigError(fmt::format("device {}'s program runs {} generated kernels, which do not travel to workers "
                                  "yet (MOREH_FUSION=off)",
                                  p.device, p.fused.size()));
  w.u32(static_cast<uint32_t>(p.device)).u64(p.peak_bytes);
  w.u32(static_cast<uint32_t>(p.code.size()));
  for (const Instruction& ins : p.code)
    w.u8(static_cast<uint8_t>(ins.kind)).u32(ins.index).u32(ins.aux).u32(ins.tag).u32(ins.group).u32(ins.range);
  w.u32(static_cast<uint32_t>(p.launches.size()));
  for (const auto& l : p.launches) put_launch(w, l);
  w.u64s(p.sizes);
  w.u32(static_cast<uint32_t>(p.factors.size()));
  for (double f : p.factors) w.f64(f);
  w.u32(static_cast<uint32_t>(p.ranges.size()));
  for (const auto& br : p.ranges) w.u64(br.offset).u64(br.bytes).u64(br.block_bytes);
  w.u32(static_cast<uint32_t>(p.geometries.size()));
  for (const auto& g : p.geometries) put_slot(w, g);
}

DeviceProgram get_program(WireReader& r) {
  DeviceProgram p;
  p.device = static_cast<int>(r.u32());
  p.peak_bytes = r.u64();
  for (uint32_t i = 0, n = count(r, "instructions"); i < n; ++i) {
    Instruction ins{};
    const uint8_t kind = r.u8();
    if (kind > static_cast<uint8_t>(Instruction::Kind::kRecv))
      throw ProtocolError(fmt::format("plan: instruction kind {}", kind));
    ins.kind = static_cast<Instruction::Kind>(kind);
    ins.index = r.u32();
    ins.aux = r.u32();
    ins.tag = r.u32();
    const uint32_t group = r.u32();
    if (group > UINT16_MAX) throw ProtocolError(fmt::format("plan: group {}", group));
    ins.group = static_cast<uint16_t>(group);
    ins.range = r.u32();
    p.code.push_back(ins);
  }
  for (uint32_t i = 0, n = count(r, "launches"); i < n; ++i) p.launches.push_back(get_launch(r));
  p.sizes = r.u64s(kMaxItems);
  for (uint32_t i = 0, n = count(r, "factors"); i < n; ++i) p.factors.push_back(r.f64());
  for (uint32_t i = 0, n = count(r, "byte ranges"); i < n; ++i) {
    ByteRange br;
    br.offset = r.u64();
    br.bytes = r.u64();
    br.block_bytes = r.u64();
    p.ranges.push_back(br);
  }
  for (uint32_t i = 0, n = count(r, "geometries"); i < n; ++i) p.geometries.push_back(get_slot(r));
  return p;
}

// Every index an instruction holds points at something the plan has (what the executor would index).
void check_program(const Plan& plan, const DeviceProgram& p) {
  auto bad = [&](const Instruction& ins, const char* what) {
    return ProtocolError(fmt::format("plan: device {}'s instruction {} names a {} that is not there", p.device,
                                     static_cast<int>(ins.kind), what));
  };
  if (p.device < 0 || p.device >= plan.num_devices)
    throw ProtocolError(fmt::format("plan: a program for device {} of {}", p.device, plan.num_devices));
  using K = Instruction::Kind;
  for (const Instruction& ins : p.code) {
    if (ins.group > plan.groups.size()) throw bad(ins, "group");
    switch (ins.kind) {
      case K::kLaunch:
        if (ins.index >= plan.num_nodes) throw bad(ins, "node");
        if (ins.aux > p.launches.size()) throw bad(ins, "launch");
        break;
      case K::kAllocate:
        if (ins.index >= plan.slots.size()) throw bad(ins, "slot");
        if (ins.aux >= p.sizes.size()) throw bad(ins, "size");
        break;
      case K::kScale:
        if (ins.index >= plan.slots.size()) throw bad(ins, "slot");
        if (ins.aux >= p.factors.size()) throw bad(ins, "factor");
        break;
      case K::kMultiply:
      case K::kDivide:
        if (ins.index >= plan.slots.size() || ins.aux >= plan.slots.size()) throw bad(ins, "slot");
        break;
      case K::kAllGather:
      case K::kReduceScatter:
      case K::kKeepRows:
        if (ins.index >= plan.slots.size()) throw bad(ins, "slot");
        if (ins.aux > p.geometries.size()) throw bad(ins, "geometry");
        break;
      case K::kSend:
      case K::kRecv:
        if (ins.index >= plan.slots.size()) throw bad(ins, "slot");
        if (static_cast<int>(ins.aux) >= plan.num_devices) throw bad(ins, "peer");
        if (ins.range > p.ranges.size()) throw bad(ins, "byte range");
        break;
      case K::kAllReduce:
        if (ins.index >= plan.slots.size()) throw bad(ins, "slot");
        if (ins.range > p.ranges.size()) throw bad(ins, "byte range");
        break;
      case K::kFused:
        throw bad(ins, "generated kernel");
      default:
        if (ins.index >= plan.slots.size()) throw bad(ins, "slot");
    }
  }
}

}  // namespace

std::string encode_plan(const Plan& plan, const std::vector<int>& devices) {
  WireWriter w;
  w.u64(plan.graph_hash).u64(plan.num_nodes).u32(static_cast<uint32_t>(plan.num_devices));
  w.u32(static_cast<uint32_t>(plan.groups.size()));
  for (const auto& g : plan.groups) {
    w.u32(static_cast<uint32_t>(g.size()));
    for (int d : g) w.u32(static_cast<uint32_t>(d));
  }
  w.u32(static_cast<uint32_t>(plan.final_placements.size()));
  for (const auto& p : plan.final_placements) put_placement(w, p);
  w.u32(static_cast<uint32_t>(plan.slots.size()));
  for (const auto& s : plan.slots) put_slot(w, s);
  std::vector<const DeviceProgram*> chosen;
  for (const auto& p : plan.programs)
    if (devices.empty() || std::find(devices.begin(), devices.end(), p.device) != devices.end()) chosen.push_back(&p);
  w.u32(static_cast<uint32_t>(chosen.size()));
  for (const DeviceProgram* p : chosen) put_program(w, *p);
  return w.take();
}

Plan decode_plan(std::string_view payload) {
  WireReader r(payload);
  Plan plan;
  plan.graph_hash = r.u64();
  plan.num_nodes = r.u64();
  plan.num_devices = static_cast<int>(r.u32());
  if (plan.num_devices < 1 || plan.num_devices > 4096)
    throw ProtocolError(fmt::format("plan: {} devices", plan.num_devices));
  for (uint32_t i = 0, n = count(r, "groups", 1u << 16); i < n; ++i) {
    std::vector<int> g;
    for (uint32_t k = 0, m = count(r, "group members", 4096); k < m; ++k) {
      const uint32_t d = r.u32();
      if (static_cast<int>(d) >= plan.num_devices) throw ProtocolError(fmt::format("plan: group member {}", d));
      g.push_back(static_cast<int>(d));
    }
    plan.groups.push_back(std::move(g));
  }
  for (uint32_t i = 0, n = count(r, "placements"); i < n; ++i) plan.final_placements.push_back(get_placement(r));
  for (uint32_t i = 0, n = count(r, "slots"); i < n; ++i) plan.slots.push_back(get_slot(r));
  for (uint32_t i = 0, n = count(r, "programs", 4096); i < n; ++i) plan.programs.push_back(get_program(r));
  r.finish();
  for (const auto& p : plan.programs) check_program(plan, p);
  return plan;
}

}  // namespace moreh::runtime
