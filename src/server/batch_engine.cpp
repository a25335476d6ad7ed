// The scheduler thread and the per-request state behind it. Exactness rests on two rules:
// - a request's random draws are made at admission, in ConsistencyModelPipeline's order and from
//   a generator of its own, so its images are rows of what the pipeline would draw;
// - the scheduler's arithmetic runs per request and step with the very functions the pipeline
//   calls (scale_model_input, step_with_noise) on that request's rows: only the UNet call is
//   shared, and the UNet treats every sample on its own (timestep and class per sample).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <sstream>

#include "cm/server.h"
#include "cm/tuning.h"
#include "pipelines/sampling_loop.h"

namespace cm::server {

using Clock = std::chrono::steady_clock;

const char* job_state_name(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return "queued";
    case JobState::kRunning:
      return "running";
    case JobState::kDone:
      return "done";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds(std::move(upper_bounds)), counts(bounds.size() + 1, 0) {}

void Histogram::observe(double value) {
  const size_t i = std::lower_bound(bounds.begin(), bounds.end(), value) - bounds.begin();
  ++counts[i];
  sum += value;
  ++count;
}

struct BatchEngine::Job {
  uint64_t id = 0;
  ImageRequest request;
  CMStochasticIterativeScheduler scheduler;
  // Owned by the scheduler thread once queued (the submitting thread fills them before).
  at::Tensor sample;                   // [n, C, H, W]: noise·σ_max, then each step's result
  std::vector<at::Tensor> step_noise;  // one [n, C, H, W] draw per step (several steps only)
  std::optional<at::Tensor> labels;    // [n] on the model's device
  std::vector<int64_t> class_labels;
  // Guarded by the engine's mutex.
  std::vector<int> steps_done;  // per image (an edit: one entry for the whole request)
  int edit_steps = 0;           // an edit's step count, once known
  JobState state = JobState::kQueued;
  bool cancel_requested = false;
  bool timed_out = false;
  bool refused = false;
  std::string error;
  GenerateResult result;
  Clock::time_point admitted, started, ended;

  int num_steps() const {
    return request.edit ? edit_steps : static_cast<int>(scheduler.num_steps());
  }
  bool ended_state() const {
    return state == JobState::kDone || state == JobState::kFailed || state == JobState::kCancelled;
  }
};

BatchEngine::BatchEngine(ConsistencyModelPipeline& pipeline, EngineOptions options)
    : pipeline_(pipeline), options_(std::move(options)) {
  if (pipeline_.is_trigflow())
    throw Error("the model is a TrigFlow (SCMScheduler) model: cm serve does not serve those yet "
                "(cm generate does)");
  if (options_.max_batch < 1)
    throw Error("max_batch: must be at least 1, got " + std::to_string(options_.max_batch));
  if (options_.max_queue < 1)
    throw Error("max_queue: must be at least 1, got " + std::to_string(options_.max_queue));
  if (options_.batch_wait_ms < 0)
    throw Error("batch_wait_ms: must not be negative, got " +
                std::to_string(options_.batch_wait_ms));
  std::vector<double> sizes;
  for (int b = 1; b < options_.max_batch; b *= 2) sizes.push_back(b);
  sizes.push_back(options_.max_batch);
  const std::vector<double> seconds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                       1,     2.5,  5,     10,   30,  60};
  stats_.batch_size = Histogram(sizes);
  stats_.queue_seconds = Histogram(seconds);
  stats_.latency_seconds = Histogram(seconds);
  stats_.call_seconds = Histogram(seconds);
  thread_ = std::thread([this] { run(); });
}

BatchEngine::~BatchEngine() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  while (!active_.empty()) finish(active_.front(), JobState::kCancelled, "the server stopped");
}

std::shared_ptr<BatchEngine::Job> BatchEngine::prepare(const ImageRequest& r) const {
  if (r.n < 1) throw Error("n: must be at least 1, got " + std::to_string(r.n));
  auto job = std::make_shared<Job>();
  job->request = r;
  if (r.edit) {
    // cm::edit checks its options itself when it runs; the step count is known ahead only when
    // the options give it.
    const EditOptions& o = *r.edit;
    job->edit_steps = !o.sigmas.empty()      ? static_cast<int>(o.sigmas.size())
                      : !o.timesteps.empty() ? static_cast<int>(o.timesteps.size())
                                             : o.num_inference_steps;
    job->steps_done.assign(1, 0);
    return job;
  }
  job->scheduler = pipeline_.scheduler();
  if (r.timesteps.empty()) {
    job->scheduler.set_timesteps(r.num_inference_steps);
  } else {
    job->scheduler.set_timesteps(r.timesteps);
  }
  UNet2DModelImpl& unet = *pipeline_.unet();
  const UNetConfig& config = unet.config();
  GenerateOptions o;
  o.batch_size = r.n;
  o.seed = r.seed;
  o.class_labels = r.class_labels;
  job->class_labels = resolve_class_labels(config, o);

  c10::InferenceMode inference;
  const auto param = unet.parameters().front();
  const auto device = param.device();
  const std::vector<int64_t> shape = {r.n, config.in_channels, config.sample_size,
                                      config.sample_size};
  // ConsistencyModelPipeline's draws, in its order: the initial noise, then one per step when
  // there are several, all from one generator seeded with the request's seed.
  auto generator = at::detail::createCPUGenerator(r.seed);
  const auto host = at::TensorOptions().dtype(param.scalar_type());
  const auto noise = at::randn(shape, generator, host);
  if (job->scheduler.num_steps() > 1) {
    for (size_t i = 0; i < job->scheduler.num_steps(); ++i)
      job->step_noise.push_back(at::randn(shape, generator, host).to(device));
  }
  job->sample = (noise.to(device) * job->scheduler.init_noise_sigma()).contiguous();
  if (!job->class_labels.empty())
    job->labels = at::tensor(job->class_labels, at::TensorOptions().dtype(at::kLong)).to(device);
  job->steps_done.assign(r.n, 0);
  return job;
}

uint64_t BatchEngine::submit(const ImageRequest& request) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (draining_ || stop_) throw ShuttingDown("the server is shutting down");
    if (static_cast<int64_t>(active_.size()) >= options_.max_queue)
      throw QueueFull("the queue is full (" + std::to_string(options_.max_queue) +
                      " requests waiting or running)");
  }
  // The draws happen outside the lock: they are the request's own work.
  auto job = prepare(request);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (draining_ || stop_) throw ShuttingDown("the server is shutting down");
    if (static_cast<int64_t>(active_.size()) >= options_.max_queue)
      throw QueueFull("the queue is full (" + std::to_string(options_.max_queue) +
                      " requests waiting or running)");
    job->id = next_id_++;
    job->admitted = Clock::now();
    jobs_[job->id] = job;
    active_.push_back(job);
    ++epoch_;
  }
  wake_.notify_all();
  changed_.notify_all();
  return job->id;
}

JobStatus BatchEngine::describe(const Job& job) const {
  JobStatus s;
  s.id = job.id;
  s.request = job.request;
  s.state = job.state;
  s.num_steps = job.num_steps();
  s.step =
      job.steps_done.empty() ? 0 : *std::min_element(job.steps_done.begin(), job.steps_done.end());
  s.error = job.error;
  s.timed_out = job.timed_out;
  s.refused = job.refused;
  if (job.state == JobState::kQueued) {
    for (const auto& other : active_) {
      if (other.get() == &job) break;
      if (other->state == JobState::kQueued) ++s.position;
    }
  }
  if (job.state == JobState::kDone) s.result = job.result;
  const auto now = Clock::now();
  const auto started = job.state == JobState::kQueued ? now : job.started;
  s.queue_seconds = std::chrono::duration<double>(started - job.admitted).count();
  const auto end = job.ended_state() ? job.ended : now;
  s.total_seconds = std::chrono::duration<double>(end - job.admitted).count();
  return s;
}

std::optional<JobStatus> BatchEngine::status(uint64_t id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return describe(*it->second);
}

std::optional<JobStatus> BatchEngine::wait(uint64_t id) {
  std::unique_lock<std::mutex> lock(mutex_);
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  const auto job = it->second;  // kept alive even if forgotten meanwhile
  changed_.wait(lock, [&] { return job->ended_state(); });
  return describe(*job);
}

std::optional<JobStatus> BatchEngine::wait_change(uint64_t id, uint64_t* epoch,
                                                  Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mutex_);
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  const auto job = it->second;
  changed_.wait_until(lock, deadline, [&] { return epoch_ != *epoch; });
  *epoch = epoch_;
  return describe(*job);
}

bool BatchEngine::expired(uint64_t id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return id >= 1 && id < next_id_ && jobs_.count(id) == 0;
}

std::vector<JobStatus> BatchEngine::active() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<JobStatus> out;
  for (const auto& job : active_) out.push_back(describe(*job));
  return out;
}

int BatchEngine::cancel_running() {
  std::lock_guard<std::mutex> lock(mutex_);
  int count = 0;
  for (const auto& job : active_) {
    if (job->state != JobState::kRunning || job->cancel_requested) continue;
    job->cancel_requested = true;
    ++count;
  }
  wake_.notify_all();
  return count;
}

bool BatchEngine::cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second->ended_state()) return false;
  const auto job = it->second;
  if (job->state == JobState::kQueued) {
    finish(job, JobState::kCancelled, "");
  } else {
    // Its rows may be inside the UNet call now: the scheduler thread ends it afterwards.
    job->cancel_requested = true;
    wake_.notify_all();
  }
  return true;
}

void BatchEngine::forget(uint64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = jobs_.find(id);
  if (it != jobs_.end() && it->second->ended_state()) jobs_.erase(it);
}

bool BatchEngine::drain(Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mutex_);
  draining_ = true;
  const auto idle = [&] { return active_.empty(); };
  // wait_until with time_point::max overflows inside some standard libraries.
  if (deadline == Clock::time_point::max()) {
    changed_.wait(lock, idle);
    return true;
  }
  if (changed_.wait_until(lock, deadline, idle)) return true;
  const auto left = active_;
  for (const auto& job : left) {
    if (job->state == JobState::kQueued) {
      finish(job, JobState::kCancelled, "the server stopped");
    } else {
      job->cancel_requested = true;
    }
  }
  wake_.notify_all();
  changed_.wait(lock, idle);
  return false;
}

EngineStats BatchEngine::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  EngineStats s = stats_;
  // A call in progress counts up to now: added only at its end, a call that began before a
  // window and ended in it would count whole in it (busy 105% over 1.5 s with slow calls).
  if (call_begin_ != std::chrono::steady_clock::time_point{})
    s.busy_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - call_begin_).count();
  s.queued = s.running = 0;
  for (const auto& job : active_) (job->state == JobState::kQueued ? s.queued : s.running)++;
  return s;
}

// With the lock held.
void BatchEngine::finish(const std::shared_ptr<Job>& job, JobState state,
                         const std::string& error) {
  if (job->ended_state()) return;
  job->state = state;
  job->error = error;
  job->ended = Clock::now();
  if (job->started == Clock::time_point{}) job->started = job->ended;
  active_.erase(std::remove(active_.begin(), active_.end(), job), active_.end());
  if (state == JobState::kDone) {
    ++stats_.requests_done;
    stats_.images += job->request.n;
    stats_.latency_seconds.observe(
        std::chrono::duration<double>(job->ended - job->admitted).count());
  } else if (state == JobState::kFailed) {
    ++stats_.requests_failed;
  } else {
    ++stats_.requests_cancelled;
  }
  // Only the result is needed from here on.
  job->sample = at::Tensor();
  job->step_noise.clear();
  job->labels.reset();
  ended_.push_back(job->id);
  while (ended_.size() > options_.keep_finished) {
    jobs_.erase(ended_.front());
    ended_.pop_front();
  }
  ++epoch_;
  changed_.notify_all();
}

void BatchEngine::expire_timed_out() {
  if (options_.request_timeout <= 0) return;
  const auto now = Clock::now();
  const auto limit = std::chrono::duration<double>(options_.request_timeout);
  std::vector<std::shared_ptr<Job>> late;
  for (const auto& job : active_)
    if (now - job->admitted > limit) late.push_back(job);
  for (const auto& job : late) {
    job->timed_out = true;
    std::ostringstream message;
    message << "the request timed out after " << options_.request_timeout
            << " s (--request-timeout)";
    finish(job, JobState::kFailed, message.str());
  }
}

std::vector<BatchEngine::Row> BatchEngine::take_batch(std::unique_lock<std::mutex>& lock,
                                                      std::shared_ptr<Job>* edit) {
  while (!stop_) {
    // Cancelled running requests end here, between two UNet calls.
    std::vector<std::shared_ptr<Job>> cancelled;
    for (const auto& job : active_)
      if (job->cancel_requested) cancelled.push_back(job);
    for (const auto& job : cancelled) finish(job, JobState::kCancelled, "");
    expire_timed_out();
    if (active_.empty()) {
      wake_.wait(lock);
      continue;
    }
    int64_t pending = 0;
    bool any_running = false;
    Clock::time_point oldest = Clock::time_point::max();
    for (const auto& job : active_) {
      if (!job->request.edit)
        for (int s : job->steps_done) pending += s < job->num_steps();
      if (job->state == JobState::kRunning) any_running = true;
      oldest = std::min(oldest, job->admitted);
    }
    // An idle engine may wait a little for company; images already in flight never wait. The
    // wait counts from the end of the last call too: closed-loop clients answered by that call
    // need a moment to send their next request, and without it a steady load splits into two
    // halves that alternate, each a half-size batch.
    if (options_.batch_wait_ms > 0 && !any_running && pending < options_.max_batch) {
      const auto deadline =
          std::max(oldest, last_call_end_) + std::chrono::milliseconds(options_.batch_wait_ms);
      if (Clock::now() < deadline) {
        wake_.wait_until(lock, deadline);
        continue;
      }
    }
    // Oldest request first, its images in order: early requests finish first. An edit runs alone
    // when its turn comes; later requests do not overtake it.
    std::vector<Row> rows;
    const auto now = Clock::now();
    for (const auto& job : active_) {
      if (job->request.edit) {
        if (!rows.empty()) break;
        job->state = JobState::kRunning;
        job->started = now;
        stats_.queue_seconds.observe(std::chrono::duration<double>(now - job->admitted).count());
        ++epoch_;
        changed_.notify_all();
        *edit = job;
        return {};
      }
      for (int64_t i = 0; i < job->request.n; ++i) {
        if (static_cast<int>(rows.size()) == options_.max_batch) break;
        if (job->steps_done[i] >= job->num_steps()) continue;
        if (job->state == JobState::kQueued) {
          job->state = JobState::kRunning;
          job->started = now;
          stats_.queue_seconds.observe(std::chrono::duration<double>(now - job->admitted).count());
          ++epoch_;
        }
        rows.push_back({job, i});
      }
    }
    if (!rows.empty()) {
      changed_.notify_all();
      return rows;
    }
    wake_.wait(lock);  // nothing left to compute (cannot happen while requests are active)
  }
  return {};
}

void BatchEngine::evaluate(const std::vector<Row>& rows) {
  // Runs: the unit of the scheduler's arithmetic, each computed exactly as the pipeline would.
  struct JobRun {
    Job* job;
    int64_t begin, count;
    int step;
  };
  std::vector<JobRun> runs;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& r : rows) {
      const int step = r.job->steps_done[r.index];
      if (!runs.empty() && runs.back().job == r.job.get() && runs.back().step == step &&
          runs.back().begin + runs.back().count == r.index) {
        ++runs.back().count;
      } else {
        runs.push_back({r.job.get(), r.index, 1, step});
      }
    }
  }
  auto compute = [&](const std::vector<JobRun>& part) {
    if (options_.before_evaluate) {
      uint64_t last = 0;
      for (const auto& run : part) {
        if (run.job->id != last) options_.before_evaluate(run.job->id);
        last = run.job->id;
      }
    }
    std::vector<at::Tensor> inputs, labels;
    std::vector<double> times;
    for (const auto& run : part) {
      const auto x = run.job->sample.narrow(0, run.begin, run.count);
      inputs.push_back(run.job->scheduler.scale_model_input(x, run.step));
      times.insert(times.end(), run.count, run.job->scheduler.timesteps()[run.step]);
      if (run.job->labels) labels.push_back(run.job->labels->narrow(0, run.begin, run.count));
    }
    const auto x = inputs.size() == 1 ? inputs.front() : at::cat(inputs);
    const auto t = at::tensor(times, at::TensorOptions().dtype(at::kDouble));
    std::optional<at::Tensor> l;
    if (!labels.empty()) l = labels.size() == 1 ? labels.front() : at::cat(labels);
    if (x.is_cpu()) adapt_cpu_threads();
    const auto out = pipeline_.unet()->forward(x, t, l);
    std::vector<at::Tensor> next;
    int64_t offset = 0;
    for (const auto& run : part) {
      Job& job = *run.job;
      const auto noise = job.step_noise.empty()
                             ? at::Tensor()
                             : job.step_noise[run.step].narrow(0, run.begin, run.count);
      next.push_back(job.scheduler.step_with_noise(out.narrow(0, offset, run.count), run.step,
                                                   job.sample.narrow(0, run.begin, run.count),
                                                   noise));
      offset += run.count;
    }
    return next;
  };
  auto apply = [&](const std::vector<JobRun>& part, const std::vector<at::Tensor>& next) {
    for (size_t i = 0; i < part.size(); ++i)
      part[i].job->sample.narrow(0, part[i].begin, part[i].count).copy_(next[i]);
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& run : part) {
      for (int64_t i = run.begin; i < run.begin + run.count; ++i) ++run.job->steps_done[i];
    }
    ++epoch_;
    changed_.notify_all();
  };

  std::vector<Job*> failed;
  std::vector<std::string> reasons;
  size_t evaluations = 0;
  double call_seconds = -1;
  try {
    ++evaluations;
    const auto call_begin = Clock::now();
    apply(runs, compute(runs));
    call_seconds = std::chrono::duration<double>(Clock::now() - call_begin).count();
  } catch (const std::exception& shared_error) {
    // One request's fault must not fail its neighbours: each request alone, once more.
    std::vector<Job*> order;
    for (const auto& run : runs)
      if (std::find(order.begin(), order.end(), run.job) == order.end()) order.push_back(run.job);
    if (order.size() == 1) {
      failed.push_back(order.front());
      reasons.push_back(shared_error.what());
    } else {
      for (Job* job : order) {
        std::vector<JobRun> own;
        for (const auto& run : runs)
          if (run.job == job) own.push_back(run);
        try {
          ++evaluations;
          apply(own, compute(own));
        } catch (const std::exception& e) {
          failed.push_back(job);
          reasons.push_back(e.what());
        }
      }
    }
  }

  // Requests whose every image has finished become images.
  std::vector<std::shared_ptr<Job>> complete;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.evaluations += evaluations;
    if (call_seconds >= 0) stats_.call_seconds.observe(call_seconds);
    stats_.batch_size.observe(static_cast<double>(rows.size()));
    for (const auto& r : rows) {
      const Job& job = *r.job;
      if (std::find(failed.begin(), failed.end(), &job) != failed.end()) continue;
      const bool all = std::all_of(job.steps_done.begin(), job.steps_done.end(),
                                   [&](int s) { return s >= job.num_steps(); });
      if (all && std::find(complete.begin(), complete.end(), r.job) == complete.end())
        complete.push_back(r.job);
    }
    for (size_t i = 0; i < failed.size(); ++i) {
      for (const auto& r : rows) {
        if (r.job.get() == failed[i]) {
          finish(r.job, JobState::kFailed, reasons[i]);
          break;
        }
      }
    }
  }
  for (const auto& job : complete) {
    GenerateResult result;
    std::string error;
    try {
      result.images =
          pipelines::to_unit_range(job->sample).to(at::kCPU).permute({0, 2, 3, 1}).contiguous();
      result.class_labels = job->class_labels;
      result.timesteps = job->scheduler.timesteps();
    } catch (const std::exception& e) {
      error = e.what();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (error.empty()) {
      job->result = std::move(result);
      finish(job, job->cancel_requested ? JobState::kCancelled : JobState::kDone, "");
    } else {
      finish(job, JobState::kFailed, error);
    }
  }
}

namespace {
struct EditStopped {};  // thrown from an edit's step callback to end it between two steps
}  // namespace

void BatchEngine::run_edit(const std::shared_ptr<Job>& job) {
  EditOptions o = *job->request.edit;
  o.on_step = [&](int step, int num_steps, double, const at::Tensor&) {
    std::lock_guard<std::mutex> lock(mutex_);
    job->edit_steps = num_steps;
    job->steps_done[0] = step + 1;
    ++stats_.evaluations;
    stats_.batch_size.observe(static_cast<double>(o.batch_size));
    ++epoch_;
    changed_.notify_all();
    if (job->cancel_requested || stop_) throw EditStopped{};
    if (options_.request_timeout > 0 &&
        Clock::now() - job->admitted > std::chrono::duration<double>(options_.request_timeout))
      throw EditStopped{};
  };
  GenerateResult result;
  std::string error;
  bool stopped = false;
  try {
    if (options_.before_evaluate) options_.before_evaluate(job->id);
    EditResult r = edit(pipeline_, o);
    result.images = r.images;
    result.class_labels = r.class_labels;
  } catch (const EditStopped&) {
    stopped = true;
  } catch (const Error& e) {
    error = e.what();
    std::lock_guard<std::mutex> lock(mutex_);
    job->refused = true;
  } catch (const std::exception& e) {
    error = e.what();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopped && !job->cancel_requested && !stop_) {
    expire_timed_out();  // it ran past its time: failed, timed out
    if (!job->ended_state()) {
      job->timed_out = true;
      finish(job, JobState::kFailed, "the request timed out (--request-timeout)");
    }
  } else if (stopped) {
    finish(job, JobState::kCancelled, "");
  } else if (!error.empty()) {
    finish(job, JobState::kFailed, error);
  } else {
    job->result = std::move(result);
    finish(job, JobState::kDone, "");
  }
}

void BatchEngine::run() {
  c10::InferenceMode inference;
  // OpenMP's thread count is per thread: this one runs the UNet, so it sets its own.
  if (options_.threads > 0) at::set_num_threads(options_.threads);
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    std::shared_ptr<Job> edit_job;
    const auto rows = take_batch(lock, &edit_job);
    if (!edit_job && rows.empty()) continue;
    const auto begin = Clock::now();
    call_begin_ = begin;
    lock.unlock();
    if (edit_job)
      run_edit(edit_job);
    else
      evaluate(rows);
    lock.lock();
    last_call_end_ = Clock::now();
    call_begin_ = {};
    stats_.busy_seconds += std::chrono::duration<double>(last_call_end_ - begin).count();
  }
}

}  // namespace cm::server
