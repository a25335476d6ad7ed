// Data-parallel training and sharded sampling over PyTorch's c10d: a TCPStore rendezvous at
// MASTER_ADDR:MASTER_PORT (rank 0 serves it) and a Gloo process group (distributed_c10d.cpp).
// Keeps c10d out of every other file. A build without it (CM_DISTRIBUTED=OFF: no Gloo) has one
// process only (distributed_none.cpp).
#pragma once

#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "cm/distributed.h"

namespace cm {

class ProcessGroup {
 public:
  // world_size 1 makes no connection and every collective a no-op. Otherwise blocks until all
  // ranks have joined (a cm::Error naming the address after options.timeout_seconds). Tensors
  // on a GPU (`device` CUDA) go through NCCL, CPU tensors through Gloo.
  explicit ProcessGroup(const DistributedOptions& options, const at::Device& device = at::kCPU);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  bool is_main() const { return rank_ == 0; }

  // Replaces each defined gradient by its mean over the ranks (one all-reduce of a flat buffer).
  void average_gradients(const std::vector<at::Tensor>& params);
  // Copies rank 0's values into every rank's tensors (in place).
  void broadcast(const std::vector<at::Tensor>& tensors);
  double mean(double value);
  bool any(bool flag);

  // A send under way; its tensor stays alive until wait() returns.
  class PendingSend {
   public:
    PendingSend();
    ~PendingSend();
    PendingSend(PendingSend&&) noexcept;
    PendingSend& operator=(PendingSend&&) noexcept;
    bool active() const { return impl_ != nullptr; }
    // Blocks until the receiver has the data; a cm::Error naming it when it is gone or after the
    // group's timeout.
    void wait();

   private:
    friend class ProcessGroup;
    struct Impl;
    std::unique_ptr<Impl> impl_;
  };
  // Point to point, matched by (peer, tag): starts sending a contiguous CPU tensor to rank dst,
  // and receives into a tensor of the sender's shape and dtype (a cm::Error naming rank src when
  // it is gone or after the group's timeout).
  PendingSend send(const at::Tensor& tensor, int dst, int tag);
  void recv(const at::Tensor& tensor, int src, int tag);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0;
  int world_size_ = 1;
  double timeout_seconds_ = 300;
};

}  // namespace cm
