// cm: the consistency.cpp command-line program. This executable links neither LibTorch nor the
// library: loading Debian's LibTorch (nearly 300 shared libraries, its operators registered at
// start-up) costs about half a second, which `cm --version` does not need. Everything else is in
// libcm_cli.so (cli.cpp), loaded from next to this file or from ../lib.
#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <string>

#include "runtime/version_line.h"

namespace {

std::string executable_dir() {
  char path[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) return ".";
  path[n] = '\0';
  std::string dir(path);
  const auto slash = dir.rfind('/');
  return slash == std::string::npos ? "." : dir.substr(0, slash);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
    std::printf("%s\n", cm::detail::version_line().c_str());
    return 0;
  }
  const std::string dir = executable_dir();
  std::string error;
  for (const std::string& candidate : {dir + "/libcm_cli.so", dir + "/../lib/libcm_cli.so"}) {
    if (::access(candidate.c_str(), F_OK) != 0) continue;
    // RTLD_GLOBAL: the library finds OpenBLAS's entry points through dlsym(RTLD_DEFAULT)
    // (src/runtime/tuning.cpp), which sees only the global scope.
    void* library = ::dlopen(candidate.c_str(), RTLD_LAZY | RTLD_GLOBAL);
    if (!library) {
      error = ::dlerror();
      break;
    }
    using Main = int (*)(int, char**);
    auto cli_main = reinterpret_cast<Main>(::dlsym(library, "cm_cli_main"));
    if (!cli_main) {
      error = candidate + ": no cm_cli_main";
      break;
    }
    return cli_main(argc, argv);
  }
  if (error.empty()) error = "libcm_cli.so is neither in " + dir + " nor in " + dir + "/../lib";
  std::fprintf(stderr, "error: cannot load cm's commands: %s\n", error.c_str());
  return 1;
}
