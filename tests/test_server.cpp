// cm serve as a client sees it: the real binary on a free loopback port, spoken to over HTTP.
// Its images must be cm generate's for the same arguments, however requests are batched.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "cm/image_io.h"
#include "free_port.h"
#include "run_cm.h"
#include "temp_dir_test.h"

namespace cm::test {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

const std::string kModel = std::string(CM_GOLDEN_DIR) + "/tiny_cond/model";
const std::string kKey = "sesame";

std::vector<uint8_t> base64_decode(const std::string& s) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::vector<uint8_t> out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    const int v = value(c);
    if (v < 0) continue;  // '=' padding
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>((acc >> bits) & 0xff));
    }
  }
  return out;
}

// A `cm serve` process: started with its output in a log, stopped with SIGTERM.
class ServerProcess {
 public:
  ServerProcess(const std::vector<std::string>& extra, const std::string& log,
                const std::string& model = kModel)
      : log_(log) {
    port_ = free_port();
    std::vector<std::string> args = {
        CM_BINARY, "serve", "-m", model, "--port", std::to_string(port_), "-t", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~ServerProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  int port() const { return port_; }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(std::chrono::seconds(300));
    c.set_connection_timeout(std::chrono::seconds(5));
    return c;
  }
  // Polls /health until 200; false after the timeout or when the process has died.
  bool wait_ready(std::chrono::seconds timeout = std::chrono::seconds(300)) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return false;
      }
      auto c = client();
      if (auto r = c.Get("/health")) {
        if (r->status == 200) return true;
        if (r->status == 503)
          saw_loading_ = saw_loading_ || r->body.find("loading") != std::string::npos;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  // SIGTERM, then the exit status (-1 when it did not exit within the timeout).
  int terminate(std::chrono::seconds timeout = std::chrono::seconds(300)) {
    ::kill(pid_, SIGTERM);
    return wait_exit(timeout);
  }
  int wait_exit(std::chrono::seconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }
  std::string log() const {
    std::ifstream in(log_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  bool saw_loading() const { return saw_loading_; }

 private:
  std::string log_;
  int port_ = 0;
  pid_t pid_ = -1;
  bool exited_ = false;
  bool saw_loading_ = false;
};

httplib::Headers auth() {
  return {{"Authorization", "Bearer " + kKey}};
}

// One server for most tests: small batches, a small queue, an API key.
class Server : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("cm_test_server_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    server_ = new ServerProcess(
        {"--max-batch", "4", "--max-queue", "6", "--api-key", kKey, "--max-n", "8", "-q"},
        (dir_ / "serve.log").string());
    ready_ = server_->wait_ready();
  }
  static void TearDownTestSuite() {
    delete server_;
    fs::remove_all(dir_);
  }
  void SetUp() override { ASSERT_TRUE(ready_) << server_->log(); }

  static httplib::Result post(const std::string& path, const json& body,
                              const httplib::Headers& headers = auth()) {
    auto c = server_->client();
    return c.Post(path.c_str(), headers, body.dump(), "application/json");
  }
  static json generate(const json& body) {
    auto r = post("/v1/images/generations", body);
    EXPECT_TRUE(r);
    if (!r) return {};
    EXPECT_EQ(r->status, 200) << r->body;
    return json::parse(r->body);
  }
  static std::string path(const std::string& name) { return (dir_ / name).string(); }

  static ServerProcess* server_;
  static bool ready_;
  static fs::path dir_;
};
ServerProcess* Server::server_ = nullptr;
bool Server::ready_ = false;
fs::path Server::dir_;

// Batched with other requests, a sample goes through the UNet beside others: its float values
// stay within 1e-5 of the lone run (test_server_engine), which can move a value sitting on a
// rounding boundary by one step. Anything more (another seed, class or step) changes most values.
::testing::AssertionResult same_pixels(const ImageU8& a, const ImageU8& b) {
  if (a.pixels.size() != b.pixels.size()) return ::testing::AssertionFailure() << "sizes differ";
  size_t off = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    const int d = std::abs(int(a.pixels[i]) - int(b.pixels[i]));
    if (d > 1) return ::testing::AssertionFailure() << "value " << i << " differs by " << d;
    off += d;
  }
  if (off * 100 > a.pixels.size())
    return ::testing::AssertionFailure() << off << " of " << a.pixels.size() << " values differ";
  if (off > 0) std::cout << off << " of " << a.pixels.size() << " values off by one" << std::endl;
  return ::testing::AssertionSuccess();
}

ImageU8 decode(const json& item, TextChunks* text = nullptr) {
  return decode_png(base64_decode(item.at("b64_json").get<std::string>()), text);
}

// The images cm generate writes for these arguments (PNG files of an n-image batch).
std::vector<ImageU8> cm_generate(const std::string& args, int n, const std::string& out,
                                 std::vector<TextChunks>* texts) {
  const auto r = run_cm("generate -m " + kModel + " -t 1 -q -o " + out + ".png " + args);
  EXPECT_EQ(r.status, 0) << r.output;
  std::vector<ImageU8> images;
  for (int i = 0; i < n; ++i) {
    const std::string file = n == 1 ? out + ".png" : out + "_" + std::to_string(i) + ".png";
    TextChunks text;
    images.push_back(read_png(file, &text));
    texts->push_back(text);
  }
  return images;
}

TEST_F(Server, HealthAndModelsArePublic) {
  auto c = server_->client();
  auto h = c.Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(json::parse(h->body)["status"], "ok");
  auto m = c.Get("/v1/models");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200) << m->body;
  const json models = json::parse(m->body);
  EXPECT_EQ(models["data"][0]["id"], kModel);
  EXPECT_EQ(models["data"][0]["size"], "32x32");
  std::cout << "saw /health 503 loading before 200: " << server_->saw_loading() << std::endl;
}

struct Case {
  json body;
  std::string generate_args;
  int n;
};

std::vector<Case> cases() {
  return {
      {{{"prompt", "5"}, {"n", 2}, {"seed", 3}}, "-s 3 --class 5 -n 2", 2},
      {{{"class_labels", {1, 2}}, {"n", 2}, {"seed", 4}, {"timesteps", {22, 0}}},
       "-s 4 --class 1,2 -n 2 --timesteps 22,0",
       2},
      {{{"n", 3}, {"seed", 7}, {"steps", 2}}, "-s 7 -n 3 --steps 2", 3},  // random classes
      {{{"prompt", "999"},
        {"seed", 11},
        {"steps", 3},
        {"response_format", "b64_json"},
        {"output_format", "png"}},
       "-s 11 --class 999 --steps 3",
       1},
  };
}

TEST_F(Server, GenerationsAreCmGeneratesImages) {
  int k = 0;
  for (const auto& c : cases()) {
    std::vector<TextChunks> texts;
    const auto expected =
        cm_generate(c.generate_args, c.n, path("gen" + std::to_string(k++)), &texts);
    const json got = generate(c.body);
    ASSERT_EQ(got["data"].size(), static_cast<size_t>(c.n)) << got.dump();
    for (int i = 0; i < c.n; ++i) {
      TextChunks text;
      const ImageU8 image = decode(got["data"][i], &text);
      EXPECT_EQ(image.width, 32);
      EXPECT_EQ(image.pixels, expected[i].pixels) << c.generate_args << " image " << i;
      EXPECT_EQ(text, texts[i]) << c.generate_args;  // the same `parameters` text
    }
  }
}

TEST_F(Server, ConcurrentMixedRequestsEqualSerialOnes) {
  const auto cs = cases();
  std::vector<json> serial;
  for (const auto& c : cs) serial.push_back(generate(c.body));
  // Six at once (the fixture's --max-queue): the server batches them across steps and classes.
  std::vector<std::future<json>> futures;
  for (size_t i = 0; i < 6; ++i)
    futures.push_back(
        std::async(std::launch::async, [body = cs[i % cs.size()].body] { return generate(body); }));
  for (size_t i = 0; i < futures.size(); ++i) {
    const json got = futures[i].get();
    const json& want = serial[i % cs.size()];
    ASSERT_EQ(got["data"].size(), want["data"].size());
    for (size_t j = 0; j < want["data"].size(); ++j)
      EXPECT_TRUE(same_pixels(decode(got["data"][j]), decode(want["data"][j]))) << i << "/" << j;
  }
}

// The status and the error's `param` of a refused request.
std::pair<int, std::string> refusal(const httplib::Result& r) {
  if (!r) return {-1, ""};
  const json j = json::parse(r->body, nullptr, false);
  std::string param;
  if (j.is_object() && j.contains("error") && j["error"]["param"].is_string())
    param = j["error"]["param"];
  return {r->status, param};
}

TEST_F(Server, BadRequestsAre400NamingTheField) {
  auto c = server_->client();
  auto raw = [&](const std::string& body) {
    return refusal(c.Post("/v1/images/generations", auth(), body, "application/json"));
  };
  using P = std::pair<int, std::string>;
  EXPECT_EQ(raw("{\"n\": 1"), P(400, "body"));
  EXPECT_EQ(raw("[1, 2]"), P(400, "body"));
  EXPECT_EQ(raw("{\"colour\": \"red\"}"), P(400, "colour"));
  EXPECT_EQ(raw("{\"n\": 0}"), P(400, "n"));
  EXPECT_EQ(raw("{\"n\": 9}"), P(400, "n"));  // --max-n 8
  EXPECT_EQ(raw("{\"n\": \"two\"}"), P(400, "n"));
  EXPECT_EQ(raw("{\"steps\": 0}"), P(400, "steps"));
  EXPECT_EQ(raw("{\"steps\": 41}"), P(400, "steps"));
  EXPECT_EQ(raw("{\"seed\": -1}"), P(400, "seed"));
  EXPECT_EQ(raw("{\"timesteps\": [0, 10]}"), P(400, "timesteps"));
  EXPECT_EQ(raw("{\"timesteps\": [40]}"), P(400, "timesteps"));
  EXPECT_EQ(raw("{\"class_labels\": [1000]}"), P(400, "class_labels"));
  EXPECT_EQ(raw("{\"class_labels\": [1, 2], \"n\": 3}"), P(400, "class_labels"));
  EXPECT_EQ(raw("{\"prompt\": \"unicorn\"}"), P(400, "prompt"));
  EXPECT_EQ(raw("{\"prompt\": \"1000\"}"), P(400, "prompt"));
  EXPECT_EQ(raw("{\"response_format\": \"url\"}"), P(400, "response_format"));
  EXPECT_EQ(raw("{\"size\": \"64x64\"}"), P(400, "size"));
  EXPECT_EQ(raw("{\"model\": \"dall-e-3\"}"), P(400, "model"));
  const auto msg = c.Post("/v1/images/generations", auth(), "{\"n\": 0}", "application/json");
  EXPECT_NE(msg->body.find("n: must be between 1 and 8, got 0"), std::string::npos) << msg->body;
  // Over the body limit (64 KiB).
  const std::string big = "{\"prompt\": \"" + std::string(70000, 'a') + "\"}";
  EXPECT_EQ(raw(big).first, 413);
  // The server is still there.
  EXPECT_EQ(c.Get("/health")->status, 200);
}

TEST_F(Server, ApiKeyIsRequiredExceptOnHealthAndModels) {
  auto c = server_->client();
  const std::string body = "{\"seed\": 1}";
  EXPECT_EQ(c.Post("/v1/images/generations", body, "application/json")->status, 401);
  EXPECT_EQ(c.Post("/v1/images/generations", {{"Authorization", "Bearer sesamf"}}, body,
                   "application/json")
                ->status,
            401);
  EXPECT_EQ(c.Post("/v1/images/generations", {{"Authorization", "Bearer sesame2"}}, body,
                   "application/json")
                ->status,
            401);
  EXPECT_EQ(c.Get("/metrics")->status, 401);
  EXPECT_EQ(c.Get("/v1/jobs/job-1")->status, 401);
  EXPECT_EQ(
      c.Post("/v1/images/generations", {{"X-Api-Key", kKey}}, body, "application/json")->status,
      200);
  EXPECT_EQ(c.Get("/health")->status, 200);
  EXPECT_EQ(c.Get("/v1/models")->status, 200);
}

json job_status(const std::string& id, httplib::Client& c) {
  auto r = c.Get(("/v1/jobs/" + id).c_str(), auth());
  EXPECT_TRUE(r && r->status == 200);
  return r ? json::parse(r->body) : json{};
}

json wait_job(const std::string& id, httplib::Client& c) {
  for (int i = 0; i < 6000; ++i) {
    json s = job_status(id, c);
    const std::string st = s.value("status", "");
    if (st != "queued" && st != "running") return s;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return {};
}

TEST_F(Server, JobsLifecycleAndPng) {
  auto c = server_->client();
  const json body = {{"prompt", "5"}, {"n", 2}, {"seed", 3}};
  auto r = post("/v1/jobs", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const json accepted = json::parse(r->body);
  const std::string id = accepted["id"];
  EXPECT_EQ(r->get_header_value("Location"), "/v1/jobs/" + id);
  EXPECT_TRUE(accepted["status"] == "queued" || accepted["status"] == "running") << accepted;
  const json done = wait_job(id, c);
  ASSERT_EQ(done["status"], "done") << done.dump();
  EXPECT_EQ(done["step"], 1);
  const json direct = generate(body);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(decode(done["data"][i]).pixels, decode(direct["data"][i]).pixels);
    httplib::Headers png = auth();
    png.emplace("Accept", "image/png");
    auto raw = c.Get(("/v1/jobs/" + id + "?index=" + std::to_string(i)).c_str(), png);
    ASSERT_TRUE(raw);
    EXPECT_EQ(raw->status, 200);
    EXPECT_EQ(raw->get_header_value("Content-Type"), "image/png");
    const std::vector<uint8_t> bytes(raw->body.begin(), raw->body.end());
    EXPECT_EQ(bytes, base64_decode(done["data"][i]["b64_json"]));
  }
  httplib::Headers png = auth();
  png.emplace("Accept", "image/png");
  EXPECT_EQ(refusal(c.Get(("/v1/jobs/" + id + "?index=2").c_str(), png)),
            std::make_pair(400, std::string("index")));
  EXPECT_EQ(c.Get("/v1/jobs/job-999999", auth())->status, 404);
  EXPECT_EQ(c.Get("/v1/jobs/nonsense", auth())->status, 404);
}

TEST_F(Server, CancelAndQueueLimit) {
  auto c = server_->client();
  // Long requests (40 steps of 8 images, 4 per call) fill the queue of 6.
  const json slow = {{"n", 8}, {"steps", 40}, {"seed", 1}};
  std::vector<std::string> ids;
  int refused = 0;
  for (int i = 0; i < 10; ++i) {
    auto r = post("/v1/jobs", slow);
    ASSERT_TRUE(r);
    if (r->status == 202) {
      ids.push_back(json::parse(r->body)["id"]);
    } else {
      EXPECT_EQ(r->status, 429) << r->body;
      EXPECT_FALSE(r->get_header_value("Retry-After").empty());
      ++refused;
    }
  }
  EXPECT_EQ(ids.size(), 6u);
  EXPECT_EQ(refused, 4);
  // The last is queued behind the others: position counts the queued ones ahead.
  const json last = job_status(ids.back(), c);
  EXPECT_EQ(last["status"], "queued");
  EXPECT_GE(last["position"].get<int>(), 1);
  for (const auto& id : ids) {
    auto r = c.Post(("/v1/jobs/" + id + "/cancel").c_str(), auth(), "", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
  }
  for (const auto& id : ids) {
    const json s = wait_job(id, c);
    EXPECT_EQ(s["status"], "cancelled") << s.dump();
    EXPECT_LT(s["step"].get<int>(), 40);
  }
  EXPECT_EQ(c.Get("/health")->status, 200);
}

double metric(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

TEST_F(Server, MetricsMove) {
  auto c = server_->client();
  const std::string before = c.Get("/metrics", auth())->body;
  const double images = metric(before, "cm_images_total");
  const double evaluations = metric(before, "cm_network_evaluations_total");
  ASSERT_GE(images, 0) << before;
  generate({{"n", 3}, {"steps", 2}, {"seed", 5}});
  const std::string after = c.Get("/metrics", auth())->body;
  EXPECT_EQ(metric(after, "cm_images_total"), images + 3);
  EXPECT_GE(metric(after, "cm_network_evaluations_total"), evaluations + 2);
  EXPECT_GT(metric(after, "cm_engine_busy_seconds_total"),
            metric(before, "cm_engine_busy_seconds_total"));
  EXPECT_EQ(metric(after, "cm_queue_depth"), 0);
  EXPECT_NE(
      after.find("cm_http_requests_total{endpoint=\"POST /v1/images/generations\",status=\"200\"}"),
      std::string::npos)
      << after;
  EXPECT_NE(after.find("cm_batch_size_bucket{le=\"4\"}"), std::string::npos) << after;
  EXPECT_NE(after.find("cm_latency_seconds_count"), std::string::npos);
  // Every batch's call is timed: as many as the evaluations, since none failed.
  EXPECT_EQ(metric(after, "cm_call_seconds_count") - metric(before, "cm_call_seconds_count"),
            metric(after, "cm_network_evaluations_total") -
                metric(before, "cm_network_evaluations_total"));
}

// cm bench --serve: the C++ load generator against the real server (timings are not tested, only
// that the rows add up and agree with the server's own counters).
TEST_F(Server, BenchServeMeasuresTheServer) {
  const std::string url = "http://127.0.0.1:" + std::to_string(server_->port());
  auto c = server_->client();
  const double images_before = metric(c.Get("/metrics", auth())->body, "cm_images_total");
  const auto r = run_shell(std::string(CM_BINARY) + " bench --serve " + url + " --api-key " + kKey +
                           " --concurrency 1,3 --duration 1.5 --warmup 0.3 --steps 1,2 --json " +
                           "2>" + path("bench_serve.err"));
  ASSERT_EQ(r.status, 0) << r.output;
  const json out = json::parse(r.output);
  ASSERT_EQ(out.at("rows").size(), 2u) << r.output;
  EXPECT_EQ(out["settings"]["steps"], json({1, 2}));
  double requests = 0;
  for (size_t i = 0; i < 2; ++i) {
    const json& row = out["rows"][i];
    EXPECT_EQ(row["concurrency"], i == 0 ? 1 : 3);
    EXPECT_EQ(row["errors"], 0) << row;
    ASSERT_GT(row["requests"].get<double>(), 0) << row;
    requests += row["requests"].get<double>();
    EXPECT_NEAR(row["images_per_s"].get<double>(),
                row["requests"].get<double>() / row["seconds"].get<double>(), 1e-9);
    EXPECT_LE(row["latency_p50_s"].get<double>(), row["latency_p95_s"].get<double>());
    EXPECT_LE(row["latency_p95_s"].get<double>(), row["latency_p99_s"].get<double>());
    EXPECT_GT(row["unet_calls"].get<double>(), 0) << row;
    // --max-batch 4: never more than 4 images per call, and at least one.
    EXPECT_GE(row["images_per_unet_call"].get<double>(), 1.0) << row;
    EXPECT_LE(row["images_per_unet_call"].get<double>(), 4.0) << row;
    EXPECT_GT(row["engine_busy"].get<double>(), 0.0) << row;
    EXPECT_LE(row["engine_busy"].get<double>(), 1.05) << row;
  }
  // Every counted request made an image on the server (warm-ups and the requests in flight at
  // the end come on top).
  const double images_after = metric(c.Get("/metrics", auth())->body, "cm_images_total");
  EXPECT_GE(images_after - images_before, requests);
}

TEST_F(Server, BenchServeErrorsAreOneLine) {
  const std::string url = "http://127.0.0.1:" + std::to_string(server_->port());
  auto r = run_cm("bench --serve " + url + " --duration 1");  // /metrics needs the key
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("error: GET " + url + "/metrics: HTTP 401"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("(--api-key?)"), std::string::npos) << r.output;
  r = run_cm("bench --serve ftp://127.0.0.1:1 --duration 1");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("error: --serve: expected http://HOST[:PORT][/PREFIX]"),
            std::string::npos)
      << r.output;
  r = run_cm("bench --serve " + url + " --concurrency 0 --api-key " + kKey);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("error: --concurrency: each level must be between 1 and 4096, got 0"),
            std::string::npos)
      << r.output;
}

class ServerStop : public TempDirTest {};

TEST_F(ServerStop, SigtermFinishesInFlightWorkAndExitsZero) {
  // A grace period no slow machine reaches: this test is about the work that finishes within it
  // (test_endpoints.py checks what happens when it ends first).
  ServerProcess server({"--max-batch", "2", "--shutdown-grace", "3600"}, path("serve.log"));
  ASSERT_TRUE(server.wait_ready()) << server.log();
  // 8 images x 40 steps at 2 per call: long enough to be in flight when SIGTERM comes.
  auto in_flight = std::async(std::launch::async, [&] {
    auto c = server.client();
    auto r = c.Post("/v1/images/generations", json{{"n", 8}, {"steps", 40}, {"seed", 2}}.dump(),
                    "application/json");
    return r ? std::make_pair(r->status, r->body) : std::make_pair(-1, std::string());
  });
  // Wait until the engine runs it, then stop.
  auto c = server.client();
  for (int i = 0; i < 3000; ++i) {
    auto m = c.Get("/metrics");
    if (m && metric(m->body, "cm_requests_running") == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto stopper = std::async(std::launch::async, [&] { return server.terminate(); });
  // New work is refused while the request in flight finishes.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto late = c.Post("/v1/images/generations", "{}", "application/json");
  if (late) EXPECT_EQ(late->status, 503) << late->body;
  const auto [status, body] = in_flight.get();
  EXPECT_EQ(status, 200) << body;
  if (status == 200) EXPECT_EQ(json::parse(body)["data"].size(), 8u);
  EXPECT_EQ(stopper.get(), 0) << server.log();
}

// The weights file is a FIFO: loading blocks opening it until the test writes, which makes the
// loading state last as long as the test needs; an empty write then fails the load.
TEST_F(ServerStop, HealthIs503WhileLoadingAndALoadErrorExits1) {
  const fs::path model = path("model");
  fs::create_directories(model / "unet");
  fs::copy(kModel + "/model_index.json", model / "model_index.json");
  fs::copy(kModel + "/scheduler", model / "scheduler", fs::copy_options::recursive);
  fs::copy(kModel + "/unet/config.json", model / "unet" / "config.json");
  const std::string weights = (model / "unet" / "diffusion_pytorch_model.safetensors").string();
  ASSERT_EQ(::mkfifo(weights.c_str(), 0644), 0);
  ServerProcess server(std::vector<std::string>{}, path("serve.log"), model.string());
  auto c = server.client();
  int status = -1;
  std::string body;
  for (int i = 0; i < 3000 && status < 0; ++i) {
    if (auto health = c.Get("/health")) {
      status = health->status;
      body = health->body;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ASSERT_EQ(status, 503) << server.log();
  EXPECT_EQ(json::parse(body)["status"], "loading");
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["ready"], false);
  auto early = c.Post("/v1/images/generations", "{}", "application/json");
  ASSERT_TRUE(early);
  EXPECT_EQ(early->status, 503);
  EXPECT_FALSE(early->get_header_value("Retry-After").empty());
  // An empty file: the load fails with one line naming it, and the server exits 1.
  const int fd = ::open(weights.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ::close(fd);
  EXPECT_EQ(server.wait_exit(std::chrono::seconds(120)), 1);
  EXPECT_NE(server.log().find("error: " + weights), std::string::npos) << server.log();
}

TEST_F(ServerStop, BadFlagsAreOneLineErrors) {
  const auto r = run_cm("serve -m " + kModel + " --max-batch 0");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--max-batch"), std::string::npos) << r.output;
  const auto k = run_cm("serve -m " + kModel + " --keep-jobs 0");
  EXPECT_EQ(k.status, 1);
  EXPECT_NE(k.output.find("--keep-jobs"), std::string::npos) << k.output;
  const auto p = run_cm("serve -m " + kModel + " --port 70000");
  EXPECT_EQ(p.status, 1);
  EXPECT_NE(p.output.find("--port"), std::string::npos) << p.output;
}

// A port another server holds is an error, not a share of its connections (SO_REUSEPORT).
TEST_F(ServerStop, APortInUseIsAnError) {
  ServerProcess first({}, path("first.log"));
  ASSERT_TRUE(first.wait_ready()) << first.log();
  // Bounded: a server that did bind would serve until killed (timeout's exit 124 fails below).
  const auto r = run_shell("timeout 120 " + std::string(CM_BINARY) + " serve -m " + kModel +
                           " -t 1 --port " + std::to_string(first.port()) + " 2>&1");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("cannot listen on 127.0.0.1:" + std::to_string(first.port())),
            std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace cm::test
