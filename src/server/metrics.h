// /metrics in Prometheus' text format: HTTP requests by endpoint and status, and the engine's
// queue, images, network evaluations and histograms.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "cm/server.h"

namespace cm::server {

class RequestCounter {
 public:
  // `path` is reduced to its route ("/v1/jobs/{id}"), so job ids do not make new series.
  void count(const std::string& method, const std::string& path, int status);
  std::map<std::pair<std::string, int>, uint64_t> snapshot() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> counts_;  // (endpoint, status)
};

std::string route_of(const std::string& method, const std::string& path);

// `stats` is absent while the model loads.
std::string render_metrics(const RequestCounter& requests, const EngineStats* stats);

}  // namespace cm::server
