#include "hub/hub_http.h"

#include <curl/curl.h>
#include <exception>
#include <mutex>

#include "cm/error.h"
#include "hub/hub_parse.h"

namespace cm::hub {

namespace {

struct Transfer {
  CURL* curl = nullptr;
  HttpResponse* response = nullptr;
  const BodySink* sink = nullptr;
  // An exception must not unwind through libcurl's C frames: the callbacks catch it, abort the
  // transfer, and send() throws it again once curl_easy_perform has returned.
  std::exception_ptr error;
};

size_t take_header(char* data, size_t size, size_t count, void* user) {
  read_header_line(std::string_view(data, size * count),
                   &static_cast<Transfer*>(user)->response->headers);
  return size * count;
}

size_t take_body(char* data, size_t size, size_t count, void* user) {
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

size_t on_header(char* data, size_t size, size_t count, void* user) {
  try {
    return take_header(data, size, count, user);
  } catch (...) {
    static_cast<Transfer*>(user)->error = std::current_exception();
    return 0;  // libcurl aborts the transfer
  }
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  try {
    return take_body(data, size, count, user);
  } catch (...) {
    static_cast<Transfer*>(user)->error = std::current_exception();
    return 0;
  }
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

std::string HttpResponse::header(const std::string& name) const {
  const auto it = headers.find(lower_ascii(name));
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
  Transfer transfer{curl, &response, &sink, nullptr};

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
  if (transfer.error) std::rethrow_exception(transfer.error);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  response.curl_code = static_cast<int>(code);
  if (code != CURLE_OK) response.curl_error = error[0] ? error : curl_easy_strerror(code);
  response.unreachable = code == CURLE_COULDNT_RESOLVE_HOST || code == CURLE_COULDNT_CONNECT ||
                         code == CURLE_COULDNT_RESOLVE_PROXY;
  return response;
}

}  // namespace cm::hub
