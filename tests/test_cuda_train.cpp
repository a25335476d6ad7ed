// CUDA training, run as a user would (CUDA builds; skipped without enough GPUs): NCCL between
// two processes against one process with the whole batch, and resuming on a GPU.
#include <torch/cuda.h>

#include "free_port.h"
#include "io/state_dict.h"
#include "run_cm.h"
#include "temp_dir_test.h"

namespace cm::test {
namespace {

std::string train_args(const std::string& out, int batch, const std::string& extra) {
  return "train --device cuda --data fashion-mnist:test --data-limit 64 --channels 8,16 "
         "--layers-per-block 1 --head-dim 8 --norm-groups 4 --warmup 2 --checkpoint-every 0 "
         "--sample-every 0 --log-every 1 --seed 3 --lr 2e-3 " + extra + " -n " +
         std::to_string(batch) + " -o " + out;
}

std::map<std::string, at::Tensor> state(const std::string& run) {
  return read_state_dict(run + "/checkpoint/training_state.safetensors");
}

// Compares two runs' training state: every float tensor to rtol/atol, integers exactly.
int compare_states(const std::string& a_run, const std::string& b_run, double rtol, double atol) {
  const auto a = state(a_run), b = state(b_run);
  EXPECT_EQ(a.size(), b.size());
  int compared = 0;
  for (const auto& [key, value] : a) {
    if (key.rfind("rng.", 0) == 0) continue;
    // The attention key bias's gradient is rounding noise (see test_distributed.cpp).
    if (key.find("to_k.bias") != std::string::npos && key.rfind("adam.", 0) != 0) continue;
    if (!b.count(key)) {
      ADD_FAILURE() << key << " missing";
      continue;
    }
    const auto& other = b.at(key);
    if (value.is_floating_point()) {
      EXPECT_TRUE(at::allclose(value, other, rtol, atol))
          << key << ": max difference " << (value - other).abs().max().item<double>();
      ++compared;
    } else {
      EXPECT_TRUE(at::equal(value, other)) << key;
    }
  }
  return compared;
}

class CudaTraining : public TempDirTest {};

// Gradients averaged over NCCL equal one process's gradient of the whole batch up to summation
// order; after four Adam steps at lr 2e-3, 1e-3 relative (GPU reductions are not ordered).
TEST_F(CudaTraining, NcclTwoProcessesMatchOneProcessWithTheWholeBatch) {
  if (torch::cuda::device_count() < 2)
    GTEST_SKIP() << "needs 2 CUDA devices, this machine has "
                 << static_cast<int>(torch::cuda::device_count());
  const auto single = run_cm(train_args(path("single"), 4, "--steps 4") + " -q");
  ASSERT_EQ(single.status, 0) << single.output;
  const int port = free_port();
  ASSERT_GT(port, 0);
  const std::string env =
      "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " WORLD_SIZE=2";
  const std::string cm = std::string(CM_BINARY) + " " + train_args(path("pair"), 2, "--steps 4");
  const auto pair = run_shell("RANK=1 LOCAL_RANK=1 " + env + " " + cm + " > " +
                              path("rank1.log") + " 2>&1 & RANK=0 LOCAL_RANK=0 " + env + " " +
                              cm + " 2>&1; s0=$?; wait $!; s1=$?; cat " + path("rank1.log") +
                              "; exit $((s0 | s1))");
  ASSERT_EQ(pair.status, 0) << pair.output;
  EXPECT_GT(compare_states(path("single"), path("pair"), 1e-3, 1e-5), 50);
}

// Two steps, a stop, two more from the checkpoint: where four steps in one go end (GPU kernels
// may pick other algorithms between processes, hence a tolerance rather than equality).
TEST_F(CudaTraining, ResumeOnTheGpuContinuesTheRun) {
  if (torch::cuda::device_count() < 1) GTEST_SKIP() << "needs a CUDA device, this machine has none";
  const auto straight = run_cm(train_args(path("straight"), 4, "--steps 4 --bf16") + " -q");
  ASSERT_EQ(straight.status, 0) << straight.output;
  const auto first = run_cm(train_args(path("split"), 4, "--steps 4 --bf16 --stop-after 2") + " -q");
  ASSERT_EQ(first.status, 0) << first.output;  // a planned stop
  const auto rest = run_cm(train_args(path("split"), 4, "--steps 4 --bf16 --resume") + " -q");
  ASSERT_EQ(rest.status, 0) << rest.output;
  EXPECT_GT(compare_states(path("straight"), path("split"), 1e-3, 1e-5), 50);
}

}  // namespace
}  // namespace cm::test
