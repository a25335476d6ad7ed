// cm's subcommands, in libcm_cli.so: the `cm` launcher (launcher.cpp) loads it for everything
// but `cm --version`.
#include <c10/util/Exception.h>
#include <torch/version.h>
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>
#include <string>

#include "cm/error.h"
#include "cm/system.h"
#include "cm/tuning.h"
#include "common.h"
#include "subcommands.h"

extern "C" __attribute__((visibility("default"))) int cm_cli_main(int argc, char** argv) {
  // OpenBLAS's own threads stay for training, where they were never measured to hurt.
  cm::BlasTuning blas;
  blas.single_thread = !(argc > 1 && std::string(argv[1]) == "train");
  cm::tune_blas(blas);
  cm::memory_policy_for_loading();
  CLI::App app{"cm: consistency models in C++ (one-step and few-step image generation)", "cm"};
  app.set_version_flag("--version", cm::version_line());
  app.require_subcommand(1);
  std::vector<std::pair<CLI::App*, cm::cli::Runner>> commands;
  auto* generate = app.add_subcommand("generate", "Generate images with a consistency model");
  commands.emplace_back(generate, cm::cli::add_generate(*generate));
  auto* edit = app.add_subcommand(
      "edit", "Edit an image zero-shot: inpaint, colorize, superres, stroke, interpolate, denoise");
  commands.emplace_back(edit, cm::cli::add_edit(*edit));
  auto* download =
      app.add_subcommand("download", "Fetch a model from the Hugging Face Hub into the cache");
  commands.emplace_back(download, cm::cli::add_download(*download));
  auto* models = app.add_subcommand("models", "List the models in the Hugging Face cache");
  commands.emplace_back(models, cm::cli::add_models(*models));
#if CM_TRAINING
  auto* train =
      app.add_subcommand("train", "Train a consistency model (iCT, CT, CD) or an EDM teacher");
  commands.emplace_back(train, cm::cli::add_train(*train));
  auto* train_classifier =
      app.add_subcommand("train-classifier", "Train the Fashion-MNIST classifier cm eval uses");
  commands.emplace_back(train_classifier, cm::cli::add_train_classifier(*train_classifier));
  auto* eval =
      app.add_subcommand("eval", "Fréchet distance and class accuracy of a model's samples");
  commands.emplace_back(eval, cm::cli::add_eval(*eval));
  auto* plot_log = app.add_subcommand("plot-log", "Draw a training log's loss curve, or several runs' quality against images seen");
  commands.emplace_back(plot_log, cm::cli::add_plot_log(*plot_log));
#endif
  auto* bench = app.add_subcommand("bench", "Measure generation speed against the machine's peak");
  commands.emplace_back(bench, cm::cli::add_bench(*bench));
  auto* info = app.add_subcommand("info", "LibTorch, CUDA and cuDNN versions, and the GPUs seen");
  commands.emplace_back(info, cm::cli::add_info(*info));
#if CM_SERVER
  auto* serve = app.add_subcommand("serve", "Serve a model over HTTP (OpenAI Images API, jobs)");
  commands.emplace_back(serve, cm::cli::add_serve(*serve));
#endif
  auto* convert = app.add_subcommand(
      "convert", "Convert a checkpoint of the original consistency-models repository (.pt)");
  commands.emplace_back(convert, cm::cli::add_convert(*convert));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with exit code 0: CLI11 prints them.
    if (e.get_exit_code() == 0) return app.exit(e);
    std::string where = "cm";
    for (auto& [sub, run] : commands) {
      if (sub->parsed()) where += " " + sub->get_name();
    }
    std::cerr << "error: " << e.what() << " (see '" << where << " --help')" << std::endl;
    return 1;
  }
  try {
    for (auto& [sub, run] : commands) {
      if (sub->parsed()) return run();
    }
  } catch (const cm::cli::Interrupted&) {
    std::cerr << "interrupted (Ctrl-C)" << std::endl;
    return 130;  // the shell's code for a process Ctrl-C ended
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
