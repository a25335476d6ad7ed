// HTTP for the Hub client: one libcurl handle, no redirect ever followed behind our back, and the
// token sent to the endpoint's own host only (never to a CDN or another host a redirect names).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "hub/hub_parse.h"

namespace cm::hub {

struct HttpResponse {
  long status = 0;                             // 0 when no response came
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                            // when no sink took it (error bodies always)
  int curl_code = 0;                           // 0: the transfer completed
  std::string curl_error;                      // libcurl's words for curl_code
  bool sink_failed = false;                    // the sink refused data (a local write error)
  bool unreachable = false;  // no host of that name, or nothing listening: no network, not a glitch

  std::string header(const std::string& name) const;  // "" when absent
  bool transport_failed() const { return curl_code != 0 && !sink_failed; }
};

// Receives the body of a 200 or 206 answer (`head`: its status and headers); returns false to
// abort the transfer.
using BodySink = std::function<bool(const HttpResponse& head, const char* data, size_t size)>;

class HttpClient {
 public:
  HttpClient(std::string endpoint, std::optional<std::string> token, long timeout_s);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // One request, redirects not followed. `headers` are "Name: value" lines.
  HttpResponse send(const std::string& method, const std::string& url,
                    const std::vector<std::string>& headers = {}, const BodySink& sink = nullptr);

  const std::string& endpoint() const { return endpoint_; }
  bool has_token() const { return token_.has_value() && !token_->empty(); }
  // The token goes to the endpoint's host alone: a redirect elsewhere (a CDN, another site)
  // must not receive it.
  bool sends_token_to(const std::string& url) const;

 private:
  std::string endpoint_;
  std::optional<std::string> token_;
  long timeout_s_;
  void* curl_ = nullptr;  // CURL*, kept so connections are reused
};

}  // namespace cm::hub
