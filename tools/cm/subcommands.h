// Each subcommand registers its options on the app and returns the function that runs it.
#pragma once

#include <functional>

namespace CLI {
class App;
}

namespace cm::cli {

using Runner = std::function<int()>;

Runner add_generate(CLI::App& app);
Runner add_edit(CLI::App& app);
Runner add_download(CLI::App& app);
Runner add_models(CLI::App& app);
Runner add_train(CLI::App& app);             // CM_TRAINING builds only, as the next three
Runner add_train_classifier(CLI::App& app);
Runner add_eval(CLI::App& app);
Runner add_bench(CLI::App& app);
Runner add_plot_log(CLI::App& app);
Runner add_info(CLI::App& app);
Runner add_convert(CLI::App& app);
Runner add_serve(CLI::App& app);  // CM_SERVER builds only

}  // namespace cm::cli
