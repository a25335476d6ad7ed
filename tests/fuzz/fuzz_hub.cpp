// What the Hub answers: header lines (each line of the input), the model info JSON (the whole
// input), sizes, Retry-After, ETags, and Location resolved against a URL (the first two lines).
#include <map>
#include <string>
#include <vector>

#include "cm/error.h"
#include "hub/hub_cache.h"
#include "hub/hub_parse.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> lines;
  for (size_t start = 0; start <= text.size();) {
    const size_t end = std::min(text.find('\n', start), text.size());
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  std::map<std::string, std::string> headers;
  for (const auto& line : lines) {
    cm::hub::read_header_line(line, &headers);
    cm::hub::parse_file_size(line);
    cm::hub::parse_retry_after(line, 60);
    const std::string etag = cm::hub::normalize_etag(line);
    cm::hub::is_safe_etag(etag);
    cm::hub::is_commit_hash(line);
    cm::hub::url_netloc(line);
  }
  if (lines.size() >= 2) cm::hub::resolve_location(lines[0], lines[1]);
  try {
    cm::hub::parse_repo_info(text, "fuzz");
  } catch (const cm::Error&) {
  }
  try {
    cm::hub::validate_revision(lines[0]);
  } catch (const cm::Error&) {
  }
  return 0;
}
