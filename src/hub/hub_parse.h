// What the Hub's answers and URLs mean, apart from the network: header lines, the model-info
// JSON, ETags, sizes and Location resolution. No libcurl here, so these parsers of untrusted
// input are also built into the fuzz targets (tests/fuzz).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace cm::hub {

std::string lower_ascii(std::string text);

// "host:port" of an http(s) URL, lower-cased ("" when it isn't one).
std::string url_netloc(const std::string& url);
// Percent-encoding as Python's urllib.parse.quote: unreserved characters kept, '/' kept when
// keep_slash.
std::string url_quote(const std::string& text, bool keep_slash);
// A Location header taken relative to the URL that answered it: absolute URLs as they are, a path
// ("/x/y" or "x") on the same scheme and host.
bool is_absolute_url(const std::string& location);
std::string resolve_location(const std::string& base, const std::string& location);

// One raw header line as libcurl hands it over ("Name: value\r\n"): stored under the lower-case
// name; a status line ("HTTP/1.1 302 Found") starts a new set, as after a "100 Continue".
void read_header_line(std::string_view raw, std::map<std::string, std::string>* headers);

// An ETag as the Hub sends it (W/"abc" or "abc") -> abc.
std::string normalize_etag(std::string etag);
// A Content-Length or X-Linked-Size: decimal digits only.
std::optional<uint64_t> parse_file_size(const std::string& text);
// A Retry-After in seconds, capped at `cap`; nothing when it is not a number of seconds.
std::optional<double> parse_retry_after(const std::string& text, double cap);

struct RepoInfo {
  std::string commit;
  std::set<std::string> files;
};

// The body of GET /api/models/{repo}: its "sha" (a full commit hash) and its siblings' names.
// cm::Error starting with `what` when it is not that.
RepoInfo parse_repo_info(const std::string& body, const std::string& what);

}  // namespace cm::hub
