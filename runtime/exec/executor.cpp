#include "runtime/exec/executor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "runtime/base/event_log.h"
#include "runtime/device/remote_device.h"
#include "runtime/base/errors.h"
#include "runtime/host/host_arithmetic.h"
#include "runtime/base/interrupt.h"
#include "runtime/plan/point_to_point.h"

namespace moreh::runtime {

namespace {
// The collectives and messages a device's event names ("" for the other instructions).
const char* comm_name(Instruction::Kind kind) {
  switch (kind) {
    case Instruction::Kind::kAllReduce: return "all_reduce";
    case Instruction::Kind::kAllGather: return "all_gather";
    case Instruction::Kind::kReduceScatter: return "reduce_scatter";
    case Instruction::Kind::kBroadcast: return "broadcast";
    case Instruction::Kind::kSend: return "send";
    case Instruction::Kind::kRecv: return "recv";
    default: return "";
  }
}
}  // namespace

PhysicalBlock& LaunchContext::input_memory(size_t i) const {
  const TensorRef& r = node_.inputs.at(i);
  const Buffer& b = *r.buffer;
  if (auto why = b.failure()) throw Error("this tensor's value is unavailable: " + *why);
  PhysicalBlock* m = b.memory(device_.index());
  if (!m) throw Error(fmt::format("buffer {} has no memory on {}", b.id(), device_.name()));
  if (local_) {  // a device's part of a value: the view must stay inside what the device holds of it
    int64_t end = r.offset + 1;
    bool empty = false;
    for (size_t d = 0; d < r.sizes.size(); ++d) {
      if (r.sizes[d] == 0) empty = true;
      else end += (r.sizes[d] - 1) * std::max<int64_t>(r.strides[d], 0);
    }
    if (!empty && static_cast<uint64_t>(end) * r.itemsize > m->bytes())
      throw Error(fmt::format("input {} reads {} bytes of buffer {}, whose block on {} holds {}: the plan's view of "
                              "the device's part is wrong", i, static_cast<uint64_t>(end) * r.itemsize, b.id(),
                              device_.name(), m->bytes()));
  }
  return *m;
}

void LaunchContext::bind_output(size_t i, std::unique_ptr<PhysicalBlock> block) const {
  node_.outputs.at(i).buffer->bind(device_.index(), std::move(block));
}

Node node_on_elements(const Node& node, const std::vector<uint32_t>& elements) {
  const ListElements lists = list_elements(node);
  auto kept = [&](int e) { return e < 0 || std::binary_search(elements.begin(), elements.end(), static_cast<uint32_t>(e)); };
  Node mine;
  mine.op = node.op;
  mine.attrs = node.attrs;
  mine.attr_args = node.attr_args;
  mine.payload = node.payload;
  mine.host_input = node.host_input;
  std::vector<int> new_index(node.inputs.size(), -1);
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    if (lists.length && !kept(lists.inputs[i])) continue;
    new_index[i] = static_cast<int>(mine.inputs.size());
    mine.inputs.push_back(node.inputs[i]);
    mine.input_args.push_back(node.input_args[i]);
  }
  for (uint16_t w : node.written)
    if (new_index[w] >= 0) mine.written.push_back(static_cast<uint16_t>(new_index[w]));
  for (uint16_t w : node.initializes)
    if (new_index[w] >= 0) mine.initializes.push_back(static_cast<uint16_t>(new_index[w]));
  for (size_t k = 0; k < node.outputs.size(); ++k) {
    if (lists.length && !kept(lists.outputs[k])) continue;
    mine.outputs.push_back(node.outputs[k]);
    mine.output_rets.push_back(node.output_rets[k]);
  }
  return mine;
}

void mark_step_failed(const StepGraph& graph, size_t first, const std::string& why) {
  auto text = std::make_shared<const std::string>(why);
  const auto& nodes = graph.nodes();
  for (size_t i = first; i < nodes.size(); ++i) {
    for (const auto& out : nodes[i].outputs) out.buffer->set_failure(text);
    // A buffer first written in place here (torch.ones: empty, then fill_) has no earlier value to keep.
    for (uint16_t w : nodes[i].initializes) nodes[i].inputs[w].buffer->set_failure(text);
  }
}

void Executor::submit(StepExecution step) {
  const auto bytes_of = [&step](uint32_t slot) { return step.bindings.at(slot)->bytes(); };
  if (auto why = step.share ? std::nullopt : point_to_point_mismatch(*step.plan, bytes_of)) {  // it would wait for a message never sent
    const std::string text = "the step's plan cannot run: " + *why;
    mark_step_failed(*step.graph, 0, text);
    throw Error(text);
  }
  // The groups' communicators exist before any program runs: the plan's, then those of the pairs whose
  // messages need one (every process of a job forms them in this order).
  std::vector<std::vector<int>> groups = step.plan->groups;
  if (comm_ && step.plan->programs.size() > 1) {
    std::vector<std::vector<int>> pairs =
        message_groups(*step.plan, [this](int a, int b) { return comm_->messages_need_a_group(a, b); });
    groups.insert(groups.end(), std::make_move_iterator(pairs.begin()), std::make_move_iterator(pairs.end()));
  }
  if (!groups.empty()) {
    std::lock_guard<std::mutex> lock(groups_mu_);
    for (const std::vector<int>& members : groups) {
      if (groups_.count(members)) continue;
      std::unique_ptr<Communicator> group = comm_ ? comm_->make_group(members) : nullptr;
      if (!group) {
        const std::string text = fmt::format("the step's plan cannot run: its collectives or messages over devices "
                                             "{} need a group of devices, which this build's collectives for {} cannot form",
                                             fmt::join(members, ", "), devices_.at(0)->name());
        mark_step_failed(*step.graph, 0, text);
        throw Error(text);
      }
      groups_.emplace(members, std::move(group));
    }
  }
  step.interrupt_epoch = interrupt_epoch();
  if (program_scope_) step.open_program = program_scope_(step.step);
  auto shared = std::make_shared<StepExecution>(std::move(step));
  std::vector<const DeviceProgram*> remote;
  for (const auto& program : shared->plan->programs)
    if (dynamic_cast<RemoteDevice*>(devices_.at(program.device))) remote.push_back(&program);
  if (!remote.empty()) {
    if (!remote_) {
      const std::string text = "the step's plan has programs for devices in other processes and nothing sends them";
      mark_step_failed(*shared->graph, 0, text);
      throw Error(text);
    }
    try {
      remote_->submit(shared, remote);  // first: the workers start while this process runs its own
    } catch (const Error& e) {
      mark_step_failed(*shared->graph, 0, e.what());
      throw;
    }
  }
  for (const auto& program : shared->plan->programs) {
    PhysicalDevice* device = devices_.at(program.device);
    if (dynamic_cast<RemoteDevice*>(device)) continue;
    device->submit([this, shared, &program] { run_program(*shared, program); });
  }
}

namespace {

// Ctrl-C since the step was submitted: it stops before its next kernel (the caller names the op).
void stop_if_interrupted(const StepExecution& step) {
  if (interrupt_epoch() != step.interrupt_epoch) [[unlikely]]
    throw InterruptedError("interrupted");
}

}  // namespace

void Executor::stop_peers(const StepExecution& step, const DeviceProgram& program, const std::string& why) {
  // The other devices would wait for this one at their next collective until the timeout: break the
  // communicator so that they fail at once (the engine recovers it once every device is idle).
  if (comm_ && step.plan->num_devices > 1)
    comm_->interrupt(fmt::format("{} failed: {}", devices_.at(program.device)->name(), why));
  std::lock_guard<std::mutex> lock(groups_mu_);
  for (auto& [members, group] : groups_)
    group->interrupt(fmt::format("{} failed: {}", devices_.at(program.device)->name(), why));
}

std::pair<Communicator*, int> Executor::communicator_for(const Plan& plan, const Instruction& ins,
                                                         const PhysicalDevice& device) const {
  if (ins.group == 0) {
    if (!comm_) throw Error("a plan over several devices ran without a communicator");
    return {comm_, device.index()};
  }
  const std::vector<int>& members = plan.groups.at(ins.group - 1);
  const auto at = std::find(members.begin(), members.end(), device.index());
  if (at == members.end())
    throw Error(fmt::format("{} runs a collective of the group of devices {}, which it is not in", device.name(),
                            fmt::join(members, ", ")));
  std::lock_guard<std::mutex> lock(groups_mu_);
  return {groups_.at(members).get(), static_cast<int>(at - members.begin())};
}

uint64_t Executor::group_bytes_sent() const {
  std::lock_guard<std::mutex> lock(groups_mu_);
  uint64_t total = 0;
  for (const auto& [members, group] : groups_) total += group->total_bytes_sent();
  return total;
}

void Executor::add_group_bytes_by_device(std::vector<uint64_t>& out) const {
  std::lock_guard<std::mutex> lock(groups_mu_);
  for (const auto& [members, group] : groups_)
    for (size_t r = 0; r < members.size(); ++r)
      if (static_cast<size_t>(members[r]) < out.size()) out[members[r]] += group->traffic(static_cast<int>(r)).bytes_sent;
}

bool Executor::recover_groups() {
  std::lock_guard<std::mutex> lock(groups_mu_);
  bool all = true;
  for (auto& [members, group] : groups_) all = group->recover() && all;
  return all;
}

void Executor::run_program(const StepExecution& step, const DeviceProgram& program) {
  const std::shared_ptr<void> scope = step.open_program ? step.open_program(program.device) : nullptr;
  const auto started = std::chrono::steady_clock::now();
  // The step's collectives and messages on this device, for its event: (kind, bytes, start, end), seconds
  // after the program's start (only while events are written).
  struct CommSpan {
    Instruction::Kind kind;
    uint64_t bytes;
    double start, end;
  };
  std::vector<CommSpan> comm;
  const bool spans = events_enabled() && step.step != 0;
  auto since_start = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(); };
  struct Timer {
    std::atomic<uint64_t>& total;
    std::chrono::steady_clock::time_point started;
    uint64_t step;
    int device;
    const std::vector<CommSpan>& comm;
    ~Timer() {
      const auto ns = static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count());
      total.fetch_add(ns, std::memory_order_relaxed);
      if (!events_enabled() || step == 0) return;
      try {  // the program's span on its device's stream, for moreh-log's timeline (event_log.h)
        const double end = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
        std::string spans;
        for (const CommSpan& c : comm)
          spans += fmt::format("{}[\"{}\", {}, {:.6f}, {:.6f}]", spans.empty() ? "" : ", ", comm_name(c.kind), c.bytes,
                               c.start, c.end);
        emit_event("device_run",
                   fmt::format("\"step\": {}, \"device\": {}, \"start\": {:.6f}, \"end\": {:.6f}, \"comm\": [{}]", step,
                               device, end - static_cast<double>(ns) * 1e-9, end, spans));
      } catch (...) {
      }
    }
  } timer{replay_ns_, started, step.step, program.device, comm};
  PhysicalDevice& device = *devices_.at(program.device);
  const auto& nodes = step.graph->nodes();
  uint32_t next_node = 0;  // the first node not yet run: a failure marks it and everything after
  const auto& code = program.code;
  for (size_t pc = 0; pc < code.size(); ++pc) {
    const Instruction& ins = code[pc];
    try {
      auto joins = [&](size_t at) {  // another all-reduce over the same devices
        return at < code.size() && code[at].kind == Instruction::Kind::kAllReduce && code[at].group == ins.group;
      };
      if (ins.kind == Instruction::Kind::kAllReduce && joins(pc + 1)) {
        // Consecutive all-reduces (a step's gradients, before the optimizer reads them) go as one group.
        std::vector<CollectivePart> parts;
        for (; joins(pc); ++pc) parts.push_back(all_reduce_part(step, program, code[pc], device));
        --pc;
        auto [group, rank] = communicator_for(*step.plan, ins, device);
        const double began = spans ? since_start() : 0;
        group->run_group_in_stream(rank, parts);
        if (spans) {
          uint64_t bytes = 0;
          for (const CollectivePart& part : parts) bytes += part.count * size_of(part.type);
          comm.push_back({Instruction::Kind::kAllReduce, bytes, began, since_start()});
        }
        continue;
      }
      switch (ins.kind) {
        case Instruction::Kind::kAllocate: {
          Buffer& b = *step.bindings[ins.index];
          const uint64_t bytes = program.sizes.empty() ? b.bytes() : program.sizes.at(ins.aux);
          if (!b.memory(device.index())) b.bind(device.index(), device.allocate(bytes));
          break;
        }
        case Instruction::Kind::kLaunch: {
          next_node = ins.index;
          stop_if_interrupted(step);
          const Node& node = nodes[ins.index];
          if (ins.aux == 0) {
            provider_->launch(node, LaunchContext(device, node));
          } else {
            const LocalLaunch& local = program.launches.at(ins.aux - 1);
            Node mine = local.elements.empty() ? node : node_on_elements(node, local.elements);
            for (size_t i = 0; i < mine.inputs.size() && i < local.inputs.size(); ++i) {  // this device's rows
              mine.inputs[i].offset = local.inputs[i].offset;
              mine.inputs[i].sizes = local.inputs[i].sizes;
              if (!local.inputs[i].strides.empty()) mine.inputs[i].strides = local.inputs[i].strides;
            }
            for (size_t k = 0; k < mine.outputs.size() && k < local.outputs.size(); ++k) {
              mine.outputs[k].offset = local.outputs[k].offset;
              mine.outputs[k].sizes = local.outputs[k].sizes;
              if (!local.outputs[k].strides.empty()) mine.outputs[k].strides = local.outputs[k].strides;
            }
            if (local.joins.empty()) provider_->launch(mine, LaunchContext(device, mine, &local));
            else launch_joined(mine, local, device);
          }
          next_node = ins.index + 1;
          break;
        }
        case Instruction::Kind::kFused: {
          const FusedLaunch& fused = program.fused.at(ins.index);
          next_node = fused.nodes.front();
          stop_if_interrupted(step);
          run_fused(nodes, fused, device);
          next_node = fused.nodes.back() + 1;
          break;
        }
        case Instruction::Kind::kRelease:
          step.bindings[ins.index]->unbind(device.index());
          break;
        default: {
          const double began = spans ? since_start() : 0;
          run_collective(step, program, ins, device);
          if (spans && comm_name(ins.kind)[0] != '\0') {
            const uint64_t bytes = ins.range ? program.ranges.at(ins.range - 1).bytes : step.bindings[ins.index]->bytes();
            comm.push_back({ins.kind, bytes, began, since_start()});
          }
          break;
        }
      }
    } catch (const OutOfMemoryError& e) {
      mark_step_failed(*step.graph, next_node, e.what());
      stop_peers(step, program, e.what());
      throw;
    } catch (const InterruptedError&) {
      const std::string why = fmt::format("the step was interrupted (Ctrl-C) before op {} of {} ({}); it and the "
                                          "ops after it did not run",
                                          next_node + 1, nodes.size(),
                                          next_node < nodes.size() ? op_name(nodes[next_node].op) : "");
      mark_step_failed(*step.graph, next_node, why);
      stop_peers(step, program, why);
      throw InterruptedError(why);
    } catch (const std::exception& e) {
      std::string where = next_node < nodes.size() ? op_name(nodes[next_node].op) : std::string("the step");
      std::string why = fmt::format("{} (op {} of {} in the step) failed: {}", where, next_node + 1, nodes.size(),
                                    e.what());
      mark_step_failed(*step.graph, next_node, why);
      stop_peers(step, program, why);
      throw Error(why);
    }
  }
}

namespace {

// Elements from a view's first to its last, plus one (0 for an empty view).
int64_t view_extent(const TensorRef& r) {
  int64_t span = 1;
  for (size_t d = 0; d < r.sizes.size(); ++d) {
    if (r.sizes[d] == 0) return 0;
    span += (r.sizes[d] - 1) * r.strides[d];
  }
  return span;
}

DataType joined_type(const TensorRef& r) {
  const auto t = data_type_of(r.dtype);
  if (!t || !is_reducible(*t)) throw Error("a micro-batch's result has an element type the runtime cannot add");
  return *t;
}

}  // namespace

void Executor::launch_joined(const Node& mine, const LocalLaunch& local, PhysicalDevice& device) {
  using Join = LocalLaunch::Join;
  const int dev = device.index();
  const size_t outs = mine.outputs.size();
  // What the device holds already (earlier micro-batches' values); the launch binds its own results.
  std::vector<std::unique_ptr<PhysicalBlock>> held(outs);
  for (size_t k = 0; k < outs; ++k)
    if (local.joins.at(k) != Join::kFresh) held[k] = mine.outputs[k].buffer->take(dev);
  for (size_t k = 0; k < outs; ++k)
    if (local.joins[k] == Join::kInto && !held[k]) {
      for (size_t j = 0; j < outs; ++j)
        if (held[j]) mine.outputs[j].buffer->bind(dev, std::move(held[j]));
      throw Error(fmt::format("a micro-batch's rows of buffer {} have no block to go into", mine.outputs[k].buffer->id()));
    }
  try {
    provider_->launch(mine, LaunchContext(device, mine, &local));
    auto fresh = [&](size_t k) -> PhysicalBlock& {
      PhysicalBlock* m = mine.outputs[k].buffer->memory(dev);
      if (!m) throw Error(fmt::format("a micro-batch's launch left output {} without memory", k));
      return *m;
    };
    for (size_t k = 0; k < outs && k < local.factors.size(); ++k)
      if (local.factors[k] != 1.0) {
        const DataType t = joined_type(mine.outputs[k]);
        device.scale_in_stream(t, fresh(k).data(), fresh(k).bytes() / size_of(t), local.factors[k]);
      }
    if (local.weighted >= 0)
      device.combine_scalars_in_stream(joined_type(mine.outputs[local.weighted]), fresh(local.weighted).data(),
                                       fresh(local.weight).data(), ScalarOp::kMultiply);
    for (size_t k = 0; k < outs; ++k) {
      if (!held[k]) continue;  // fresh, or the first micro-batch's sum
      const TensorRef& r = mine.outputs[k];
      PhysicalBlock& m = fresh(k);
      if (local.joins[k] == Join::kInto) {
        const uint64_t from = static_cast<uint64_t>(r.offset) * r.itemsize;
        const uint64_t bytes = static_cast<uint64_t>(view_extent(r)) * r.itemsize;
        const uint64_t to = from + static_cast<uint64_t>(local.into.at(k)) * r.itemsize;
        if (from + bytes > m.bytes() || to + bytes > held[k]->bytes())
          throw Error(fmt::format("a micro-batch's rows of buffer {} fall outside its block", r.buffer->id()));
        device.copy_in_stream(static_cast<char*>(held[k]->data()) + to, static_cast<const char*>(m.data()) + from,
                              bytes);
      } else {
        const DataType t = joined_type(r);
        device.accumulate_in_stream(t, held[k]->data(), m.data(), std::min(m.bytes(), held[k]->bytes()) / size_of(t));
      }
      r.buffer->bind(dev, std::move(held[k]));
    }
  } catch (...) {
    for (size_t k = 0; k < outs; ++k)
      if (held[k]) mine.outputs[k].buffer->bind(dev, std::move(held[k]));
    throw;
  }
}

namespace {

// The memory behind a tensor reference on `device`, at the reference's offset (or this device's, when the
// launch covers its rows only).
char* tensor_address(const TensorRef& ref, int64_t offset, PhysicalDevice& device) {
  const Buffer& b = *ref.buffer;
  if (auto why = b.failure()) throw Error("this tensor's value is unavailable: " + *why);
  PhysicalBlock* m = b.memory(device.index());
  if (!m) throw Error(fmt::format("buffer {} has no memory on {}", b.id(), device.name()));
  return static_cast<char*>(m->data()) + (offset >= 0 ? offset : ref.offset) * static_cast<int64_t>(ref.itemsize);
}

ElementwiseScalar scalar_value(const Attribute& a) {
  if (const auto* v = std::get_if<StepValue>(&a)) return v->value;
  if (const auto* i = std::get_if<int64_t>(&a)) return *i;
  if (const auto* b = std::get_if<bool>(&a)) return static_cast<int64_t>(*b);
  throw Error("a fused kernel's scalar is not a number");
}

}  // namespace

void Executor::run_fused(const std::vector<Node>& nodes, const FusedLaunch& fused, PhysicalDevice& device) {
  ElementwiseArguments args = fused.shape;
  args.inputs.reserve(fused.inputs.size());
  for (const auto& in : fused.inputs)
    args.inputs.push_back(tensor_address(nodes[in.node].inputs[in.index], in.offset, device));
  args.scalars.reserve(fused.scalars.size());
  for (const auto& sc : fused.scalars) args.scalars.push_back(scalar_value(nodes[sc.node].attrs.at(sc.attr)));
  args.outputs.reserve(fused.outputs.size());
  for (const auto& out : fused.outputs) {
    const Node& node = nodes[out.node];
    if (out.fresh) {
      const TensorRef& ref = node.outputs[out.index];
      if (!ref.buffer->memory(device.index())) ref.buffer->bind(device.index(), device.allocate(ref.buffer->bytes()));
      args.outputs.push_back(tensor_address(ref, out.offset, device));
    } else {
      args.outputs.push_back(tensor_address(node.inputs[out.index], out.offset, device));
    }
  }
  device.elementwise_in_stream(*fused.kernel, args);
}

CollectivePart Executor::all_reduce_part(const StepExecution& step, const DeviceProgram& program, const Instruction& ins,
                                         PhysicalDevice& device) {
  Buffer& b = *step.bindings[ins.index];
  const SlotInfo& info = step.plan->slots.at(ins.index);
  if (!info.type || !is_reducible(*info.type))
    throw Error(fmt::format("buffer {} has an element type the runtime cannot reduce", b.id()));
  if (auto why = b.failure()) throw Error("this tensor's value is unavailable: " + *why);
  PhysicalBlock* m = b.memory(device.index());
  if (!m) throw Error(fmt::format("buffer {} has no memory on {}", b.id(), device.name()));
  // In place: the devices' partial sums of their rows become the whole batch's (of the device's part of the
  // value, where tensor parallelism splits it beside the batch).
  // A range: one micro-batch's rows of the device's block (a pipeline's tensor-parallel sum).
  const ByteRange* range = ins.range ? &program.ranges.at(ins.range - 1) : nullptr;
  const uint64_t whole = range ? range->bytes
                         : ins.aux ? whole_bytes(program.geometries.at(ins.aux - 1), b.bytes()) : b.bytes();
  const uint64_t offset = range ? range->offset : 0;
  if (offset + whole > m->bytes())
    throw Error(fmt::format("buffer {} holds {} bytes on {}, fewer than the {} to sum from byte {}", b.id(), m->bytes(),
                            device.name(), whole, offset));
  char* data = static_cast<char*>(m->data()) + offset;
  return CollectivePart::all_reduce(data, data, whole / size_of(*info.type), *info.type, ReduceOp::kSum);
}

void Executor::run_collective(const StepExecution& step, const DeviceProgram& program, const Instruction& ins,
                              PhysicalDevice& device) {
  const Plan& plan = *step.plan;
  const int rank = device.index();  // the device's: its blocks of every buffer
  Buffer& b = *step.bindings[ins.index];
  const SlotInfo& info = plan.slots.at(ins.index);
  auto need_type = [&]() {
    if (!info.type || !is_reducible(*info.type))
      throw Error(fmt::format("buffer {} has an element type the runtime cannot reduce", b.id()));
    return *info.type;
  };
  auto block = [&](Buffer& x) -> PhysicalBlock& {
    if (auto why = x.failure()) throw Error("this tensor's value is unavailable: " + *why);
    PhysicalBlock* m = x.memory(rank);
    if (!m) throw Error(fmt::format("buffer {} has no memory on {}", x.id(), device.name()));
    return *m;
  };
  // Bytes travel as 2-byte words; an odd count (a bool scalar) goes through a padded bounce buffer, filled
  // from the memory first (`in`) and copied back by copy_out.
  struct Words {
    PhysicalDevice& device;
    char* at;
    uint64_t bytes;
    std::unique_ptr<PhysicalBlock> bounce;
    void* data = nullptr;
    uint64_t count = 0;
    void copy_out() {
      if (bounce) device.copy_in_stream(at, bounce->data(), bytes);
    }
  };
  auto words = [&device](char* at, uint64_t bytes, bool in) {
    Words w{device, at, bytes, nullptr, at, (bytes + 1) / 2};
    if (w.count * 2 != bytes) {
      w.bounce = device.allocate(w.count * 2);
      if (in) device.copy_in_stream(w.bounce->data(), at, bytes);
      w.data = w.bounce->data();
    }
    return w;
  };
  // The communicator of the collective (every device's, or its group's) and the device's rank in it.
  auto on = [&]() { return communicator_for(plan, ins, device); };
  switch (ins.kind) {
    case Instruction::Kind::kAllReduce: {
      auto [comm, crank] = on();
      comm->run_in_stream(crank, all_reduce_part(step, program, ins, device));
      break;
    }
    case Instruction::Kind::kAllGather: {
      // Rows travel as 8-, 4- or 2-byte words, whichever divides a row.
      const SlotInfo& geo = geometry_of(plan, program, ins);
      const uint64_t row = geo.row_bytes, outer = std::max<uint64_t>(geo.outer, 1), whole = whole_bytes(geo, b.bytes());
      if (row == 0) throw Error(fmt::format("buffer {} has no rows to gather", b.id()));
      const DataType unit = row % 8 == 0 ? DataType::kInt64 : row % 4 == 0 ? DataType::kInt32 : DataType::kFloat16;
      const int64_t rows = static_cast<int64_t>(whole / (row * outer));
      auto [comm, crank] = on();
      std::vector<uint64_t> counts;
      for (int r = 0; r < comm->size(); ++r)
        counts.push_back(split_rows(rows, comm->size(), r).count * outer * row / size_of(unit));
      PhysicalBlock& local = block(b);
      auto full = device.allocate(whole);
      // Split along a later dimension, each device's part arrives as [outer, its rows, row]: gathered rank
      // after rank beside the value, then laid into its blocks.
      auto staging = outer > 1 ? device.allocate(whole) : nullptr;
      CollectivePart p;
      p.kind = CollectiveKind::kAllGather;
      p.type = unit;
      p.send = local.data();
      p.recv = staging ? staging->data() : full->data();
      p.counts = counts;
      comm->run_in_stream(crank, p);
      if (staging) {
        uint64_t from = 0;
        for (int r = 0; r < comm->size(); ++r) {
          const RowRange part = split_rows(rows, comm->size(), r);
          const uint64_t width = static_cast<uint64_t>(part.count) * row;
          device.copy_2d_in_stream(static_cast<char*>(full->data()) + part.begin * row, rows * row,
                                   static_cast<const char*>(staging->data()) + from, width, width, outer);
          from += width * outer;
        }
      }
      b.bind(rank, std::move(full));
      break;
    }
    case Instruction::Kind::kBroadcast:  // from the group's first device
    case Instruction::Kind::kSend:
    case Instruction::Kind::kRecv: {  // the slot's whole value, to or from device `aux`
      const bool sends = ins.kind != Instruction::Kind::kRecv, receives = ins.kind != Instruction::Kind::kSend;
      const ByteRange part = ins.range ? program.ranges.at(ins.range - 1) : ByteRange{0, b.bytes(), b.bytes()};
      if (receives && !b.memory(rank)) b.bind(rank, device.allocate(part.block_bytes));
      PhysicalBlock& m = block(b);
      if (part.offset + part.bytes > m.bytes())
        throw Error(fmt::format("bytes {}..{} of buffer {} fall outside its block of {} bytes on {}", part.offset,
                                part.offset + part.bytes, b.id(), m.bytes(), device.name()));
      Words w = words(static_cast<char*>(m.data()) + part.offset, part.bytes, sends);
      CollectivePart p;
      p.kind = ins.kind == Instruction::Kind::kBroadcast ? CollectiveKind::kBroadcast
               : sends                                   ? CollectiveKind::kSend
                                                         : CollectiveKind::kRecv;
      p.type = DataType::kFloat16;
      p.count = w.count;
      if (sends) p.send = w.data;
      if (receives) p.recv = w.data;
      p.peer = ins.kind == Instruction::Kind::kBroadcast ? 0 : static_cast<int>(ins.aux);
      auto [comm, crank] = on();
      if (ins.kind != Instruction::Kind::kBroadcast && ins.group == 0 && comm->messages_need_a_group(rank, p.peer)) {
        // Over the pair's own group (made at submit): rank 0 is the lower device.
        std::lock_guard<std::mutex> lock(groups_mu_);
        comm = groups_.at({std::min(rank, p.peer), std::max(rank, p.peer)}).get();
        crank = rank < p.peer ? 0 : 1;
        p.peer = 1 - crank;
      }
      comm->run_in_stream(crank, p);
      if (receives) w.copy_out();
      break;
    }
    case Instruction::Kind::kScale: {
      PhysicalBlock& m = block(b);
      const DataType t = need_type();
      device.scale_in_stream(t, m.data(), m.bytes() / size_of(t), program.factors.at(ins.aux));
      break;
    }
    case Instruction::Kind::kReduceScatter: {  // the sum's rows, each device its own (split_rows)
      const SlotInfo& geo = geometry_of(plan, program, ins);
      const uint64_t row = geo.row_bytes, outer = std::max<uint64_t>(geo.outer, 1), whole = whole_bytes(geo, b.bytes());
      const DataType t = need_type();
      if (row == 0 || row % size_of(t) != 0) throw Error(fmt::format("buffer {} has no rows to scatter", b.id()));
      const int64_t rows = static_cast<int64_t>(whole / (row * outer));
      auto [comm, crank] = on();
      CollectivePart p;
      p.kind = CollectiveKind::kReduceScatter;
      p.type = t;
      p.op = ReduceOp::kSum;
      for (int r = 0; r < comm->size(); ++r)
        p.counts.push_back(static_cast<uint64_t>(split_rows(rows, comm->size(), r).count) * outer * row / size_of(t));
      const char* addend = static_cast<const char*>(block(b).data());
      // Split along a later dimension: the addends are first laid rank after rank, each rank's rows of every
      // block together, as the collective scatters them.
      auto staging = outer > 1 ? device.allocate(whole) : nullptr;
      if (staging) {
        uint64_t to = 0;
        for (int r = 0; r < comm->size(); ++r) {
          const RowRange part = split_rows(rows, comm->size(), r);
          const uint64_t width = static_cast<uint64_t>(part.count) * row;
          device.copy_2d_in_stream(static_cast<char*>(staging->data()) + to, width, addend + part.begin * row,
                                   rows * row, width, outer);
          to += width * outer;
        }
      }
      auto mine = device.allocate(std::max<uint64_t>(p.counts[crank] * size_of(t), 1));
      p.send = staging ? staging->data() : addend;
      p.recv = mine->data();
      comm->run_in_stream(crank, p);
      b.bind(rank, std::move(mine));
      break;
    }
    case Instruction::Kind::kKeepRows: {
      const SlotInfo& geo = geometry_of(plan, program, ins);
      const uint64_t row = geo.row_bytes, outer = std::max<uint64_t>(geo.outer, 1);
      if (row == 0) throw Error(fmt::format("buffer {} has no rows to keep", b.id()));
      const int ranks = ins.group ? static_cast<int>(plan.groups.at(ins.group - 1).size()) : comm_ ? comm_->size() : 1;
      const int mine_rank = ins.group ? on().second : rank;
      const int64_t rows = static_cast<int64_t>(whole_bytes(geo, b.bytes()) / (row * outer));
      const RowRange r = split_rows(rows, ranks, mine_rank);
      const uint64_t width = static_cast<uint64_t>(r.count) * row;
      auto mine = device.allocate(width * outer);
      device.copy_2d_in_stream(mine->data(), width, static_cast<const char*>(block(b).data()) + r.begin * row,
                               rows * row, width, outer);
      b.bind(rank, std::move(mine));
      break;
    }
    case Instruction::Kind::kMultiply:
    case Instruction::Kind::kDivide: {
      Buffer& other = *step.bindings[ins.aux];
      const DataType t = need_type();
      PhysicalBlock& x = block(b);
      const uint64_t count = x.bytes() / size_of(t);
      if (ins.kind == Instruction::Kind::kDivide && count > 1) {  // a gradient by a loss's total weight
        const auto& divisor = plan.slots.at(ins.aux).type;
        if (!divisor || !is_reducible(*divisor))
          throw Error(fmt::format("buffer {} cannot divide: its divisor has no element type", b.id()));
        device.divide_in_stream(t, x.data(), count, *divisor, block(other).data());
        break;
      }
      device.combine_scalars_in_stream(t, x.data(), block(other).data(),
                                       ins.kind == Instruction::Kind::kMultiply ? ScalarOp::kMultiply : ScalarOp::kDivide);
      break;
    }
    default: throw Error("unknown instruction");
  }
}

}  // namespace moreh::runtime
