// What of a step each worker is sent: nodes its devices do not run are withheld, a host tensor copied into the
// batch goes as the union of its devices' rows, and anything else (or any launch reading it whole) goes whole.
#include "runtime/worker/payload_shares.h"

#include <gtest/gtest.h>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

using Kind = PayloadShare::Kind;

Instruction launch(uint32_t node, uint32_t aux = 0) { return Instruction{Instruction::Kind::kLaunch, node, aux}; }

LocalLaunch rows(int64_t begin, int64_t count, int64_t whole) {
  LocalLaunch l;
  l.rows = {begin, count};
  l.batch_rows = whole;
  return l;
}

// Node 0 copies the batch in (8 rows split over devices 0..3), node 1 runs everywhere, node 2 on device 3 only.
Plan four_devices() {
  Plan plan;
  plan.num_nodes = 3;
  plan.num_devices = 4;
  for (int d = 0; d < 4; ++d) {
    DeviceProgram p;
    p.device = d;
    p.launches.push_back(rows(2 * d, 2, 8));
    p.code = {launch(0, 1), launch(1)};
    if (d == 3) p.code.push_back(launch(2));
    plan.programs.push_back(std::move(p));
  }
  return plan;
}

const std::vector<bool> kHostInput{true, false, false};

TEST(PayloadShares, AWorkerGetsItsDevicesRowsOfTheBatchAndOnlyTheNodesTheyRun) {
  const Plan plan = four_devices();
  const auto s = payload_shares(plan, {1, 2}, kHostInput);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].kind, Kind::kRows);
  EXPECT_EQ(s[0].rows.begin, 2);
  EXPECT_EQ(s[0].rows.count, 4);  // rows 2..5: devices 1 and 2
  EXPECT_EQ(s[0].rows.whole, 8);
  EXPECT_EQ(s[1].kind, Kind::kWhole);
  EXPECT_EQ(s[2].kind, Kind::kWithheld);  // only device 3 runs it
  const auto last = payload_shares(plan, {3}, kHostInput);
  EXPECT_EQ(last[0].rows.begin, 6);
  EXPECT_EQ(last[0].rows.count, 2);
  EXPECT_EQ(last[2].kind, Kind::kWhole);
  // Devices apart: the window covers both (rows 0..7), never fewer rows than a launch reads.
  const auto apart = payload_shares(plan, {0, 3}, kHostInput);
  EXPECT_EQ(apart[0].rows.begin, 0);
  EXPECT_EQ(apart[0].rows.count, 8);
}

TEST(PayloadShares, ALaunchThatReadsTheHostTensorWholeSendsItWhole) {
  Plan plan = four_devices();
  plan.programs[2].code.push_back(launch(0));  // as recorded: the whole batch
  EXPECT_EQ(payload_shares(plan, {1, 2}, kHostInput)[0].kind, Kind::kWhole);
  EXPECT_EQ(payload_shares(plan, {1}, kHostInput)[0].kind, Kind::kRows);
  // A node that is not a host input is never cut, whatever its launches' rows.
  EXPECT_EQ(payload_shares(plan, {1}, {false, false, false})[0].kind, Kind::kWhole);
  // Launches over batches of different sizes: whole.
  Plan mixed = four_devices();
  mixed.programs[2].launches[0].batch_rows = 16;
  EXPECT_EQ(payload_shares(mixed, {1, 2}, kHostInput)[0].kind, Kind::kWhole);
}

TEST(PayloadShares, LaunchedNodesCountFusedKernelsAndRefuseIndicesPastThePlan) {
  Plan plan = four_devices();
  FusedLaunch f;
  f.nodes = {2};
  plan.programs[0].fused.push_back(f);
  plan.programs[0].code.push_back(Instruction{Instruction::Kind::kFused, 0});
  EXPECT_EQ(launched_nodes(plan, {0}), (std::vector<bool>{true, true, true}));
  EXPECT_EQ(launched_nodes(plan, {1}), (std::vector<bool>{true, true, false}));
  EXPECT_EQ(launched_nodes(plan, {}), (std::vector<bool>{false, false, false}));
  plan.programs[1].code.push_back(launch(7));
  EXPECT_THROW(launched_nodes(plan, {1}), Error);
  plan.programs[1].code.back() = launch(1, 9);  // launch 9 of 1
  EXPECT_THROW(payload_shares(plan, {1}, kHostInput), Error);
  EXPECT_THROW(payload_shares(four_devices(), {1}, {true}), Error);  // flags for another graph
}

}  // namespace
}  // namespace moreh::runtime
