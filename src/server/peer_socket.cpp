#include "server/peer_socket.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstdlib>

namespace cm::server {

namespace {

// Port and numeric address of a socket address; false for anything but IPv4/IPv6.
bool describe(const sockaddr_storage& a, int* port, std::string* address) {
  char text[INET6_ADDRSTRLEN] = {0};
  if (a.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(a);
    *port = ntohs(v4.sin_port);
    if (address) inet_ntop(AF_INET, &v4.sin_addr, text, sizeof text);
  } else if (a.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(a);
    *port = ntohs(v6.sin6_port);
    if (address) inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof text);
  } else {
    return false;
  }
  if (address) *address = text;
  return true;
}

}  // namespace

int find_peer_socket(int local_port, const std::string& remote_addr, int remote_port) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (const dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    sockaddr_storage local{}, peer{};
    socklen_t local_size = sizeof local, peer_size = sizeof peer;
    int port = 0;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &local_size) != 0 ||
        !describe(local, &port, nullptr) || port != local_port)
      continue;
    std::string address;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &peer_size) != 0 ||
        !describe(peer, &port, &address) || port != remote_port)
      continue;
    // httplib writes IPv4-mapped peers of a dual-stack socket as plain IPv4.
    if (address == remote_addr || address == "::ffff:" + remote_addr) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(dir);
  return found;
}

bool peer_closed(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
  if (p.revents & POLLIN) {
    char byte;
    return recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
  }
  return false;
}

}  // namespace cm::server
