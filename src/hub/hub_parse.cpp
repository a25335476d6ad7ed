#include "hub/hub_parse.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "cm/error.h"
#include "hub/hub_cache.h"

namespace cm::hub {

namespace {

// scheme and the rest: "http://h:1/p" -> ("http", "h:1/p").
bool split_scheme(const std::string& url, std::string* scheme, std::string* rest) {
  const size_t pos = url.find("://");
  if (pos == std::string::npos || pos == 0) return false;
  *scheme = lower_ascii(url.substr(0, pos));
  *rest = url.substr(pos + 3);
  return *scheme == "http" || *scheme == "https";
}

}  // namespace

std::string lower_ascii(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

std::string url_netloc(const std::string& url) {
  std::string scheme, rest;
  if (!split_scheme(url, &scheme, &rest)) return "";
  return lower_ascii(rest.substr(0, rest.find_first_of("/?#")));
}

std::string url_quote(const std::string& text, bool keep_slash) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

bool is_absolute_url(const std::string& location) {
  std::string scheme, rest;
  return split_scheme(location, &scheme, &rest) || location.rfind("//", 0) == 0;
}

std::string resolve_location(const std::string& base, const std::string& location) {
  std::string scheme, rest;
  if (split_scheme(location, &scheme, &rest)) return location;
  if (!split_scheme(base, &scheme, &rest)) return location;
  if (location.rfind("//", 0) == 0) return scheme + ":" + location;
  const std::string origin = scheme + "://" + rest.substr(0, rest.find_first_of("/?#"));
  if (!location.empty() && location[0] == '/') return origin + location;
  // A relative path replaces the last segment of the base path.
  std::string path = rest.substr(std::min(rest.size(), rest.find_first_of("/?#")));
  path = path.substr(0, path.find_first_of("?#"));
  path = path.substr(0, path.rfind('/') + 1);
  if (path.empty()) path = "/";
  return origin + path + location;
}

void read_header_line(std::string_view raw, std::map<std::string, std::string>* headers) {
  std::string line(raw);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  if (line.rfind("HTTP/", 0) == 0) {
    headers->clear();
    return;
  }
  const size_t colon = line.find(':');
  if (colon == std::string::npos) return;
  std::string value = line.substr(colon + 1);
  const size_t first = value.find_first_not_of(" \t");
  value = first == std::string::npos ? "" : value.substr(first);
  (*headers)[lower_ascii(line.substr(0, colon))] = value;
}

std::string normalize_etag(std::string etag) {
  if (etag.rfind("W/", 0) == 0) etag = etag.substr(2);
  etag.erase(std::remove(etag.begin(), etag.end(), '"'), etag.end());
  return etag;
}

std::optional<uint64_t> parse_file_size(const std::string& text) {
  if (text.empty() || text.size() > 19 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoull(text);
}

std::optional<double> parse_retry_after(const std::string& text, double cap) {
  try {
    size_t used = 0;
    const double seconds = std::stod(text, &used);
    if (used != text.size() || !(seconds >= 0)) return std::nullopt;
    return std::min(seconds, cap);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

RepoInfo parse_repo_info(const std::string& body, const std::string& what) {
  RepoInfo info;
  try {
    const auto j = nlohmann::json::parse(body);
    info.commit = j.at("sha").get<std::string>();
    for (const auto& sibling : j.at("siblings"))
      info.files.insert(sibling.at("rfilename").get<std::string>());
  } catch (const nlohmann::json::exception&) {
    throw Error(what + " (no \"sha\" and \"siblings\"); check HF_ENDPOINT");
  }
  if (!is_commit_hash(info.commit)) throw Error(what + " (sha '" + info.commit + "')");
  return info;
}

}  // namespace cm::hub
