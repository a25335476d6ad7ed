// Errors the library reports to its callers.
#pragma once

#include <stdexcept>
#include <string>

namespace cm {

// Every failure the library can foresee (bad file, bad config, bad argument) is a cm::Error whose
// message is one line naming the file, key or value at fault.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace cm
