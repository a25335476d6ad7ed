// Native jobs: POST /v1/jobs answers at once (202) or, with "stream": true, with server-sent
// events as the job moves; GET /v1/jobs/{id} reports it (its image itself with Accept: image/png,
// events with Accept: text/event-stream); POST /v1/jobs/{id}/cancel ends it.
#include <httplib.h>

#include <chrono>

#include "server/http_server.h"
#include "server/peer_socket.h"

namespace cm::server {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

bool ended(JobState s) {
  return s == JobState::kDone || s == JobState::kFailed || s == JobState::kCancelled;
}

bool write_event(httplib::DataSink& sink, const std::string& name, const json& data) {
  const std::string text =
      "event: " + name + "\ndata: " + data.dump(-1, ' ', false, json::error_handler_t::replace) +
      "\n\n";
  return sink.write(text.data(), text.size());
}

bool wants_events(const httplib::Request& req) {
  const std::string stream = req.has_param("stream") ? req.get_param_value("stream") : "";
  return stream == "true" || stream == "1" ||
         req.get_header_value("Accept").find("text/event-stream") != std::string::npos;
}

}  // namespace

void HttpServer::routes_jobs() {
  httplib::Server& s = *http_;

  // Server-sent events for job `id` until it ends: queued (the job), position, step, then done,
  // failed or cancelled (the job, with its images when done); a comment every keep-alive period.
  // `owner`: the client that made the job by this request; its going away cancels the job.
  auto stream = [this](const httplib::Request& req, httplib::Response& res, BatchEngine* engine,
                       uint64_t id, bool owner) {
    // cpp-httplib 0.11 compresses text/* for clients that accept it, event streams included, and
    // its compressor holds data back until the stream ends: no events would arrive in time. The
    // request object is httplib's own, not const; dropping the header turns compression off.
    const_cast<httplib::Request&>(req).headers.erase("Accept-Encoding");
    const int fd = find_peer_socket(req.local_port, req.remote_addr, req.remote_port);
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");  // nginx: pass events on at once
    const auto keep_alive = std::chrono::seconds(options_.keep_alive_seconds);
    res.set_chunked_content_provider(
        "text/event-stream", [this, engine, id, fd, owner, keep_alive](size_t,
                                                                       httplib::DataSink& sink) {
          uint64_t epoch = 0;
          bool first = true;
          int64_t position = -1;
          int step = -1;
          auto quiet_since = Clock::now();
          for (;;) {
            const auto status =
                engine->wait_change(id, &epoch, Clock::now() + std::chrono::milliseconds(200));
            if (!status) {
              write_event(sink, "failed",
                          {{"id", job_name(id)}, {"error", "the job was forgotten"}});
              sink.done();
              return true;
            }
            bool ok = true;
            bool wrote = false;
            if (first) {
              ok = write_event(sink, "queued", job_json(*status, model_));
              first = false;
              wrote = true;
              position = status->position;
              step = status->step;
            }
            if (ok && status->state == JobState::kQueued && status->position != position) {
              position = status->position;
              ok = write_event(sink, "position", {{"id", job_name(id)}, {"position", position}});
              wrote = true;
            }
            if (ok && status->step != step) {
              step = status->step;
              ok = write_event(sink, "step",
                               {{"id", job_name(id)},
                                {"status", job_state_name(status->state)},
                                {"step", step},
                                {"steps", status->num_steps}});
              wrote = true;
            }
            if (ok && ended(status->state)) {
              write_event(sink, job_state_name(status->state), job_json(*status, model_));
              sink.done();
              return true;
            }
            if (ok && !wrote && Clock::now() - quiet_since >= keep_alive) {
              static const std::string comment = ": keep-alive\n\n";
              ok = sink.write(comment.data(), comment.size());
              wrote = true;
            }
            if (wrote) quiet_since = Clock::now();
            if (!ok || (fd >= 0 && peer_closed(fd))) {
              if (owner) engine->cancel(id);
              return false;  // the client has gone
            }
          }
        });
  };

  s.Post("/v1/jobs", [this, stream](const httplib::Request& req, httplib::Response& res) {
    BatchEngine* engine = ready_engine(res);
    if (!engine || !body_within_limit(req, res)) return;
    ParsedGeneration parsed;
    try {
      parsed = parse_generation(req.body, model_, options_.max_n);
    } catch (const ApiError& e) {
      return send_error(res, e);
    }
    const auto id = submit(*engine, parsed.request, res);
    if (!id) return;
    res.set_header("Location", "/v1/jobs/" + job_name(*id));
    if (parsed.stream) {
      res.status = 200;
      return stream(req, res, engine, *id, true);
    }
    const auto status = engine->status(*id);
    if (!status) return send_error(res, {500, "the job ended and was forgotten at once", ""});
    send_json(res, 202, job_json(*status, model_));
  });

  // The job a path names, or a 404 (never handed out; also while loading) or 410 (expired).
  auto find_job = [this](const httplib::Request& req, httplib::Response& res,
                         std::optional<JobStatus>* status) -> BatchEngine* {
    BatchEngine* engine = engine_.load(std::memory_order_acquire);
    const std::string name = req.matches[1];
    const auto id = parse_job_name(name);
    if (engine && id) *status = engine->status(*id);
    if (*status) return engine;
    if (engine && id && engine->expired(*id)) {
      send_error(res, {410,
                       "job '" + name +
                           "' has expired: only the most recent ended jobs are kept (--keep-jobs)",
                       ""});
    } else {
      send_error(res, {404, "no job '" + name + "'", ""});
    }
    return nullptr;
  };
  s.Get(R"(/v1/jobs/([^/]+))", [this, find_job, stream](const httplib::Request& req,
                                                       httplib::Response& res) {
    std::optional<JobStatus> status;
    BatchEngine* engine = find_job(req, res, &status);
    if (!engine) return;
    if (wants_events(req)) {
      res.status = 200;
      return stream(req, res, engine, status->id, false);
    }
    if (req.get_header_value("Accept").find("image/png") == std::string::npos)
      return send_json(res, 200, job_json(*status, model_));
    if (status->state != JobState::kDone)
      return send_error(res, {409,
                              "the job is " + std::string(job_state_name(status->state)) +
                                  ", not done: no image yet",
                              ""});
    int64_t index = 0;
    if (req.has_param("index")) {
      const std::string text = req.get_param_value("index");
      try {
        size_t used = 0;
        index = std::stoll(text, &used);
        if (used != text.size()) index = -1;
      } catch (const std::exception&) {
        index = -1;
      }
      if (index < 0 || index >= status->request.n)
        return send_error(res, {400,
                                "index: must be an image number in [0, " +
                                    std::to_string(status->request.n) + "), got '" + text + "'",
                                "index"});
    }
    const auto pngs = encode_images(status->request, status->result, model_);
    const auto& png = pngs.at(index);
    res.set_content(reinterpret_cast<const char*>(png.data()), png.size(), "image/png");
  });
  s.Post(R"(/v1/jobs/([^/]+)/cancel)", [this, find_job](const httplib::Request& req,
                                                      httplib::Response& res) {
    std::optional<JobStatus> status;
    BatchEngine* engine = find_job(req, res, &status);
    if (!engine) return;
    engine->cancel(status->id);
    const auto now = engine->status(status->id);
    send_json(res, 200, job_json(now ? *now : *status, model_));
  });
}

}  // namespace cm::server
