// The golden vectors computed by diffusers (../shared/golden, see its README.md).
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <torch/types.h>

#include "cm/pipeline.h"

namespace cm::test {

struct Golden {
  std::string name;       // folder name, e.g. "tiny_cond"
  std::string model_dir;  // the diffusers pipeline folder
  nlohmann::json cases;
  std::map<std::string, at::Tensor> tensors;
  const at::Tensor& tensor(const std::string& key) const;
};

std::string golden_root();
// Every folder under the golden root that holds a cases.json. Fails the test when there is none.
std::vector<std::string> golden_names();
const Golden& golden(const std::string& name);

// A golden pipeline case's call: batch size, steps or timesteps, seed and class labels.
GenerateOptions golden_call(const nlohmann::json& c);

// The README's UNet tolerance: 1e-4 absolute, scaled by the tensor's magnitude where it exceeds 1.
::testing::AssertionResult close_scaled(const at::Tensor& actual, const at::Tensor& expected,
                                        double atol = 1e-4);
// uint8 images equal except where the float value lies within 1e-3 of a rounding boundary.
::testing::AssertionResult uint8_match(const at::Tensor& actual_u8, const at::Tensor& expected_u8,
                                       const at::Tensor& expected_float);

}  // namespace cm::test
