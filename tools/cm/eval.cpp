// cm eval and cm train-classifier: how good are the samples of a Fashion-MNIST model.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "cm/eval.h"
#include "common.h"
#include "subcommands.h"

namespace cm::cli {

Runner add_train_classifier(CLI::App& app) {
  auto o = std::make_shared<ClassifierTrainOptions>();
  auto threads = std::make_shared<int>(0);
  auto quiet = std::make_shared<bool>(false);
  app.add_option("-o,--output", o->output, "folder for model.safetensors")
      ->capture_default_str()
      ->check(not_empty());
  app.add_flag("--overwrite", o->overwrite, "replace a classifier already in the folder");
  app.add_option("--epochs", o->epochs)->capture_default_str()->check(at_least(1));
  app.add_option("-n,--batch-size", o->batch_size)->capture_default_str()->check(at_least(1));
  app.add_option("--lr", o->lr)->capture_default_str();
  app.add_option("--seed", o->seed)->capture_default_str();
  app.add_option("-t,--threads", *threads, "CPU threads (default: all)");
  app.add_flag("-q,--quiet", *quiet, "no progress lines");
  return [o, threads, quiet] {
    set_threads(*threads);
    o->log = stderr_log(*quiet);
    const auto r = train_classifier(*o);
    std::printf("%s: test accuracy %.4f (%.0f s)\n", o->output.c_str(), r.test_accuracy, r.seconds);
    return 0;
  };
}

Runner add_eval(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  // The shipped classifier, wherever cm is run from ($CM_CLASSIFIER overrides).
  const char* env = std::getenv("CM_CLASSIFIER");
  o->classifier = env ? env : "";
  auto threads = std::make_shared<int>(0);
  auto quiet = std::make_shared<bool>(false);
  auto schedules = std::make_shared<std::vector<std::string>>();
  app.add_option("-m,--model", o->model,
                 "pipeline folder to evaluate (absent: real test images against themselves)")
      ->check(not_empty());
  app.add_option("--classifier", o->classifier,
                 "classifier folder (default: the shipped one; $CM_CLASSIFIER overrides)")
      ->check(not_empty());
  app.add_option("--per-class", o->samples_per_class, "samples per class")
      ->capture_default_str()
      ->check(at_least(1));
  app.add_option("--steps", o->steps, "step counts to evaluate, e.g. 1,2")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--timesteps", *schedules,
                 "an explicit schedule to evaluate too: descending timestep indices, e.g. 100,0 "
                 "(repeat for several)")
      ->check(not_empty());
  app.add_option("-s,--seed", o->seed)->capture_default_str();
  app.add_option("--real-limit", o->real_limit, "use only N real images per split")
      ->check(at_least(1));
  app.add_option("-t,--threads", *threads, "CPU threads (default: all)");
  app.add_flag("-q,--quiet", *quiet, "no progress lines");
  return [o, threads, quiet, schedules] {
    set_threads(*threads);
    o->log = stderr_log(*quiet);
    for (const auto& s : *schedules) o->timesteps.push_back(parse_int_list("--timesteps", s));
    if (o->classifier.empty())
      o->classifier = shipped_model("fmnist-classifier", "--classifier DIR or set CM_CLASSIFIER");
    const auto r = evaluate(*o);
    std::printf("classifier test accuracy: %.4f\n\n", r.classifier_test_accuracy);
    std::printf("| what | images | Fréchet distance | classifier accuracy |\n|---|---|---|---|\n");
    for (const auto& row : r.rows) {
      std::printf("| %s | %lld | %.4f | %s |\n", row.what.c_str(),
                  static_cast<long long>(row.images), row.frechet,
                  row.accuracy < 0 ? "–" : std::to_string(row.accuracy).substr(0, 6).c_str());
    }
    return 0;
  };
}

}  // namespace cm::cli
