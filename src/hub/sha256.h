// SHA-256 of a file, to check a download against the Hub's etag (an LFS file's etag is its
// SHA-256).
#pragma once

#include <string>

namespace cm {

// Lower-case hex digest; cm::Error naming the path when it can't be read.
std::string sha256_file_hex(const std::string& path);

}  // namespace cm
