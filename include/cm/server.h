// BatchEngine: serving a consistency model to many clients at once. One scheduler thread forms
// each UNet call from whatever images are waiting, at any sampling step, timestep or class, since
// the UNet takes a timestep per sample. Each request draws its own noise exactly as
// ConsistencyModelPipeline would for the same arguments, so an image never depends on what it was
// batched with (docs/server.md).
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cm/editing.h"
#include "cm/error.h"
#include "cm/pipeline.h"

namespace cm::server {

// What a client asks for: GenerateOptions' arguments that an HTTP request can carry.
struct ImageRequest {
  uint64_t seed = 0;
  int n = 1;  // images, as GenerateOptions::batch_size
  int num_inference_steps = 1;
  std::vector<int64_t> timesteps;     // explicit descending indices; override the step count
  std::vector<int64_t> class_labels;  // empty: random following the seed; one: for all; n
  // A zero-shot edit (cm::edit with these options) rather than a generation: run on the scheduler
  // thread between two batches, alone. seed, n, steps and class_labels above describe it.
  std::shared_ptr<const EditOptions> edit;
};

enum class JobState { kQueued, kRunning, kDone, kFailed, kCancelled };
const char* job_state_name(JobState state);  // "queued", "running", ...

struct JobStatus {
  uint64_t id = 0;
  ImageRequest request;
  JobState state = JobState::kQueued;
  int64_t position = 0;  // queued: requests ahead of this one
  int step = 0;          // steps every image of the request has finished
  int num_steps = 0;
  std::string error;         // failed: why
  bool timed_out = false;    // failed because it outlived EngineOptions::request_timeout
  bool refused = false;      // failed because cm::edit refused the edit's options (cm::Error)
  GenerateResult result;     // done: images [n, H, W, C] in [0, 1], labels, timesteps
  double queue_seconds = 0;  // admission to the first network evaluation
  double total_seconds = 0;  // admission to the end
};

// Thrown by submit() when --max-queue requests are already waiting or running.
class QueueFull : public Error {
 public:
  using Error::Error;
};
// Thrown by submit() once drain() has begun.
class ShuttingDown : public Error {
 public:
  using Error::Error;
};

struct EngineOptions {
  int max_batch = 16;          // images per UNet call
  int batch_wait_ms = 0;       // an idle engine waits up to this long (from the first waiting
                               // request, or the end of the last call if later) to fill a batch
  int max_queue = 64;          // requests waiting or running; more are refused with QueueFull
  int threads = 0;             // intra-op threads of the scheduler thread (0: LibTorch's default)
  size_t keep_finished = 256;  // finished jobs kept for status(); the oldest are forgotten
  double request_timeout = 0;  // seconds from admission; a request still unfinished then fails
                               // (timed_out) at the next UNet call. 0: none
  // Called for every request in a UNet call just before it runs, from the scheduler thread. A
  // throw fails that request alone: tests use it to inject a fault.
  std::function<void(uint64_t id)> before_evaluate;
};

// Fixed-bucket histogram in Prometheus' cumulative style.
struct Histogram {
  std::vector<double> bounds;    // upper bounds, ascending (+Inf is implicit)
  std::vector<uint64_t> counts;  // per bucket, not cumulative; one more than bounds
  double sum = 0;
  uint64_t count = 0;
  explicit Histogram(std::vector<double> upper_bounds = {});
  void observe(double value);
};

struct EngineStats {
  uint64_t requests_done = 0, requests_failed = 0, requests_cancelled = 0;
  uint64_t images = 0;       // images finished
  uint64_t evaluations = 0;  // UNet calls
  double busy_seconds = 0;   // time spent computing batches and edits (utilisation)
  int64_t queued = 0;        // requests waiting for their first evaluation
  int64_t running = 0;
  Histogram batch_size, queue_seconds, latency_seconds;
  Histogram call_seconds;  // one batch's UNet call and scheduler step (generation)
};

class BatchEngine {
 public:
  // The pipeline must outlive the engine; the engine is its only user while it runs.
  BatchEngine(ConsistencyModelPipeline& pipeline, EngineOptions options = {});
  ~BatchEngine();  // stops the scheduler thread; unfinished requests end cancelled
  BatchEngine(const BatchEngine&) = delete;
  BatchEngine& operator=(const BatchEngine&) = delete;

  // Checks the request (cm::Error naming the field), draws its noise and queues it. Throws
  // QueueFull or ShuttingDown when it cannot be taken.
  uint64_t submit(const ImageRequest& request);
  // std::nullopt for an unknown (or forgotten) id.
  std::optional<JobStatus> status(uint64_t id) const;
  // Blocks until the request has ended (done, failed or cancelled).
  std::optional<JobStatus> wait(uint64_t id);
  // Blocks until anything in the engine has changed since `*epoch` (a request admitted, started,
  // stepped or ended) or until `deadline`, then returns the request's status and sets `*epoch`
  // to the current one: a waiter sees every step without polling. std::nullopt for an unknown id.
  std::optional<JobStatus> wait_change(uint64_t id, uint64_t* epoch,
                                       std::chrono::steady_clock::time_point deadline);
  // True for an id this engine handed out whose result has since been forgotten (HTTP 410),
  // false for one it never handed out or still knows.
  bool expired(uint64_t id) const;
  // Ends a queued or running request (a running one between two UNet calls); false when it had
  // already ended or is unknown.
  bool cancel(uint64_t id);
  void forget(uint64_t id);  // drops an ended request's result
  // Refuses new requests from now on and returns once every accepted one has ended, or at
  // `deadline`, when the requests still unfinished are cancelled; true when none had to be.
  bool drain(std::chrono::steady_clock::time_point deadline =
                 std::chrono::steady_clock::time_point::max());
  // The requests queued or running, oldest first.
  std::vector<JobStatus> active() const;
  // Ends every request now running (the queued ones stay): AUTOMATIC1111's interrupt.
  int cancel_running();
  EngineStats stats() const;
  const EngineOptions& options() const { return options_; }

 private:
  struct Job;
  struct Row {  // one image of one request in a UNet call
    std::shared_ptr<Job> job;
    int64_t index;
  };
  void run();
  // The next work: rows of one UNet call, or an edit request to run alone (`edit`).
  std::vector<Row> take_batch(std::unique_lock<std::mutex>& lock, std::shared_ptr<Job>* edit);
  void evaluate(const std::vector<Row>& rows);
  void run_edit(const std::shared_ptr<Job>& job);
  void expire_timed_out();  // with the lock held
  void finish(const std::shared_ptr<Job>& job, JobState state, const std::string& error);
  JobStatus describe(const Job& job) const;
  std::shared_ptr<Job> prepare(const ImageRequest& request) const;

  ConsistencyModelPipeline& pipeline_;
  EngineOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;     // the scheduler thread: new work, cancel or stop
  std::condition_variable changed_;  // waiters: some request stepped or ended
  uint64_t epoch_ = 0;               // counts those changes
  std::map<uint64_t, std::shared_ptr<Job>> jobs_;
  std::deque<std::shared_ptr<Job>> active_;  // admitted, not ended, in arrival order
  std::deque<uint64_t> ended_;               // ended ids, oldest first, for keep_finished
  uint64_t next_id_ = 1;
  bool draining_ = false;
  bool stop_ = false;
  EngineStats stats_;
  std::chrono::steady_clock::time_point last_call_end_{};  // for batch_wait_ms
  // When the call now running began (the epoch between calls): busy time counts it as it runs,
  // so the busy counter's rate over any window stays at most 1.
  std::chrono::steady_clock::time_point call_begin_{};
  std::thread thread_;
};

}  // namespace cm::server
