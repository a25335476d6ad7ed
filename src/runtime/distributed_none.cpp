// ProcessGroup in a build without c10d (CM_DISTRIBUTED=OFF: no Gloo): one process, whose
// collectives are the identity; more than one is refused with what to do.
#include "cm/error.h"
#include "runtime/distributed.h"

namespace cm {

struct ProcessGroup::Impl {};
struct ProcessGroup::PendingSend::Impl {};

ProcessGroup::ProcessGroup(const DistributedOptions& options, const at::Device&) {
  if (options.world_size > 1)
    throw Error("WORLD_SIZE=" + std::to_string(options.world_size) +
                ": this build runs one process only (built with CM_DISTRIBUTED=OFF, without "
                "Gloo); unset WORLD_SIZE or rebuild with -DCM_DISTRIBUTED=ON");
  timeout_seconds_ = options.timeout_seconds;
}
ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::average_gradients(const std::vector<at::Tensor>&) {}
void ProcessGroup::broadcast(const std::vector<at::Tensor>&) {}
double ProcessGroup::mean(double value) { return value; }
bool ProcessGroup::any(bool flag) { return flag; }

ProcessGroup::PendingSend::PendingSend() = default;
ProcessGroup::PendingSend::~PendingSend() = default;
ProcessGroup::PendingSend::PendingSend(PendingSend&&) noexcept = default;
ProcessGroup::PendingSend& ProcessGroup::PendingSend::operator=(PendingSend&&) noexcept = default;
void ProcessGroup::PendingSend::wait() {}

ProcessGroup::PendingSend ProcessGroup::send(const at::Tensor&, int dst, int) {
  throw Error("ProcessGroup::send to rank " + std::to_string(dst) + ": there is one process");
}
void ProcessGroup::recv(const at::Tensor&, int src, int) {
  throw Error("ProcessGroup::recv from rank " + std::to_string(src) + ": there is one process");
}

}  // namespace cm
