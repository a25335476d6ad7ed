// diffusers config files: defaults for absent keys, errors that name the key and the value.
#include <gtest/gtest.h>

#include "cm/config.h"
#include "cm/error.h"

namespace cm {
namespace {

std::string error_of(const std::string& json) {
  try {
    UNetConfig::from_json(json, "unet/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ConfigTest, AbsentKeysTakeDiffusersDefaults) {
  const auto c = UNetConfig::from_json("{}", "x");
  EXPECT_EQ(c.block_out_channels, (std::vector<int>{224, 448, 672, 896}));
  EXPECT_EQ(c.down_block_types.front(), "DownBlock2D");
  EXPECT_EQ(c.attention_head_dim, 8);
  EXPECT_EQ(c.norm_num_groups, 32);
  EXPECT_FALSE(c.attn_norm_num_groups);
  EXPECT_EQ(c.downsample_type, "conv");
  EXPECT_EQ(c.resnet_time_scale_shift, "default");
  EXPECT_TRUE(c.flip_sin_to_cos);
  EXPECT_DOUBLE_EQ(c.norm_eps, 1e-5);
  const auto s = SchedulerConfig::from_json("{}", "x");
  EXPECT_EQ(s.num_train_timesteps, 40);
  EXPECT_DOUBLE_EQ(s.sigma_min, 0.002);
  EXPECT_DOUBLE_EQ(s.sigma_max, 80.0);
  EXPECT_DOUBLE_EQ(s.sigma_data, 0.5);
  EXPECT_DOUBLE_EQ(s.rho, 7.0);
  EXPECT_TRUE(s.clip_denoised);
}

TEST(ConfigTest, ReadsGoldenConfigsAndNulls) {
  const auto c = UNetConfig::load(CM_GOLDEN_DIR "/tiny_uncond/model/unet/config.json");
  EXPECT_EQ(c.block_out_channels, (std::vector<int>{32, 32, 64}));
  EXPECT_FALSE(c.attn_norm_num_groups);  // null in the file
  EXPECT_FALSE(c.num_class_embeds);
  EXPECT_EQ(c.up_block_types.front(), "AttnUpBlock2D");
  const auto round_trip = UNetConfig::from_json(c.to_json(), "round trip");
  EXPECT_EQ(round_trip.to_json(), c.to_json());
  const auto s = SchedulerConfig::load(CM_GOLDEN_DIR "/tiny_uncond/model/scheduler/scheduler_config.json");
  EXPECT_EQ(s.num_train_timesteps, 151);
}

TEST(ConfigTest, UnsupportedValuesNameKeyAndValue) {
  auto msg = error_of(R"({"up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"]})");
  EXPECT_NE(msg.find("up_block_types"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CrossAttnUpBlock2D"), std::string::npos) << msg;
  msg = error_of(R"({"resnet_time_scale_shift": "spatial"})");
  EXPECT_NE(msg.find("resnet_time_scale_shift 'spatial'"), std::string::npos) << msg;
  msg = error_of(R"({"layers_per_block": "two"})");
  EXPECT_NE(msg.find("'layers_per_block'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"two\""), std::string::npos) << msg;
  msg = error_of("[1, 2]");
  EXPECT_NE(msg.find("unet/config.json"), std::string::npos) << msg;
  msg = error_of("{not json");
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;
  msg = error_of(R"({"block_out_channels": [32, 48], "down_block_types": ["DownBlock2D", "DownBlock2D"],
                     "up_block_types": ["UpBlock2D", "UpBlock2D"]})");
  EXPECT_NE(msg.find("48"), std::string::npos) << msg;
}

TEST(ConfigTest, MissingFileIsNamed) {
  try {
    UNetConfig::load("/nonexistent/config.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/config.json"), std::string::npos);
  }
}

}  // namespace
}  // namespace cm

TEST(ConfigTest, ClassNamesMatchAsPeopleWriteThem) {
  const std::vector<std::string> names = {"tshirt", "trouser", "ankle_boot"};
  EXPECT_EQ(cm::find_class_name(names, "tshirt"), 0);
  EXPECT_EQ(cm::find_class_name(names, "T-Shirt"), 0);
  EXPECT_EQ(cm::find_class_name(names, "TROUSER"), 1);
  EXPECT_EQ(cm::find_class_name(names, "ankle boot"), 2);
  EXPECT_EQ(cm::find_class_name(names, "Ankle-Boot"), 2);
  EXPECT_FALSE(cm::find_class_name(names, "boot"));
  EXPECT_FALSE(cm::find_class_name(names, ""));
  EXPECT_FALSE(cm::find_class_name(names, " - "));
  EXPECT_FALSE(cm::find_class_name({}, "tshirt"));
}
