#include "io/hub_http.h"

#include <curl/curl.h>
#include <algorithm>
#include <cctype>
#include <mutex>

#include "cm/error.h"

namespace cm::hub {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// scheme and the rest: "http://h:1/p" -> ("http", "h:1/p").
bool split_scheme(const std::string& url, std::string* scheme, std::string* rest) {
  const size_t pos = url.find("://");
  if (pos == std::string::npos || pos == 0) return false;
  *scheme = lower(url.substr(0, pos));
  *rest = url.substr(pos + 3);
  return *scheme == "http" || *scheme == "https";
}

struct Transfer {
  CURL* curl = nullptr;
  HttpResponse* response = nullptr;
  const BodySink* sink = nullptr;
};

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string line(data, size * count);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  // A new status line (after "100 Continue", say) starts a new set of headers.
  if (line.rfind("HTTP/", 0) == 0) {
    t->response->headers.clear();
    return size * count;
  }
  const size_t colon = line.find(':');
  if (colon == std::string::npos) return size * count;
  std::string value = line.substr(colon + 1);
  const size_t first = value.find_first_not_of(" \t");
  value = first == std::string::npos ? "" : value.substr(first);
  t->response->headers[lower(line.substr(0, colon))] = value;
  return size * count;
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  long status = 0;
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
  // Only a successful answer's body is the file; an error page goes to the response.
  if (t->sink && *t->sink && (status == 200 || status == 206)) {
    t->response->status = status;
    if (!(*t->sink)(*t->response, data, n)) {
      t->response->sink_failed = true;
      return 0;  // libcurl aborts with CURLE_WRITE_ERROR
    }
    return n;
  }
  if (t->response->body.size() < (1u << 24)) t->response->body.append(data, n);
  return n;
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

std::string url_netloc(const std::string& url) {
  std::string scheme, rest;
  if (!split_scheme(url, &scheme, &rest)) return "";
  return lower(rest.substr(0, rest.find_first_of("/?#")));
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

std::string HttpResponse::header(const std::string& name) const {
  const auto it = headers.find(lower(name));
  return it == headers.end() ? "" : it->second;
}

HttpClient::HttpClient(std::string endpoint, std::optional<std::string> token, long timeout_s)
    : endpoint_(std::move(endpoint)), token_(std::move(token)), timeout_s_(timeout_s) {
  global_init();
  curl_ = curl_easy_init();
  if (!curl_) throw Error("libcurl: cannot create a transfer handle");
}

HttpClient::~HttpClient() {
  curl_easy_cleanup(static_cast<CURL*>(curl_));
}

bool HttpClient::sends_token_to(const std::string& url) const {
  return has_token() && !url_netloc(url).empty() && url_netloc(url) == url_netloc(endpoint_);
}

HttpResponse HttpClient::send(const std::string& method, const std::string& url,
                              const std::vector<std::string>& headers, const BodySink& sink) {
  CURL* curl = static_cast<CURL*>(curl_);
  curl_easy_reset(curl);  // keeps the connection cache
  HttpResponse response;
  Transfer transfer{curl, &response, &sink};

  curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  // The real size of the file, not of a compressed body.
  list = curl_slist_append(list, "Accept-Encoding: identity");
  if (sends_token_to(url))
    list = curl_slist_append(list, ("Authorization: Bearer " + *token_).c_str());

  char error[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS, CURLPROTO_HTTP | CURLPROTO_HTTPS);
#endif
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "consistency.cpp (libcurl)");
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, timeout_s_);
  // A stalled transfer (no byte for timeout_s) is a timeout, retried like a dropped connection.
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, timeout_s_);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &transfer);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
  if (method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  }

  const CURLcode code = curl_easy_perform(curl);
  curl_slist_free_all(list);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  response.curl_code = static_cast<int>(code);
  if (code != CURLE_OK) response.curl_error = error[0] ? error : curl_easy_strerror(code);
  response.unreachable = code == CURLE_COULDNT_RESOLVE_HOST || code == CURLE_COULDNT_CONNECT ||
                         code == CURLE_COULDNT_RESOLVE_PROXY;
  return response;
}

}  // namespace cm::hub
