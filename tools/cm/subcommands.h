// Each subcommand registers its options on the app and returns the function that runs it.
#pragma once

#include <functional>

namespace CLI {
class App;
}

namespace cm::cli {

using Runner = std::function<int()>;

Runner add_generate(CLI::App& app);

}  // namespace cm::cli
