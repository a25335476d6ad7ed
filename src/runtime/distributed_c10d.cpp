#include "runtime/distributed.h"

// Debian builds LibTorch with Gloo; its header only declares the process group when told so
// (TorchConfig usually says it already).
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif

#include <ATen/ATen.h>
#include <torch/version.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#if CM_CUDA
// NCCL for tensors on GPUs (the CUDA toolkit's nccl.h; LibTorch 2.x links NCCL itself).
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdlib>

#include "cm/error.h"

namespace cm {


// The process groups' common base: c10d::ProcessGroup in LibTorch 1.x, c10d::Backend in 2.x.
#if TORCH_VERSION_MAJOR >= 2
using GroupBase = c10d::Backend;
#else
using GroupBase = c10d::ProcessGroup;
#endif

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<GroupBase> group;
  at::Device device = at::kCPU;  // where collectives' scalars live (a GPU under NCCL)
};

ProcessGroup::ProcessGroup(const DistributedOptions& o, const at::Device& device)
    : rank_(o.rank), world_size_(o.world_size), timeout_seconds_(o.timeout_seconds) {
  if (o.world_size < 1) throw Error("WORLD_SIZE: must be at least 1");
  if (o.rank < 0 || o.rank >= o.world_size)
    throw Error("RANK: " + std::to_string(o.rank) + " is outside [0, WORLD_SIZE=" +
                std::to_string(o.world_size) + ")");
  if (o.world_size == 1) return;
  const std::string where = o.master_addr + ":" + std::to_string(o.master_port);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout_seconds * 1000));
  impl_ = std::make_unique<Impl>();
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(o.master_port);
    so.isServer = o.rank == 0;
    so.numWorkers = static_cast<size_t>(o.world_size);
    so.timeout = timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
    if (device.is_cuda()) {
#if CM_CUDA
      auto no = c10d::ProcessGroupNCCL::Options::create();
      no->timeout = timeout;
      impl_->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, o.rank,
                                                                  o.world_size, no);
      impl_->device = device;
      return;
#else
      throw Error("this cm was built without CUDA");
#endif
    }
    auto go = c10d::ProcessGroupGloo::Options::create(timeout);
    // GLOO_SOCKET_IFNAME picks the network interface, as in PyTorch; otherwise the interface
    // that reaches MASTER_ADDR's own host name resolution (loopback for a one-machine run).
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
      go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (o.master_addr == "127.0.0.1" || o.master_addr == "localhost")
      go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, o.rank,
                                                                o.world_size, go);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (const auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
    throw Error("distributed rendezvous at " + where + " (rank " + std::to_string(o.rank) +
                " of " + std::to_string(o.world_size) + ") failed: " + msg);
  }
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::average_gradients(const std::vector<at::Tensor>& params) {
  if (world_size_ == 1) return;
  std::vector<at::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return;
  std::vector<at::Tensor> pieces;
  for (const auto& g : grads) pieces.push_back(g.reshape(-1));
  std::vector<at::Tensor> flat{at::cat(pieces)};
  impl_->group->allreduce(flat)->wait();
  flat[0].div_(world_size_);
  int64_t offset = 0;
  for (auto& g : grads) {
    const int64_t n = g.numel();
    g.copy_(flat[0].narrow(0, offset, n).view_as(g));
    offset += n;
  }
}

void ProcessGroup::broadcast(const std::vector<at::Tensor>& tensors) {
  if (world_size_ == 1) return;
  for (const auto& t : tensors) {
    std::vector<at::Tensor> one{t.is_contiguous() ? t : t.contiguous()};
    impl_->group->broadcast(one)->wait();
    if (!one[0].is_same(t)) t.copy_(one[0]);
  }
}

double ProcessGroup::mean(double value) {
  if (world_size_ == 1) return value;
  std::vector<at::Tensor> t{at::tensor({value}, at::kDouble).to(impl_->device)};
  impl_->group->allreduce(t)->wait();
  return t[0].item<double>() / world_size_;
}

bool ProcessGroup::any(bool flag) {
  if (world_size_ == 1) return flag;
  std::vector<at::Tensor> t{at::tensor({flag ? 1.0 : 0.0}, at::kDouble).to(impl_->device)};
  impl_->group->allreduce(t)->wait();
  return t[0].item<double>() > 0;
}

namespace {

// The first line of a c10d/Gloo message (they append C++ stack traces).
std::string first_line(const std::exception& e) {
  std::string msg = e.what();
  if (const auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
  return msg;
}

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace

struct ProcessGroup::PendingSend::Impl {
  c10::intrusive_ptr<c10d::Work> work;
  std::vector<at::Tensor> tensors;
  int dst = 0;
  double timeout_seconds = 0;
};

ProcessGroup::PendingSend::PendingSend() = default;
ProcessGroup::PendingSend::~PendingSend() = default;
ProcessGroup::PendingSend::PendingSend(PendingSend&&) noexcept = default;
ProcessGroup::PendingSend& ProcessGroup::PendingSend::operator=(PendingSend&&) noexcept = default;

void ProcessGroup::PendingSend::wait() {
  if (!impl_) return;
  const auto impl = std::move(impl_);
  bool done = false;
  try {
    done = impl->work->wait(to_ms(impl->timeout_seconds));
  } catch (const std::exception& e) {
    throw Error("sending to rank " + std::to_string(impl->dst) + " failed: " + first_line(e));
  }
  if (!done)
    throw Error("rank " + std::to_string(impl->dst) + " took no data for " +
                std::to_string(impl->timeout_seconds) + " s");
}

ProcessGroup::PendingSend ProcessGroup::send(const at::Tensor& tensor, int dst, int tag) {
  PendingSend pending;
  pending.impl_ = std::make_unique<PendingSend::Impl>();
  auto& impl = *pending.impl_;
  impl.tensors = {tensor.contiguous()};
  impl.dst = dst;
  impl.timeout_seconds = timeout_seconds_;
  try {
    impl.work = impl_->group->send(impl.tensors, dst, tag);
  } catch (const std::exception& e) {
    throw Error("sending to rank " + std::to_string(dst) + " failed: " + first_line(e));
  }
  return pending;
}

void ProcessGroup::recv(const at::Tensor& tensor, int src, int tag) {
  if (!tensor.is_contiguous()) throw Error("ProcessGroup::recv: the tensor must be contiguous");
  std::vector<at::Tensor> one{tensor};
  bool done = false;
  try {
    done = impl_->group->recv(one, src, tag)->wait(to_ms(timeout_seconds_));
  } catch (const std::exception& e) {
    throw Error("receiving from rank " + std::to_string(src) + " failed (did it stop?): " +
                first_line(e));
  }
  if (!done)
    throw Error("rank " + std::to_string(src) + " sent nothing for " +
                std::to_string(timeout_seconds_) + " s");
}

}  // namespace cm
