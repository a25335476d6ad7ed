// cm info: what this build is (LibTorch, CUDA, cuDNN) and which GPUs it sees.
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>

#include "cm/system.h"
#include "subcommands.h"

namespace cm::cli {

Runner add_info(CLI::App& app) {
  (void)app;
  return [] {
    std::cout << describe(system_info());
    return 0;
  };
}

}  // namespace cm::cli
