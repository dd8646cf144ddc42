#include "scheduler/analysis/peak_explanation.h"

#include <gtest/gtest.h>

#include "runtime/memory/virtual_memory.h"
#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using namespace moreh::testing;
using Kind = runtime::Instruction::Kind;

// a (allocated) and b (relu's output) held at once after the launch: the line names the instruction, the op
// that made b, and what the rest (a, allocated) add up to.
TEST(PeakExplanationTest, NamesThePeaksInstructionAndTheOpsThatMadeWhatIsHeld) {
  runtime::VirtualMemory vm;
  auto a = std::make_shared<runtime::Buffer>(vm, 400, 1), b = std::make_shared<runtime::Buffer>(vm, 800, 1);
  runtime::StepGraph g;
  g.append(node("aten::relu", {shaped(a, {100})}, {shaped(b, {200})}));
  const runtime::CanonicalGraph cg = runtime::CanonicalGraph::build(g);
  runtime::DeviceProgram p;
  p.device = 3;
  p.sizes = {400};
  p.code = {{Kind::kAllocate, 0, 0}, {Kind::kLaunch, 0}, {Kind::kRelease, 0}, {Kind::kRelease, 1}};
  const std::string line = explain_peak(runtime::Plan{}, p, g, cg, 1);
  EXPECT_NE(line.find("device 3 peaks at +1200 bytes after instruction 1 of 4 (aten::relu #0)"), std::string::npos)
      << line;
  EXPECT_NE(line.find("slot 1 (aten::relu #0): 800 and 1 more slot(s) of 400 bytes"), std::string::npos) << line;
  EXPECT_NE(line.find("0 bytes of them from before the step; by what made them: aten::relu × 1: 800, allocated × 1: 400"),
            std::string::npos) << line;
  EXPECT_NE(explain_peak(runtime::Plan{}, p, g, cg).find("slot 0 (allocated): 400"), std::string::npos);
}

}  // namespace
}  // namespace moreh::scheduler
