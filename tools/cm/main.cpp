// cm: the consistency.cpp command-line program.
#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>
#include <torch/version.h>
#include <iostream>

#include "cm/error.h"
#include "subcommands.h"

int main(int argc, char** argv) {
  CLI::App app{"cm: consistency models in C++ (one-step and few-step image generation)", "cm"};
  app.set_version_flag("--version", std::string("cm ") + CM_VERSION + " (LibTorch " +
                                        TORCH_VERSION + ")");
  app.require_subcommand(1);
  std::vector<std::pair<CLI::App*, cm::cli::Runner>> commands;
  auto* generate = app.add_subcommand("generate", "Generate images with a consistency model");
  commands.emplace_back(generate, cm::cli::add_generate(*generate));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, run] : commands) {
      if (sub->parsed()) return run();
    }
  } catch (const cm::Error& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 1;
  }
  return 1;
}
