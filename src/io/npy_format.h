// The .npy header, shared by the whole-array writers (npy.cpp) and the streaming ones
// (npz_stream.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cm {

// Bytes the data of (descr, shape) must have; cm::Error naming `where` for an unknown descr, a
// negative dimension or an overflow.
uint64_t npy_data_size(const std::string& where, const std::string& descr,
                       const std::vector<int64_t>& shape);
// Magic, version 1.0 and the header dict, padded exactly as numpy.save pads it.
std::string npy_header_of(const std::string& where, const std::string& descr,
                          const std::vector<int64_t>& shape);

}  // namespace cm
