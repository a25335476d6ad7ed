// Several processes the torchrun way, for data-parallel training and sharded sampling.
#pragma once

#include <string>

namespace cm {

// Data-parallel training the torchrun way: world_size processes (on one or more machines) meet at
// master_addr:master_port; each computes the loss on its slice of every global batch, gradients
// are averaged with c10d's Gloo all-reduce, and rank 0 alone writes checkpoints, logs, samples.
struct DistributedOptions {
  int rank = 0;
  int world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  double timeout_seconds = 300;  // waiting for the other ranks to join, or for one collective
  int local_rank = -1;           // LOCAL_RANK (the GPU on this machine); -1: unset
};
// RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT as torchrun sets them; unset: one process.
DistributedOptions distributed_from_env();

}  // namespace cm
