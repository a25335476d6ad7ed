// How the cm subcommands talk to the Hub: options from the environment, progress on stderr.
#pragma once

#include <cstdint>
#include <string>

#include "cm/hub.h"

namespace cm::cli {

// 1536 -> "1.5 KiB".
std::string format_bytes(uint64_t bytes);

// Per file: a bar redrawn in place (bytes, rate, time left) when stderr is a terminal, else one
// line when the file is complete. Nothing at all when quiet.
ProgressCallback download_progress(bool quiet);

// The environment's endpoint, token, cache and offline mode, with `variant` and a progress display.
HubOptions hub_options(const std::string& variant, bool quiet);

}  // namespace cm::cli
