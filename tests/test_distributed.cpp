// Data-parallel training through c10d/Gloo, run as a user would: two `cm train` processes on
// 127.0.0.1 with batch B must end where one process with batch 2B ends.
#include <algorithm>
#include <filesystem>

#include "free_port.h"
#include "io/state_dict.h"
#include "run_cm.h"
#include "temp_dir_test.h"

namespace cm::test {
namespace {

namespace fs = std::filesystem;

std::string train_args(const std::string& out, int batch, const std::string& steps_and_lr =
                                                               "--steps 4 --lr 2e-3") {
  return "train --data fashion-mnist:test --data-limit 64 --channels 8,16 --layers-per-block 1 "
         "--head-dim 8 --norm-groups 4 --warmup 2 --checkpoint-every 0 --sample-every 0 "
         "--log-every 1 --seed 3 -t 1 " + steps_and_lr + " -n " + std::to_string(batch) +
         " -o " + out;
}

std::map<std::string, at::Tensor> state(const std::string& run) {
  return read_state_dict(run + "/checkpoint/training_state.safetensors");
}

class Distributed : public TempDirTest {};

TEST_F(Distributed, TwoProcessesWithBatchBMatchOneProcessWithBatch2B) {
  const auto single = run_cm(train_args(path("single"), 4) + " -q");
  ASSERT_EQ(single.status, 0) << single.output;

  const int port = free_port();
  ASSERT_GT(port, 0);
  const std::string env =
      "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " WORLD_SIZE=2";
  const std::string cm = std::string(CM_BINARY) + " " + train_args(path("pair"), 2);
  // Rank 1 in the background (its output kept in a file), rank 0 in front; both must succeed.
  const auto pair = run_shell("RANK=1 " + env + " " + cm + " > " + path("rank1.log") +
                              " 2>&1 & RANK=0 " + env + " " + cm + " 2>&1; s0=$?; wait $!; "
                              "s1=$?; cat " + path("rank1.log") + "; exit $((s0 | s1))");
  ASSERT_EQ(pair.status, 0) << pair.output;
  // Rank 0 alone logs progress and writes the checkpoint.
  EXPECT_NE(pair.output.find("step 4/4"), std::string::npos) << pair.output;

  // Where both runs started: one step at learning rate 0 leaves the weights as initialised.
  const auto init_run = run_cm(train_args(path("init"), 4, "--steps 1 --lr 0") + " -q");
  ASSERT_EQ(init_run.status, 0) << init_run.output;
  const auto init = state(path("init"));

  const auto a = state(path("single")), b = state(path("pair"));
  ASSERT_EQ(a.size(), b.size());
  int compared = 0;
  for (const auto& [key, value] : a) {
    if (key.rfind("rng.", 0) == 0) continue;  // rank 0's dropout generator differs by design
    // Softmax ignores a shift shared by a row's logits, so the key bias's gradient is zero in exact
    // arithmetic and rounding noise alone; Adam divides that noise by its own size, so the weight
    // wanders by ~lr in a direction set by rounding. Its Adam moments (≈ 0) are still compared.
    if (key.find("to_k.bias") != std::string::npos && key.rfind("adam.", 0) != 0) continue;
    ASSERT_TRUE(b.count(key)) << key;
    const auto& other = b.at(key);
    if (!value.is_floating_point()) {
      EXPECT_TRUE(at::equal(value, other)) << key;
      continue;
    }
    const double diff = (value - other).abs().max().item<double>();
    if (key.rfind("adam.", 0) == 0) {
      // The gradients' moments: the batch split changes only the summation order.
      EXPECT_TRUE(at::allclose(value, other, 1e-4, 1e-6)) << key << ": max difference " << diff;
    } else {
      // Weights: the two gradients differ by summation order alone (~1e-7 relative), but Adam
      // divides each gradient by its own running size, and where a gradient changes sign between
      // steps that rounding shows up in the step taken. Measured on an AVX2 Xeon (oneDNN's AVX2
      // kernels reduce over the batch in another order than its AVX-512 ones): 3.2e-6 on a
      // weight that moved by ~8e-3. So each tensor's difference is held to 1e-3 of how far the
      // tensor moved, plus 1e-6.
      const double moved = (value - init.at(key)).abs().max().item<double>();
      EXPECT_LE(diff, 1e-3 * moved + 1e-6) << key << ": moved " << moved;
    }
    ++compared;
  }
  EXPECT_GT(compared, 50);
  // The weights moved: the comparison is not between two untouched initialisations.
  EXPECT_FALSE(at::allclose(init.at("online.conv_in.weight"), a.at("online.conv_in.weight"), 1e-4,
                            1e-6));
}

TEST_F(Distributed, BadRankIsAOneLineError) {
  const auto r = run_shell("RANK=2 WORLD_SIZE=2 " + std::string(CM_BINARY) + " " +
                           train_args(path("bad"), 2) + " 2>&1");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("RANK"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  const auto w = run_shell("WORLD_SIZE=two " + std::string(CM_BINARY) + " " +
                           train_args(path("bad"), 2) + " 2>&1");
  EXPECT_NE(w.status, 0);
  EXPECT_NE(w.output.find("WORLD_SIZE: 'two'"), std::string::npos) << w.output;
}

}  // namespace
}  // namespace cm::test
