// The torchrun environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK.
#include <cstdlib>
#include <string>

#include "cm/distributed.h"
#include "cm/error.h"

namespace cm {

namespace {

int env_int(const char* name, int fallback, int min_value) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < min_value || x > 65535)
    throw Error(std::string(name) + ": '" + v + "' is not a valid value");
  return static_cast<int>(x);
}

}  // namespace

DistributedOptions distributed_from_env() {
  DistributedOptions d;
  d.world_size = env_int("WORLD_SIZE", 1, 1);
  d.rank = env_int("RANK", 0, 0);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) d.master_addr = a;
  d.master_port = env_int("MASTER_PORT", d.master_port, 1);
  d.local_rank = env_int("LOCAL_RANK", -1, 0);
  return d;
}

}  // namespace cm
