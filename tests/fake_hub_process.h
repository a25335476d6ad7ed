// tests/fake_hub.py run as a child process on an ephemeral port of 127.0.0.1, for one test.
#pragma once

#include <sys/types.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cm::test {

class FakeHubProcess {
 public:
  // `args`: fake_hub.py's flags (--repo ORG/NAME=DIR, --cut ..., see the script). `log` is the
  // file its requests are appended to.
  FakeHubProcess(const std::vector<std::string>& args, const std::string& log);
  ~FakeHubProcess();
  FakeHubProcess(const FakeHubProcess&) = delete;
  FakeHubProcess& operator=(const FakeHubProcess&) = delete;

  bool running() const { return pid_ > 0; }
  int port() const { return port_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  void stop();  // SIGTERM, then waits for it

  // Every request so far: {"method", "path", "host", "authorization", "range"}.
  std::vector<nlohmann::json> requests() const;
  void clear_log() const;

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string log_;
};

}  // namespace cm::test
