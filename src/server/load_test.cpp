#include "server/load_test.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cm/error.h"

namespace cm::server {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

struct Target {
  std::string base;    // scheme://host[:port]
  std::string prefix;  // path prefix without a trailing slash
};

Target parse_url(const std::string& url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos ||
      (url.compare(0, scheme_end, "http") != 0 && url.compare(0, scheme_end, "https") != 0))
    throw Error("--serve: expected http://HOST[:PORT][/PREFIX], got '" + url + "'");
  const auto path = url.find('/', scheme_end + 3);
  Target t{url.substr(0, path), path == std::string::npos ? "" : url.substr(path)};
  if (t.base.size() == scheme_end + 3) throw Error("--serve: no host in '" + url + "'");
  while (!t.prefix.empty() && t.prefix.back() == '/') t.prefix.pop_back();
  return t;
}

std::unique_ptr<httplib::Client> connect(const Target& t, const LoadTestOptions& o) {
  auto c = std::make_unique<httplib::Client>(t.base);
  c->set_keep_alive(true);
  c->set_tcp_nodelay(true);
  const auto timeout = std::chrono::duration<double>(o.timeout_s);
  c->set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
  c->set_write_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
  c->set_connection_timeout(std::chrono::seconds(10));
  if (!o.api_key.empty()) c->set_bearer_token_auth(o.api_key);
  return c;
}

// GET path: the body, or cm::Error naming the URL and the status.
std::string get(httplib::Client& c, const Target& t, const std::string& path) {
  auto r = c.Get(t.prefix + path);
  if (!r) throw Error("GET " + t.base + t.prefix + path + ": " + httplib::to_string(r.error()));
  if (r->status != 200)
    throw Error("GET " + t.base + t.prefix + path + ": HTTP " + std::to_string(r->status) + " " +
                r->body.substr(0, 200) + (r->status == 401 ? " (--api-key?)" : ""));
  return r->body;
}

// The value of an unlabelled Prometheus sample; nan when absent.
double metric(const std::string& text, const std::string& name) {
  size_t at = 0;
  while ((at = text.find(name + " ", at)) != std::string::npos) {
    if (at == 0 || text[at - 1] == '\n')
      return std::strtod(text.c_str() + at + name.size() + 1, nullptr);
    at += name.size();
  }
  return kNan;
}

// The q-quantile (0 < q <= 1) by the nearest-rank method, of sorted values; nan for none.
double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return kNan;
  const auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::max<size_t>(rank, 1) - 1];
}

// --warmup, or by default a quarter of the duration, at most 5 s.
double warmup_seconds(const LoadTestOptions& o) {
  return o.warmup_s >= 0 ? o.warmup_s : std::min(5.0, o.duration_s / 4);
}

struct Completion {
  Clock::time_point end;
  double latency_s;
  bool ok;
};

LoadTestRow run_level(const LoadTestOptions& o, const Target& t, int concurrency, int classes,
                      std::atomic<uint64_t>& counter) {
  std::atomic<bool> stop{false};
  std::vector<std::vector<Completion>> done(static_cast<size_t>(concurrency));
  std::vector<std::string> errors(static_cast<size_t>(concurrency));
  std::vector<std::thread> clients;
  for (int i = 0; i < concurrency; ++i) {
    clients.emplace_back([&, i] {
      auto c = connect(t, o);
      auto& mine = done[static_cast<size_t>(i)];
      while (!stop.load(std::memory_order_relaxed)) {
        const uint64_t k = counter.fetch_add(1);
        json body = {{"n", o.n}, {"seed", k}, {"steps", o.steps[k % o.steps.size()]}};
        if (classes > 0) body["class_labels"] = json::array({k % static_cast<uint64_t>(classes)});
        const auto t0 = Clock::now();
        auto r = c->Post(t.prefix + "/v1/images/generations", body.dump(), "application/json");
        const auto t1 = Clock::now();
        const bool ok = r && r->status == 200;
        mine.push_back({t1, std::chrono::duration<double>(t1 - t0).count(), ok});
        if (!ok) {
          if (errors[static_cast<size_t>(i)].empty())
            errors[static_cast<size_t>(i)] =
                r ? "HTTP " + std::to_string(r->status) + ": " + r->body.substr(0, 200)
                  : httplib::to_string(r.error());
          // A refusing server (429, 503) is not hammered.
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
      }
    });
  }
  const double warmup = warmup_seconds(o);
  auto monitor = connect(t, o);
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup));
  const std::string before = get(*monitor, t, "/metrics");
  const auto start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(o.duration_s));
  const auto end = Clock::now();
  const std::string after = get(*monitor, t, "/metrics");
  stop = true;
  for (auto& c : clients) c.join();  // each finishes its request in flight (not counted)

  LoadTestRow row;
  row.concurrency = concurrency;
  row.seconds = std::chrono::duration<double>(end - start).count();
  std::vector<double> latencies;
  for (const auto& mine : done) {
    for (const auto& c : mine) {
      if (c.end < start || c.end > end) continue;
      if (c.ok) {
        ++row.requests;
        latencies.push_back(c.latency_s);
      } else {
        ++row.errors;
      }
    }
  }
  for (const auto& e : errors) {
    if (!e.empty()) {
      row.first_error = e;
      break;
    }
  }
  std::sort(latencies.begin(), latencies.end());
  row.requests_per_s = static_cast<double>(row.requests) / row.seconds;
  row.images_per_s = row.requests_per_s * o.n;
  row.p50_s = percentile(latencies, 0.50);
  row.p95_s = percentile(latencies, 0.95);
  row.p99_s = percentile(latencies, 0.99);
  auto delta = [&](const char* name) { return metric(after, name) - metric(before, name); };
  row.unet_calls = delta("cm_batch_size_count");
  row.images_per_call = row.unet_calls > 0 ? delta("cm_batch_size_sum") / row.unet_calls : kNan;
  row.engine_busy = delta("cm_engine_busy_seconds_total") / row.seconds;
  return row;
}

std::string steps_text(const std::vector<int>& steps) {
  std::string s;
  for (int v : steps) s += (s.empty() ? "" : ",") + std::to_string(v);
  return s;
}

}  // namespace

std::vector<LoadTestRow> run_load_test(const LoadTestOptions& o,
                                       const std::function<void(const LoadTestRow&)>& on_row) {
  if (o.concurrency.empty()) throw Error("--concurrency: give at least one level");
  for (int c : o.concurrency)
    if (c < 1 || c > 4096)
      throw Error("--concurrency: each level must be between 1 and 4096, got " + std::to_string(c));
  for (int s : o.steps)
    if (s < 1) throw Error("--steps: each value must be at least 1, got " + std::to_string(s));
  if (o.steps.empty()) throw Error("--steps: give at least one value");
  if (!(o.duration_s > 0) || !std::isfinite(o.duration_s))
    throw Error("--duration: must be more than 0 seconds");
  if (!std::isfinite(o.warmup_s)) throw Error("--warmup: must be finite");
  if (o.n < 1) throw Error("--n: must be at least 1, got " + std::to_string(o.n));
  if (!(o.timeout_s > 0)) throw Error("--timeout: must be more than 0 seconds");
  const Target t = parse_url(o.url);
  auto probe = connect(t, o);
  get(*probe, t, "/health");
  int classes = o.classes;
  if (classes < 0) {
    const auto models = json::parse(get(*probe, t, "/v1/models"), nullptr, false);
    classes = 0;
    if (models.is_object() && models.contains("data") && models["data"].is_array() &&
        !models["data"].empty()) {
      const auto& m = models["data"][0];
      if (m.contains("num_classes") && m["num_classes"].is_number_integer())
        classes = m["num_classes"].get<int>();
    }
  }
  get(*probe, t, "/metrics");
  std::atomic<uint64_t> counter{0};
  std::vector<LoadTestRow> rows;
  for (int c : o.concurrency) {
    rows.push_back(run_level(o, t, c, classes, counter));
    if (on_row) on_row(rows.back());
  }
  return rows;
}

std::string load_test_markdown(const LoadTestOptions& o, const std::vector<LoadTestRow>& rows) {
  auto num = [](double v, const char* fmt) {
    if (std::isnan(v)) return std::string("n/a");
    char buf[64];
    std::snprintf(buf, sizeof buf, fmt, v);
    return std::string(buf);
  };
  std::ostringstream out;
  const double warmup = warmup_seconds(o);
  out << "`cm serve` at " << o.url << ": closed loop, " << num(o.duration_s, "%g")
      << " s per level after " << num(warmup, "%g") << " s of warm-up; n=" << o.n << ", steps "
      << steps_text(o.steps) << "\n\n"
      << "| concurrency | requests | errors | requests/s | images/s | p50 ms | p95 ms | p99 ms | "
         "UNet calls | images per UNet call | engine busy |\n"
      << "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : rows) {
    out << "| " << r.concurrency << " | " << r.requests << " | " << r.errors << " | "
        << num(r.requests_per_s, "%.2f") << " | " << num(r.images_per_s, "%.2f") << " | "
        << num(r.p50_s * 1e3, "%.1f") << " | " << num(r.p95_s * 1e3, "%.1f") << " | "
        << num(r.p99_s * 1e3, "%.1f") << " | " << num(r.unet_calls, "%.0f") << " | "
        << num(r.images_per_call, "%.2f") << " | " << num(r.engine_busy * 100, "%.0f%%") << " |\n";
  }
  return out.str();
}

std::string load_test_json(const LoadTestOptions& o, const std::vector<LoadTestRow>& rows) {
  auto finite = [](double v) { return std::isnan(v) ? json(nullptr) : json(v); };
  json out = {{"settings",
               {{"url", o.url},
                {"duration_s", o.duration_s},
                {"warmup_s", warmup_seconds(o)},
                {"steps", o.steps},
                {"n", o.n}}},
              {"rows", json::array()}};
  for (const auto& r : rows) {
    out["rows"].push_back({{"concurrency", r.concurrency},
                           {"seconds", r.seconds},
                           {"requests", r.requests},
                           {"errors", r.errors},
                           {"requests_per_s", r.requests_per_s},
                           {"images_per_s", r.images_per_s},
                           {"latency_p50_s", finite(r.p50_s)},
                           {"latency_p95_s", finite(r.p95_s)},
                           {"latency_p99_s", finite(r.p99_s)},
                           {"unet_calls", finite(r.unet_calls)},
                           {"images_per_unet_call", finite(r.images_per_call)},
                           {"engine_busy", finite(r.engine_busy)},
                           {"first_error", r.first_error}});
  }
  return out.dump(2) + "\n";
}

}  // namespace cm::server
