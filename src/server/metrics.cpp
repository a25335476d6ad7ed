#include "server/metrics.h"

#include <sstream>

namespace cm::server {

std::string route_of(const std::string& method, const std::string& path) {
  static const char* fixed[] = {"/health", "/metrics", "/v1/models", "/v1/images/generations",
                                "/v1/jobs"};
  std::string route = "other";
  for (const char* f : fixed)
    if (path == f) route = f;
  const std::string jobs = "/v1/jobs/";
  if (path.compare(0, jobs.size(), jobs) == 0) {
    const bool cancel = path.size() > 7 && path.compare(path.size() - 7, 7, "/cancel") == 0;
    route = cancel ? "/v1/jobs/{id}/cancel" : "/v1/jobs/{id}";
  }
  return method + " " + route;
}

void RequestCounter::count(const std::string& method, const std::string& path, int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++counts_[{route_of(method, path), status}];
}

std::map<std::pair<std::string, int>, uint64_t> RequestCounter::snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return counts_;
}

namespace {

void histogram(std::ostringstream& out, const std::string& name, const std::string& help,
               const Histogram& h) {
  out << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < h.bounds.size(); ++i) {
    cumulative += h.counts[i];
    out << name << "_bucket{le=\"" << h.bounds[i] << "\"} " << cumulative << "\n";
  }
  out << name << "_bucket{le=\"+Inf\"} " << h.count << "\n";
  out << name << "_sum " << h.sum << "\n" << name << "_count " << h.count << "\n";
}

void counter(std::ostringstream& out, const std::string& name, const std::string& type,
             const std::string& help, double value) {
  out << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n"
      << name << " " << value << "\n";
}

}  // namespace

std::string render_metrics(const RequestCounter& requests, const EngineStats* s) {
  std::ostringstream out;
  out << "# HELP cm_http_requests_total HTTP requests by endpoint and status.\n"
      << "# TYPE cm_http_requests_total counter\n";
  for (const auto& [key, n] : requests.snapshot())
    out << "cm_http_requests_total{endpoint=\"" << key.first << "\",status=\"" << key.second
        << "\"} " << n << "\n";
  counter(out, "cm_model_loaded", "gauge", "1 once the model is loaded and serving.", s ? 1 : 0);
  if (!s) return out.str();
  counter(out, "cm_queue_depth", "gauge", "Requests waiting for their first network evaluation.",
          static_cast<double>(s->queued));
  counter(out, "cm_requests_running", "gauge", "Requests being sampled.",
          static_cast<double>(s->running));
  out << "# HELP cm_generation_requests_total Generation requests ended, by outcome.\n"
      << "# TYPE cm_generation_requests_total counter\n"
      << "cm_generation_requests_total{outcome=\"done\"} " << s->requests_done << "\n"
      << "cm_generation_requests_total{outcome=\"failed\"} " << s->requests_failed << "\n"
      << "cm_generation_requests_total{outcome=\"cancelled\"} " << s->requests_cancelled << "\n";
  counter(out, "cm_images_total", "counter", "Images generated.", static_cast<double>(s->images));
  counter(out, "cm_network_evaluations_total", "counter", "UNet calls (each a whole batch).",
          static_cast<double>(s->evaluations));
  counter(out, "cm_engine_busy_seconds_total", "counter",
          "Seconds the engine spent computing (UNet calls, scheduler steps, edits).",
          s->busy_seconds);
  histogram(out, "cm_batch_size", "Images per UNet call.", s->batch_size);
  histogram(out, "cm_queue_seconds", "Admission to first network evaluation.", s->queue_seconds);
  histogram(out, "cm_latency_seconds", "Admission to the finished images.", s->latency_seconds);
  histogram(out, "cm_call_seconds", "One batch's UNet call and scheduler step (generation).",
            s->call_seconds);
  return out.str();
}

}  // namespace cm::server
