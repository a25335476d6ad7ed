// The HTTP API's parsing and encoding apart from any server: request bodies to ImageRequests (or
// 400s naming the field), base64, job names, the API-key comparison, the metrics text.
#include <gtest/gtest.h>

#include "server/http_api.h"
#include "server/metrics.h"

namespace cm::server {
namespace {

ModelInfo fmnist() {
  ModelInfo m;
  m.id = "fmnist";
  m.sample_size = 28;
  m.channels = 1;
  m.num_classes = 10;
  m.class_names = {"tshirt", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt",   "sneaker",  "bag",   "boot"};
  m.num_train_timesteps = 40;
  return m;
}

// The field a body is refused for ("accepted" when it is not).
std::string refused_field(const std::string& body, const ModelInfo& m = fmnist()) {
  try {
    parse_generation(body, m, 8);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.message.rfind(e.param + ": ", 0), 0u) << e.message;  // the message names it
    return e.param;
  }
  return "accepted";
}

TEST(ServerApi, PromptNamesAClassByNameOrNumber) {
  EXPECT_EQ(parse_generation(R"({"prompt": "sneaker"})", fmnist(), 8).request.class_labels,
            std::vector<int64_t>{7});
  EXPECT_EQ(parse_generation(R"({"prompt": "Sneaker"})", fmnist(), 8).request.class_labels,
            std::vector<int64_t>{7});
  EXPECT_EQ(parse_generation(R"({"prompt": "3"})", fmnist(), 8).request.class_labels,
            std::vector<int64_t>{3});
  // Empty or absent: random classes following the seed, as cm generate draws them.
  EXPECT_TRUE(parse_generation(R"({"prompt": ""})", fmnist(), 8).request.class_labels.empty());
  EXPECT_TRUE(parse_generation("{}", fmnist(), 8).request.class_labels.empty());
  EXPECT_EQ(refused_field(R"({"prompt": "unicorn"})"), "prompt");
  EXPECT_EQ(refused_field(R"({"prompt": "10"})"), "prompt");
  EXPECT_EQ(refused_field(R"({"prompt": "-1"})"), "prompt");
  EXPECT_EQ(refused_field(R"({"prompt": 3})"), "prompt");
}

TEST(ServerApi, FieldsAndExtensions) {
  const auto r = parse_generation(
      R"({"n": 2, "seed": 9223372036854775807, "timesteps": [22, 0], "class_labels": [1, 9],
          "response_format": "b64_json", "output_format": "png", "size": "28x28",
          "model": "fmnist", "user": "me"})",
      fmnist(), 8);
  EXPECT_EQ(r.request.n, 2);
  EXPECT_EQ(r.request.seed, 9223372036854775807ull);
  EXPECT_EQ(r.request.timesteps, (std::vector<int64_t>{22, 0}));
  EXPECT_EQ(r.request.class_labels, (std::vector<int64_t>{1, 9}));
  EXPECT_EQ(
      parse_generation(R"({"steps": 40, "class_labels": 4})", fmnist(), 8).request.class_labels,
      std::vector<int64_t>{4});
  EXPECT_EQ(parse_generation(R"({"steps": 40})", fmnist(), 8).request.num_inference_steps, 40);
  EXPECT_EQ(parse_generation(R"({"n": null})", fmnist(), 8).request.n, 1);  // null = absent
}

TEST(ServerApi, RefusalsNameTheField) {
  EXPECT_EQ(refused_field("{"), "body");
  EXPECT_EQ(refused_field("\"text\""), "body");
  EXPECT_EQ(refused_field(R"({"quality": "hd"})"), "quality");
  EXPECT_EQ(refused_field(R"({"n": 9})"), "n");
  EXPECT_EQ(refused_field(R"({"n": 1.5})"), "n");
  EXPECT_EQ(refused_field(R"({"n": true})"), "n");
  EXPECT_EQ(refused_field(R"({"seed": 9223372036854775808})"), "seed");
  EXPECT_EQ(refused_field(R"({"seed": 18446744073709551615})"), "seed");
  EXPECT_EQ(refused_field(R"({"steps": 2, "timesteps": [1, 0]})"), "timesteps");
  EXPECT_EQ(refused_field(R"({"timesteps": []})"), "timesteps");
  EXPECT_EQ(refused_field(R"({"timesteps": [5, 5]})"), "timesteps");
  EXPECT_EQ(refused_field(R"({"timesteps": [-1]})"), "timesteps");
  EXPECT_EQ(refused_field(R"({"timesteps": "22,0"})"), "timesteps");
  EXPECT_EQ(refused_field(R"({"class_labels": [10]})"), "class_labels");
  EXPECT_EQ(refused_field(R"({"class_labels": []})"), "class_labels");
  EXPECT_EQ(refused_field(R"({"class_labels": [1], "prompt": "bag"})"), "class_labels");
  EXPECT_EQ(refused_field(R"({"output_format": "jpeg"})"), "output_format");
  EXPECT_EQ(refused_field(R"({"size": "32x32"})"), "size");
  EXPECT_EQ(refused_field(R"({"model": "other"})"), "model");
  EXPECT_EQ(refused_field(R"({"user": 5})"), "user");
  ModelInfo uncond = fmnist();
  uncond.num_classes.reset();
  EXPECT_EQ(refused_field(R"({"prompt": "bag"})", uncond), "prompt");
  EXPECT_EQ(refused_field(R"({"class_labels": [1]})", uncond), "class_labels");
  EXPECT_EQ(refused_field(R"({"prompt": ""})", uncond), "accepted");
}

TEST(ServerApi, Base64JobNamesAndSecrets) {
  auto b64 = [](const std::string& s) {
    return base64_encode(std::vector<uint8_t>(s.begin(), s.end()));
  };
  EXPECT_EQ(b64(""), "");
  EXPECT_EQ(b64("f"), "Zg==");
  EXPECT_EQ(b64("fo"), "Zm8=");
  EXPECT_EQ(b64("foo"), "Zm9v");
  EXPECT_EQ(b64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode({0xff, 0xfe, 0x00}), "//4A");
  EXPECT_EQ(job_name(12), "job-12");
  EXPECT_EQ(parse_job_name("job-12"), 12u);
  EXPECT_FALSE(parse_job_name("job-"));
  EXPECT_FALSE(parse_job_name("job-1x"));
  EXPECT_FALSE(parse_job_name("12"));
  EXPECT_FALSE(parse_job_name("job-123456789012345678901"));
  EXPECT_TRUE(same_secret("sesame", "sesame"));
  EXPECT_FALSE(same_secret("sesame", "sesamf"));
  EXPECT_FALSE(same_secret("sesame", "sesame2"));
  EXPECT_FALSE(same_secret("", "x"));
}

TEST(ServerApi, MetricsRoutesAndText) {
  EXPECT_EQ(route_of("GET", "/v1/jobs/job-7"), "GET /v1/jobs/{id}");
  EXPECT_EQ(route_of("POST", "/v1/jobs/job-7/cancel"), "POST /v1/jobs/{id}/cancel");
  EXPECT_EQ(route_of("GET", "/secret/../x"), "GET other");
  RequestCounter counter;
  counter.count("GET", "/v1/jobs/job-1", 200);
  counter.count("GET", "/v1/jobs/job-2", 200);
  EngineStats stats;
  stats.batch_size = Histogram({1, 2, 4});
  stats.batch_size.observe(3);
  stats.batch_size.observe(1);
  stats.images = 5;
  const std::string text = render_metrics(counter, &stats);
  EXPECT_NE(text.find("cm_http_requests_total{endpoint=\"GET /v1/jobs/{id}\",status=\"200\"} 2\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("cm_batch_size_bucket{le=\"2\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("cm_batch_size_bucket{le=\"4\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("cm_batch_size_sum 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("cm_images_total 5\n"), std::string::npos) << text;
  EXPECT_NE(render_metrics(counter, nullptr).find("cm_model_loaded 0\n"), std::string::npos);
}

}  // namespace
}  // namespace cm::server
