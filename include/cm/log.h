// Where the library's progress and notes go: a callback the caller supplies per call. The library
// itself never writes to stdout or stderr; without a callback it says nothing.
#pragma once

#include <functional>
#include <string>

namespace cm {

// One line, without its newline ("epoch 2/3  loss 0.41  test accuracy 0.88").
using LogCallback = std::function<void(const std::string& line)>;

}  // namespace cm
