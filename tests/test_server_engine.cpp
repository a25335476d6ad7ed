// BatchEngine without HTTP: requests batched across steps, timesteps and classes must give the
// images ConsistencyModelPipeline gives for each request alone.
#include <gtest/gtest.h>

#include <future>
#include <iostream>
#include <thread>

#include "cm/editing.h"
#include "cm/server.h"
#include "golden.h"

namespace cm::test {
namespace {

using server::BatchEngine;
using server::EngineOptions;
using server::ImageRequest;
using server::JobState;

// One intra-op thread, here and in the engine: OpenMP's spinning threads on a busy machine cost
// far more than they give on a 32x32 model.
EngineOptions one_thread() {
  EngineOptions o;
  o.threads = 1;
  return o;
}

ConsistencyModelPipeline load() {
  at::set_num_threads(1);
  return ConsistencyModelPipeline::from_pretrained(golden("tiny_cond").model_dir);
}

GenerateResult alone(ConsistencyModelPipeline& pipe, const ImageRequest& r) {
  GenerateOptions o;
  o.batch_size = r.n;
  o.seed = r.seed;
  o.num_inference_steps = r.num_inference_steps;
  o.timesteps = r.timesteps;
  o.class_labels = r.class_labels;
  return pipe(o);
}

// One-step, two-step, three-step and explicit-timestep requests, random and fixed classes.
std::vector<ImageRequest> mixed_requests() {
  std::vector<ImageRequest> rs(6);
  rs[0].seed = 1, rs[0].n = 2, rs[0].class_labels = {3};
  rs[1].seed = 2, rs[1].n = 3, rs[1].num_inference_steps = 2;
  rs[2].seed = 3, rs[2].n = 1, rs[2].timesteps = {30, 10, 0}, rs[2].class_labels = {7};
  rs[3].seed = 4, rs[3].n = 2, rs[3].num_inference_steps = 3, rs[3].class_labels = {1, 999};
  rs[4].seed = 5, rs[4].n = 1;
  rs[5].seed = 1, rs[5].n = 2, rs[5].timesteps = {22, 0}, rs[5].class_labels = {3};
  return rs;
}

int evaluations_alone(const std::vector<ImageRequest>& rs) {
  int total = 0;
  for (const auto& r : rs)
    total += r.timesteps.empty() ? r.num_inference_steps : static_cast<int>(r.timesteps.size());
  return total;
}

// Submits every request from its own thread at once and waits for all.
std::vector<server::JobStatus> run_concurrently(BatchEngine& engine,
                                                const std::vector<ImageRequest>& rs) {
  std::vector<std::future<server::JobStatus>> futures;
  for (const auto& r : rs) {
    futures.push_back(std::async(std::launch::async, [&engine, r] {
      const uint64_t id = engine.submit(r);
      return *engine.wait(id);
    }));
  }
  std::vector<server::JobStatus> out;
  for (auto& f : futures) out.push_back(f.get());
  return out;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

TEST(BatchEngine, MixedConcurrentRequestsEqualThePipelineAlone) {
  auto pipe = load();
  const auto rs = mixed_requests();
  std::vector<GenerateResult> expected;
  for (const auto& r : rs) expected.push_back(alone(pipe, r));

  EngineOptions options = one_thread();
  options.max_batch = 4;
  options.batch_wait_ms = 300;  // lets all six arrive before the first call
  BatchEngine engine(pipe, options);
  const auto got = run_concurrently(engine, rs);
  double worst = 0;
  for (size_t i = 0; i < rs.size(); ++i) {
    ASSERT_EQ(got[i].state, JobState::kDone) << i << ": " << got[i].error;
    const auto& image = got[i].result.images;
    ASSERT_EQ(image.sizes(), expected[i].images.sizes()) << i;
    EXPECT_EQ(got[i].result.class_labels, expected[i].class_labels) << i;
    EXPECT_EQ(got[i].result.timesteps, expected[i].timesteps) << i;
    const double d = max_abs_diff(image, expected[i].images);
    EXPECT_LE(d, 1e-5) << "request " << i;
    worst = std::max(worst, d);
  }
  std::cout << "max |batched - alone| = " << worst << std::endl;
  RecordProperty("max_abs_diff", std::to_string(worst));
  // The same requests alone take one UNet call per step each; shared calls take fewer.
  const auto stats = engine.stats();
  EXPECT_LT(stats.evaluations, static_cast<uint64_t>(evaluations_alone(rs)));
  EXPECT_EQ(stats.images, 11u);
  EXPECT_EQ(stats.requests_done, rs.size());
  EXPECT_EQ(stats.queued + stats.running, 0);
}

TEST(BatchEngine, MaxBatchOneAndSixtyFourGiveTheSameImages) {
  auto pipe = load();
  const auto rs = mixed_requests();
  std::vector<at::Tensor> images[2];
  int i = 0;
  for (int max_batch : {1, 64}) {
    EngineOptions options = one_thread();
    options.max_batch = max_batch;
    BatchEngine engine(pipe, options);
    for (const auto& s : run_concurrently(engine, rs)) {
      ASSERT_EQ(s.state, JobState::kDone) << s.error;
      images[i].push_back(s.result.images);
    }
    if (max_batch == 1)
      EXPECT_EQ(engine.stats().evaluations, uint64_t(2 * 1 + 3 * 2 + 3 + 2 * 3 + 1 + 2 * 2));
    ++i;
  }
  double worst = 0;
  for (size_t r = 0; r < rs.size(); ++r) {
    const double d = max_abs_diff(images[0][r], images[1][r]);
    EXPECT_LE(d, 1e-5) << "request " << r;
    worst = std::max(worst, d);
  }
  std::cout << "max |max-batch 1 - max-batch 64| = " << worst << std::endl;
}

// A before_evaluate hook that holds the first UNet call of `id` until released.
struct Gate {
  uint64_t id = 0;
  std::promise<void> reached, release;
  std::shared_future<void> released{release.get_future().share()};
  bool first = true;
  void operator()(uint64_t job) {
    if (job != id || !first) return;
    first = false;
    reached.set_value();
    released.wait();
  }
};

TEST(BatchEngine, CancelQueuedAndRunningRequests) {
  auto pipe = load();
  auto gate = std::make_shared<Gate>();
  gate->id = 1;  // the engine numbers requests from 1
  EngineOptions options = one_thread();
  options.max_batch = 1;
  options.before_evaluate = [gate](uint64_t id) { (*gate)(id); };
  BatchEngine engine(pipe, options);
  ImageRequest slow;
  slow.num_inference_steps = 20;
  const uint64_t running = engine.submit(slow);
  ASSERT_EQ(running, 1u);
  gate->reached.get_future().wait();
  const uint64_t queued = engine.submit(ImageRequest{});
  const uint64_t behind = engine.submit(ImageRequest{});
  EXPECT_EQ(engine.status(running)->state, JobState::kRunning);
  EXPECT_EQ(engine.status(queued)->state, JobState::kQueued);
  EXPECT_EQ(engine.status(queued)->position, 0);
  EXPECT_EQ(engine.status(behind)->position, 1);

  EXPECT_TRUE(engine.cancel(queued));
  EXPECT_EQ(engine.status(queued)->state, JobState::kCancelled);
  EXPECT_EQ(engine.status(behind)->position, 0);
  EXPECT_TRUE(engine.cancel(running));
  gate->release.set_value();
  const auto s = *engine.wait(running);
  EXPECT_EQ(s.state, JobState::kCancelled);
  EXPECT_LT(s.step, 20);                 // ended between two calls, not after all twenty
  EXPECT_FALSE(engine.cancel(running));  // already ended
  EXPECT_FALSE(engine.cancel(12345));
  // The engine carries on with the rest.
  EXPECT_EQ(engine.wait(behind)->state, JobState::kDone);
  EXPECT_EQ(engine.stats().requests_cancelled, 2u);
}

// batch_wait_ms also counts from the end of the last call: B, queued while A's call ran, waits
// for C, sent as soon as A is answered, so B and C share one call (closed-loop clients would
// otherwise alternate in two half-size batches). Counted from B's arrival alone, B would run at
// once, by itself: three calls instead of two.
TEST(BatchEngine, BatchWaitCountsFromTheLastCall) {
  auto pipe = load();
  EngineOptions options = one_thread();
  options.batch_wait_ms = 1000;
  std::promise<void> a_started;
  options.before_evaluate = [&](uint64_t id) {
    if (id != 1) return;
    a_started.set_value();
    std::this_thread::sleep_for(std::chrono::milliseconds(2000));  // longer than the wait
  };
  BatchEngine engine(pipe, options);
  ImageRequest a, b, c;
  a.seed = 1, b.seed = 2, c.seed = 3;
  const uint64_t ia = engine.submit(a);
  a_started.get_future().wait();
  const uint64_t ib = engine.submit(b);
  EXPECT_EQ(engine.wait(ia)->state, JobState::kDone);
  const uint64_t ic = engine.submit(c);
  EXPECT_EQ(engine.wait(ib)->state, JobState::kDone);
  EXPECT_EQ(engine.wait(ic)->state, JobState::kDone);
  const auto stats = engine.stats();
  EXPECT_EQ(stats.evaluations, 2u);
  EXPECT_EQ(stats.batch_size.sum, 3.0);  // A alone, then B with C
  EXPECT_GT(stats.busy_seconds, 2.0);    // A's call, the hook's sleep included
}

TEST(BatchEngine, AFaultFailsOnlyItsRequest) {
  auto pipe = load();
  ImageRequest good;
  good.seed = 9, good.n = 2, good.num_inference_steps = 2, good.class_labels = {4};
  const auto expected = alone(pipe, good);
  EngineOptions options = one_thread();
  options.batch_wait_ms = 300;  // both requests in one call, so the fault hits a shared call
  options.before_evaluate = [](uint64_t id) {
    if (id == 1) throw Error("injected fault");
  };
  BatchEngine engine(pipe, options);
  const auto got = run_concurrently(engine, {ImageRequest{}, good});
  // Which request got id 1 depends on the threads' order: exactly one fails.
  int failed = 0;
  for (const auto& s : got) {
    if (s.id == 1) {
      EXPECT_EQ(s.state, JobState::kFailed);
      EXPECT_EQ(s.error, "injected fault");
      ++failed;
    } else {
      EXPECT_EQ(s.state, JobState::kDone) << s.error;
    }
  }
  EXPECT_EQ(failed, 1);
  if (got[1].state == JobState::kDone)
    EXPECT_LE(max_abs_diff(got[1].result.images, expected.images), 1e-5);
  EXPECT_EQ(engine.stats().requests_failed, 1u);
}

TEST(BatchEngine, QueueLimitAndDrain) {
  auto pipe = load();
  auto gate = std::make_shared<Gate>();
  gate->id = 1;
  EngineOptions options = one_thread();
  options.max_queue = 2;
  options.before_evaluate = [gate](uint64_t id) { (*gate)(id); };
  BatchEngine engine(pipe, options);
  engine.submit(ImageRequest{});
  gate->reached.get_future().wait();
  engine.submit(ImageRequest{});
  EXPECT_THROW(engine.submit(ImageRequest{}), server::QueueFull);
  gate->release.set_value();
  engine.drain();  // returns once both have ended
  EXPECT_EQ(engine.stats().requests_done, 2u);
  EXPECT_THROW(engine.submit(ImageRequest{}), server::ShuttingDown);
}

TEST(BatchEngine, BadRequestsNameTheField) {
  auto pipe = load();
  BatchEngine engine(pipe, one_thread());
  auto message = [&](const ImageRequest& r) {
    try {
      engine.submit(r);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  ImageRequest r;
  r.n = 0;
  EXPECT_EQ(message(r).rfind("n:", 0), 0u) << message(r);
  r = {};
  r.class_labels = {1000};
  EXPECT_NE(message(r).find("class label 1000"), std::string::npos) << message(r);
  r = {};
  r.timesteps = {0, 10};
  EXPECT_EQ(message(r).rfind("timesteps:", 0), 0u) << message(r);
  r = {};
  r.num_inference_steps = 41;
  EXPECT_EQ(message(r).rfind("num_inference_steps:", 0), 0u) << message(r);
  EXPECT_EQ(engine.stats().queued, 0);
}

// An edit runs whole on the scheduler thread, between the batches of generations around it, and
// gives what cm::edit gives alone.
TEST(BatchEngine, EditsEqualCmEditAloneBetweenGenerations) {
  auto pipe = load();
  const int size = pipe.unet()->config().sample_size;
  auto options = std::make_shared<EditOptions>();
  options->task = EditTask::kInpaint;
  options->image.width = options->image.height = size;
  options->image.channels = 3;
  options->mask = options->image;
  options->mask.channels = 1;
  for (int i = 0; i < size * size * 3; ++i) options->image.pixels.push_back((i * 37) % 256);
  for (int i = 0; i < size * size; ++i)
    options->mask.pixels.push_back(i % size < size / 2 ? 255 : 0);
  options->seed = 11;
  options->batch_size = 2;
  options->num_inference_steps = 3;
  options->class_labels = {5};
  const EditResult expected = edit(pipe, *options);

  ImageRequest e;
  e.seed = 11, e.n = 2, e.num_inference_steps = 3, e.class_labels = {5}, e.edit = options;
  auto requests = mixed_requests();
  requests.insert(requests.begin() + 2, e);
  BatchEngine engine(pipe, one_thread());
  const auto got = run_concurrently(engine, requests);
  EXPECT_EQ(got[2].state, JobState::kDone) << got[2].error;
  EXPECT_EQ(got[2].num_steps, 3);
  EXPECT_EQ(got[2].step, 3);
  EXPECT_EQ(max_abs_diff(got[2].result.images, expected.images), 0.0);
  EXPECT_EQ(got[2].result.class_labels, expected.class_labels);
  for (size_t i = 0; i < requests.size(); ++i) {
    if (i == 2) continue;
    ASSERT_EQ(got[i].state, JobState::kDone) << got[i].error;
    EXPECT_LE(max_abs_diff(got[i].result.images, alone(pipe, requests[i]).images), 1e-5);
  }

  // cm::edit's refusal fails the request as refused (the client's error), nothing else.
  auto bad = std::make_shared<EditOptions>(*options);
  bad->mask.width = 3;
  ImageRequest b = e;
  b.edit = bad;
  const auto refused = *engine.wait(engine.submit(b));
  EXPECT_EQ(refused.state, JobState::kFailed);
  EXPECT_TRUE(refused.refused) << refused.error;
  EXPECT_EQ(engine.wait(engine.submit(ImageRequest{}))->state, JobState::kDone);
}

TEST(BatchEngine, WaitChangeSeesEveryStep) {
  auto pipe = load();
  EngineOptions options = one_thread();
  options.max_batch = 1;
  BatchEngine engine(pipe, options);
  ImageRequest r;
  r.num_inference_steps = 5;
  const uint64_t id = engine.submit(r);
  uint64_t epoch = 0;
  std::vector<int> steps;
  for (;;) {
    const auto s =
        engine.wait_change(id, &epoch, std::chrono::steady_clock::now() + std::chrono::seconds(60));
    ASSERT_TRUE(s);
    if (steps.empty() || steps.back() != s->step) steps.push_back(s->step);
    if (s->state == JobState::kDone) break;
  }
  EXPECT_EQ(steps, (std::vector<int>{0, 1, 2, 3, 4, 5}));
  EXPECT_FALSE(engine.wait_change(999, &epoch, std::chrono::steady_clock::now()));
}

TEST(BatchEngine, ForgottenJobsExpire) {
  auto pipe = load();
  EngineOptions options = one_thread();
  options.keep_finished = 1;
  BatchEngine engine(pipe, options);
  const uint64_t a = engine.submit(ImageRequest{});
  engine.wait(a);
  EXPECT_FALSE(engine.expired(a));
  const uint64_t b = engine.submit(ImageRequest{});
  engine.wait(b);
  EXPECT_FALSE(engine.status(a));
  EXPECT_TRUE(engine.expired(a));
  EXPECT_FALSE(engine.expired(b));
  EXPECT_FALSE(engine.expired(b + 1));  // never handed out
  EXPECT_FALSE(engine.expired(0));
}

TEST(BatchEngine, RequestTimeoutFailsOnlyTheLateRequest) {
  auto pipe = load();
  EngineOptions options = one_thread();
  options.max_batch = 1;
  options.request_timeout = 0.2;
  options.before_evaluate = [](uint64_t id) {
    if (id == 1) std::this_thread::sleep_for(std::chrono::milliseconds(30));
  };
  BatchEngine engine(pipe, options);
  ImageRequest slow;
  slow.num_inference_steps = 40;  // 40 calls of at least 30 ms: past 0.2 s
  const auto late = *engine.wait(engine.submit(slow));
  EXPECT_EQ(late.state, JobState::kFailed);
  EXPECT_TRUE(late.timed_out);
  EXPECT_NE(late.error.find("timed out"), std::string::npos) << late.error;
  EXPECT_LT(late.step, 40);
  EXPECT_EQ(engine.wait(engine.submit(ImageRequest{}))->state, JobState::kDone);
}

TEST(BatchEngine, InterruptAndDrainDeadlineCancelRunningRequests) {
  auto pipe = load();
  EngineOptions options = one_thread();
  options.max_batch = 1;
  options.before_evaluate = [](uint64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  };
  BatchEngine engine(pipe, options);
  ImageRequest slow;
  slow.num_inference_steps = 40;
  const uint64_t a = engine.submit(slow);
  const uint64_t b = engine.submit(slow);
  uint64_t epoch = 0;
  while (engine.wait_change(a, &epoch, std::chrono::steady_clock::now() + std::chrono::seconds(10))
             ->state != JobState::kRunning) {
  }
  EXPECT_EQ(engine.active().size(), 2u);
  EXPECT_EQ(engine.cancel_running(), 1);  // a runs; b waits
  EXPECT_EQ(engine.wait(a)->state, JobState::kCancelled);
  // b now runs; the drain's deadline passes long before its 40 steps of 10 ms are done.
  EXPECT_FALSE(engine.drain(std::chrono::steady_clock::now() + std::chrono::milliseconds(50)));
  EXPECT_EQ(engine.status(b)->state, JobState::kCancelled);
  EXPECT_TRUE(engine.active().empty());
}

}  // namespace
}  // namespace cm::test
