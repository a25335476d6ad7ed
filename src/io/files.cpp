#include "io/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>

#include "cm/error.h"

namespace cm {

std::string temp_suffix() {
  static std::atomic<unsigned long> counter{0};
  return ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

void write_atomically(const std::string& path, const std::function<void(std::FILE*)>& body) {
  const std::string tmp = path + temp_suffix();
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) throw Error(path + ": cannot create " + tmp + ": " + std::strerror(errno));
  std::FILE* file = ::fdopen(fd, "wb");
  if (file == nullptr) {
    ::close(fd);
    std::remove(tmp.c_str());
    throw Error(path + ": cannot open " + tmp + ": " + std::strerror(errno));
  }
  try {
    body(file);
    if (std::fflush(file) != 0 || std::ferror(file))
      throw Error(path + ": write failed: " + std::strerror(errno));
  } catch (...) {
    std::fclose(file);
    std::remove(tmp.c_str());
    throw;
  }
  if (std::fclose(file) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw Error(path + ": write failed: " + std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw Error(path + ": cannot rename " + tmp + ": " + std::strerror(err));
  }
}

void write_bytes(std::FILE* file, const std::string& path, const void* data, size_t size) {
  if (size > 0 && std::fwrite(data, 1, size, file) != size)
    throw Error(path + ": write failed: " + std::strerror(errno));
}

std::vector<uint8_t> read_whole_file(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!file) throw Error(path + ": cannot open: " + std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  size_t n = 0;
  while ((n = std::fread(chunk, 1, sizeof chunk, file.get())) > 0)
    bytes.insert(bytes.end(), chunk, chunk + n);
  if (std::ferror(file.get())) throw Error(path + ": read failed: " + std::strerror(errno));
  return bytes;
}

}  // namespace cm
