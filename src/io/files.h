// Whole-file reading and crash-safe writing, shared by every file format the library writes.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace cm {

// Writes through `body` into a temporary file beside `path` (unique per process and call), then
// renames it over `path`: an error or a crash never leaves a half-written file under the final
// name. `body` may throw; the temporary file is removed.
void write_atomically(const std::string& path, const std::function<void(std::FILE*)>& body);

// ".tmp.<pid>.<n>": a temporary-name suffix unique per process and per call, so that two
// threads (or processes) writing the same file never share a temporary.
std::string temp_suffix();

// fwrite that throws a cm::Error naming `path` on a short write.
void write_bytes(std::FILE* file, const std::string& path, const void* data, size_t size);

std::vector<uint8_t> read_whole_file(const std::string& path);

}  // namespace cm
