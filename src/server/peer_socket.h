// Whether the client of a request still listens. cpp-httplib (0.11, Debian 12) does not hand a
// handler its socket, so it is found among the process's descriptors by the connection's two
// ends, which the request does carry.
#pragma once

#include <string>

namespace cm::server {

// The connected socket whose local port is `local_port` and whose peer is remote_addr:remote_port,
// or -1 when none is found. Only valid while the request's handler runs (httplib owns the socket).
int find_peer_socket(int local_port, const std::string& remote_addr, int remote_port);

// True once the peer has closed or reset the connection (data it sent ahead, such as a pipelined
// request, does not count as closing).
bool peer_closed(int fd);

}  // namespace cm::server
