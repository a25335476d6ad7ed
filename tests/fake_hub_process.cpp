#include "fake_hub_process.h"

#include <sys/wait.h>
#include <unistd.h>
#include <csignal>
#include <fstream>
#include <stdexcept>

namespace cm::test {

FakeHubProcess::FakeHubProcess(const std::vector<std::string>& args, const std::string& log)
    : log_(log) {
  std::ofstream(log_, std::ios::trunc);
  int out[2];
  if (::pipe(out) != 0) throw std::runtime_error("pipe failed");
  std::vector<std::string> argv = {"python3", CM_FAKE_HUB, "--log", log_};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    ::close(out[1]);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execvp("python3", cargv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  // The server prints its port once it listens; EOF first means it died.
  std::string line;
  char c = 0;
  while (::read(out[0], &c, 1) == 1 && c != '\n') line += c;
  ::close(out[0]);
  try {
    port_ = std::stoi(line);
  } catch (const std::exception&) {
    stop();
    throw std::runtime_error("fake_hub.py did not start (python3 missing?)");
  }
}

FakeHubProcess::~FakeHubProcess() {
  stop();
}

void FakeHubProcess::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::vector<nlohmann::json> FakeHubProcess::requests() const {
  std::vector<nlohmann::json> out;
  std::ifstream in(log_);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

void FakeHubProcess::clear_log() const {
  std::ofstream(log_, std::ios::trunc);
}

}  // namespace cm::test
