#include "runtime/config/parallel_config.h"

#include <gtest/gtest.h>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

constexpr const char* kSeedLine =
    "num_stages : 2, num_micro_batches : 4, batch_per_device : 1, No TP, recomputation : 0, distribute_param : "
    "true, distribute_low_prec_param : false";

std::string error_of(std::string_view line) {
  try {
    parse_parallel_config(line);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(ParallelConfigTest, ReadsMoaisDumpLineAndWritesItBackVerbatim) {
  const ParallelConfig c = parse_parallel_config(kSeedLine);
  EXPECT_EQ(c.num_stages, 2);
  EXPECT_EQ(c.num_micro_batches, 4);
  EXPECT_EQ(c.batch_per_device, 1);
  EXPECT_EQ(c.tp, 1);
  EXPECT_EQ(c.recomputation, 0);
  EXPECT_TRUE(c.distribute_param);
  EXPECT_FALSE(c.distribute_low_prec_param);
  EXPECT_EQ(format_parallel_config(c), kSeedLine);
}

TEST(ParallelConfigTest, FieldsGoByNameInAnyOrderAndMissingOnesTakeDefaults) {
  const ParallelConfig c = parse_parallel_config("  TP : 2,num_stages:4 , recomputation : 1,");
  EXPECT_EQ(c.tp, 2);
  EXPECT_EQ(c.num_stages, 4);
  EXPECT_EQ(c.recomputation, 1);
  EXPECT_EQ(c.num_micro_batches, 1);
  EXPECT_EQ(c.batch_per_device, 0);
  EXPECT_FALSE(c.distribute_param);
  EXPECT_EQ(parse_parallel_config(format_parallel_config(c)), c);
  EXPECT_EQ(parse_parallel_config(""), ParallelConfig{});
  EXPECT_EQ(format_parallel_config(ParallelConfig{}),
            "num_stages : 1, num_micro_batches : 1, batch_per_device : 0, No TP, recomputation : 0, "
            "distribute_param : false, distribute_low_prec_param : false");
}

TEST(ParallelConfigTest, ThePipelineScheduleIsMorehsOwnFieldWrittenOnlyWhenNotTheDefault) {
  EXPECT_EQ(parse_parallel_config("num_stages : 2").pipeline_schedule, PipelineSchedule::k1F1B);
  const ParallelConfig c = parse_parallel_config("num_stages : 2, pipeline_schedule : gpipe");
  EXPECT_EQ(c.pipeline_schedule, PipelineSchedule::kGPipe);
  EXPECT_EQ(format_parallel_config(c),
            "num_stages : 2, num_micro_batches : 1, batch_per_device : 0, No TP, recomputation : 0, "
            "distribute_param : false, distribute_low_prec_param : false, pipeline_schedule : gpipe");
  EXPECT_EQ(parse_parallel_config(format_parallel_config(c)), c);
  EXPECT_EQ(parse_parallel_config("pipeline_schedule : 1f1b").pipeline_schedule, PipelineSchedule::k1F1B);
  EXPECT_NE(error_of("pipeline_schedule : zigzag").find("pipeline_schedule must be 1f1b or gpipe, got 'zigzag'"),
            std::string::npos);
}

TEST(ParallelConfigTest, AMalformedFieldIsAnErrorNamingIt) {
  EXPECT_NE(error_of("num_stages : two").find("num_stages must be an integer of at least 1, got 'two'"),
            std::string::npos);
  EXPECT_NE(error_of("num_stages : 0").find("num_stages"), std::string::npos);
  EXPECT_NE(error_of("num_micro_batches : -1").find("num_micro_batches"), std::string::npos);
  EXPECT_NE(error_of("distribute_param : yes").find("distribute_param must be true or false, got 'yes'"),
            std::string::npos);
  EXPECT_NE(error_of("num_stage : 2").find("unknown field 'num_stage'"), std::string::npos);
  EXPECT_NE(error_of("num_stages 2").find("'num_stages 2' is not 'name : value'"), std::string::npos);
  EXPECT_NE(error_of("num_stages : 2, num_stages : 4").find("num_stages is given twice"), std::string::npos);
  EXPECT_NE(error_of("No TP, TP : 2").find("TP is given twice"), std::string::npos);
  EXPECT_NE(error_of("num_stages : 2,, TP : 2").find("an empty field"), std::string::npos);
  EXPECT_NE(error_of("TP : 2.5").find("TP must be an integer"), std::string::npos);
}

TEST(ParallelConfigTest, LayoutSplitsTheDevicesIntoReplicasOfStagesTimesTp) {
  ParallelConfig c;
  c.num_stages = 2;
  c.tp = 2;
  const ParallelSizes s = parallel_layout(c, 8);
  EXPECT_EQ(s.dp, 2);
  EXPECT_EQ(s.pp, 2);
  EXPECT_EQ(s.tp, 2);
  EXPECT_EQ(parallel_layout(ParallelConfig{}, 4).dp, 4);
}

TEST(ParallelConfigTest, AnImpossibleLayoutIsAnErrorNamingTheField) {
  ParallelConfig c;
  c.num_stages = 8;
  try {
    parallel_layout(c, 4);
    FAIL() << "8 stages on 4 devices";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("num_stages : 8 needs at least 8 devices; the virtual device has 4"),
              std::string::npos);
  }
  c.num_stages = 3;
  try {
    parallel_layout(c, 4);
    FAIL() << "3 stages do not divide 4 devices";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("does not divide the 4 devices"), std::string::npos);
  }
  c.num_stages = 1;
  c.tp = 8;
  EXPECT_THROW(parallel_layout(c, 4), ConfigError);
}

// Every knob composes with every other: a line whose stages and TP divide the devices has a layout.
TEST(ParallelConfigTest, EveryKnobComposesWhereTheDevicesDivide) {
  ParallelConfig c = parse_parallel_config(kSeedLine);  // two stages, four micro-batches, the optimizer sharded
  c.tp = 2;
  c.recomputation = 1;
  c.distribute_low_prec_param = true;
  const ParallelSizes s = parallel_layout(c, 8);  // dp 2 x pp 2 x tp 2
  EXPECT_EQ(s.dp, 2);
  EXPECT_EQ(s.pp, 2);
  EXPECT_EQ(s.tp, 2);
  EXPECT_THROW(parallel_layout(c, 6), ConfigError);  // 2 x 2 does not divide 6
}

}  // namespace
}  // namespace moreh::runtime
